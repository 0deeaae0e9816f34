"""Log-probabilities (and entropies) of chosen tokens from the final hidden states, a chunk of
positions at a time, so the full [rows, seq, vocab] float32 logits never exist.

A trainer that computes `log_softmax(model(ids))` holds rows x seq x vocab x 4 bytes of logits
(and as much again for their gradient): for 128 rows of 1024 tokens with Qwen2.5's 151,936-token
vocabulary that is ~80 GB. Here the model returns its final-normed hidden states without the
head ([rows, seq, hidden]: `model.apply(..., output=True, head=False).hidden`), and

    logp, entropy = token_logprobs_from_hidden(hidden, head_kernel(params, cfg), targets,
                                               temperature=T, chunk=256, with_entropy=True)

computes, for each block of `chunk` positions, logits = hidden @ W (the same `head_logits` the
model's head uses, in the compute dtype), log p(target) = logit[target] / T - logsumexp(logits / T)
in float32, and the entropy. The blocks run in a `lax.scan` whose body is rematerialized
(`jax.checkpoint`): the backward recomputes one block's logits at a time, so the peak is
rows x chunk x vocab floats (per device: the rows are sharded with the batch). With a single block
(seq <= chunk) it is the plain computation, no scan.

Shapes: hidden [b, s, d] (compute dtype), kernel [d, V], targets [b, s] int -> logp [b, s] float32
(entropy [b, s] float32, no gradient). `token_logprobs_reference` / `token_entropy_reference` are
the same math over the full logits (the tests compare the two, values and gradients).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.model.layers import compute_dtype, head_logits

DEFAULT_CHUNK = 256  # positions per block


def head_kernel(params, cfg) -> jnp.ndarray:
    """The LM head as a [hidden, vocab] matrix in the compute dtype (the tied embedding, transposed,
    when `tie_word_embeddings`)."""
    dt = compute_dtype(cfg)
    if cfg.tie_word_embeddings:
        return params["embed_tokens"]["embedding"].astype(dt).T
    return params["lm_head"]["kernel"].astype(dt)


def _stats(h, kernel, targets, temperature, with_entropy):
    """h [b, c, d], targets [b, c] -> logp [b, c] f32 (and entropy [b, c] f32 or None)."""
    logits = head_logits(h.astype(kernel.dtype), kernel).astype(jnp.float32) / temperature
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    ent = None
    if with_entropy:
        lg = jax.lax.stop_gradient(logits)
        p = jnp.exp(lg - jax.lax.stop_gradient(lse)[..., None])
        ent = jax.lax.stop_gradient(lse) - jnp.sum(p * lg, axis=-1)
    return picked - lse, ent


def token_logprobs_from_hidden(hidden, kernel, targets, *, temperature: float = 1.0, chunk: int = DEFAULT_CHUNK,
                               with_entropy: bool = False):
    """See the module doc. chunk <= 0: one block (the full logits)."""
    b, s, d = hidden.shape
    if chunk <= 0 or s <= chunk:
        return _stats(hidden, kernel, targets, temperature, with_entropy)
    n = -(-s // chunk)
    pad = n * chunk - s
    if pad:
        hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
        targets = jnp.pad(targets, ((0, 0), (0, pad)))
    hs = hidden.reshape(b, n, chunk, d).swapaxes(0, 1)  # [n, b, chunk, d]
    ts = targets.reshape(b, n, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def block(h, t):
        lp, ent = _stats(h, kernel, t, temperature, with_entropy)
        return lp, (ent if with_entropy else jnp.zeros((), jnp.float32))

    def body(carry, xs):
        return carry, block(*xs)

    _, (lp, ent) = jax.lax.scan(body, None, (hs, ts))
    lp = lp.swapaxes(0, 1).reshape(b, n * chunk)[:, :s]
    if not with_entropy:
        return lp, None
    return lp, ent.swapaxes(0, 1).reshape(b, n * chunk)[:, :s]


def token_logprobs_reference(logits, targets, *, temperature: float = 1.0):
    """log softmax(logits / T)[target] over full logits [b, s, V] -> [b, s] float32 (logits[:, t]
    score targets[:, t]: the caller shifts)."""
    lf = jnp.asarray(logits).astype(jnp.float32) / temperature
    picked = jnp.take_along_axis(lf, jnp.asarray(targets)[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(lf, axis=-1)


def token_entropy_reference(logits, *, temperature: float = 1.0):
    """Entropy of softmax(logits / T) over full logits [b, s, V] -> [b, s] float32."""
    lf = jnp.asarray(logits).astype(jnp.float32) / temperature
    lse = jax.nn.logsumexp(lf, axis=-1, keepdims=True)
    return lse[..., 0] - jnp.sum(jnp.exp(lf - lse) * lf, axis=-1)
