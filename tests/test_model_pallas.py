"""The model with attention_impl="pallas" (interpret mode on CPU) equals the plain-JAX path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib
from r1jax.model import Transformer, init_params

from numerics import assert_close, first_disagreement

jax.config.update("jax_default_matmul_precision", "highest")


def _setup():
    ref_cfg = config_lib.tiny_moe(num_hidden_layers=2, num_nextn_predict_layers=0)
    pal_cfg = config_lib.tiny_moe(num_hidden_layers=2, num_nextn_predict_layers=0, attention_impl="pallas")
    params = init_params(ref_cfg, jax.random.PRNGKey(4))
    ids = jnp.asarray(np.random.RandomState(0).randint(0, 97, (2, 20)))
    seg = jnp.asarray([[1] * 20, [1] * 7 + [2] * 13])
    return Transformer(ref_cfg), Transformer(pal_cfg), params, ids, seg


def test_pallas_logits_match():
    ref_m, pal_m, params, ids, seg = _setup()
    for kw in ({}, {"segment_ids": seg}):
        a = ref_m.apply({"params": params}, ids, **kw)
        b = pal_m.apply({"params": params}, ids, **kw)
        assert_close(b, a, rtol=1e-5, err_msg=str(list(kw)))


@pytest.mark.slow
def test_pallas_grads_and_greedy_tokens_match():
    ref_m, pal_m, params, ids, seg = _setup()

    def loss(m):
        return lambda p: (m.apply({"params": p}, ids, segment_ids=seg) ** 2).mean()

    ga, gb = jax.grad(loss(ref_m))(params), jax.grad(loss(pal_m))(params)
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(ga)[0], jax.tree.leaves(gb)):
        assert_close(y, x, rtol=5e-5, err_msg=jax.tree_util.keystr(path))  # ~5e-7 seen
    prompts = [[3, 4, 5, 6, 7], [8, 9, 10]]
    out_ref = r1jax.generate(ref_m, params, prompts, max_new_tokens=6, temperature=0.0)
    out_pal = r1jax.generate(pal_m, params, prompts, max_new_tokens=6, temperature=0.0)
    # equal greedy tokens, except at a near-tie of the reference's logits (see first_disagreement)
    for i, (p, got, want) in enumerate(zip(prompts, out_pal.tokens, out_ref.tokens)):
        logits = np.asarray(ref_m.apply({"params": params}, jnp.asarray([p + want])))[0, len(p) - 1:-1]
        first_disagreement(got, want, logits, rtol=1e-5, err_msg=f"prompt {i}")


def test_gqa_pallas_matches_xla_with_packed_segments():
    """The dense GQA path with attention_impl="pallas" (the flash kernel, interpreted on CPU) against
    the XLA path: logits and parameter gradients of packed rows (two segments, positions restarting)."""
    cfg = config_lib.tiny_qwen2()
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = jax.random.randint(jax.random.PRNGKey(1), (2, 64), 1, cfg.vocab_size)
    seg = jnp.array([[1] * 30 + [2] * 34, [1] * 64])
    pos = jnp.stack([jnp.concatenate([jnp.arange(30), jnp.arange(34)]), jnp.arange(64)])

    def loss(p, impl):
        out = Transformer(config_lib.tiny_qwen2(attention_impl=impl)).apply({"params": p}, ids, pos, seg)
        return (out ** 2).mean(), out

    (la, oa), ga = jax.value_and_grad(loss, has_aux=True)(params, "xla")
    (lb, ob), gb = jax.value_and_grad(loss, has_aux=True)(params, "pallas")
    np.testing.assert_allclose(ob, oa, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6), ga, gb)
