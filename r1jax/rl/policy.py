"""The functions the GRPO update compiles: the policy loss of the train step (`make_policy_loss`)
and the old / reference log-prob pass (`make_logprob_fn`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.model.logprobs import head_kernel, token_logprobs_from_hidden
from r1jax.rl import grpo
from r1jax.rl.rollout_correction import agreement, expert_mismatch

TRAINER_LOSS_ARGS = ("entropy", "sampler_logp", "sample_index")  # what the train-step loss passes besides loss_kwargs


def passed_loss_args(loss_kwargs, packed: bool = True) -> tuple[str, ...]:
    """The keyword arguments make_policy_loss passes to the policy loss besides `loss_kwargs`:
    entropy always, sample_index for packed rows, sampler_logp with a rollout correction (the config
    check asks the loss for them)."""
    correct = loss_kwargs.get("rollout_correction", "none") != "none"
    return ("entropy",) + (("sample_index",) if packed else ()) + (("sampler_logp",) if correct else ())


def make_policy_loss(policy_loss, temperature: float, loss_kwargs: dict, chunk: int = 0):
    """The train-step loss: forward at `temperature`, token log-probs (the LM head `chunk` positions
    at a time, r1jax.model.logprobs), then the policy loss. Padding (batch["token_mask"] == 0) does
    not count in the MoE expert load. aux["weight"] is the loss's normaliser (gradient accumulation).
    Packed rows (r1jax.rl.packed) carry positions, segment_ids and sample_index [rows, seq] and
    advantages [num_samples]: the model attends within segments and the loss gets sample_index.
    When the batch carries "sampler_logp", the metrics include the sampler/trainer agreement
    (`agree_*`, r1jax.rl.rollout_correction.agreement) and a rollout correction gets it."""

    agg = loss_kwargs.get("loss_agg", "seq-mean-token-mean")
    correct = "sampler_logp" in passed_loss_args(loss_kwargs)

    def loss_fn(params, batch, model):
        tm = batch.get("token_mask")
        out = model.apply({"params": params}, batch["input_ids"], batch.get("positions"), batch.get("segment_ids"),
                          token_mask=None if tm is None else tm > 0, output=True, compute_mtp=False, head=False)
        aux = out.aux
        logp, ent = token_logprobs_from_hidden(out.hidden, head_kernel(params, model.cfg), batch["targets"],
                                               temperature=temperature, chunk=chunk, with_entropy=True)
        extra = {"sampler_logp": batch["sampler_logp"]} if correct else {}
        si = batch.get("sample_index")
        if si is not None:
            extra["sample_index"] = si
        loss, metrics = policy_loss(logp, batch["old_logp"], batch.get("ref_logp"), batch["advantages"],
                                    batch["loss_mask"], entropy=ent, **extra, **loss_kwargs)
        if "sampler_logp" in batch:
            agree = agreement(jax.lax.stop_gradient(logp), batch["sampler_logp"], batch["loss_mask"],
                              loss_kwargs.get("clip_eps", 0.2))
            metrics = {**metrics, **{f"agree_{k}": v for k, v in agree.items()}}
        if "ep_dropped" in aux:  # expert parallelism: assignments over capacity, of all routed
            metrics["ep_dropped_frac"] = jnp.sum(aux["ep_dropped"]) / aux["route"].size
        if "sampler_route" in batch and "route" in aux:  # [n_moe, b, s, k] -> [b, s, n_moe, k]
            metrics["agree_expert_mismatch"] = expert_mismatch(jnp.moveaxis(aux["route"], 0, 2),
                                                               batch["sampler_route"])
        weight = (grpo.aggregation_weight(batch["loss_mask"], agg, si, batch["advantages"].shape[0])
                  if agg in grpo.LOSS_AGGS else batch["loss_mask"].sum())
        out = {"metrics": metrics, "weight": weight}
        if "load" in aux:
            out["load"] = aux["load"]
        return loss, out

    return loss_fn


def make_logprob_fn(model, temperature: float, chunk: int = 0):
    """jit (params, input_ids, targets, token_mask, positions=None, segment_ids=None) -> [rows, seq]
    log-probs of the targets (old / ref policy passes; packed rows pass positions and segment_ids),
    the LM head a block at a time."""

    @jax.jit
    def f(params, ids, targets, token_mask, positions=None, segment_ids=None):
        h = model.apply({"params": params}, ids, positions, segment_ids, token_mask=token_mask > 0, output=True,
                        compute_mtp=False, head=False).hidden
        return token_logprobs_from_hidden(h, head_kernel(params, model.cfg), targets, temperature=temperature,
                                          chunk=chunk)[0]

    return f
