"""GRPO: group-relative advantages and the clipped policy-gradient loss, as pure JAX functions.

Everything here is a pure, jit-able function of arrays (static Python options aside), so a
trainer can call it inside its one compiled train step.

Shapes
------
    rewards:     [batch]        consecutive groups of ``group_size`` completions of one prompt
    advantages:  [num_samples]  one scalar per completion (broadcast over its tokens)
    sample_index [batch, seq]   int32, the sample each token belongs to (-1: padding); None means
                                padded rows, row i = sample i (num_samples == batch)
    logp:        [batch, seq]   log pi_theta(token) under the policy being trained
    old_logp:    [batch, seq]   log pi_old(token) under the policy that sampled the rollout
    ref_logp:    [batch, seq]   log pi_ref(token) under the frozen reference policy (or None)
    mask:        [batch, seq]   1 on completion tokens that enter the loss, 0 on prompt/padding
    logits:      [batch, seq, vocab]

Loss (per valid token t of completion i, A_i its advantage)::

    r_t        = exp(logp_t - old_logp_t)                          (ratio_level="token")
    surr_t     = min(r_t * A_i, clip(r_t, 1 - clip_eps, 1 + clip_eps_high) * A_i)
    surr_t     = max(surr_t, dual_clip_c * A_i)        if A_i < 0 and dual_clip_c is set
    d_t        = ref_logp_t - logp_t
    KL_t       = -d_t (k1) | d_t**2 / 2 (k2) | exp(d_t) - d_t - 1 (k3, Schulman's unbiased estimator)
    loss_t     = -(surr_t - kl_coef * KL_t)

Dual clip follows verl (``compute_policy_loss``, ``clip_ratio_c``; Ye et al. 2020,
arXiv:1912.09729): for negative advantages the *loss* ``-surr`` is capped at ``-dual_clip_c * A``
(= ``dual_clip_c * |A|``), i.e. ``loss = min(max(-r A, -clip(r) A), -c A)``; for A >= 0 it is the
plain PPO loss. ``dual_clip_c`` must be > 1 (verl's default value is 3.0; here ``None`` = off).

Sequence-level ratio (GSPO, Zheng et al. 2025, arXiv:2507.18071), ``ratio_level="sequence"``::

    s_i   = exp(mean over valid tokens of (logp - old_logp))
    r_t   = sg(s_i) * exp(logp_t - sg(logp_t))        (the "GSPO-token" form)

so the value of every token ratio is s_i, clipping acts on s_i, and the gradient with respect to
``logp_t`` is ``s_i * A_i`` wherever the surrogate is not clipped (GSPO's sequence gradient,
spread over the tokens).

Packed rows: the trainer packs every sample (prompt + completion) as a segment of rows of
``pack_len`` tokens (r1jax.rl.packed); ``sample_index`` says which tokens are whose, and every
per-sample quantity below (``n_i``, GSPO's ``s_i``, the sample count) is a sum over it
(r1jax.rl.samples), so a loss gives the same value padded or packed.

Aggregation (``loss_agg``) of the [batch, seq] token losses, with ``n_i`` valid tokens in sample i:

    "seq-mean-token-mean"      mean over samples of (sum_t loss / n_i)     (GRPO paper, GSPO)
                               samples with no valid token (masked out) are left out of the
                               mean; equals the plain mean when every sample has a token
    "token-mean"               sum of all valid token losses / total valid tokens     (DAPO)
    "seq-mean-token-sum-norm"  sum of all valid token losses / (samples * max_len)    (Dr. GRPO)
                               ``max_len`` defaults to the seq dimension; keep it fixed over a
                               run (the generation budget), as Dr. GRPO intends. (verl's mode of
                               the same name divides by max_len only; here the constant also
                               includes the samples so the scale matches the other modes.)

Metrics (all scalars, means are over valid tokens): ``loss``, ``pg_loss`` (the surrogate part),
``kl`` (mean KL estimate; 0 when no ref_logp), ``clip_frac_low`` / ``clip_frac_high`` (fraction of
valid tokens where the clipped term was strictly the minimum, with ratio below 1 - clip_eps /
above 1 + clip_eps_high), ``dual_clip_frac`` (fraction where the dual clip bound was active; 0
when it is off), ``ratio_mean`` / ``ratio_min`` / ``ratio_max`` (of the token ratios, which are
s_i under sequence ratios), ``entropy`` (only when ``entropy`` is passed).

Custom losses: the contract
---------------------------
A loss function has the signature of :func:`grpo_loss`::

    def my_loss(logp, old_logp, ref_logp, advantages, mask, *, sample_index=None, **options)
        -> (loss, metrics)

five positional arrays with the shapes above (``ref_logp`` may be None), keyword options that
come from the experiment config's ``loss_kwargs``, returning a scalar loss to *minimise* and a
dict of scalar metrics. It must be pure and jit-able (Python-level options are static). Gradients
flow through ``logp`` only. The trainer also passes ``entropy=`` ([batch, seq] token entropies)
always, ``sample_index=`` when it packs (the default, ``pack=True``; then ``advantages`` is
[num_samples] and ``samples.per_token(advantages, sample_index)`` gives each token's) and
``sampler_logp=`` with a rollout correction. A per-sample reduction is
``samples.sample_sum(x, samples.sample_ids(sample_index, *x.shape), advantages.shape[0])``; a
loss that only sums or averages tokens can ignore it. For example, a token-level REINFORCE::

    from r1jax.rl import samples

    def reinforce(logp, old_logp, ref_logp, advantages, mask, *, sample_index=None, entropy=None):
        idx = samples.sample_ids(sample_index, *logp.shape)
        a = samples.per_token(advantages, idx)                   # [batch, seq]
        loss = -jnp.sum(a * logp * mask) / jnp.maximum(mask.sum(), 1.0)
        return loss, {"loss": loss}
 Options are checked before a run starts
(:func:`check_loss_kwargs`): every ``loss_kwargs`` key, and what the trainer passes, must be a
keyword parameter of the loss, so a misspelt option (``kl_coeff``) fails naming the closest one;
a loss that declares ``**kwargs`` takes any option (and then nothing is checked for it). Register
it with ``@register_loss("name")``, or name it in the config without touching the library::

    # experiments/my_experiment.py
    def get_config():
        config = ...
        config.loss = "grpo"                          # a registered name
        config.loss = "my_package.losses:my_loss"     # or "module:function", imported
        config.loss = "experiments/my_loss.py:my_loss"  # or "file.py:function", loaded from the file
        return config

and the trainer resolves it with :func:`get_loss_fn`.

Rewards: a reward function that gives None (e.g. a gold answer that does not parse) marks that
sample invalid: pass ``valid`` to :func:`group_advantages` and the sample is left out of its
group's statistics (advantage 0; give it loss mask 0 too). NaN rewards of valid samples are not
handled here and would propagate NaN into their group (and the batch for ``scale="batch"``).
"""

