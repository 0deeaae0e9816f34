"""Sampler/trainer agreement metrics and rollout corrections (TIS, IcePop token masking, MIS
sequence masking) against numpy references; their effect inside grpo_loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl import grpo
from r1jax.rl.rollout_correction import CORRECTIONS, agreement, correction_weights

from numerics import assert_close


def _batch(seed=0, b=6, s=9, spread=0.5):
    rs = np.random.RandomState(seed)
    sampler = -rs.uniform(0.1, 3.0, (b, s)).astype(np.float32)
    old = (sampler + rs.normal(0, spread, (b, s))).astype(np.float32)
    mask = (rs.uniform(size=(b, s)) < 0.8).astype(np.float32)
    mask[-1] = 0  # a padding row
    return old, sampler, mask


def test_agreement_matches_numpy():
    old, sampler, mask = _batch()
    got = agreement(old, sampler, mask, eps=0.2)
    v = mask > 0
    d = (old - sampler)[v]
    assert_close(got["kl_k3"], np.mean(np.exp(d) - d - 1), rtol=1e-5)
    assert_close(got["max_abs_dlogp"], np.abs(d).max(), rtol=1e-6)
    r = np.exp(d)
    assert_close(got["ratio_out_frac"], np.mean((r < 0.8) | (r > 1.2)), rtol=1e-6)
    same = agreement(sampler, sampler, mask)
    assert float(same["kl_k3"]) == 0 and float(same["max_abs_dlogp"]) == 0 and float(same["ratio_out_frac"]) == 0


def _numpy_weights(name, old, sampler, mask, cap=2.0, lo=0.5, hi=2.0):
    r = np.exp(np.where(mask > 0, old - sampler, 0.0))
    if name == "none":
        w = np.ones_like(r)
    elif name == "tis":
        w = np.minimum(r, cap)
    elif name == "icepop":
        w = ((r >= lo) & (r <= hi)).astype(np.float32)
    else:  # mis: geometric mean over each row's valid tokens
        lr = np.where(mask > 0, old - sampler, 0.0)
        g = np.exp(lr.sum(-1) / np.maximum(mask.sum(-1), 1))
        w = np.repeat(((g >= lo) & (g <= hi))[:, None], r.shape[1], 1).astype(np.float32)
    return np.where(mask > 0, w, 0.0)


@pytest.mark.parametrize("name", ["none", "tis", "icepop", "mis"])
def test_correction_weights_match_numpy(name):
    old, sampler, mask = _batch(1, spread=0.8)
    w = np.asarray(correction_weights(name, old, sampler, mask, tis_cap=1.5, is_low=0.6, is_high=1.7))
    ref = _numpy_weights(name, old, sampler, mask, 1.5, 0.6, 1.7)
    assert_close(w, ref, rtol=1e-6)
    if name != "none":  # the batch has tokens / rows on both sides of the bounds
        assert 0 < (ref[mask > 0] < 1).mean() < 1


def test_corrections_in_the_loss_equal_a_numpy_weighted_surrogate():
    """grpo_loss with a correction = the numpy token-mean of -w * min(r A, clip(r) A); gradient
    flows through logp only (the weights are constants)."""
    old, sampler, mask = _batch(2, spread=0.6)
    rs = np.random.RandomState(3)
    logp = (old + rs.normal(0, 0.3, old.shape)).astype(np.float32)
    adv = rs.normal(size=old.shape[0]).astype(np.float32)
    for name in ("tis", "icepop", "mis"):
        loss, m = grpo.grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, clip_eps_high=0.28, loss_agg="token-mean",
                                 sampler_logp=sampler, rollout_correction=name, tis_cap=1.5)
        r = np.exp(logp - old)
        surr = np.minimum(r * adv[:, None], np.clip(r, 0.8, 1.28) * adv[:, None])
        w = _numpy_weights(name, old, sampler, mask, cap=1.5)
        ref = -(w * surr * mask).sum() / mask.sum()
        assert_close(loss, ref, rtol=1e-5, err_msg=name)
        assert_close(m["correction_weight"], (w * mask).sum() / mask.sum(), rtol=1e-5)
        g_s = jax.grad(lambda s: grpo.grpo_loss(logp, old, None, adv, mask, loss_agg="token-mean", sampler_logp=s,
                                                rollout_correction=name)[0])(jnp.asarray(sampler))
        assert float(jnp.abs(g_s).max()) == 0.0
    plain, _ = grpo.grpo_loss(logp, old, None, adv, mask, loss_agg="token-mean")
    same, _ = grpo.grpo_loss(logp, old, None, adv, mask, loss_agg="token-mean", sampler_logp=old,
                             rollout_correction="tis")  # r = 1 everywhere: no change
    assert_close(same, plain, rtol=1e-6)


def test_unknown_or_unfed_correction_fails():
    old, sampler, mask = _batch()
    with pytest.raises(ValueError, match="registered corrections"):
        correction_weights("vtrace", old, sampler, mask)
    with pytest.raises(ValueError, match="needs sampler_logp"):
        grpo.grpo_loss(old, old, None, np.zeros(old.shape[0]), mask, rollout_correction="tis")
    assert set(CORRECTIONS) >= {"none", "tis", "icepop", "mis"}
