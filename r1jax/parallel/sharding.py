"""Shardings of params, optimizer state and batches, from the logical-axis rules.

    mesh = make_mesh(dict(fsdp=2, expert=4))
    p_sh = param_shardings(cfg, mesh)                       # NamedSharding per param
    state, st_sh = init_sharded_state(cfg, tx, mesh, rng)   # created already sharded (jit out_shardings)
    step = make_sharded_train_step(model, lm_loss, tx, mesh, st_sh)
    batch = shard_batch(batch, mesh)                        # per-process data -> global array
    with use_mesh(mesh):
        state, metrics = step(state, batch)

A param dimension whose size is not divisible by its mesh axes is left unsharded on those axes
(e.g. a vocabulary of 97 on tensor=2), so every preset runs on every mesh.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax import train
from r1jax.model import _init_fn, abstract_params
from r1jax.parallel.mesh import use_mesh
from r1jax.parallel.rules import BATCH_AXES, KNOWN_LOGICAL_AXES, LOGICAL_RULES, rules_for


def _axes_size(mesh, axes) -> int:
    if axes is None:
        return 1
    tup = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in tup)


def _fit(spec: P, shape, mesh) -> P:
    """Drops mesh axes from dims they do not divide."""
    out = []
    for i, ax in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
        if ax is not None and shape[i] % _axes_size(mesh, ax):
            tup = (ax,) if isinstance(ax, str) else tuple(ax)
            # keep the longest prefix of the axes that still divides the dim
            while tup and shape[i] % _axes_size(mesh, tup):
                tup = tup[:-1]
            ax = None if not tup else (tup[0] if len(tup) == 1 else tup)
        out.append(ax)
    return P(*out)


def logical_to_shardings(logical_specs, shapes, mesh, rules=LOGICAL_RULES):
    """Pytree of logical PartitionSpecs (+ matching shapes) -> NamedShardings on `mesh`."""
    r = rules_for(mesh.axis_names, rules)

    def one(spec, shape):
        for name in spec:
            if name is not None and name not in KNOWN_LOGICAL_AXES:
                raise ValueError(f"logical axis {name!r} (in {spec}) has no rule in r1jax.parallel.rules")
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), r)
        return NamedSharding(mesh, _fit(mesh_spec, shape.shape, mesh))

    return jax.tree.map(one, logical_specs, shapes, is_leaf=lambda x: isinstance(x, P))


def param_shardings(cfg, mesh, rules=LOGICAL_RULES):
    """NamedSharding for every param of `Transformer(cfg)` (same tree as the params)."""

    boxed = abstract_params(cfg)
    specs = nn.get_partition_spec(boxed)
    shapes = nn.unbox(boxed)
    return logical_to_shardings(specs, shapes, mesh, rules)


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_spec(mesh, ndim: int = 1) -> P:
    """P((data, fsdp, expert), None, ...): leading dim over the batch axes."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    return P(axes, *([None] * (ndim - 1)))


def batch_sharding(mesh, batch=None):
    """NamedSharding splitting the leading (batch) dim over (data, fsdp, expert).

    With `batch` (a pytree of arrays), one sharding per leaf (a pytree matching it)."""
    if batch is None:
        return NamedSharding(mesh, batch_spec(mesh))
    return jax.tree.map(lambda x: NamedSharding(mesh, batch_spec(mesh, max(np.ndim(x), 1))), batch)


def shard_batch(batch, mesh):
    """Places a global batch on the mesh, split over the batch axes.

    `batch`: pytree of arrays (or array-likes such as np.memmap) with the *global* leading dim.
    Multi-process: every process calls this with the same global view and reads only the rows
    its devices hold (`jax.make_array_from_callback`), so data is sharded per process.
    """
    shardings = batch_sharding(mesh, batch)
    if jax.process_count() == 1:
        return jax.tree.map(lambda x, s: jax.device_put(x if isinstance(x, jax.Array) else np.asarray(x), s),
                            batch, shardings)
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(tuple(x.shape), s, lambda idx, x=x: np.asarray(x[idx])),
        batch, shardings)


def shard_local_batch(local_batch, mesh):
    """Multi-process: each process passes only its rows (`process_batch_slice` of the global
    batch); they are assembled into global arrays (`jax.make_array_from_process_local_data`)."""
    shardings = batch_sharding(mesh, local_batch)
    return jax.tree.map(lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)), local_batch,
                        shardings)


def process_batch_slice(global_batch_size: int, mesh) -> slice:
    """The rows of the global batch that this process's devices hold (what its loader must read)."""
    idx = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    starts = [sl[0].start or 0 for sl in idx.values()]
    stops = [global_batch_size if sl[0].stop is None else sl[0].stop for sl in idx.values()]
    lo, hi = min(starts), max(stops)
    covered = sum(b - a for a, b in {(a, b) for a, b in zip(starts, stops)})
    if covered != hi - lo:
        raise ValueError(f"this process's batch rows are not contiguous on mesh {dict(mesh.shape)}")
    return slice(lo, hi)


