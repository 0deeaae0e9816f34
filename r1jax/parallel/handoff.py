"""Moving the trainer's arrays to where the rollout and the host read them, across processes.

    reps = replicate_on(params, local_mesh(), mesh)   # a full copy on each of this process's devices
    rows = local_rows(global_array)          # the rows of a batch-sharded array this process holds
    x = host_scalar(metric)                  # a replicated scalar, also when it spans other processes
    t = host_tree(outputs)                   # whole arrays on every process (sharded ones all-gathered)
    h = host_leaves(params, "bfloat16")      # numpy, one leaf gathered (and cast on device) at a time
    all_v = allgather_rows(np_vector)        # [sum over processes of n_local, ...] in process order
    t = reshard_seconds(params, shardings)   # the weight handoff when layouts differ (per GB)

With several processes (`jax.process_count() > 1`) the trainer's params are global arrays whose
shards live on other hosts' devices too: with `rollout_placement="local"` the rollout engine (a host
loop of jitted programs over process-local prompts) runs on a mesh of the process's own devices
(`local_mesh`), reading a replica of the weights on each of them. `replicate_on` all-gathers the
params on device (a jitted identity with a replicated out-sharding: no host copy) and wraps each
local device's copy as one array of that mesh. `host_leaves` brings a tree to the host one leaf at
a time (the HF export), so no device ever holds a second copy of all the weights.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.parallel.mesh import make_mesh


@functools.lru_cache(maxsize=None)
def _replicator(mesh):
    """A jitted identity whose outputs (any pytree) are replicated over `mesh`: an all-gather on
    device. One per mesh, so that a call every step reuses its compiled programs."""
    return jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, P()))


def _replicate(tree, mesh):
    return _replicator(mesh)(tree)


def local_mesh():
    """A mesh of this process's own devices, all on the data axis: a process's rollout mesh
    (`rollout_placement="local"`: rows over every local device, the weights replicated on each)."""

    devices = jax.local_devices()
    return make_mesh({"data": len(devices)}, devices=devices)


def replicate_on(tree, target, mesh=None):
    """Each leaf whole on every device of `target` (a mesh of this process's devices, e.g.
    `local_mesh()`), replicated, as arrays of `target`; `mesh`: the arrays' own mesh (None: they are
    on one device).

    - target's devices within `mesh`: the leaves are all-gathered on device over `mesh` (a jitted
      identity with a replicated out-sharding; with several processes a collective every process
      joins) and each target device's copy is wrapped as it is;
    - target's devices outside `mesh` (asynchronous GRPO's sampler devices): one leaf at a time,
      all-gathered over `mesh`, then this process's copy on one training device is copied device to
      device onto the target, waited for before the next leaf (the training devices hold one extra
      whole leaf, never a replica of the tree). A sharded array is never `device_put` onto other
      devices directly: JAX does that through the host;
    - no mesh (arrays on one device): `jax.device_put`, device to device."""
    rep = NamedSharding(target, P())
    devices = list(target.devices.flat)
    if mesh is None:
        if not all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
            raise ValueError("replicate_on: arrays span other processes' devices: pass their mesh")
        return jax.device_put(tree, jax.tree.map(lambda _: rep, tree))
    if set(devices) <= set(mesh.devices.flat):  # the copies land where they are needed: wrap them
        def mine(x):
            by_dev = {s.device: s.data for s in x.addressable_shards}
            return jax.make_array_from_single_device_arrays(x.shape, rep, [by_dev[d] for d in devices])

        return jax.tree.map(mine, _replicate(tree, mesh))
    def push(x):
        whole = _replicate(x, mesh)
        out = jax.device_put(whole.addressable_data(0), rep)
        out.block_until_ready()  # before the next leaf's replica is made
        return out

    return jax.tree.map(push, tree)


def fits_one_device(nbytes: int, fraction: float) -> bool:
    """Whether `nbytes` is at most `fraction` of one local device's memory (its allocator's
    bytes_limit; True where the backend does not report one, e.g. CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return not limit or nbytes <= fraction * limit


