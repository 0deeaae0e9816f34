"""Scale-out: mesh, logical-axis sharding rules, expert parallelism, multi-host.

    from r1jax import parallel
    mesh = parallel.make_mesh(dict(data=2, expert=4, fsdp=-1))
    state, st_sh = parallel.init_sharded_state(cfg, tx, mesh, rng)
    step = parallel.make_sharded_train_step(model, train.lm_loss, tx, mesh, st_sh)
    state, metrics = step(state, parallel.shard_batch(batch, mesh))

Modules: mesh (make_mesh, use_mesh), rules (LOGICAL_RULES, the one table), sharding (param /
state / batch shardings, sharded init, the compiled step), placement, handoff (weights between meshes), distributed (jax.distributed from
the environment).

Names resolve on first use (PEP 562): importing a low module such as `r1jax.parallel.rules` (which
the model uses) must not import `sharding`, which sits above the model and the train step. Expert
parallelism (shard_map) is part of the model: r1jax.model.moe_ep.
"""

import importlib

_NAMES = {
    "mesh": ("MESH_AXES", "batch_axis_size", "describe", "make_mesh", "mesh_config", "resolve_mesh_shape",
             "single_device_mesh", "use_mesh"),
    "rules": ("BATCH_AXES", "LOGICAL_RULES", "axis_rules", "rules_for"),
    "sharding": ("MeshStep", "abstract_state", "batch_sharding", "batch_spec", "init_sharded_state",
                 "make_sharded_train_step", "param_shardings", "process_batch_slice", "replicated", "shard_batch",
                 "shard_local_batch", "shard_params", "shard_state", "state_shardings"),
}
_WHERE = {name: module for module, names in _NAMES.items() for name in names}
_MODULES = ("distributed", "handoff", "mesh", "placement", "rules", "sharding")


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"r1jax.parallel.{_WHERE[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"r1jax.parallel.{name}")
    raise AttributeError(f"module 'r1jax.parallel' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_WHERE) | set(_MODULES))
