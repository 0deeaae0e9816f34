"""Routed experts on one device: the SwiGLU expert MLP and the dropless dispatches of identical math.

    y = r1jax.backends.expert_fn(impl)(x, idx, w, wg, wu, wd)
    x: [n, d], idx / w: [n, k] (expert ids / routing weights), wg / wu: [E, d, I], wd: [E, I, d] -> y: [n, d]

  - "ragged": sort assignments by expert, `jax.lax.ragged_dot` (dropless; the fast path on GPU/TPU)
  - "dense": every expert on every token, combined with the routing weights (the test reference)
  - "grouped" / "blocked" / "cpu": the XLA:CPU dispatches, in r1jax.backends.cpu_experts
    ("cpu" is what "ragged" resolves to on CPU: r1jax.backends.moe_dispatch)

The dispatch of a name comes from r1jax.backends.expert_fn (these and the backends' own).

Used by the MoE layer (r1jax.model.moe) and by expert parallelism (r1jax.model.moe_ep, which
runs `batched_expert_mlp` on the rows each device receives and the backend's dispatch when
there is no expert axis). Imports nothing else from r1jax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def swiglu(h_gate, h_up):
    """The expert activation: silu(gate) * up."""
    return jax.nn.silu(h_gate) * h_up


def batched_expert_mlp(xb, wg, wu, wd):
    """SwiGLU MLP of every expert on its own rows: xb: [E, C, d], wg/wu: [E, d, I], wd: [E, I, d] -> [E, C, d]."""
    h = swiglu(jnp.einsum("ecd,edi->eci", xb, wg), jnp.einsum("ecd,edi->eci", xb, wu))
    return jnp.einsum("eci,eid->ecd", h, wd)


def experts_dense(x, idx, w, wg, wu, wd):
    """Reference: all experts on all tokens. x: [n, d], idx/w: [n, k], wg/wu: [E, d, I], wd: [E, I, d]."""
    e = wg.shape[0]
    comb = (jax.nn.one_hot(idx, e, dtype=jnp.float32) * w[..., None]).sum(1)  # [n, E]
    g = jnp.einsum("nd,edi->eni", x, wg)
    u = jnp.einsum("nd,edi->eni", x, wu)
    y = jnp.einsum("eni,eid->end", swiglu(g, u), wd)
    return jnp.einsum("end,ne->nd", y.astype(jnp.float32), comb).astype(x.dtype)


def _sort_assignments(idx, e):
    n, k = idx.shape
    flat = idx.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    sizes = jnp.bincount(flat, length=e).astype(jnp.int32)
    return flat, order, order // k, sizes


def _sorted_with_ranks(idx, w, e):
    """Assignments sorted by expert -> (tok, w_sorted, sorted_e, rank) [n*k] each, sizes [E]:
    token, routing weight, expert and position within its expert of each sorted assignment."""
    flat, order, tok, sizes = _sort_assignments(idx, e)
    sorted_e = flat[order]
    rank = jnp.arange(flat.shape[0], dtype=jnp.int32) - (jnp.cumsum(sizes) - sizes)[sorted_e]
    return tok, w.reshape(-1)[order], sorted_e, rank, sizes


def experts_ragged(x, idx, w, wg, wu, wd):
    """Dropless grouped matmul with jax.lax.ragged_dot over assignments sorted by expert."""
    n, k = idx.shape
    e = wg.shape[0]
    flat, order, tok, sizes = _sort_assignments(idx, e)
    xs = x[tok]
    h = swiglu(jax.lax.ragged_dot(xs, wg, sizes), jax.lax.ragged_dot(xs, wu, sizes))
    y = jax.lax.ragged_dot(h, wd, sizes)  # [n*k, d]
    wt = w.reshape(-1)[order][:, None]
    out = jnp.zeros((n, x.shape[-1]), jnp.float32).at[tok].add(y.astype(jnp.float32) * wt)
    return out.astype(x.dtype)


GENERIC_EXPERT_FNS = {"dense": experts_dense, "ragged": experts_ragged}
