"""r1jax.rl.grpo against an independent float64 numpy implementation (explicit loops)."""
import itertools
import math
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model.logprobs import token_entropy_reference, token_logprobs_reference
from r1jax.rl import grpo

try:  # jax >= 0.4.36 has jax.enable_x64; older versions only jax.experimental.enable_x64
    _x64 = jax.enable_x64
    _x64_on = lambda: _x64(True)  # noqa: E731
except AttributeError:  # pragma: no cover
    from jax.experimental import enable_x64 as _x64_on


# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def np_group_adv(rewards, G, scale, eps=1e-4):
    r = np.asarray(rewards, np.float64)
    out = np.zeros_like(r)
    batch_std = np.std(r, ddof=1) if len(r) > 1 else 0.0
    for k in range(len(r) // G):
        grp = r[k * G:(k + 1) * G]
        if np.all(grp == grp[0]):
            continue  # stays exactly 0
        a = grp - grp.mean()
        if scale == "group":
            a = a / (np.std(grp, ddof=1) + eps)
        elif scale == "batch":
            a = a / (batch_std + eps)
        out[k * G:(k + 1) * G] = a
    return out


def np_kl(lp, ref, est):
    d = ref - lp
    return {"k1": -d, "k2": 0.5 * d * d, "k3": math.exp(d) - d - 1.0}[est]


def np_loss(logp, old, ref, adv, mask, *, clip_eps=0.2, clip_eps_high=None, kl_coef=0.0,
            loss_agg="seq-mean-token-mean", kl_estimator="k3", dual_clip_c=None,
            ratio_level="token", max_len=None, logp_sg=None):
    """Loss value. For ratio_level='sequence', s_i is computed from logp_sg (held constant, the
    stop-gradient point) and each token ratio is s_i * exp(logp - logp_sg): differentiating this
    function in logp at logp == logp_sg gives the GSPO-token gradient."""
    ch = clip_eps if clip_eps_high is None else clip_eps_high
    B, T = logp.shape
    if logp_sg is None:
        logp_sg = logp
    tok = np.zeros((B, T))
    stats = {"low": 0, "high": 0, "dual": 0, "ratios": [], "kls": []}
    for i in range(B):
        idx = [t for t in range(T) if mask[i, t]]
        s = math.exp(np.mean([logp_sg[i, t] - old[i, t] for t in idx])) if idx else 1.0
        a = adv[i]
        for t in idx:
            if ratio_level == "token":
                r = math.exp(logp[i, t] - old[i, t])
            else:
                r = s * math.exp(logp[i, t] - logp_sg[i, t])
            rc = min(max(r, 1 - clip_eps), 1 + ch)
            surr = min(r * a, rc * a)
            if rc * a < r * a:
                stats["low" if r < 1 else "high"] += 1
            if dual_clip_c is not None and a < 0:
                if dual_clip_c * a > surr:
                    stats["dual"] += 1
                surr = max(surr, dual_clip_c * a)
            kl = np_kl(logp[i, t], ref[i, t], kl_estimator) if ref is not None else 0.0
            tok[i, t] = -(surr - kl_coef * kl)
            stats["ratios"].append(r)
            stats["kls"].append(kl)
    if loss_agg == "seq-mean-token-mean":
        seqs = [sum(tok[i, t] for t in range(T) if mask[i, t]) / mask[i].sum()
                for i in range(B) if mask[i].sum() > 0]
        loss = sum(seqs) / len(seqs)
    elif loss_agg == "token-mean":
        loss = sum(tok[i, t] for i in range(B) for t in range(T) if mask[i, t]) / mask.sum()
    else:
        L = T if max_len is None else max_len
        loss = sum(tok[i, t] for i in range(B) for t in range(T) if mask[i, t]) / (B * L)
    return loss, stats


# --------------------------------------------------------------------------------------------
# test data: away from the kinks of min/clip/dual clip
# --------------------------------------------------------------------------------------------

CLIP = 0.2
DUAL_C = 3.0
ADV = np.array([1.2, -0.7, 0.4, -1.5, 0.9, -0.3])
# Row offsets of log-ratio: clipped-high (A>0), clipped-low (A<0), inside, dual-clip region
# (A<0, ratio ~3.7), below 1-eps with A>0 (not clipped), between 1.2 and 1.28 with A<0.
OFFSETS = [0.6, -0.5, 0.0, 1.3, -0.5, 0.215]
MASK = np.array([
    [0, 0, 1, 1, 1, 1, 1, 0],   # prompt then completion then padding
    [1, 1, 1, 1, 1, 1, 1, 1],
    [0, 1, 1, 1, 0, 0, 0, 0],
    [1, 1, 1, 1, 1, 0, 0, 0],
    [0, 0, 0, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 0, 0],
], dtype=np.float64)


def _kinks(ch):
    return [math.log(1 - CLIP), math.log(1 + ch), math.log(DUAL_C)]


def make_data(ratio_level, seed=0, noise=0.12):
    rng = np.random.default_rng(seed)
    B, T = MASK.shape
    kinks = _kinks(0.2) + _kinks(0.28)
    old = rng.uniform(-3.0, -0.2, size=(B, T))
    delta = np.zeros((B, T))
    for i in range(B):
        while True:
            row = OFFSETS[i] + rng.uniform(-noise, noise, size=T)
            idx = MASK[i] > 0
            vals = row[idx] if ratio_level == "token" else [row[idx].mean()]
            if all(abs(v - k) > 0.015 for v in vals for k in kinks):
                break
        delta[i] = row
    logp = old + delta
    ref = logp + rng.uniform(-0.5, 0.5, size=(B, T))
    # garbage off the mask: must not leak (no overflow, no NaN, no gradient)
    logp = np.where(MASK > 0, logp, 60.0)
    old = np.where(MASK > 0, old, -80.0)
    ref = np.where(MASK > 0, ref, -90.0)
    return logp, old, ref


AGGS = ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"]
GRID = list(itertools.product(AGGS, [None, 0.28], ["k1", "k2", "k3"], ["token", "sequence"], [None, DUAL_C]))


@pytest.mark.parametrize("agg,ch,est,level,dual", GRID)
def test_loss_and_grad_match_numpy(agg, ch, est, level, dual):
    logp, old, ref = make_data(level)
    opts = dict(clip_eps=CLIP, clip_eps_high=ch, kl_coef=0.1, loss_agg=agg, kl_estimator=est,
                dual_clip_c=dual, ratio_level=level)
    want, stats = np_loss(logp, old, ref, ADV, MASK, **opts)

    # float32 value
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    got, metrics = grpo.grpo_loss(f32(logp), f32(old), f32(ref), f32(ADV), f32(MASK), **opts)
    # the loss is a mean of signed terms (it may be near 0): compared on the scale of those terms
    np.testing.assert_allclose(float(got), want, rtol=0, atol=1e-5 * max(np.abs(ADV).max(), 1.0))
    n = MASK.sum()
    assert float(metrics["clip_frac_low"]) == pytest.approx(stats["low"] / n, abs=1e-6)
    assert float(metrics["clip_frac_high"]) == pytest.approx(stats["high"] / n, abs=1e-6)
    assert float(metrics["dual_clip_frac"]) == pytest.approx(stats["dual"] / n, abs=1e-6)
    assert float(metrics["kl"]) == pytest.approx(np.mean(stats["kls"]), rel=1e-5, abs=1e-6)
    assert float(metrics["ratio_mean"]) == pytest.approx(np.mean(stats["ratios"]), rel=1e-5)
    assert float(metrics["ratio_min"]) == pytest.approx(min(stats["ratios"]), rel=1e-5)
    assert float(metrics["ratio_max"]) == pytest.approx(max(stats["ratios"]), rel=1e-5)

    # float64 gradient wrt logp vs central differences of the numpy formula
    with _x64_on():
        fn = lambda lp: grpo.grpo_loss(lp, jnp.asarray(old), jnp.asarray(ref), jnp.asarray(ADV),  # noqa: E731
                                       jnp.asarray(MASK), **opts)[0]
        g = np.asarray(jax.grad(fn)(jnp.asarray(logp, jnp.float64)))
        assert g.dtype == np.float64
    h = 1e-6
    fd = np.zeros_like(logp)
    for i, t in np.ndindex(*logp.shape):
        e = np.zeros_like(logp)
        e[i, t] = h
        fp = np_loss(logp + e, old, ref, ADV, MASK, logp_sg=logp, **opts)[0]
        fm = np_loss(logp - e, old, ref, ADV, MASK, logp_sg=logp, **opts)[0]
        fd[i, t] = (fp - fm) / (2 * h)
    assert np.all(g[MASK == 0] == 0)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_data_covers_every_regime():
    """The grid above is only meaningful if clip low/high and dual clip each happen."""
    for level in ("token", "sequence"):
        logp, old, ref = make_data(level)
        _, st = np_loss(logp, old, ref, ADV, MASK, clip_eps_high=0.28, dual_clip_c=DUAL_C, ratio_level=level)
        assert st["low"] > 0 and st["high"] > 0 and st["dual"] > 0, (level, st)


def test_gspo_gradient_is_sequence_ratio_times_advantage():
    """Unclipped GSPO-token: d loss / d logp_t = -s_i * A_i / n_i / B (seq-mean-token-mean)."""
    B, T = 2, 4
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
    old = np.full((B, T), -1.0, np.float32)
    logp = old + np.array([[0.05, -0.02, 0.03, 0.0], [0.01, 0.02, -0.04, 0.05]], np.float32)
    adv = np.array([0.7, -1.1], np.float32)
    g = jax.grad(lambda lp: grpo.grpo_loss(lp, old, None, adv, mask, ratio_level="sequence")[0])(logp)
    for i in range(B):
        n = mask[i].sum()
        s = math.exp(((logp[i] - old[i]) * mask[i]).sum() / n)
        np.testing.assert_allclose(np.asarray(g[i]), -s * adv[i] / n / B * mask[i], rtol=1e-5)


def test_kl_skipped_without_ref_and_error_when_needed():
    logp, old, _ = make_data("token")
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    loss, m = grpo.grpo_loss(f32(logp), f32(old), None, f32(ADV), f32(MASK))
    want, _ = np_loss(logp, old, None, ADV, MASK)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert float(m["kl"]) == 0.0
    with pytest.raises(ValueError, match="ref_logp"):
        grpo.grpo_loss(f32(logp), f32(old), None, f32(ADV), f32(MASK), kl_coef=0.1)
    with pytest.raises(ValueError, match="dual_clip_c"):
        grpo.grpo_loss(f32(logp), f32(old), None, f32(ADV), f32(MASK), dual_clip_c=0.5)
    with pytest.raises(ValueError, match="loss_agg"):
        grpo.grpo_loss(f32(logp), f32(old), None, f32(ADV), f32(MASK), loss_agg="sum")


def test_empty_rows_and_max_len_and_entropy_and_jit():
    logp, old, ref = make_data("token")
    pad = lambda x, v: np.concatenate([x, np.full((2, x.shape[1]), v)])  # noqa: E731
    mask2 = pad(MASK, 0.0)
    adv2 = np.concatenate([ADV, [5.0, -5.0]])
    args = lambda m, a: (pad(logp, 3.0), pad(old, -2.0), pad(ref, 0.0), a, m)  # noqa: E731
    for agg in ("seq-mean-token-mean", "token-mean"):
        base, _ = grpo.grpo_loss(logp, old, ref, ADV, MASK, kl_coef=0.1, loss_agg=agg)
        padded, _ = grpo.grpo_loss(*args(mask2, adv2), kl_coef=0.1, loss_agg=agg)
        np.testing.assert_allclose(float(padded), float(base), rtol=1e-6)
    l1, _ = grpo.grpo_loss(logp, old, ref, ADV, MASK, loss_agg="seq-mean-token-sum-norm", max_len=32)
    want, _ = np_loss(logp, old, ref, ADV, MASK, loss_agg="seq-mean-token-sum-norm", max_len=32)
    np.testing.assert_allclose(float(l1), want, rtol=1e-5)

    ent = np.random.default_rng(1).uniform(0, 3, size=MASK.shape)
    jitted = jax.jit(lambda a, b, c, d, e, f: grpo.grpo_loss(a, b, c, d, e, entropy=f, kl_coef=0.05,
                                                             clip_eps_high=0.28, dual_clip_c=3.0))
    loss, m = jitted(logp, old, ref, ADV, MASK, ent)
    want, _ = np_loss(logp, old, ref, ADV, MASK, kl_coef=0.05, clip_eps_high=0.28, dual_clip_c=3.0)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(m["entropy"]), (ent * MASK).sum() / MASK.sum(), rtol=1e-5)
    assert float(m["loss"]) == pytest.approx(float(loss))
    assert all(np.isfinite(float(v)) for v in m.values())