from __future__ import annotations

import inspect
from typing import Callable

import jax
import jax.numpy as jnp

from r1jax.config import ConfigKeyError, closest
from r1jax.plugins import is_spec, load_callable
from r1jax.rl import samples
from r1jax.rl.rollout_correction import CORRECTIONS, correction_weights

__all__ = [
    "group_advantages",
    "aggregation_weight",
    "grpo_loss",
    "LOSS_FNS",
    "register_loss",
    "get_loss_fn",
    "LOSS_AGGS",
    "KL_ESTIMATORS",
    "RATIO_LEVELS",
    "ADV_SCALES",
    "check_loss_options",
    "loss_options",
    "check_loss_kwargs",
]

LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
ADV_SCALES = ("group", "batch", "none")
RATIO_LEVELS = ("token", "sequence")


# --------------------------------------------------------------------------------------------
# advantages
# --------------------------------------------------------------------------------------------


def group_advantages(rewards, group_size: int, scale: str = "group", eps: float = 1e-4, valid=None):
    """Group-relative advantages.

    Args:
      rewards: [batch] float rewards; rows ``[k*G, (k+1)*G)`` are the G completions of prompt k.
        Must not hold NaN where ``valid`` (see module docstring); values where not valid are ignored.
      group_size: G; must divide batch.
      scale: "group": (r - group mean) / (group std + eps)   (GRPO, DeepSeekMath/R1)
             "batch": (r - group mean) / (batch std + eps)   (batch-level scaling)
             "none":  r - group mean                          (Dr. GRPO)
        Standard deviations use Bessel's correction (ddof=1), like ``torch.std``.
      eps: added to the std.
      valid: optional [batch] bool: samples whose reward exists (e.g. their gold answer parses).
        The others are left out of their group's mean and std (and the batch std) and get
        advantage 0, so they shift no sibling's advantage. Default: all valid.

    Returns:
      advantages: [batch] float32 (float64 under x64 with float64 rewards). A group whose valid
      rewards are all equal (or that has fewer than two valid members) gets exactly 0 for every
      member, whatever the scale.
    """
    if scale not in ADV_SCALES:
        raise ValueError(f"scale must be one of {ADV_SCALES}, got {scale!r}")
    rewards = jnp.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be [batch], got shape {rewards.shape}")
    if not jnp.issubdtype(rewards.dtype, jnp.floating):
        rewards = rewards.astype(jnp.float32)
    batch = rewards.shape[0]
    if group_size < 1 or batch % group_size:
        raise ValueError(f"group_size={group_size} must be >= 1 and divide batch={batch}")
    v = jnp.ones((batch,), bool) if valid is None else jnp.asarray(valid, bool)
    if v.shape != (batch,):
        raise ValueError(f"valid must be [batch]={batch}, got shape {v.shape}")
    vf = v.astype(rewards.dtype).reshape(batch // group_size, group_size)
    g = jnp.where(vf > 0, rewards.reshape(vf.shape), 0.0)
    n = vf.sum(axis=1, keepdims=True)
    mean = g.sum(axis=1, keepdims=True) / jnp.maximum(n, 1.0)
    centered = (g - mean) * vf
    # Equal rewards -> exactly 0 (r - mean can be a rounding error away from 0 otherwise).
    hi = jnp.where(vf > 0, g, -jnp.inf).max(axis=1, keepdims=True)
    lo = jnp.where(vf > 0, g, jnp.inf).min(axis=1, keepdims=True)
    flat = (hi == lo) | (n < 2)
    if scale == "group":
        var = (centered * centered).sum(axis=1, keepdims=True) / jnp.maximum(n - 1.0, 1.0)
        adv = centered / (jnp.sqrt(var) + eps)
    elif scale == "batch":
        nb = vf.sum()
        rb = jnp.where(vf > 0, g, 0.0)
        mb = rb.sum() / jnp.maximum(nb, 1.0)
        var = (((rb - mb) * vf) ** 2).sum() / jnp.maximum(nb - 1.0, 1.0)
        adv = centered / (jnp.sqrt(var) + eps)
    else:
        adv = centered
    adv = jnp.where(flat | (vf == 0), jnp.zeros_like(adv), adv)
    return adv.reshape(batch)


def aggregation_weight(mask, loss_agg: str, sample_index=None, num_samples: int | None = None):
    """What `loss_agg` divides by in a batch (a micro-batch's weight when gradients are accumulated):
    valid tokens ("token-mean"), samples with a valid token ("seq-mean-token-mean"), samples
    ("seq-mean-token-sum-norm", whose constant is samples x max_len). mask: [rows, seq]; packed
    rows pass sample_index [rows, seq] and num_samples (r1jax.rl.samples; a sample counts when it
    owns a token of the batch); without them row i is sample i."""
    m = jnp.asarray(mask).astype(jnp.float32)
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")
    if loss_agg == "token-mean":
        return m.sum()
    idx = samples.sample_ids(sample_index, *m.shape)
    S = _num_samples(sample_index, num_samples, m.shape[0])
    if loss_agg == "seq-mean-token-mean":
        return (samples.sample_sum(m, idx, S) > 0).astype(jnp.float32).sum()
    return samples.present(idx, S).astype(jnp.float32).sum()


def _num_samples(sample_index, num_samples, rows: int) -> int:
    if sample_index is None:
        return rows
    if num_samples is None:
        raise ValueError("packed rows (sample_index given) need num_samples")
    return int(num_samples)


# --------------------------------------------------------------------------------------------
# loss
# --------------------------------------------------------------------------------------------


def _kl(logp, ref_logp, estimator, valid):
    # d is zeroed off the mask before exp, so padding garbage can neither overflow nor give NaN grads
    d = jnp.where(valid, ref_logp - logp, 0.0)
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return jnp.exp(d) - d - 1.0
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")


def _masked_mean(x, mask):
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _aggregate(token_loss, mask, loss_agg, max_len, idx, num_samples):
    """The [rows, seq] token losses reduced as `loss_agg` asks; per-sample sums over idx (r1jax.rl.samples)."""
    token_loss = token_loss * mask
    if loss_agg == "seq-mean-token-mean":
        n_tok = samples.sample_sum(mask, idx, num_samples)
        seq = samples.sample_sum(token_loss, idx, num_samples) / jnp.maximum(n_tok, 1.0)
        has_tok = (n_tok > 0).astype(token_loss.dtype)
        return jnp.sum(seq * has_tok) / jnp.maximum(jnp.sum(has_tok), 1.0)
    if loss_agg == "token-mean":
        return jnp.sum(token_loss) / jnp.maximum(jnp.sum(mask), 1.0)
    if loss_agg == "seq-mean-token-sum-norm":
        if max_len is None:
            max_len = mask.shape[-1]
        n = samples.present(idx, num_samples).astype(token_loss.dtype).sum()
        return jnp.sum(token_loss) / (jnp.maximum(n, 1.0) * max_len)
    raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")


def grpo_loss(
    logp,
    old_logp,
    ref_logp,
    advantages,
    mask,
    *,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    kl_coef: float = 0.0,
    loss_agg: str = "seq-mean-token-mean",
    kl_estimator: str = "k3",
    dual_clip_c: float | None = None,
    ratio_level: str = "token",
    entropy=None,
    max_len: int | None = None,
    sampler_logp=None,
    rollout_correction: str = "none",
    tis_cap: float = 2.0,
    is_low: float = 0.5,
    is_high: float = 2.0,
    sample_index=None,
):
    """Clipped GRPO policy loss (to minimise) and metrics; see the module docstring for the math.

    Args:
      logp, old_logp: [batch, seq] token log-probs under the trained / sampling policy.
      ref_logp: [batch, seq] reference log-probs, or None (then kl_coef must be 0).
      advantages: [num_samples], one per sample (= [batch] for padded rows).
      mask: [batch, seq], 1 on completion tokens (bool or float).
      sample_index: None (padded: row i is sample i) or [batch, seq] int32, each token's sample in
        [0, num_samples), -1 on padding (packed rows; r1jax.rl.samples). Every per-sample
        reduction (seq-mean-token-mean, GSPO's sequence ratio, Dr. GRPO's sample count) runs over it.
      clip_eps: lower clip, ratio >= 1 - clip_eps.
      clip_eps_high: upper clip, ratio <= 1 + clip_eps_high; None = clip_eps (DAPO's clip-higher
        sets it larger, e.g. 0.28).
      kl_coef: weight of the KL penalty in the loss (GRPO/R1-style, in the loss, not the reward).
      loss_agg: "seq-mean-token-mean" | "token-mean" | "seq-mean-token-sum-norm".
      kl_estimator: "k1" | "k2" | "k3".
      dual_clip_c: None (off) or a constant > 1; bounds the loss of A < 0 tokens by c * |A|.
      ratio_level: "token" (PPO/GRPO) or "sequence" (GSPO).
      entropy: optional [batch, seq] token entropies, only reported as a metric.
      max_len: the Dr. GRPO constant for "seq-mean-token-sum-norm" (default: seq dim).
      sampler_logp: [batch, seq] the rollout engine's log-probs, for a rollout correction.
      rollout_correction: "none" | "tis" | "icepop" | "mis" (r1jax.rl.rollout_correction): weights
        of the surrogate from r = exp(old_logp - sampler_logp); tis_cap, is_low, is_high its bounds.
      An option it does not take is a TypeError (and a config naming one fails before the run:
      check_loss_kwargs).

    Returns:
      (loss scalar, metrics dict of scalars).
    """
    if clip_eps_high is None:
        clip_eps_high = clip_eps
    check_loss_options(loss_agg=loss_agg, kl_estimator=kl_estimator, ratio_level=ratio_level,
                       dual_clip_c=dual_clip_c, rollout_correction=rollout_correction)
    if ref_logp is None and not (isinstance(kl_coef, (int, float)) and kl_coef == 0):
        raise ValueError("kl_coef != 0 needs ref_logp (the reference policy's log-probs)")
    logp = jnp.asarray(logp)
    if logp.ndim != 2:
        raise ValueError(f"logp must be [batch, seq], got shape {logp.shape}")
    for name, x in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if x is not None and jnp.shape(x) != logp.shape:
            raise ValueError(f"{name} shape {jnp.shape(x)} != logp shape {logp.shape}")
    rows, seq = logp.shape
    if sample_index is None and jnp.shape(advantages) != (rows,):
        raise ValueError(f"advantages must be [batch]={(rows,)} (or pass sample_index for packed rows), got "
                         f"{jnp.shape(advantages)}")
    if jnp.ndim(advantages) != 1:
        raise ValueError(f"advantages must be [num_samples], got shape {jnp.shape(advantages)}")
    idx = samples.sample_ids(sample_index, rows, seq)
    S = int(jnp.shape(advantages)[0])

    dtype = logp.dtype if jnp.issubdtype(logp.dtype, jnp.floating) else jnp.float32
    mask = jnp.asarray(mask).astype(dtype)
    valid = mask > 0
    old_logp = jax.lax.stop_gradient(jnp.asarray(old_logp, dtype))
    adv = samples.per_token(jax.lax.stop_gradient(jnp.asarray(advantages, dtype)), idx)  # [rows, seq]

    # Zero the log-ratio off the mask so padding garbage cannot overflow exp (or poison grads).
    log_ratio = jnp.where(valid, logp - old_logp, 0.0)
    if ratio_level == "token":
        ratio = jnp.exp(log_ratio)
    else:
        n_tok = jnp.maximum(samples.sample_sum(mask, idx, S), 1.0)
        seq_log_ratio = samples.per_token(samples.sample_sum(log_ratio, idx, S) / n_tok, idx)  # [rows, seq]
        tok = jnp.where(valid, logp, 0.0)
        ratio = jnp.exp(jax.lax.stop_gradient(seq_log_ratio) + tok - jax.lax.stop_gradient(tok))

    lo, hi = 1.0 - clip_eps, 1.0 + clip_eps_high
    unclipped = ratio * adv
    clipped = jnp.clip(ratio, lo, hi) * adv
    surr = jnp.minimum(unclipped, clipped)
    clip_active = clipped < unclipped  # the clipped term was strictly the min
    rv = jax.lax.stop_gradient(ratio)
    clip_low = clip_active & (rv < 1.0)
    clip_high = clip_active & (rv > 1.0)
    if dual_clip_c is not None:
        bound = dual_clip_c * adv
        dual_active = (adv < 0) & (bound > surr)
        surr = jnp.where(adv < 0, jnp.maximum(surr, bound), surr)
    else:
        dual_active = jnp.zeros_like(valid)

    if rollout_correction != "none":
        w = correction_weights(rollout_correction, old_logp, sampler_logp, mask, tis_cap=tis_cap, is_low=is_low,
                               is_high=is_high, sample_index=idx, num_samples=S).astype(dtype)
        surr = surr * w
    token_loss = -surr
    if ref_logp is not None:
        kl = _kl(logp, jax.lax.stop_gradient(jnp.asarray(ref_logp, dtype)), kl_estimator, valid)
        if not (isinstance(kl_coef, (int, float)) and kl_coef == 0):
            token_loss = token_loss + kl_coef * kl
        kl_mean = _masked_mean(jax.lax.stop_gradient(kl), mask)
    else:
        kl_mean = jnp.zeros((), dtype)

    loss = _aggregate(token_loss, mask, loss_agg, max_len, idx, S)
    pg_loss = _aggregate(-surr, mask, loss_agg, max_len, idx, S)

    f = lambda b: _masked_mean(b.astype(dtype), mask)  # noqa: E731
    metrics = {
        "loss": jax.lax.stop_gradient(loss),
        "pg_loss": jax.lax.stop_gradient(pg_loss),
        "kl": kl_mean,
        "clip_frac_low": f(clip_low & valid),
        "clip_frac_high": f(clip_high & valid),
        "dual_clip_frac": f(dual_active & valid),
        "ratio_mean": _masked_mean(rv, mask),
        "ratio_min": jnp.min(jnp.where(valid, rv, jnp.inf)),
        "ratio_max": jnp.max(jnp.where(valid, rv, -jnp.inf)),
    }
    if rollout_correction != "none":
        metrics["correction_weight"] = _masked_mean(w, mask)
    if entropy is not None:
        metrics["entropy"] = _masked_mean(jax.lax.stop_gradient(jnp.asarray(entropy, dtype)), mask)
    return loss, metrics


def check_loss_options(*, loss_agg: str = "seq-mean-token-mean", kl_estimator: str = "k3",
                       ratio_level: str = "token", dual_clip_c=None, rollout_correction: str = "none",
                       prefix: str = "") -> None:
    """grpo_loss's checks of its Python-level options (ValueError naming the option, `prefix` +
    its name, e.g. "loss_kwargs.loss_agg", the value and the valid ones); the trainer's config
    validation runs them before anything is compiled."""

    for name, value, valid in (("ratio_level", ratio_level, RATIO_LEVELS), ("loss_agg", loss_agg, LOSS_AGGS),
                               ("kl_estimator", kl_estimator, KL_ESTIMATORS),
                               ("rollout_correction", rollout_correction, tuple(sorted(CORRECTIONS)))):
        if value not in valid:
            raise ValueError(f"{prefix}{name} must be one of {valid}, got {value!r}")
    if dual_clip_c is not None and not dual_clip_c > 1.0:
        raise ValueError(f"{prefix}dual_clip_c must be > 1 (or None to disable), got {dual_clip_c}")


N_ARRAYS = 5  # the positional arrays every loss takes: logp, old_logp, ref_logp, advantages, mask


def loss_options(fn) -> tuple[str, ...] | None:
    """The keyword options a loss function takes (its parameters after the five arrays), or None
    when it declares **kwargs (it takes any)."""

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # no signature (a builtin): cannot tell
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                   inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return tuple(p.name for p in positional[N_ARRAYS:] if p.kind is not inspect.Parameter.POSITIONAL_ONLY) + tuple(
        p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_loss_kwargs(loss, loss_kwargs, *, passed: tuple = (), reserved: tuple = (), what: str = "grpo config",
                      key: str = "loss_kwargs") -> Callable:
    """Resolves `loss` (get_loss_fn) and checks that it takes the five arrays and every option in
    `loss_kwargs` and in `passed` (the options the trainer adds, e.g. entropy; `reserved`: those it
    may add, which loss_kwargs must not hold); a loss with **kwargs takes any option. Errors name
    `what`, the dotted key (`loss_kwargs.kl_coeff`), the loss and the closest option it does take.
    Returns the loss function."""


    for k in loss_kwargs:
        if k in reserved:
            raise ValueError(f"{what}: {key}.{k} is passed to the loss by the trainer, not set in the config")
    try:
        fn = get_loss_fn(loss)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{what}: loss={loss!r}: {e}") from e
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", repr(loss))
    where = f"the loss {name!r}" + (f" ({fn.__module__}.{fn.__qualname__})" if hasattr(fn, "__qualname__") else "")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return fn
    P = inspect.Parameter
    n_pos = sum(p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD) for p in params)
    if n_pos < N_ARRAYS and not any(p.kind is P.VAR_POSITIONAL for p in params):
        raise ValueError(f"{what}: {where} takes {n_pos} positional arguments; a loss takes the {N_ARRAYS} arrays "
                         "(logp, old_logp, ref_logp, advantages, mask), then keyword options")
    opts = loss_options(fn)
    if opts is None:
        return fn
    for k in loss_kwargs:
        if k not in opts:
            m = closest(str(k), opts)
            hint = f"; did you mean {key + '.' + m!r}?" if m else ""
            raise ConfigKeyError(f"{what}: unknown key {key + '.' + str(k)!r}: not an option of {where}, whose "
                                 f"options are {', '.join(opts) or '(none)'}{hint}")
    for k in passed:
        if k not in opts:
            raise ValueError(f"{what}: {where} does not take {k}=, which the trainer passes to the loss: add "
                             f"the parameter (`{k}=None`) or **kwargs to its signature")
    return fn


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

LOSS_FNS: dict[str, Callable] = {"grpo": grpo_loss}


def register_loss(name: str):
    """Decorator: ``@register_loss("my_loss")`` adds a function to LOSS_FNS under ``name``."""

    def deco(fn):
        if name in LOSS_FNS and LOSS_FNS[name] is not fn:
            raise ValueError(f"a loss named {name!r} is already registered ({LOSS_FNS[name]!r})")
        LOSS_FNS[name] = fn
        return fn

    return deco


def get_loss_fn(name_or_callable) -> Callable:
    """Resolve a loss: a callable (returned as is), a registered name ("grpo"),
    "package.module:function" (imported), or "path/to/file.py:function" (loaded from the file).
    """
    if callable(name_or_callable):
        return name_or_callable
    if not isinstance(name_or_callable, str):
        raise TypeError(f"loss must be a name, 'module:function' or a callable, got {name_or_callable!r}")
    spec = name_or_callable
    if spec in LOSS_FNS:
        return LOSS_FNS[spec]
    if is_spec(spec):
        return load_callable(spec, "loss")
    raise ValueError(
        f"unknown loss {spec!r}: registered losses are {sorted(LOSS_FNS)}; "
        "or give 'module:function' / 'file.py:function'"
    )
