"""Blockwise O(s)-memory attention (r1jax.model.flash) against the plain reference, in the model,
and its compiled memory at 2k-16k tokens (linear) against the chunked path (quadratic)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config as config_lib
from r1jax.model import Transformer, init_params
from r1jax.model import attention as attention_lib
from r1jax.model.attention import attend, attend_causal, causal_segment_mask
from r1jax.model.flash import flash_attention

from numerics import assert_close

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.mark.parametrize("b,s,h,g,d,dv,block,segments", [
    (2, 37, 4, 2, 16, 8, 16, True),  # GQA, packed segments, s not a multiple of the block
    (1, 64, 2, 1, 8, 8, 16, False),  # MHA, whole-row causal
    (2, 100, 6, 3, 24, 16, 32, True),  # MLA-like: qk 24, v 16
    (1, 20, 2, 2, 8, 8, 512, True),  # one block larger than the sequence
    (1, 41, 2, 1, 8, 8, 16, True),  # blocks sized to the length (a multiple of 8): 3 x 16 rows
])
def test_values_and_gradients_match_the_reference(b, s, h, g, d, dv, block, segments):
    rng = np.random.default_rng(s)
    q = jnp.asarray(rng.standard_normal((b, s, h, d)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((b, s, h // g, d)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, s, h // g, dv)), jnp.float32)
    seg = jnp.asarray(np.sort(rng.integers(1, 4, (b, s)), axis=1), jnp.int32) if segments else None
    scale = d ** -0.5
    w = jnp.asarray(rng.standard_normal((b, s, h, dv)), jnp.float32)

    def flash(q, k, v):
        return flash_attention(q, k, v, seg, scale, num_kv_groups=g, block=block)

    def ref(q, k, v):
        return attend(q, k, v, causal_segment_mask(seg, b, s), scale, num_kv_groups=g)

    assert_close(flash(q, k, v), ref(q, k, v), rtol=1e-5)
    gf = jax.grad(lambda *a: (flash(*a) * w).sum(), argnums=(0, 1, 2))(q, k, v)
    gr = jax.grad(lambda *a: (ref(*a) * w).sum(), argnums=(0, 1, 2))(q, k, v)
    for name, a, r in zip("qkv", gf, gr):
        assert_close(a, r, rtol=1e-5, err_msg=f"d{name}")


def _temp_mib(fn, s, h=8, g=4, d=64):
    q = jax.ShapeDtypeStruct((1, s, h, d), jnp.float32)
    k = jax.ShapeDtypeStruct((1, s, h // g, d), jnp.float32)
    seg = jax.ShapeDtypeStruct((1, s), jnp.int32)
    loss = lambda q, k, v, seg: fn(q, k, v, seg, d ** -0.5, num_kv_groups=g).sum()  # noqa: E731
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, k, seg).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


def test_forward_backward_temporaries_grow_linearly():
    """One layer's attention forward + backward, compiled: each doubling of 2k -> 16k tokens costs
    at most 2.5x the temporaries (measured 53 / 63 / 84 / 124 MiB at h 8, kv 2, d 64), where the
    chunked path grows x3.5 (186 -> 663 MiB at 2k -> 4k)."""
    mib = [_temp_mib(flash_attention, s) for s in (2048, 4096, 8192, 16384)]
    for a, b in zip(mib, mib[1:]):
        assert b <= 2.5 * a, mib
    chunked = [_temp_mib(lambda *a, **k: attend_causal(*a, **k, chunk=128), s) for s in (1024, 1536)]
    assert chunked[1] > 1.8 * chunked[0], chunked  # (1.5x the length: quadratic, ~2.25x)


def test_attend_causal_switches_to_blockwise_at_flash_min_len(monkeypatch):
    """The model's training attention (dense GQA and MLA) takes the blockwise path from
    FLASH_MIN_LEN on: same logits and parameter gradients as the chunked path."""
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 97, (2, 40)))
    seg = jnp.asarray(np.repeat([[1] * 15 + [2] * 25], 2, 0))
    for cfg in (config_lib.tiny_qwen2(), config_lib.tiny_moe()):
        params = init_params(cfg, jax.random.PRNGKey(1))

        def loss(p):
            logits = Transformer(cfg).apply({"params": p}, ids, segment_ids=seg)
            return jnp.mean(jax.nn.log_softmax(logits.astype(jnp.float32))[..., 3])

        monkeypatch.setattr(attention_lib, "FLASH_MIN_LEN", 10**9)  # read when traced: one jit per setting
        l_ref, g_ref = jax.jit(jax.value_and_grad(loss))(params)
        monkeypatch.setattr(attention_lib, "FLASH_MIN_LEN", 8)
        l_fl, g_fl = jax.jit(jax.value_and_grad(loss))(params)
        assert_close(l_fl, l_ref, rtol=1e-5)
        jax.tree_util.tree_map(lambda a, b: assert_close(a, b, rtol=1e-5), g_fl, g_ref)
