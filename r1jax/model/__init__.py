"""Flax model: `Transformer(cfg)` (its `ModelOutput`), `init_params`, caches. Params are a plain pytree."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.model.mla import MLAPath  # noqa: F401
from r1jax.model.moe import update_router_bias  # noqa: F401
from r1jax.model.transformer import ModelOutput, Transformer, init_cache, unstack_layers  # noqa: F401


def build_model(cfg, **kw) -> Transformer:
    return Transformer(cfg, **kw)


def _init_fn(cfg):
    model = Transformer(cfg)

    def init(rng):
        ids = jnp.zeros((1, 4), jnp.int32)
        return model.init(rng, ids, output=True)["params"]  # output=True: the MTP module's params too

    return init


def init_params(cfg, rng=None) -> dict:
    """Random params (plain pytree of arrays, logical-axis boxes removed)."""
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return nn.unbox(jax.jit(_init_fn(cfg))(rng))


def abstract_params(cfg):
    """Boxed ShapeDtypeStructs (no allocation): carries the logical axis names of every param."""
    return jax.eval_shape(_init_fn(cfg), jax.random.PRNGKey(0))


def logical_axes(cfg):
    """Pytree of PartitionSpecs of logical axis names, same structure as the params."""
    return nn.get_partition_spec(abstract_params(cfg))


def param_count(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