# --------------------------------------------------------------------------------------------
# advantages
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages(scale):
    rng = np.random.default_rng(3)
    G = 4
    rewards = np.concatenate([
        rng.normal(size=G),
        [0.1, 0.1, 0.1, 0.1],         # equal -> exactly 0 (r - mean is not exactly 0 in floats)
        [1.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0, 0.0],
        rng.uniform(size=G),
    ])
    want = np_group_adv(rewards, G, scale)
    got = np.asarray(grpo.group_advantages(jnp.asarray(rewards, jnp.float32), G, scale=scale))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert np.all(got[G:2 * G] == 0) and np.all(got[3 * G:4 * G] == 0)
    jitted = jax.jit(grpo.group_advantages, static_argnames=("group_size", "scale"))
    np.testing.assert_allclose(np.asarray(jitted(rewards.astype(np.float32), group_size=G, scale=scale)),
                               want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def np_group_adv_valid(rewards, valid, G, scale, eps=1e-4):
    """Reference with invalid samples: they are dropped before the statistics, advantage 0."""
    r, v = np.asarray(rewards, np.float64), np.asarray(valid, bool)
    out = np.zeros_like(r)
    kept = r[v]
    batch_std = np.std(kept, ddof=1) if len(kept) > 1 else 0.0
    for k in range(len(r) // G):
        idx = [i for i in range(k * G, (k + 1) * G) if v[i]]
        grp = r[idx]
        if len(grp) < 2 or np.all(grp == grp[0]):
            continue
        a = grp - grp.mean()
        if scale == "group":
            a = a / (np.std(grp, ddof=1) + eps)
        elif scale == "batch":
            a = a / (batch_std + eps)
        out[idx] = a
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_leave_out_invalid_samples(scale):
    """A sample whose reward does not exist (gold answer unparsable) shifts no sibling's advantage."""
    rng = np.random.default_rng(5)
    G = 4
    rewards = np.concatenate([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0], rng.normal(size=G), [1.0, 1.0, 0.0, 0.0],
                              [0.5, 0.2, 0.9, 0.1]])
    valid = np.array([1, 1, 1, 0,  1, 1, 1, 1,  1, 0, 1, 1,  0, 0, 0, 1,  1, 1, 0, 0], bool)
    rewards_garbage = np.where(valid, rewards, 1e6)  # what an invalid sample holds must not matter
    got = np.asarray(grpo.group_advantages(jnp.asarray(rewards_garbage, jnp.float32), G, scale=scale,
                                           valid=jnp.asarray(valid)))
    want = np_group_adv_valid(rewards, valid, G, scale)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    assert np.all(got[~valid] == 0) and np.all(got[12:16] == 0)  # a group with one valid member: 0
    # group 0 without its invalid 4th member: (1, 0, 0) -> not the (1, 0, 0, 0) advantages
    assert not np.allclose(got[:3], np_group_adv(rewards[:4], 4, scale)[:3])
    # all valid: the same as without the mask
    np.testing.assert_array_equal(np.asarray(grpo.group_advantages(jnp.asarray(rewards, jnp.float32), G, scale=scale,
                                                                   valid=jnp.ones(len(rewards), bool))),
                                  np.asarray(grpo.group_advantages(jnp.asarray(rewards, jnp.float32), G, scale=scale)))


def test_aggregation_weight_is_what_each_mode_divides_by():
    mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], np.float32)
    assert float(grpo.aggregation_weight(mask, "token-mean")) == 6
    assert float(grpo.aggregation_weight(mask, "seq-mean-token-mean")) == 2
    assert float(grpo.aggregation_weight(mask, "seq-mean-token-sum-norm")) == 3


