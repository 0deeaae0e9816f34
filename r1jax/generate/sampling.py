"""Sampling as one pure function: temperature, top-k, top-p (nucleus); greedy at temperature 0.

`sample(logits, rng, temperature, top_p, top_k) -> (tokens [b], logprobs [b])`.
The returned log-prob is the token's log-probability under the temperature-scaled, *untruncated*
distribution, log_softmax(logits / T) — exactly what the trainer's forward pass computes for the
same token at the same temperature, so GRPO's importance ratios start at 1. (Top-p/top-k only
restrict which tokens may be drawn.) At T = 0 it is log_softmax(logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30


def filter_logits(logits: jnp.ndarray, top_p: float = 1.0, top_k: int = 0) -> jnp.ndarray:
    """logits [b, V] -> logits with tokens outside top-k / the top-p nucleus set to -inf.

    top-p keeps the smallest set of most likely tokens whose probability mass reaches top_p (the
    token that crosses the threshold is kept). top_k = 0 and top_p = 1 disable each filter.
    """
    v = logits.shape[-1]
    if top_k and 0 < top_k < v:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = mass_before < top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, NEG_INF)
    return logits


def sample(logits: jnp.ndarray, rng, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0):
    """logits [b, V] (any float dtype) -> (tokens [b] int32, logprobs [b] float32)."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        lp = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = logits / temperature
        lp = jax.nn.log_softmax(scaled, axis=-1)
        tok = jax.random.categorical(rng, filter_logits(scaled, top_p, top_k), axis=-1).astype(jnp.int32)
    return tok, jnp.take_along_axis(lp, tok[:, None], axis=-1)[:, 0]