def local_rows(x) -> np.ndarray:
    """The rows (leading dim) of a global array that this process's devices hold, in order, as
    numpy (each row once, also when replicated over non-batch axes). One process: all of it."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    parts = {}
    for s in x.addressable_shards:
        sl = s.index[0] if s.index else slice(None)
        start = sl.start or 0
        if start not in parts:
            parts[start] = np.asarray(s.data)
    return np.concatenate([parts[k] for k in sorted(parts)], axis=0)


def host_scalar(x) -> float:
    """A replicated scalar (or a numpy / Python number) as a float."""
    return float(np.asarray(host_tree(x)))


def host_tree(tree):
    """jax.device_get of whole global arrays, also those spanning other processes' devices:
    replicated ones are read from a local copy, sharded ones all-gathered over the processes (a
    collective, so every process must call it with the same tree, as SPMD programs do)."""
    def get(x):
        if not isinstance(x, jax.Array):
            return x
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)


def host_leaves(tree, dtype=None):
    """The tree as numpy, one leaf at a time: each leaf cast to `dtype` (None: its own; only floating
    leaves are cast) on its devices, then gathered whole (sharded leaves spanning other processes
    all-gathered on device into one replicated leaf, read from a local copy). At any moment the
    devices hold one extra leaf, not a replica of the whole tree (what an export of fp32 master
    weights from a run whose bf16 rollouts fit needs). A collective with several processes: every
    process calls it with the same tree (and gets the whole values)."""
    dt = np.dtype(dtype) if dtype is not None else None

    def get(x):
        if not isinstance(x, jax.Array):
            x = np.asarray(x)
            return x.astype(dt) if dt is not None and jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x
        cast = dt is not None and jax.numpy.issubdtype(x.dtype, jax.numpy.floating) and x.dtype != dt
        if x.is_fully_addressable:
            out = np.asarray(jax.device_get(x.astype(dt) if cast else x))
        else:
            rep = NamedSharding(x.sharding.mesh, P())
            whole = jax.jit(lambda a: a.astype(dt) if cast else a, out_shardings=rep)(x)
            out = np.asarray(whole.addressable_data(0))
            del whole
        return out

    return jax.tree.map(get, tree)


def allgather_rows(x: np.ndarray) -> np.ndarray:
    """Process-local rows [n_local, ...] -> every process's rows concatenated in process order
    [n_processes * n_local, ...] (each process must pass the same shape). One process: `x`."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    # over each process's first device only (JAX's process_allgather would use every device, an
    # asynchronous sampler's own devices included, while its thread runs programs there; a sampler
    # takes a process's last devices)
    firsts = {}
    for d in jax.devices():
        firsts.setdefault(d.process_index, d)
    devs = [firsts[i] for i in sorted(firsts)]
    mesh = jax.sharding.Mesh(np.asarray(devs, dtype=object), ("p",))
    me = firsts[jax.process_index()]
    arr = jax.make_array_from_single_device_arrays((len(devs),) + x.shape, NamedSharding(mesh, P("p")),
                                                   [jax.device_put(x[None], me)])
    g = np.asarray(_replicate(arr, mesh).addressable_data(0))  # [processes, n_local, ...]
    return g.reshape((-1,) + x.shape[1:])


def reshard_seconds(tree, shardings, repeats: int = 3) -> dict:
    """Times moving `tree` into `shardings` (e.g. the training layout -> the rollout's): a jitted
    identity with those out-shardings, compiled first, best of `repeats`. -> {"seconds", "gb",
    "seconds_per_gb"}."""
    f = jax.jit(lambda t: t, out_shardings=shardings)
    jax.block_until_ready(f(tree))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(tree))
        best = min(best, time.perf_counter() - t0)
    gb = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)) / 1e9
    return {"seconds": best, "gb": gb, "seconds_per_gb": best / max(gb, 1e-12)}