def test_group_advantages_errors_and_singletons():
    with pytest.raises(ValueError, match="divide"):
        grpo.group_advantages(jnp.ones(6), 4)
    with pytest.raises(ValueError, match="scale"):
        grpo.group_advantages(jnp.ones(4), 2, scale="rank")
    np.testing.assert_array_equal(np.asarray(grpo.group_advantages(jnp.arange(3.0), 1)), 0.0)


# --------------------------------------------------------------------------------------------
# log-probs, entropy
# --------------------------------------------------------------------------------------------


def test_token_logprobs_and_entropy():
    rng = np.random.default_rng(4)
    logits = rng.normal(scale=3.0, size=(2, 5, 11))
    tokens = rng.integers(0, 11, size=(2, 5))
    m = logits.max(-1, keepdims=True)
    logsm = logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))
    want_lp = np.take_along_axis(logsm, tokens[..., None], -1)[..., 0]
    want_h = -(np.exp(logsm) * logsm).sum(-1)
    for dt in (jnp.float32, jnp.bfloat16):
        x = jnp.asarray(logits, dt)
        xs = np.asarray(x.astype(jnp.float32), np.float64)  # what the function actually sees
        ms = xs.max(-1, keepdims=True)
        ls = xs - (ms + np.log(np.exp(xs - ms).sum(-1, keepdims=True)))
        lp = token_logprobs_reference(x, tokens)
        h = token_entropy_reference(x)
        assert lp.dtype == jnp.float32 and h.dtype == jnp.float32 and lp.shape == (2, 5)
        np.testing.assert_allclose(np.asarray(lp), np.take_along_axis(ls, tokens[..., None], -1)[..., 0],
                                   rtol=1e-5, atol=1e-6 * np.abs(logits).max())
        np.testing.assert_allclose(np.asarray(h), -(np.exp(ls) * ls).sum(-1), rtol=1e-5, atol=1e-6 * np.abs(logits).max())
    np.testing.assert_allclose(np.asarray(token_logprobs_reference(jnp.asarray(logits, jnp.float32), tokens)),
                               want_lp, rtol=1e-5, atol=1e-6 * np.abs(logits).max())
    np.testing.assert_allclose(np.asarray(token_entropy_reference(jnp.asarray(logits, jnp.float32))),
                               want_h, rtol=1e-5, atol=1e-6 * np.abs(logits).max())


