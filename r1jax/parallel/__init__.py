"""Scale-out: mesh, logical-axis sharding rules, expert parallelism, multi-host.

    from r1jax import parallel
    mesh = parallel.make_mesh(dict(data=2, expert=4, fsdp=-1))
    state, st_sh = parallel.init_sharded_state(cfg, tx, mesh, rng)
    step = parallel.make_sharded_train_step(model, train.lm_loss, tx, mesh, st_sh)
    state, metrics = step(state, parallel.shard_batch(batch, mesh))

Modules: mesh (make_mesh, use_mesh), rules (LOGICAL_RULES, the one table), sharding (param /
state / batch shardings, sharded init, the compiled step), moe_ep (shard_map expert
parallelism), distributed (jax.distributed from the environment).
"""

from r1jax.parallel.mesh import (  # noqa: F401
    MESH_AXES, batch_axis_size, describe, make_mesh, mesh_config, resolve_mesh_shape, single_device_mesh, use_mesh,
)
from r1jax.parallel.rules import BATCH_AXES, LOGICAL_RULES, axis_rules, rules_for  # noqa: F401
from r1jax.parallel.sharding import (  # noqa: F401
    MeshStep, abstract_state, batch_sharding, batch_spec, init_sharded_state, make_sharded_train_step,
    param_shardings, process_batch_slice, replicated, shard_batch, shard_local_batch, shard_params, shard_state, state_shardings,
)
from r1jax.parallel import distributed, moe_ep, rules  # noqa: F401,E402
