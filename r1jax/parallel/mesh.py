"""Device mesh over the axes (data, fsdp, expert, tensor).

    mesh = make_mesh(dict(data=2, fsdp=-1, expert=4))      # -1 = the rest of the devices
    with use_mesh(mesh):                                  # jax.set_mesh + the logical-axis rules
        state, metrics = step(state, batch)

Axis order is outermost (slowest links, e.g. across hosts / DCN) to innermost (fastest, ICI /
NVLink): data, fsdp, expert, tensor. `jax.make_mesh` places the devices so that inner axes map
to physically close chips on a TPU slice.
"""

from __future__ import annotations

import contextlib
import math
from typing import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh

from r1jax.config.overrides import override
from r1jax.parallel import _flax_compat
from r1jax.parallel.rules import BATCH_AXES, LOGICAL_RULES, axis_rules, rules_for

MESH_AXES = ("data", "fsdp", "expert", "tensor")


def mesh_config(**kw) -> ml_collections.ConfigDict:
    """Mesh sizes per axis; -1 (at most one axis) = the remaining devices. Default: all fsdp."""
    return override(ml_collections.ConfigDict(dict(data=1, fsdp=-1, expert=1, tensor=1)), _ints(kw), "mesh config")


def _ints(d) -> dict:
    try:
        return {k: int(v) for k, v in dict(d).items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"mesh config {d!r}: sizes must be integers ({e})") from None


def _as_sizes(config) -> dict:
    """{axis: size} of a mesh config: None (all fsdp), a "data=2,expert=4" string or a mapping (the
    axes it does not name are 1), or an object with a `.mesh` field."""
    if config is None:
        config = mesh_config()
    if hasattr(config, "mesh") and not isinstance(config, Mapping):
        config = config.mesh
    if isinstance(config, str):  # "data=2,expert=4"
        parts = [kv for kv in config.replace(" ", "").split(",") if kv]
        bad = [kv for kv in parts if kv.count("=") != 1]
        if bad:
            raise ValueError(f"mesh config {config!r}: {bad[0]!r} is not axis=size (e.g. 'data=2,fsdp=-1')")
        config = dict(kv.split("=") for kv in parts)
    named = override(ml_collections.ConfigDict({a: 1 for a in MESH_AXES}), _ints(config), "mesh config")
    return {a: named[a] for a in MESH_AXES}


def mesh_sizes(config) -> dict:
    """The axis sizes a mesh config asks for (a "data=2,fsdp=-1" string or a mapping), checked without
    looking at the devices: known axes, integer sizes, positive or one -1."""
    sizes = _as_sizes(config)
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"mesh config: only one axis may be -1, got {free}")
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ValueError(f"mesh config: {a}={s} must be a positive size or -1")
    return sizes


def check_mesh_config(config, what: str) -> None:
    """mesh_sizes' checks for a run config's `mesh` key, the error naming `what` and the value."""
    try:
        mesh_sizes(config)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{what}: mesh={config!r}: {e.args[0] if e.args else e}") from None


def resolve_mesh_shape(config, n_devices: int) -> tuple[int, ...]:
    """(data, fsdp, expert, tensor) sizes for `n_devices`, with the one -1 filled in."""
    sizes = mesh_sizes(config)
    free = [a for a, s in sizes.items() if s == -1]
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if n_devices % fixed:
            raise ValueError(f"mesh config {sizes}: {n_devices} devices are not divisible by {fixed}")
        sizes[free[0]] = n_devices // fixed
    if math.prod(sizes.values()) != n_devices:
        raise ValueError(f"mesh config {sizes}: product {math.prod(sizes.values())} != {n_devices} devices")
    return tuple(sizes[a] for a in MESH_AXES)


def make_mesh(config=None, devices: Sequence | None = None) -> Mesh:
    """A `jax.sharding.Mesh` over (data, fsdp, expert, tensor) with Auto axis types (GSPMD).

    config: mapping / ConfigDict with axis sizes (or an object with a `.mesh` field, or a string
    "data=2,expert=4"); devices: default all (global, multi-process) devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(config, len(devices))
    types = (AxisType.Auto,) * len(MESH_AXES)
    try:
        return jax.make_mesh(shape, MESH_AXES, axis_types=types, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        # topology-aware placement failed (unusual shapes): keep the given device order
        return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES, axis_types=types)


def single_device_mesh(device=None) -> Mesh:
    """A 1x1x1x1 mesh (the unsharded reference)."""
    return make_mesh(dict(data=1, fsdp=1, expert=1, tensor=1), devices=[device or jax.devices()[0]])


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=LOGICAL_RULES):
    """`jax.set_mesh(mesh)` and the logical-axis rules (restricted to the mesh's axes).

    Trace (first call / `.lower`) of a jitted step inside this context so that flax's logical
    constraints and the expert-parallel shard_map see the mesh. Installs the flax shim the mesh
    needs (r1jax.parallel._flax_compat: DenseGeneral's multi-dim kernels under a mesh).
    """
    _flax_compat.install()
    with jax.set_mesh(mesh), axis_rules(rules_for(mesh.axis_names, rules)):
        yield mesh


def describe(mesh) -> str:
    """'data=1 fsdp=8 expert=64 tensor=1 (512 x TPU v5p)'."""
    sizes = " ".join(f"{a}={s}" for a, s in mesh.shape.items())
    devs = getattr(mesh, "devices", None)
    kind = ""
    if devs is not None and getattr(devs, "size", 0):
        kind = f" ({devs.size} x {devs.flat[0].device_kind})"
    return sizes + kind


def batch_axis_size(mesh) -> int:
    """Number of ways a global batch is split (product of the mesh's batch axes)."""

    return math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.shape)
