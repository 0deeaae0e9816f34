"""The LM head's matmul with a backward laid out for XLA:CPU (r1jax.model.layers.head_logits asks
r1jax.backends.lm_head_matmul for it on CPU). x: [tokens, hidden], kernel: [hidden, vocab] -> logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def head_matmul_cpu(x, kernel):
    """`head_matmul_reference` on 2-D x [tokens, hidden], with a backward laid out for XLA:CPU.

    Autodiff gives the kernel gradient as dot(x, g) contracting the token axis (dim 0) of both:
    XLA:CPU's YNNPACK dots do not take that form, so it falls back to an Eigen dot after a full
    [vocab, tokens] transpose copy of g. Computing it as (g^T x)^T, i.e. einsum("tv,td->vd")
    and one [vocab, hidden] transpose, is ~10% faster for a 32k vocabulary (same products and
    sums, f32 rounding aside). Only used on CPU (see `LMHead`); other backends pick their own
    layouts for the plain matmul.
    """
    return x @ kernel


def _head_fwd(x, kernel):
    return x @ kernel, (x, kernel)


def _head_bwd(res, g):
    x, kernel = res
    dx = jnp.einsum("tv,dv->td", g, kernel)
    dk = jnp.einsum("tv,td->vd", g, x).T
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


head_matmul_cpu.defvjp(_head_fwd, _head_bwd)