# --------------------------------------------------------------------------------------------
# registry / custom losses from experiment configs
# --------------------------------------------------------------------------------------------


def test_registry_and_custom_loss(tmp_path, monkeypatch):
    assert grpo.get_loss_fn("grpo") is grpo.grpo_loss
    assert grpo.get_loss_fn(grpo.grpo_loss) is grpo.grpo_loss

    @grpo.register_loss("test_reinforce")
    def reinforce(logp, old_logp, ref_logp, advantages, mask, **kwargs):
        loss = -jnp.sum(logp * advantages[:, None] * mask) / jnp.sum(mask)
        return loss, {"loss": loss}

    try:
        assert grpo.get_loss_fn("test_reinforce") is reinforce
        with pytest.raises(ValueError, match="already registered"):
            grpo.register_loss("test_reinforce")(lambda *a, **k: None)
    finally:
        grpo.LOSS_FNS.pop("test_reinforce")

    # a module on sys.path, named "module:function"
    (tmp_path / "my_losses_mod.py").write_text(textwrap.dedent("""
        import jax.numpy as jnp
        def half_grpo(logp, old_logp, ref_logp, advantages, mask, **kw):
            from r1jax.rl.grpo import grpo_loss
            loss, m = grpo_loss(logp, old_logp, ref_logp, advantages, mask, **kw)
            return 0.5 * loss, m
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = grpo.get_loss_fn("my_losses_mod:half_grpo")
    logp, old, ref = make_data("token")
    full, _ = grpo.grpo_loss(logp, old, ref, ADV, MASK, kl_coef=0.1)
    half, _ = fn(logp, old, ref, ADV, MASK, kl_coef=0.1)
    np.testing.assert_allclose(float(half), 0.5 * float(full), rtol=1e-6)

    # an experiment config file naming a loss defined in a .py file beside it
    exp = tmp_path / "experiments"
    exp.mkdir()
    (exp / "my_loss.py").write_text(textwrap.dedent("""
        import jax.numpy as jnp
        def neg_logp(logp, old_logp, ref_logp, advantages, mask, **kw):
            loss = -jnp.sum(logp * mask) / jnp.sum(mask)
            return loss, {"loss": loss}
    """))
    (exp / "my_exp.py").write_text(textwrap.dedent(f"""
        import ml_collections
        def get_config():
            c = ml_collections.ConfigDict()
            c.loss = {str(exp / 'my_loss.py') + ':neg_logp'!r}
            return c
    """))
    import importlib.util
    spec = importlib.util.spec_from_file_location("my_exp_cfg", exp / "my_exp.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fn = grpo.get_loss_fn(mod.get_config().loss)
    loss, _ = fn(logp, old, ref, ADV, MASK)
    np.testing.assert_allclose(float(loss), -(logp * MASK).sum() / MASK.sum(), rtol=1e-5)

    with pytest.raises(ValueError, match="unknown loss"):
        grpo.get_loss_fn("no_such_loss")
    with pytest.raises(ValueError, match="cannot import"):
        grpo.get_loss_fn("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="no callable"):
        grpo.get_loss_fn("my_losses_mod:nope")
    sys.modules.pop("my_losses_mod", None)
