"""The rollout engine and the trainer as two policies: how far apart they are, and corrections.

The sampler (r1jax.generate: decode path, latent cache, rollout-dtype weights, decode kernels, no
expert capacity) and the trainer (training forward: compute dtype, remat, chunked LM head, training
kernels, expert parallelism with its capacity) compute the same policy with different arithmetic.
In f32 on one device they agree to float rounding (< 1e-5 in log-prob, tests/test_generate.py);
in bf16, with kernels, or when EP capacity drops tokens in training, they do not, and
GRPO's importance ratio against the sampler's log-probs (`old_logp="sampler"`) mixes that gap into
the policy ratio.

Shapes: trainer_logp, sampler_logp, old_logp, mask: [batch, seq] (mask 1 on completion tokens).

Agreement (logged every GRPO step as `rollout/agree_*`, from the first update of the step, before
the parameters move): with d = trainer_logp - sampler_logp on valid tokens,
    kl_k3          mean of exp(d) - d - 1    (k3 estimate of KL(sampler || trainer), samples from the sampler)
    max_abs_dlogp  max |d|
    ratio_out_frac fraction of tokens with exp(d) outside [1 - eps, 1 + eps] (eps: the loss' clip_eps)

    expert_mismatch (MoE, while the recording fits `route_agreement_mib`) the fraction of the sampler's expert choices (per
                   completion token and MoE layer, recorded by the engine when the token was fed
                   back) that the trainer's forward did not choose

Corrections (`loss_kwargs.rollout_correction`, applied by `grpo_loss` to the policy-gradient term;
pure functions, registered like losses): with r = exp(old_logp - sampler_logp), the trainer's old
policy over the sampler's,
    "none"    weight 1
    "tis"     token-level truncated importance sampling: weight min(r, tis_cap)
              (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL")
    "icepop"  token-level masking: weight 1 where is_low <= r <= is_high, else 0 (IcePop, Ling team)
    "mis"     sequence-level masking: weight 1 for a sample whose geometric-mean ratio
              exp(mean_t log r) is in [is_low, is_high], else 0 for all its tokens (MIS)
The weights carry no gradient.

When is `old_logp="sampler"` exact? When the sampler's and the trainer's log-probs are the same
numbers: f32 compute, XLA attention on both sides (or kernels checked equal), no expert capacity
dropping in the training forward, one policy version per step (mu = 1, minibatches = 1, so the
first update's params are the sampler's). Then r = 1 and every correction is the identity. Use
`old_logp="recompute"` (one more forward pass per step) whenever the agreement metrics show a gap:
bf16 compute, Pallas decode vs the training kernel, `moe_impl="ep"` with capacity; the PPO ratio is
then against the trainer's own old policy, and a correction above weights the sampler's off-policy
gap. With `old_logp="sampler"` a correction has nothing to correct (r = 1).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from r1jax.rl import samples

__all__ = ["agreement", "expert_mismatch", "CORRECTIONS", "register_correction", "correction_weights"]


def _valid(mask):
    return jnp.asarray(mask) > 0


def agreement(trainer_logp, sampler_logp, mask, eps: float = 0.2) -> dict:
    """-> {"kl_k3", "max_abs_dlogp", "ratio_out_frac"} scalars over valid tokens (0 when none)."""
    valid = _valid(mask)
    d = jnp.where(valid, jnp.asarray(trainer_logp, jnp.float32) - jnp.asarray(sampler_logp, jnp.float32), 0.0)
    n = jnp.maximum(valid.sum(), 1)
    k3 = jnp.where(valid, jnp.expm1(d) - d, 0.0)
    r = jnp.exp(d)
    out = valid & ((r < 1.0 - eps) | (r > 1.0 + eps))
    return {"kl_k3": k3.sum() / n, "max_abs_dlogp": jnp.max(jnp.abs(d)),
            "ratio_out_frac": out.sum() / n}


def expert_mismatch(trainer_route, sampler_route):
    """trainer_route, sampler_route: [..., k] expert ids (sampler -1 where not recorded) -> the
    fraction of the sampler's recorded choices missing from the trainer's set (0 when none recorded)."""
    trainer_route = jnp.asarray(trainer_route)
    sampler_route = jnp.asarray(sampler_route).astype(trainer_route.dtype)
    rec = sampler_route[..., :1] >= 0  # [..., 1]: this token/layer was recorded
    found = (sampler_route[..., :, None] == trainer_route[..., None, :]).any(-1)  # [..., k]
    n = jnp.maximum(rec.sum() * sampler_route.shape[-1], 1)
    return jnp.sum(rec & ~found) / n


CORRECTIONS: dict[str, Callable] = {}


def register_correction(name: str):
    """Decorator: fn(old_logp, sampler_logp, mask, **options) -> token weights [batch, seq]."""

    def deco(fn):
        CORRECTIONS[name] = fn
        return fn

    return deco


def _log_ratio(old_logp, sampler_logp, mask):
    return jnp.where(_valid(mask), jnp.asarray(old_logp, jnp.float32) - jnp.asarray(sampler_logp, jnp.float32), 0.0)


@register_correction("none")
def no_correction(old_logp, sampler_logp, mask, **_):
    return jnp.ones(jnp.shape(old_logp), jnp.float32)


@register_correction("tis")
def truncated_is(old_logp, sampler_logp, mask, *, tis_cap: float = 2.0, **_):
    return jnp.minimum(jnp.exp(_log_ratio(old_logp, sampler_logp, mask)), tis_cap)


@register_correction("icepop")
def token_mask_is(old_logp, sampler_logp, mask, *, is_low: float = 0.5, is_high: float = 2.0, **_):
    r = jnp.exp(_log_ratio(old_logp, sampler_logp, mask))
    return ((r >= is_low) & (r <= is_high)).astype(jnp.float32)


@register_correction("mis")
def sequence_mask_is(old_logp, sampler_logp, mask, *, is_low: float = 0.5, is_high: float = 2.0,
                     sample_index=None, num_samples=None, **_):
    """Per sample (a row, or the tokens of `sample_index`: r1jax.rl.samples), the geometric mean
    ratio over its valid tokens; the whole sample is kept or masked."""
    rows, seq = jnp.shape(old_logp)
    idx = samples.sample_ids(sample_index, rows, seq)
    S = rows if sample_index is None else num_samples
    n = jnp.maximum(samples.sample_sum(_valid(mask).astype(jnp.float32), idx, S), 1.0)
    g = jnp.exp(samples.sample_sum(_log_ratio(old_logp, sampler_logp, mask), idx, S) / n)  # [S]
    keep = (g >= is_low) & (g <= is_high)
    return samples.per_token(keep.astype(jnp.float32), idx)


def correction_weights(name: str, old_logp, sampler_logp, mask, *, sample_index=None, num_samples=None, **options):
    """[batch, seq] weights of the policy-gradient term (no gradient), by registered name. Packed
    rows pass `sample_index` [batch, seq] and `num_samples` (r1jax.rl.samples) for the per-sample ones."""
    if name not in CORRECTIONS:
        raise ValueError(f"rollout_correction={name!r}: registered corrections are {sorted(CORRECTIONS)}")
    if name != "none" and sampler_logp is None:
        raise ValueError(f"rollout_correction={name!r} needs sampler_logp (the rollout engine's log-probs)")
    w = CORRECTIONS[name](old_logp, sampler_logp, mask, sample_index=sample_index, num_samples=num_samples,
                          **options)
    return jax.lax.stop_gradient(jnp.where(_valid(mask), w, 0.0))
