"""Where a trainer's state, batches and rollouts live: one device, or a named mesh.

The SFT and GRPO trainers take a `mesh` config key: "" (the default: whatever single device JAX
picks, no shardings) or axis sizes such as "data=2,fsdp=2,expert=2" / {"fsdp": -1}. The same
trainer code then runs on a laptop, on the fake 8-device CPU mesh of the tests, or on a pod:

    place = Placement(c.mesh)                       # c.mesh: "" | "fsdp=-1" | {"data": 2, ...}
    state = place.train_state(model.cfg, params, tx)
    step = place.train_step(model, loss_fn, tx, router_bias_update_rate=...)
    with place.context():                           # generation / log-prob passes trace under the mesh
        out = generate(model, state.params, prompts, ...)
    state, metrics = step(state, place.batch(batch))

On a mesh, params and optimizer state get the shardings of `r1jax.parallel.sharding` (the
logical-axis rules), the train step is compiled with those in/out shardings (state donated), and a
batch's leading dim is split over (data, fsdp, expert); its size must be a multiple of that
product (`batch_multiple`). Generation and the log-prob passes run on the sharded params under
`context()`, so XLA's GSPMD partitions them from the params' and the model's logical shardings.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from r1jax import train
from r1jax.parallel.mesh import batch_axis_size, describe, make_mesh, use_mesh
from r1jax.parallel.sharding import make_sharded_train_step, shard_batch, shard_params, state_shardings


class Placement:
    def __init__(self, mesh_config=None, devices=None):
        """devices: the devices the mesh is built over (default: all of them; asynchronous GRPO leaves
        out its sampler devices)."""

        self.mesh = make_mesh(mesh_config, devices=devices) if mesh_config else None

    def __repr__(self):
        return f"Placement({describe(self.mesh) if self.mesh is not None else 'one device'})"

    def context(self):
        """Context to trace/run jitted model code in (the mesh and logical-axis rules, or nothing)."""

        return use_mesh(self.mesh) if self.mesh is not None else contextlib.nullcontext()

    @property
    def batch_multiple(self) -> int:
        """A batch's leading dim must be a multiple of this (the product of the batch mesh axes)."""

        return batch_axis_size(self.mesh) if self.mesh is not None else 1

    def train_state(self, cfg, params, tx):
        """`r1jax.train.init_train_state(params, tx)`, placed with the mesh's state shardings."""

        if self.mesh is None:
            return train.init_train_state(params, tx)

        self._state_sh = state_shardings(cfg, tx, self.mesh)
        params = jax.device_put(params, self._state_sh.params)
        with self.context():
            return jax.jit(lambda p: train.init_train_state(p, tx), out_shardings=self._state_sh)(params)

    def params(self, cfg, params):
        """Params moved to their sharded layout (unchanged without a mesh). Call it outside `context()`:
        the shardings come from tracing the model's init, which must not run under the mesh."""
        if self.mesh is None:
            return params

        return shard_params(params, cfg, self.mesh)

    def train_step(self, model, loss_fn, tx, **kw):
        """`r1jax.train.make_train_step`, or its sharded form (call `train_state` first)."""

        if self.mesh is None:
            return train.make_train_step(model, loss_fn, tx, **kw)

        return make_sharded_train_step(model, loss_fn, tx, self.mesh, self._state_sh, **kw)

    def accum_step(self, model, loss_fn, tx, **kw):
        """`r1jax.train.AccumStep` (an update over a changing number of micro-batches, compiled once),
        on a mesh with the accumulated gradients in the params' shardings (call `train_state` first)."""

        if self.mesh is None:
            return train.AccumStep(model, loss_fn, tx, **kw)
        return train.AccumStep(model, loss_fn, tx, grad_sharding=self._state_sh.params,
                               state_shardings=self._state_sh, context=self.context, **kw)

    def batch(self, batch):
        """A host batch (pytree of arrays with the global leading dim) as device arrays."""
        if self.mesh is None:
            return jax.tree.map(jnp.asarray, batch)
        n = len(jax.tree.leaves(batch)[0])
        if n % self.batch_multiple:
            raise ValueError(f"batch of {n} rows does not split over the mesh's batch axes "
                             f"({self.batch_multiple} ways): make it a multiple of {self.batch_multiple}")

        return shard_batch(batch, self.mesh)
