"""The GRPO update batch: rows of prompt + completion padded to a bucketed length (a multiple of
ROW_MULTIPLE tokens: r1jax.data.buckets.round_up), with the loss mask on completion tokens, the
sampler's log-probs, the advantages and (MoE) the sampler's experts (`build_batch`)."""

from __future__ import annotations

import numpy as np

ROW_MULTIPLE = 32  # training rows are padded to a multiple of this many tokens (few distinct shapes, little padding)


def build_batch(prompt_ids, completions, sampler_logps, advantages, sample_mask, pad_id: int, seq_len: int,
                routes=None):
    """Rows = prompt + completion, right-padded to seq_len. Target t is token t+1; loss on completion.

    -> input_ids, targets [n, seq_len] int32; loss_mask, old_logp, sampler_logp [n, seq_len] float32
    (the sampler's log-probs, both; old_logp is replaced when recomputed); token_mask [n, seq_len]
    int32 (1 on the real tokens: padding counts in no MoE expert load); advantages [n].
    routes (the engine's `out.routes`, MoE): adds sampler_route [n, seq_len, n_moe, k] int32, each
    completion token's experts at its input position (-1 elsewhere)."""
    n = len(completions)
    ids = np.full((n, seq_len), pad_id, np.int32)
    targets = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.float32)
    old = np.zeros((n, seq_len), np.float32)
    real = np.zeros((n, seq_len), np.int32)
    for i, (p, comp, lp) in enumerate(zip(prompt_ids, completions, sampler_logps)):
        seq = list(p) + list(comp)
        L = min(len(seq), seq_len)
        ids[i, :L] = seq[:L]
        real[i, :L] = 1
        targets[i, : L - 1] = seq[1:L]
        a, b = len(p) - 1, min(len(p) - 1 + len(comp), seq_len - 1)
        if b > a and sample_mask[i]:
            mask[i, a:b] = 1.0
            old[i, a:b] = lp[: b - a]
    out = {"input_ids": ids, "targets": targets, "loss_mask": mask, "old_logp": old, "sampler_logp": old.copy(),
           "token_mask": real, "advantages": np.asarray(advantages, np.float32)}
    if routes is not None:
        sr = np.full((n, seq_len) + routes[0].shape[1:], -1, np.int32)
        for i, (p, r) in enumerate(zip(prompt_ids, routes)):
            m = max(min(len(r), seq_len - len(p)), 0)
            sr[i, len(p):len(p) + m] = r[:m]
        out["sampler_route"] = sr
    return out
