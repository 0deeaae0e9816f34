"""Chunked log-probs of chosen tokens (r1jax.model.logprobs) against the full-logits reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config as config_lib
from r1jax.model import Transformer, init_params
from r1jax.model.logprobs import (head_kernel, token_entropy_reference, token_logprobs_from_hidden,
                                  token_logprobs_reference)

jax.config.update("jax_default_matmul_precision", "highest")


def _close(a, b, rtol=1e-5):
    """|a - b| <= rtol * max|b| (a tolerance on the scale of the values compared)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1e-30)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


@pytest.mark.parametrize("tied,chunk", [(False, 8), (True, 16), (True, 0)])
def test_chunked_logprobs_equal_full_logits_values_and_gradients(tied, chunk):
    cfg = config_lib.tiny_qwen2(tie_word_embeddings=tied)  # the untied LM head or the embedding
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(1))
    rng = np.random.RandomState(0)
    ids = jnp.asarray(rng.randint(0, cfg.vocab_size, (3, 37)))  # 37: the last block is padded
    targets = jnp.asarray(rng.randint(0, cfg.vocab_size, (3, 37)))
    w = jnp.asarray(rng.randn(3, 37), jnp.float32)
    T = 0.7

    def full(p):
        logits = model.apply({"params": p}, ids)
        lp = token_logprobs_reference(logits, targets, temperature=T)
        return (lp * w).sum(), (lp, token_entropy_reference(logits, temperature=T))

    def chunked(p):
        h = model.apply({"params": p}, ids, output=True, head=False).hidden
        lp, ent = token_logprobs_from_hidden(h, head_kernel(p, cfg), targets, temperature=T, chunk=chunk,
                                             with_entropy=True)
        return (lp * w).sum(), (lp, ent)

    (v_ref, (lp_ref, ent_ref)), g_ref = jax.value_and_grad(full, has_aux=True)(params)
    (v, (lp, ent)), g = jax.value_and_grad(chunked, has_aux=True)(params)
    _close(lp, lp_ref)
    _close(ent, ent_ref)
    assert np.isfinite(np.asarray(lp)).all() and lp.shape == (3, 37)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g)[0], jax.tree.leaves(g_ref)):
        _close(a, b, rtol=1e-4)


def test_chunked_logprobs_never_build_the_full_logits():
    """Compiled gradients' temporaries, beyond those of the model body itself: at least one
    [rows, seq, vocab] f32 array with the full logits, a small fraction of it in blocks."""
    cfg = config_lib.tiny_qwen2(vocab_size=4096, tie_word_embeddings=False)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    b, s = 4, 512
    ids = jnp.zeros((b, s), jnp.int32)
    full_logits_bytes = b * s * cfg.vocab_size * 4

    def body_only(p):  # the same model without any head
        return (model.apply({"params": p}, ids, output=True, head=False).hidden ** 2).sum()

    def loss(p, chunk):
        h = model.apply({"params": p}, ids, output=True, head=False).hidden
        lp, _ = token_logprobs_from_hidden(h, head_kernel(p, cfg), ids, chunk=chunk)
        return lp.sum()

    def temp_bytes(f):
        return jax.jit(jax.grad(f)).lower(params).compile().memory_analysis().temp_size_in_bytes

    base = temp_bytes(body_only)
    whole = temp_bytes(lambda p: loss(p, 0)) - base
    chunked = temp_bytes(lambda p: loss(p, 64)) - base
    assert whole >= full_logits_bytes, (whole, full_logits_bytes)
    assert chunked < full_logits_bytes / 8, (chunked, full_logits_bytes)
