"""Sampling as one pure function: temperature, top-k, top-p (nucleus); greedy at temperature 0.

`sample(logits, rng, temperature, top_p, top_k) -> (tokens [b], logprobs [b])`.
The returned log-prob is the token's log-probability under the temperature-scaled, *untruncated*
distribution, log_softmax(logits / T) — exactly what the trainer's forward pass computes for the
same token at the same temperature, so GRPO's importance ratios start at 1. (Top-p/top-k only
restrict which tokens may be drawn.) At T = 0 it is log_softmax(logits).

`rng` is one key (the rows' uniforms drawn from it together) or one key per row, [b, 2]: the
engines pass per-request keys, `token_keys(request_keys, t)`, so that a request's t-th token
is drawn from (seed, request index, t) whatever batch or slot it runs in.

The draw is an inverse-CDF lookup with one uniform number per row (`categorical_inverse_cdf`),
not a Gumbel-max over the vocabulary: on CPU, generating [batch, 32000] Gumbel noise was ~30 ms
of a ~160 ms decode step of the small MoE, the lookup ~1 ms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.model.layers import NEG_INF


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


def request_keys(seed: int, request_ids) -> jnp.ndarray:
    """[n] request indices -> [n, 2] keys: fold_in(PRNGKey(seed), request index)."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.asarray(request_ids, jnp.uint32))


def token_keys(keys: jnp.ndarray, t) -> jnp.ndarray:
    """keys [b, 2] per request, t: int or [b] token indices -> [b, 2] keys of each request's t-th token."""
    t = jnp.broadcast_to(jnp.asarray(t, jnp.uint32), keys.shape[:1])
    return jax.vmap(jax.random.fold_in)(keys, t)


def _uniforms(rng, b: int) -> jnp.ndarray:
    """[b] U[0, 1): from one key, or one per row from keys [b, 2]."""
    if rng.ndim == 2:
        return jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(rng)
    return jax.random.uniform(rng, (b,), jnp.float32)


def categorical_inverse_cdf(probs: jnp.ndarray, rng, block: int = 128) -> jnp.ndarray:
    """One index per row of probs [b, V] (>= 0, unnormalized; every row needs a positive entry),
    drawn with probability probs / probs.sum(-1) by inverse CDF: u ~ U[0, total) picks the first
    index whose cumulative mass exceeds u, found block by block (cumsum over V / block block sums,
    then within one block: two short scans instead of one over V). Zero-probability entries are
    never returned (float rounding at a boundary falls back to the last positive entry). -> [b] int32."""
    b, v = probs.shape
    pad = (-v) % block
    if pad:
        probs = jnp.pad(probs, ((0, 0), (0, pad)))
    nb = (v + pad) // block
    pb = probs.reshape(b, nb, block)
    s = pb.sum(-1)  # [b, nb]
    cs = jnp.cumsum(s, axis=-1)
    u = _uniforms(rng, b) * cs[:, -1]
    last_block = jnp.max(jnp.where(s > 0, jnp.arange(nb), -1), axis=-1)
    j = jnp.minimum(jnp.sum(cs <= u[:, None], axis=-1), last_block)
    r = u - jnp.take_along_axis(cs - s, j[:, None], axis=1)[:, 0]
    pj = jnp.take_along_axis(pb, j[:, None, None], axis=1)[:, 0]  # [b, block]
    cw = jnp.cumsum(pj, axis=-1)
    last = jnp.max(jnp.where(pj > 0, jnp.arange(block), -1), axis=-1)
    i = jnp.minimum(jnp.sum(cw <= r[:, None], axis=-1), last)
    return (j * block + i).astype(jnp.int32)


def sample(logits: jnp.ndarray, rng, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0):
    """logits [b, V] (any float dtype), rng: a key or [b, 2] keys -> (tokens [b] int32, logprobs [b] float32)."""
    logits = logits.astype(jnp.float32)
    if temperature == 0.0:
        tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        lp = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = logits / temperature
        lp = jax.nn.log_softmax(scaled, axis=-1)
        kept = filter_logits(scaled, top_p, top_k)
        tok = categorical_inverse_cdf(jnp.exp(kept - kept.max(-1, keepdims=True)), rng)
    return tok, jnp.take_along_axis(lp, tok[:, None], axis=-1)[:, 0]