# ------------------------------------------------------------------------ optimizer / state


def _path_names(path) -> tuple:
    out = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            out.append(str(k.key))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            out.append(str(k.name))
        elif isinstance(k, jax.tree_util.SequenceKey):
            out.append(str(k.idx))
        else:
            out.append(str(k))
    return tuple(out)


def tree_shardings_like_params(tree, params_shardings, params_shapes, mesh):
    """Shardings for a pytree (e.g. an optax state) whose array leaves mirror params.

    A leaf whose key path ends with a param's key path and has that param's shape gets the
    param's sharding (Adam moments, ...); every other leaf (counts, scalars) is replicated.
    """
    by_path = {}
    for (path, sh), (_, shp) in zip(jax.tree_util.tree_flatten_with_path(params_shardings)[0],
                                    jax.tree_util.tree_flatten_with_path(params_shapes)[0]):
        by_path[_path_names(path)] = (sh, tuple(shp.shape))
    depth = max((len(p) for p in by_path), default=0)

    def one(path, leaf):
        names = _path_names(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for n in range(min(depth, len(names)), 0, -1):
            hit = by_path.get(names[-n:])
            if hit is not None and hit[1] == shape:
                return hit[0]
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(cfg, tx, mesh, rules=LOGICAL_RULES):
    """NamedShardings of `r1jax.train.TrainState` (step, params, opt_state) for `Transformer(cfg)`."""

    shapes = nn.unbox(abstract_params(cfg))
    p_sh = param_shardings(cfg, mesh, rules)
    abstract_state = jax.eval_shape(lambda p: train.init_train_state(p, tx), shapes)
    opt_sh = tree_shardings_like_params(abstract_state.opt_state, p_sh, shapes, mesh)
    return train.TrainState(step=replicated(mesh), params=p_sh, opt_state=opt_sh)


def abstract_state(cfg, tx, mesh, rules=LOGICAL_RULES):
    """ShapeDtypeStructs of the sharded TrainState (for AOT `.lower`), and the shardings."""

    shapes = nn.unbox(abstract_params(cfg))
    st = jax.eval_shape(lambda p: train.init_train_state(p, tx), shapes)
    sh = state_shardings(cfg, tx, mesh, rules)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), st, sh), sh


def init_sharded_state(cfg, tx, mesh, rng=None, rules=LOGICAL_RULES):
    """A TrainState created already sharded: init under jit with out_shardings (no host copy).

    Returns (state, state_shardings). Same values as `init_train_state(init_params(cfg, rng), tx)`.
    """

    rng = jax.random.PRNGKey(0) if rng is None else rng
    sh = state_shardings(cfg, tx, mesh, rules)
    init = _init_fn(cfg)

    def make(r):
        return train.init_train_state(nn.unbox(init(r)), tx)

    with use_mesh(mesh, rules):
        state = jax.jit(make, out_shardings=sh)(rng)
    return state, sh


def shard_params(params, cfg, mesh, rules=LOGICAL_RULES):
    """Moves an existing params pytree into its sharded layout."""
    return jax.device_put(params, param_shardings(cfg, mesh, rules))


def shard_state(state, cfg, tx, mesh, rules=LOGICAL_RULES):
    sh = state_shardings(cfg, tx, mesh, rules)
    return jax.device_put(state, sh), sh


class MeshStep:
    """A jitted step bound to a mesh: every call / `.lower` traces inside `use_mesh(mesh)`."""

    def __init__(self, jitted, mesh, rules=LOGICAL_RULES):
        self.jitted, self.mesh, self.rules = jitted, mesh, rules

    def __call__(self, *args, **kw):
        with use_mesh(self.mesh, self.rules):
            return self.jitted(*args, **kw)

    def lower(self, *args, **kw):
        with use_mesh(self.mesh, self.rules):
            return self.jitted.lower(*args, **kw)


def make_sharded_train_step(model, loss_fn, tx, mesh, state_shardings_, *, grad_accum: int = 1,
                            router_bias_update_rate: float = 0.0, donate: bool = True,
                            rules=LOGICAL_RULES) -> MeshStep:
    """`r1jax.train.make_train_step` with in/out shardings from the mesh, the state donated."""

    jitted = train.make_train_step(model, loss_fn, tx, grad_accum=grad_accum,
                                   router_bias_update_rate=router_bias_update_rate,
                                   state_shardings=state_shardings_, batch_sharding=batch_sharding(mesh),
                                   donate=donate)
    return MeshStep(jitted, mesh, rules)


__all__ = [
    "param_shardings", "state_shardings", "abstract_state", "init_sharded_state", "batch_sharding",
    "batch_spec", "shard_batch", "shard_local_batch", "process_batch_slice", "replicated", "logical_to_shardings",
    "tree_shardings_like_params", "shard_params", "shard_state", "make_sharded_train_step", "MeshStep",
]
