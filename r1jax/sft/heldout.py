"""Held-out metrics of a causal LM on (prompt, completion) examples, teacher-forced.

`heldout_metrics(model, params, examples, seq_len)` puts one example per row (right-padded to
`seq_len`, cut there) and returns, over the completion tokens:
  ce         mean cross entropy per token
  token_acc  share of tokens whose argmax is the next token
  exact      share of examples whose every completion token is the argmax (what greedy decoding
             of that completion from its prompt would reproduce exactly)
`skip` leading completion tokens are not scored (e.g. a choice the data leaves open: the toy's
first token after "<think>" decides between a direct answer and a worked chain).
Used by SFT's `eval_every` (e.g. how reliably a pretrained toy base completes its worked chains).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.parallel.handoff import host_tree


def example_rows(examples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, pad_id: int = 0,
                 skip: int = 0) -> dict:
    """One example per row: input_ids / targets / loss_mask / positions [n, seq_len]."""
    n = len(examples)
    ids = np.full((n, seq_len), pad_id, np.int32)
    tg = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.float32)
    for r, (p, c) in enumerate(examples):
        toks = (list(p) + list(c))[:seq_len]
        L = len(toks)
        ids[r, :L] = toks
        tg[r, :L - 1] = toks[1:]
        mask[r, max(len(p) - 1 + skip, 0):L - 1] = 1.0
    pos = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (n, seq_len)).copy()
    return {"input_ids": ids, "targets": tg, "loss_mask": mask, "positions": pos}


def _row_stats(params, batch, model):
    logits = model.apply({"params": params}, batch["input_ids"], batch["positions"]).astype(jnp.float32)
    m = batch["loss_mask"]
    lse = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, batch["targets"][..., None], axis=-1)[..., 0]
    right = (jnp.argmax(logits, axis=-1) == batch["targets"]).astype(jnp.float32)
    return ((lse - tgt) * m).sum(-1), (right * m).sum(-1), m.sum(-1)


def heldout_metrics(model, params, examples, seq_len: int, *, batch_size: int = 64, pad_id: int = 0,
                    place=None, skip: int = 0) -> dict:
    """{"ce", "token_acc", "exact", "examples"} of `examples` (see module doc). `place`: an
    r1jax.parallel.placement.Placement to shard the rows on (default: as they come)."""
    rows = example_rows(examples, seq_len, pad_id, skip)
    n = rows["input_ids"].shape[0]
    if n == 0:
        raise ValueError("heldout_metrics: no examples")
    fn = jax.jit(_row_stats, static_argnums=2)
    ce_s, right_s, tok_s = [], [], []
    for i in range(0, n, batch_size):
        b = {k: v[i:i + batch_size] for k, v in rows.items()}
        k = b["input_ids"].shape[0]
        if k < batch_size:  # one compiled shape: pad the last batch with empty rows
            b = {key: np.concatenate([v, np.zeros((batch_size - k,) + v.shape[1:], v.dtype)]) for key, v in b.items()}
        if place is not None:
            b = place.batch(b)
        s, r, t = host_tree(fn(params, b, model))  # whole rows, also when they span several processes
        ce_s.append(s[:k]), right_s.append(r[:k]), tok_s.append(t[:k])
    ce_s, right_s, tok_s = map(np.concatenate, (ce_s, right_s, tok_s))
    tokens = max(float(tok_s.sum()), 1.0)
    return {"ce": float(ce_s.sum() / tokens), "token_acc": float(right_s.sum() / tokens),
            "exact": float(np.mean(right_s == tok_s)), "examples": int(n)}
