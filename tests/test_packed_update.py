"""The packed GRPO update (r1jax.rl.packed + train.AccumStep) against the padded one on the same
samples: loss, metrics and parameters after a step equal (f32, relative 1e-5) for every loss
aggregation and GSPO, with gradient accumulation, MoE, and on the fake 8-device mesh; the update
compiles once across steps of changing lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import config as config_lib
from r1jax import train
from r1jax.data.buckets import round_up
from r1jax.model import Transformer, init_params
from r1jax.parallel.placement import Placement
from r1jax.rl import grpo, samples
from r1jax.rl.batch import ROW_MULTIPLE, build_batch
from r1jax.rl.packed import PackSpec, pack_samples, plan_micro_batches
from r1jax.rl.policy import make_policy_loss

AGGS = [("token-mean", "token"), ("seq-mean-token-mean", "token"), ("seq-mean-token-sum-norm", "token"),
        ("seq-mean-token-mean", "sequence")]
# whole steps: two aggregations in the default suite, the other two with -m slow (the loss-level test
# above them covers every aggregation, GSPO and MIS in the default suite)
STEP_AGGS = [AGGS[0], pytest.param(*AGGS[1], marks=pytest.mark.slow), pytest.param(*AGGS[2], marks=pytest.mark.slow),
             AGGS[3]]


def _samples(rng, n, vocab, max_prompt=9, max_new=14):
    prompts = [list(rng.integers(1, vocab, rng.integers(2, max_prompt))) for _ in range(n)]
    comps = [list(rng.integers(1, vocab, rng.integers(1, max_new))) for _ in range(n)]
    logps = [list(-rng.uniform(0.5, 3.0, len(c)).astype(np.float32)) for c in comps]
    adv = rng.normal(size=n).astype(np.float32)
    mask = np.ones(n, bool)
    mask[rng.integers(0, n)] = False  # a sample out of the loss (e.g. its answer does not parse)
    return prompts, comps, logps, adv, mask


# ------------------------------------------------------------------------------ the loss alone


@pytest.mark.parametrize("agg, level", AGGS + [("token-mean", "mis")])
def test_loss_over_sample_index_equals_rows(agg, level):
    """grpo_loss on packed rows (sample_index) = on one row per sample: value and d loss / d logp."""
    rng = np.random.default_rng(0)
    n, L = 6, 12
    lens = rng.integers(2, L, n)
    lp = rng.normal(size=(n, L)).astype(np.float32) * 0.3 - 1.0
    old = lp + rng.normal(size=(n, L)).astype(np.float32) * 0.1
    ref = lp + rng.normal(size=(n, L)).astype(np.float32) * 0.1
    smp = old + rng.normal(size=(n, L)).astype(np.float32) * 0.2
    m = (np.arange(L)[None] < lens[:, None]).astype(np.float32)
    m[2] = 0.0
    adv = rng.normal(size=n).astype(np.float32)
    kw = dict(loss_agg=agg, ratio_level="sequence" if level == "sequence" else "token", kl_coef=0.05, max_len=16,
              rollout_correction="mis" if level == "mis" else "none", is_low=0.9, is_high=1.1)
    # packed: samples laid end to end in rows of 26 (tokens outside a mask are any other sample's)
    R, W = 3, 26
    P = {k: np.zeros((R, W), np.float32) for k in ("lp", "old", "ref", "smp", "m")}
    sidx = np.full((R, W), -1, np.int32)
    row, off = 0, 0
    for i in range(n):
        if off + L > W:
            row, off = row + 1, 0
        for k, a in (("lp", lp), ("old", old), ("ref", ref), ("smp", smp), ("m", m)):
            P[k][row, off:off + L] = a[i]
        sidx[row, off:off + L] = 5 - i  # any slot order
        off += L
    sadv = np.zeros(8, np.float32)
    sadv[5 - np.arange(n)] = adv

    def f_pad(x):
        return grpo.grpo_loss(x, old, ref, adv, m, sampler_logp=smp, **kw)

    def f_pack(x):
        return grpo.grpo_loss(x, P["old"], P["ref"], sadv, P["m"], sampler_logp=P["smp"], sample_index=sidx, **kw)

    (a, ma), ga = jax.value_and_grad(f_pad, has_aux=True)(jnp.asarray(lp))
    (b, mb), gb = jax.value_and_grad(f_pack, has_aux=True)(jnp.asarray(P["lp"]))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    for k in ma:
        np.testing.assert_allclose(mb[k], ma[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the gradient at each sample's tokens, read back through the packing
    gb = np.asarray(gb)
    for i in range(n):
        r, c = np.argwhere(sidx == 5 - i)[0]
        np.testing.assert_allclose(gb[r, c:c + L], np.asarray(ga)[i], rtol=1e-5, atol=1e-8)
    w = grpo.aggregation_weight(m, agg)
    np.testing.assert_allclose(grpo.aggregation_weight(P["m"], agg, sidx, 8), w)


# ------------------------------------------------------------------------------ whole steps


def _both_steps(cfg, agg, level, *, mesh="", grad_accum=2, rows_per_rank=2, n=16, seed=0, padded=True):
    """(padded metrics, params), (packed metrics, params) after one step from the same state."""
    rng = np.random.default_rng(seed)
    prompts, comps, logps, adv, smask = _samples(rng, n, cfg.vocab_size)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(seed))
    lk = dict(clip_eps=0.2, clip_eps_high=0.28, loss_agg=agg, ratio_level=level, max_len=16)
    loss_fn = make_policy_loss(grpo.grpo_loss, 1.0, lk)
    place = Placement(mesh)
    tx = optax.sgd(0.5)
    # the old policy differs from the sampler's log-probs: ratios away from 1, clipping active
    seq_len = round_up(max(len(p) + len(c) for p, c in zip(prompts, comps)), ROW_MULTIPLE)
    host = build_batch(prompts, comps, logps, adv, smask, 0, seq_len)
    if padded:
        s0 = place.train_state(cfg, jax.tree.map(jnp.copy, params), tx)  # (the step donates its state)
        step = place.train_step(model, loss_fn, tx, grad_accum=grad_accum, router_bias_update_rate=1e-2)
        s_pad, m_pad = step(s0, place.batch(host))
    s1 = place.train_state(cfg, jax.tree.map(jnp.copy, params), tx)
    ranks = place.batch_multiple
    spec = PackSpec(pack_len=32, rows_per_rank=rows_per_rank, ranks=ranks, sample_capacity=n)
    mbs, st = pack_samples(spec, prompts, comps, logps, adv, smask, 0)
    acc = place.accum_step(model, loss_fn, tx, router_bias_update_rate=1e-2)
    s_pack, m_pack = acc(s1, [place.batch(mb) for mb in mbs])
    pad = (jax.device_get(m_pad), jax.device_get(s_pad.params)) if padded else None
    return pad, (jax.device_get(m_pack), jax.device_get(s_pack.params)), st


def _assert_same(pad, pack):
    (mp, pp), (mk, pk) = pad, pack
    # (token-mean metrics such as clip_frac_low are combined with the loss's weights, so they depend on
    # how tokens fall into micro-batches unless the loss is itself a token mean; the loss does not)
    for k in ("loss", "pg_loss", "grad_norm"):
        np.testing.assert_allclose(mk[k], mp[k], rtol=1e-5, atol=1e-7, err_msg=k)
    moved = jax.tree.map(lambda a: float(np.abs(a).max()), jax.tree.map(np.subtract, pp, pk))
    scale = jax.tree.map(lambda a: float(np.abs(a).max()) + 1e-6, pp)
    rel = max(jax.tree.leaves(jax.tree.map(lambda d, s: d / s, moved, scale)))
    assert rel < 1e-5, rel


@pytest.mark.parametrize("agg, level", STEP_AGGS)
def test_packed_step_equals_padded(agg, level):
    cfg = config_lib.tiny_qwen2()
    pad, pack, st = _both_steps(cfg, agg, level)
    assert st["micro_batches"] >= 2  # gradient accumulation over packed micro-batches
    assert st["fill"] > 0.6
    _assert_same(pad, pack)


def test_packed_step_equals_padded_moe():
    """MoE: the router-bias update from real tokens only."""
    pad, pack, _ = _both_steps(config_lib.tiny_moe(), "seq-mean-token-mean", "token")
    _assert_same(pad, pack)
    np.testing.assert_allclose(pack[0]["max_load_ratio"], pad[0]["max_load_ratio"], rtol=1e-5)


@pytest.mark.slow
def test_packed_step_equals_padded_dense_mesh():
    """A dense model on the fake 8-device mesh, rows balanced over its 8 batch ranks (the trainer on the
    mesh, packed, is compared with one device in tests/test_trainers_mesh.py in the default suite)."""
    pad, pack, st = _both_steps(config_lib.tiny_qwen2(), "token-mean", "sequence", mesh="data=2,fsdp=4",
                                rows_per_rank=1, n=32)
    _assert_same(pad, pack)


@pytest.mark.slow
def test_packed_step_equals_padded_moe_expert_parallel():
    """MoE under expert parallelism on the fake 8-device mesh: the EP dispatch sends real tokens only
    (dropless capacity, so the padded rows' extra slots cannot change a drop)."""
    cfg = config_lib.tiny_moe(moe_impl="ep", capacity_factor=0.0)
    pad, pack, _ = _both_steps(cfg, "seq-mean-token-mean", "token", mesh="fsdp=2,expert=4", rows_per_rank=1, n=32)
    _assert_same(pad, pack)
    np.testing.assert_allclose(pack[0]["max_load_ratio"], pad[0]["max_load_ratio"], rtol=1e-5)


def test_pallas_attention_on_the_mesh_per_shard():
    """attention_impl="pallas" under a mesh runs the kernel per shard (shard_map; GSPMD cannot split a
    pallas_call): the packed step on data=2,fsdp=2,tensor=2 equals the XLA attention's."""
    steps = [_both_steps(config_lib.tiny_qwen2(attention_impl=impl), "token-mean", "token",
                         mesh="data=2,fsdp=2,tensor=2", rows_per_rank=1, n=16, padded=False)
             for impl in ("xla", "pallas")]
    _assert_same(steps[0][1], steps[1][1])


def test_plan_balances_ranks_and_fits_rows():
    rng = np.random.default_rng(1)
    lengths = np.clip(rng.lognormal(np.log(96), 1.0, 512).astype(int) + 20, 2, 1024)
    spec = PackSpec(pack_len=1024, rows_per_rank=4, ranks=8, sample_capacity=512)
    plan = plan_micro_batches(lengths, spec)
    seen = sorted(i for mb in plan for cell in mb for row in cell for i in row)
    assert seen == list(range(len(lengths)))
    for mb in plan:
        assert all(len(cell) <= 4 for cell in mb)
        assert all(lengths[row].sum() <= 1024 for cell in mb for row in cell)
    tokens = np.array([[sum(lengths[r].sum() for r in cell) for cell in mb] for mb in plan])
    full = tokens[:-1]  # the last micro-batch holds the remainder
    assert (full.max(1) - full.min(1)).max() <= 1024, tokens  # ranks within one row of each other
    n_rows = sum(len(cell) for mb in plan for cell in mb)
    assert len(plan) == -(-n_rows // 32)  # no micro-batch more than the rows need
    with pytest.raises(ValueError, match="pack_len=1024"):
        plan_micro_batches([1025], spec)


def test_update_compiles_once_across_changing_lengths():
    """20 steps whose samples change length and count per micro-batch: one program each for the
    accumulators, the accumulation and the optimizer step."""
    cfg = config_lib.tiny_qwen2()
    model = Transformer(cfg)
    loss_fn = make_policy_loss(grpo.grpo_loss, 1.0, dict(loss_agg="token-mean"))
    tx = optax.sgd(0.1)
    state = train.init_train_state(init_params(cfg, jax.random.PRNGKey(0)), tx)
    acc = train.AccumStep(model, loss_fn, tx)
    spec = PackSpec(pack_len=64, rows_per_rank=2, sample_capacity=16)
    rng = np.random.default_rng(2)
    counts = set()
    for step in range(20):
        prompts, comps, logps, adv, smask = _samples(rng, 16, cfg.vocab_size, max_prompt=12, max_new=8 + 2 * step)
        mbs, st = pack_samples(spec, prompts, comps, logps, adv, smask, 0)
        counts.add(st["micro_batches"])
        state, m = acc(state, [jax.tree.map(jnp.asarray, mb) for mb in mbs])
        assert np.isfinite(float(m["loss"]))
    assert len(counts) >= 2, counts
    assert acc.trace_counts() == {"zeros": 1, "accumulate": 1, "finish": 1}, acc.trace_counts()


def test_samples_helpers():
    idx = jnp.array([[0, 0, 1, -1], [2, 2, 2, -1]])
    np.testing.assert_array_equal(samples.sample_sum(jnp.ones((2, 4)), idx, 4), [2, 1, 3, 0])
    np.testing.assert_array_equal(samples.per_token(jnp.array([1.0, 2.0, 3.0, 4.0]), idx),
                                  [[1, 1, 2, 0], [3, 3, 3, 0]])
    np.testing.assert_array_equal(samples.present(idx, 4), [True, True, True, False])
