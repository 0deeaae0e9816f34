"""MLA Pallas kernels (interpret mode on CPU) vs the plain-JAX references.

Both kernel variants are exercised: backend="tpu" (one full-width feature block, head-major
layout, 128-multiple key blocks) and backend="gpu" (power-of-two column parts, [b, s, h, d]
layout, small power-of-two blocks), each in the Pallas interpreter.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import (
    absorb_q,
    mla_decode,
    mla_decode_expanded_reference,
    mla_decode_reference,
    mla_prefill,
    mla_prefill_blockwise_reference,
    mla_prefill_reference,
    unabsorb_o,
)
from pallas_kernels import _backend

from numerics import assert_close

# of the largest reference value (numerics.assert_close): float32 noise of another block order is
# <= 5e-7 of it for outputs and <= 1e-6 for gradients (their ds = p * (dp - delta) cancels) here
RTOL, GRAD_RTOL = 1e-5, 5e-5
BLOCKS = {"tpu": dict(block_q=8, block_k=128), "gpu": dict(block_q=16, block_k=8)}


@pytest.fixture(autouse=True)
def _highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def _normal(rng, shape, dtype=jnp.float32, scale=1.0):
    return jnp.asarray(rng.standard_normal(shape) * scale, dtype)


def _check_prefill(q, k, v, do, *, sm_scale, segment_ids, causal, backend, **kw):
    blocks = BLOCKS[backend] if backend else {}
    f = lambda q, k, v: mla_prefill(q, k, v, sm_scale=sm_scale, segment_ids=segment_ids,
                                    causal=causal, interpret=True, backend=backend,
                                    **{**blocks, **kw})
    fr = lambda q, k, v: mla_prefill_reference(q, k, v, sm_scale=sm_scale,
                                               segment_ids=segment_ids, causal=causal)
    o, vjp = jax.vjp(f, q, k, v)
    o_ref, vjp_ref = jax.vjp(fr, q, k, v)
    assert o.shape == o_ref.shape and o.dtype == q.dtype
    assert_close(o, o_ref, RTOL, err_msg="o")
    for name, g, g_ref in zip(("dq", "dk", "dv"), vjp(do), vjp_ref(do)):
        assert_close(g, g_ref, GRAD_RTOL, err_msg=name)


# ------------------------------------------------------------------------------- prefill
@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_prefill_ragged_lengths_padding_segment(backend):
    """Right-padded batch: the padding is its own segment; seq 37 is no block multiple."""
    rng = np.random.default_rng(0)
    b, s, h, dqk, dv = 2, 37, 2, 24, 16
    q, k = _normal(rng, (b, s, h, dqk)), _normal(rng, (b, s, h, dqk))
    v, do = _normal(rng, (b, s, h, dv)), _normal(rng, (b, s, h, dv))
    lengths = np.array([37, 23])
    seg = jnp.asarray((np.arange(s)[None] >= lengths[:, None]).astype(np.int32))
    _check_prefill(q, k, v, do, sm_scale=0.3, segment_ids=seg, causal=True, backend=backend)


@pytest.mark.parametrize("backend", [pytest.param("tpu", marks=pytest.mark.slow), "gpu"])
def test_prefill_packed_segments(backend):
    rng = np.random.default_rng(1)
    b, s, h, dqk, dv = 1, 40, 2, 24, 16
    q, k = _normal(rng, (b, s, h, dqk)), _normal(rng, (b, s, h, dqk))
    v, do = _normal(rng, (b, s, h, dv)), _normal(rng, (b, s, h, dv))
    seg = jnp.asarray([[0] * 13 + [1] * 20 + [2] * 7], jnp.int32)
    _check_prefill(q, k, v, do, sm_scale=0.25, segment_ids=seg, causal=True, backend=backend)


@pytest.mark.parametrize("backend,causal", [("gpu", False)])
def test_prefill_no_segments_odd_length(backend, causal):
    rng = np.random.default_rng(2)
    b, s, h, dqk, dv = 2, 29, 1, 24, 16
    q, k = _normal(rng, (b, s, h, dqk)), _normal(rng, (b, s, h, dqk))
    v, do = _normal(rng, (b, s, h, dv)), _normal(rng, (b, s, h, dv))
    _check_prefill(q, k, v, do, sm_scale=0.2, segment_ids=None, causal=causal, backend=backend)


def test_prefill_noncausal_segments_tpu_variant():
    """Non-causal packed attention (tpu variant: block_q 8 != block_k 128)."""
    rng = np.random.default_rng(3)
    b, s, h, dqk, dv = 1, 33, 2, 24, 16
    q, k = _normal(rng, (b, s, h, dqk)), _normal(rng, (b, s, h, dqk))
    v, do = _normal(rng, (b, s, h, dv)), _normal(rng, (b, s, h, dv))
    seg = jnp.asarray([[3] * 10 + [5] * 23], jnp.int32)
    _check_prefill(q, k, v, do, sm_scale=0.2, segment_ids=seg, causal=False, backend="tpu")


def test_prefill_default_dispatch_under_jit():
    """interpret=None under jit: lax.platform_dependent picks the CPU (interpreter) branch."""
    rng = np.random.default_rng(4)
    b, s, h, dqk, dv = 1, 16, 2, 24, 16
    q, k, v = (_normal(rng, (b, s, h, d)) for d in (dqk, dqk, dv))
    o = jax.jit(lambda q, k, v: mla_prefill(q, k, v, sm_scale=0.3))(q, k, v)
    assert_close(o, mla_prefill_reference(q, k, v, sm_scale=0.3), RTOL)


def test_prefill_bf16_close_to_fp32_reference():
    rng = np.random.default_rng(5)
    b, s, h, dqk, dv = 1, 24, 2, 24, 16
    q, k, v = (_normal(rng, (b, s, h, d)) for d in (dqk, dqk, dv))
    o = mla_prefill(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16),
                    sm_scale=0.3, interpret=True, backend="gpu", block_q=16, block_k=8)
    assert o.dtype == jnp.bfloat16
    # bf16 inputs and output: rounding of ~2^-8 each, an output ulp (<= 2^-7) may flip (3e-3 seen)
    assert_close(np.asarray(o, np.float32), mla_prefill_reference(q, k, v, sm_scale=0.3), rtol=2e-2)


def test_blockwise_reference_matches_dense_reference():
    rng = np.random.default_rng(6)
    b, s, h, dqk, dv = 2, 21, 2, 12, 8
    q, k, v = (_normal(rng, (b, s, h, d)) for d in (dqk, dqk, dv))
    seg = jnp.asarray(np.repeat([[0] * 9 + [1] * 12], b, 0), jnp.int32)
    for causal in (True, False):
        assert_close(
            mla_prefill_blockwise_reference(q, k, v, sm_scale=0.3, segment_ids=seg,
                                            causal=causal, block_k=8),
            mla_prefill_reference(q, k, v, sm_scale=0.3, segment_ids=seg, causal=causal), RTOL,
            err_msg=f"causal={causal}")


def test_prefill_rejects_bad_shapes():
    q = jnp.zeros((1, 8, 2, 24))
    with pytest.raises(ValueError, match="mla_prefill expects"):
        mla_prefill(q, q[..., :16], q[..., :16], sm_scale=1.0, interpret=True)
    with pytest.raises(ValueError, match="segment_ids"):
        mla_prefill(q, q, q[..., :16], sm_scale=1.0, segment_ids=jnp.zeros((1, 7), jnp.int32))


# ------------------------------------------------------------------------------- decode
def _decode_case(rng, q_len, max_len, heads=4, rank=32, rope=8, nope=16, v_dim=16):
    lengths = jnp.arange(q_len, max_len + 1, dtype=jnp.int32)   # every length q_len..max_len
    b = lengths.shape[0]
    q_nope = _normal(rng, (b, q_len, heads, nope))
    q_rope = _normal(rng, (b, q_len, heads, rope))
    cache = _normal(rng, (b, max_len, rank + rope))
    w_uk = _normal(rng, (rank, heads, nope), scale=0.25)
    w_uv = _normal(rng, (rank, heads, v_dim), scale=0.25)
    return q_nope, q_rope, cache, lengths, w_uk, w_uv


@pytest.mark.parametrize("q_len", [1, 2])
@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_decode_matches_expanded_reference_every_length(backend, q_len):
    rng = np.random.default_rng(10 + q_len)
    max_len, rank, scale = 24, 32, 0.2
    q_nope, q_rope, cache, lengths, w_uk, w_uv = _decode_case(rng, q_len, max_len, rank=rank)
    expanded = mla_decode_expanded_reference(q_nope, q_rope, cache, lengths, w_uk, w_uv,
                                             sm_scale=scale, kv_lora_rank=rank)
    q_lat = absorb_q(q_nope, w_uk)
    latent_ref = mla_decode_reference(q_lat, q_rope, cache, lengths, sm_scale=scale,
                                      kv_lora_rank=rank)
    assert_close(unabsorb_o(latent_ref, w_uv), expanded, RTOL)
    block_k = 8 if backend == "gpu" else 128
    # (the tpu variant's 128-row key blocks leave one block here: splits are tested on gpu)
    # 3 key blocks of 8: 1 split, 2 splits (uneven: cache padded to 2 x 16), 3 splits
    splits = ((1, 2, 3) if q_len == 1 else (2,)) if backend == "gpu" else (1,)
    for num_splits in splits:
        o_lat = mla_decode(q_lat, q_rope, cache, lengths, sm_scale=scale, kv_lora_rank=rank,
                           block_k=block_k, num_splits=num_splits, interpret=True,
                           backend=backend)
        assert o_lat.shape == q_lat.shape and o_lat.dtype == q_lat.dtype
        assert_close(o_lat, latent_ref, RTOL, err_msg=f"splits={num_splits}")
        assert_close(unabsorb_o(o_lat, w_uv), expanded, RTOL, err_msg=f"splits={num_splits}")


def test_decode_odd_cache_length_row_blocks_and_default_dispatch():
    """max_len not a block multiple (cache padded), heads*q_len not a row-block multiple, and the
    interpret=None path under jit."""
    rng = np.random.default_rng(20)
    q_len, max_len, rank = 3, 21, 32
    q_nope, q_rope, cache, lengths, w_uk, w_uv = _decode_case(rng, q_len, max_len, heads=3,
                                                              rank=rank)
    q_lat = absorb_q(q_nope, w_uk)
    ref = mla_decode_reference(q_lat, q_rope, cache, lengths, sm_scale=0.3, kv_lora_rank=rank)
    o = mla_decode(q_lat, q_rope, cache, lengths, sm_scale=0.3, kv_lora_rank=rank, block_k=16,
                   num_splits=2, interpret=True, backend="gpu", block_m=16)
    assert_close(o, ref, RTOL)
    o = jax.jit(lambda *a: mla_decode(*a, sm_scale=0.3, kv_lora_rank=rank))(
        q_lat, q_rope, cache, lengths)
    assert_close(o, ref, RTOL, err_msg="default dispatch")


def test_decode_bf16():
    rng = np.random.default_rng(21)
    q_nope, q_rope, cache, lengths, w_uk, w_uv = _decode_case(rng, 1, 16)
    q_lat = absorb_q(q_nope, w_uk)
    ref = mla_decode_reference(q_lat, q_rope, cache, lengths, sm_scale=0.2, kv_lora_rank=32)
    o = mla_decode(q_lat.astype(jnp.bfloat16), q_rope.astype(jnp.bfloat16),
                   cache.astype(jnp.bfloat16), lengths, sm_scale=0.2, kv_lora_rank=32,
                   block_k=8, num_splits=2, interpret=True, backend="gpu")
    assert o.dtype == jnp.bfloat16
    assert_close(np.asarray(o, np.float32), ref, rtol=2e-2)  # bf16 inputs and output (5e-3 seen)


def test_decode_rejects_bad_shapes():
    q = jnp.zeros((2, 1, 4, 32))
    with pytest.raises(ValueError, match="kv_lora_rank"):
        mla_decode(q, jnp.zeros((2, 1, 4, 8)), jnp.zeros((2, 16, 40)), jnp.ones((2,), jnp.int32),
                   sm_scale=1.0, kv_lora_rank=16)
    with pytest.raises(ValueError, match="cache"):
        mla_decode(q, jnp.zeros((2, 1, 4, 8)), jnp.zeros((2, 16, 41)), jnp.ones((2,), jnp.int32),
                   sm_scale=1.0, kv_lora_rank=32)


# ------------------------------------------------------------------------------- backend helpers
def test_dim_parts_and_block_heuristics():
    assert _backend.dim_parts(192, "gpu") == ((0, 128), (128, 64))
    assert _backend.dim_parts(192, "tpu") == ((0, 192),)
    assert _backend.latent_parts(512, 64, "gpu") == ((0, 512), (512, 64))
    assert _backend.latent_parts(512, 64, "tpu") == ((0, 576),)
    # V3 decode on a GPU: no cache copy (splits divide the 4096/64 blocks), >= 1 wave of programs
    blk = _backend.decode_blocks("gpu", 64, 128, 4096, 512, None, None)
    assert blk.padded_len == 4096 and blk.block_k & (blk.block_k - 1) == 0
    blk = _backend.decode_blocks("gpu", 1, 128, 32768, 512, None, None)
    assert blk.num_splits > 1 and blk.padded_len == 32768
    # user blocks are rounded up to legal sizes (all platform branches get traced)
    blk = _backend.prefill_blocks("gpu", 100, 192, 128, 12, 24)
    assert (blk.block_q, blk.block_k) == (16, 32)
    blk = _backend.prefill_blocks("tpu", 100, 192, 128, 12, 24)
    assert (blk.block_q, blk.block_k) == (16, 128)
    blk = _backend.decode_blocks("tpu", 8, 128, 4096, 512, None, None)
    assert blk.block_k % 128 == 0 and blk.padded_len == 4096


# ------------------------------------------------------------------------------- slow: V3 dims
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_prefill_v3_head_dims(backend):
    rng = np.random.default_rng(30)
    b, s, h, dqk, dv = 1, 200, 2, 192, 128
    q, k = _normal(rng, (b, s, h, dqk), scale=0.3), _normal(rng, (b, s, h, dqk), scale=0.3)
    v, do = _normal(rng, (b, s, h, dv)), _normal(rng, (b, s, h, dv))
    seg = jnp.asarray([[0] * 120 + [1] * 80], jnp.int32)
    blocks = dict(block_q=64, block_k=128) if backend == "tpu" else dict(block_q=64, block_k=32)
    f = lambda q, k, v: mla_prefill(q, k, v, sm_scale=dqk ** -0.5, segment_ids=seg,
                                    interpret=True, backend=backend, **blocks)
    fr = lambda q, k, v: mla_prefill_reference(q, k, v, sm_scale=dqk ** -0.5, segment_ids=seg)
    o, vjp = jax.vjp(f, q, k, v)
    o_ref, vjp_ref = jax.vjp(fr, q, k, v)
    assert_close(o, o_ref, RTOL, err_msg="o")
    for name, g, g_ref in zip(("dq", "dk", "dv"), vjp(do), vjp_ref(do)):
        assert_close(g, g_ref, GRAD_RTOL, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tpu", "gpu"])
def test_decode_v3_latent_dims(backend):
    rng = np.random.default_rng(31)
    q_nope, q_rope, cache, lengths, w_uk, w_uv = _decode_case(
        rng, 2, 256, heads=8, rank=512, rope=64, nope=128, v_dim=128)
    q_nope, q_rope, cache, lengths = q_nope[::37], q_rope[::37], cache[::37], lengths[::37]
    scale = 192 ** -0.5
    expanded = mla_decode_expanded_reference(q_nope, q_rope, cache, lengths, w_uk, w_uv,
                                             sm_scale=scale, kv_lora_rank=512)
    q_lat = absorb_q(q_nope, w_uk)
    o = mla_decode(q_lat, q_rope, cache, lengths, sm_scale=scale, kv_lora_rank=512,
                   num_splits=2, interpret=True, backend=backend)
    assert_close(unabsorb_o(o, w_uv), expanded, rtol=1e-4)
