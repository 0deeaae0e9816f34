"""Expert parallelism: routed experts under `jax.shard_map` with all-to-all dispatch.

    y, stats = experts_ep(x, idx, w, wg, wu, wd, cfg)
    x: [tokens, d], idx / w: [tokens, k] (expert ids / routing weights),
    wg / wu: [E, d, I], wd: [E, I, d] -> y: [tokens, d],
    stats: {"ep_dropped": assignments dropped for capacity (all devices), "ep_capacity": slots}

The mesh comes from the context (`r1jax.parallel.use_mesh` / `jax.set_mesh`); with no mesh (or
one without an `expert` axis) the experts run locally, dropless. On the mesh:

  tokens   split over the batch axes (data, fsdp, expert); each device routes its own tokens
  experts  split over `expert` (E / X per device); inside an expert, d over `fsdp` (gathered
           here, gradients reduce-scattered) and the hidden I over `tensor` (partial sums psum'd)

  1. every device packs, per global expert e, up to C of its assignments to e into a send
     buffer [E, C, d] (position = rank of the assignment among this device's assignments to
     e, in token order; assignments past C are dropped and counted);
  2. `all_to_all` over `expert`: device j receives [X sources, E/X local experts, C, d];
  3. grouped matmul over the local experts: SwiGLU on [E/X, X*C, d] (r1jax.model.experts);
  4. the return `all_to_all` sends every row back to its source device;
  5. each token sums its k rows weighted by the routing weights (psum over `tensor`).

C = ceil(capacity_factor * tokens_per_device * k / E), at most tokens_per_device (no drops are
possible then, since a token picks an expert once); `capacity_factor <= 0` means that bound
(dropless). XLA:CPU does not implement `ragged_all_to_all` (jax 0.10: "HLO opcode
ragged-all-to-all is not supported by XLA:CPU"), so the fixed-capacity all_to_all is the
dispatch everywhere: the same code is what the tests check on the CPU mesh and what the TPU
AOT compile lowers. The per-expert load for the router-bias update is counted by the MoE
module from the routing (before any drop); `ep_dropped` tells how many of those were dropped.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from r1jax import backends
from r1jax.model.experts import batched_expert_mlp
from r1jax.parallel.rules import BATCH_AXES


def capacity(tokens_per_device: int, k: int, n_experts: int, capacity_factor: float) -> int:
    """Slots per (source device, expert) in the dispatch buffer."""
    n = max(int(tokens_per_device), 1)
    if capacity_factor is None or capacity_factor <= 0:
        return n
    return int(min(n, max(1, math.ceil(capacity_factor * n * k / n_experts))))


def experts_ep(x, idx, w, wg, wu, wd, cfg, *, mesh=None, capacity_factor=None, identity_experts=False,
               valid=None):
    """Routed experts with expert parallelism (see the module docstring). Returns (y, stats).

    `valid` [n] bool (default all): the real tokens. The others (sequence padding) are not sent:
    they take no dispatch capacity from real tokens, count in no `ep_dropped`, and their routed output
    is 0 (padding's hidden states enter no loss; right padding is attended by no real token).

    `identity_experts=True` skips the expert matmuls (rows come back unchanged): the dispatch +
    return all-to-all + combine alone, to measure the dispatch overhead (tools/bench_parallel.py).
    """
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    cf = cfg.capacity_factor if capacity_factor is None else capacity_factor
    n, d = x.shape
    k = idx.shape[1]
    e = wg.shape[0]
    if mesh is None or mesh.empty or "expert" not in mesh.axis_names:
        y = backends.expert_fn(backends.moe_dispatch())(x, idx, w, wg, wu, wd)
        return y, {"ep_dropped": jnp.zeros((), jnp.float32), "ep_capacity": jnp.full((), n, jnp.float32)}

    names = tuple(mesh.axis_names)
    shape = dict(mesh.shape)
    batch_axes = tuple(a for a in BATCH_AXES if a in names)
    n_shards = math.prod(shape[a] for a in batch_axes)
    x_ax = shape["expert"]
    if e % x_ax:
        raise ValueError(f"n_routed_experts={e} is not divisible by the mesh's expert axis ({x_ax})")
    fsdp = "fsdp" if "fsdp" in names and shape["fsdp"] > 1 and d % shape["fsdp"] == 0 else None
    inter = wg.shape[2]
    tensor = "tensor" if "tensor" in names and shape["tensor"] > 1 and inter % shape["tensor"] == 0 else None
    pad = (-n) % n_shards
    valid = jnp.ones((n,), bool) if valid is None else jnp.asarray(valid, bool).reshape(n)
    if pad:
        x = jnp.pad(x, ((0, pad), (0, 0)))
        idx = jnp.pad(idx, ((0, pad), (0, 0)))
        w = jnp.pad(w, ((0, pad), (0, 0)))
        valid = jnp.pad(valid, (0, pad))
    n_loc = (n + pad) // n_shards
    c = capacity(n_loc, k, e, cf)
    e_loc = e // x_ax

    def local(x, idx, w, valid, wg, wu, wd):
        # x: [n_loc, d], idx/w: [n_loc, k], wg/wu: [e_loc, d(/fsdp), I(/tensor)], wd: [e_loc, I(/tensor), d(/fsdp)]
        if fsdp:
            wg = jax.lax.all_gather(wg, fsdp, axis=1, tiled=True)
            wu = jax.lax.all_gather(wu, fsdp, axis=1, tiled=True)
            wd = jax.lax.all_gather(wd, fsdp, axis=2, tiled=True)
        nk = n_loc * k
        ok = jnp.repeat(valid, k)
        flat = jnp.where(ok, idx.reshape(-1), e)  # padding rows -> sentinel expert e
        order = jnp.argsort(flat, stable=True)
        sorted_e = flat[order]
        sizes = jnp.bincount(flat, length=e + 1)
        starts = jnp.cumsum(sizes) - sizes
        pos = jnp.zeros((nk,), jnp.int32).at[order].set((jnp.arange(nk) - starts[sorted_e]).astype(jnp.int32))
        kept = ok & (pos < c)
        dest = jnp.where(kept, flat * c + pos, e * c)  # e * c: out of bounds -> dropped
        tok = jnp.arange(nk) // k
        send = jnp.zeros((e * c, d), x.dtype).at[dest].add(x[tok], mode="drop")
        # dispatch: chunk j (experts of device j) goes to device j; received chunks are source-major
        recv = jax.lax.all_to_all(send, "expert", 0, 0, tiled=True)
        r = recv.reshape(x_ax, e_loc, c, d).transpose(1, 0, 2, 3).reshape(e_loc, x_ax * c, d)
        if identity_experts:
            y = r
        else:
            y = batched_expert_mlp(r, wg, wu, wd)
        y = y.reshape(e_loc, x_ax, c, d).transpose(1, 0, 2, 3).reshape(e * c, d)
        back = jax.lax.all_to_all(y, "expert", 0, 0, tiled=True)  # [e * c, d], row e*c+pos as sent
        rows = back.at[dest].get(mode="fill", fill_value=0)
        out = (rows.astype(jnp.float32).reshape(n_loc, k, d) * w.astype(jnp.float32)[..., None]).sum(1)
        if tensor and not identity_experts:  # partial sums over the I shards
            out = jax.lax.psum(out, tensor)
        dropped = jax.lax.psum(jnp.sum(ok & ~kept).astype(jnp.float32), batch_axes)
        return out.astype(x.dtype), dropped

    tok_spec = P(batch_axes, None)
    w_in = P("expert", fsdp, tensor)
    w_out = P("expert", tensor, fsdp)
    fn = jax.shard_map(
        local, mesh=mesh,
        in_specs=(tok_spec, tok_spec, tok_spec, P(batch_axes), w_in, w_in, w_out),
        out_specs=(tok_spec, P()),
    )
    y, dropped = fn(x, idx, w, valid, wg, wu, wd)
    if pad:
        y = y[:n]
    return y, {"ep_dropped": dropped, "ep_capacity": jnp.full((), c, jnp.float32)}


__all__ = ["experts_ep", "capacity"]
