"""Pallas kernels under a mesh: one kernel call per shard, inside `jax.shard_map`.

XLA's SPMD partitioner cannot split a `pallas_call` (Mosaic refuses: "cannot be automatically
partitioned"), so where the model runs under a mesh (r1jax.parallel.mesh.use_mesh, jax.set_mesh)
the kernels of attention_impl="pallas" run per shard: each array's dims are split as the logical
axis rules place them (batch over the batch axes, heads over tensor; seq and feature dims whole,
as attention needs), a dim that a mesh axis does not divide stays whole. Without a mesh the kernel
is called as it is.

    o = on_shards(kernel, (q, k, v, seg), (("batch", "seq", "heads", "head_dim"), ...,
                  ("batch", "seq")), ("batch", "seq", "heads", "head_dim"))
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P


def _spec(logical, shape, mesh) -> P:
    """The mesh placement of a logical axes tuple (current rules), dims not divisible left whole."""
    spec = nn.logical_to_mesh_axes(logical)
    out = []
    for dim, ax in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = () if ax is None else (ax,) if isinstance(ax, str) else tuple(ax)
        axes = tuple(a for a in axes if a in mesh.axis_names)
        size = math.prod(mesh.shape[a] for a in axes) if axes else 1
        out.append(None if not axes or dim % size else (axes[0] if len(axes) == 1 else axes))
    return P(*out)


def on_shards(fn, args, logical_in, logical_out):
    """fn(*args) per shard of the current mesh (none: fn(*args)). args may hold None (passed as is);
    logical_in: one logical-axes tuple per arg; logical_out: the output's."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not mesh.axis_names:
        return fn(*args)
    present = [i for i, a in enumerate(args) if a is not None]

    def local(*xs):
        full = list(args)
        for i, x in zip(present, xs):
            full[i] = x
        return fn(*full)

    in_specs = tuple(_spec(logical_in[i], args[i].shape, mesh) for i in present)
    out_shape = jax.eval_shape(fn, *args)
    out_specs = _spec(logical_out, out_shape.shape, mesh)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)(
        *[args[i] for i in present])


__all__ = ["on_shards"]
