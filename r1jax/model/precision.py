"""Where a trained model's numbers live: fp32 master weights, compute dtype, remat, and loading for training.

The choice (MaxText's): params are stored in `param_dtype` = float32 (the master weights, which the
optimizer updates) and the matmuls run in `dtype` = bfloat16 (flax casts each weight as it is used).
An AdamW step at lr 1e-6 moves a weight of size ~1 by ~1e-6, below bf16's resolution (2^-8 ~ 4e-3
relative): bf16 params would not move at all. Norm weights and the MoE router's correction bias are
float32 in every configuration (r1jax.model.layers.rms_norm, r1jax.model.moe).

Memory per parameter while training: 4 B (fp32 master) + 8 B (fp32 Adam moments) + 4 B (fp32
gradients) = 16 B, e.g. ~25 GB for a 1.5B model before activations; the alternative (bf16 params
with an fp32 copy in the optimizer state) is 2 + 4 + 8 + 2 = 16 B too, with a second weight copy to
keep in sync. Rollouts and the frozen reference read a `compute_copy` (weights in bf16, 2 B/param)
made once per use.

    model, params = r1jax.launch.load_for_training(init_dir, None, seed, param_dtype="float32",
                                                   dtype="bfloat16", remat_policy="full")
"""

from __future__ import annotations

import flax.linen as nn
import jax

from r1jax import config as config_lib
from r1jax.model import abstract_params


def param_dtypes(cfg):
    """The dtype of each param of `Transformer(cfg)` (a pytree of dtypes; float32 norms and router bias)."""

    return jax.tree.map(lambda a: a.dtype, nn.unbox(abstract_params(cfg)))


def cast_params(params, cfg):
    """Each param in the dtype `cfg` gives it (e.g. after a change of `param_dtype`)."""
    return jax.tree.map(lambda x, dt: x.astype(dt) if x.dtype != dt else x, params, param_dtypes(cfg))


KEEP_FP32 = ("gate",)  # the MoE router's weight: the gating runs in float32 (r1jax.model.moe)


def compute_copy(params, cfg):
    """The weights (ndim >= 2) in the compute dtype, the rest (norms, router bias, router weight) as
    they are: what the forward pass reads anyway, so the same outputs, at half the bytes of fp32
    master weights. A no-op when the compute dtype is the param dtype."""
    dt = config_lib.dtype_of(cfg.dtype)
    if cfg.dtype == cfg.param_dtype:
        return params

    def cast(path, x):
        name = getattr(path[-1], "key", None)
        return x.astype(dt) if x.ndim >= 2 and x.dtype != dt and name not in KEEP_FP32 else x

    return jax.jit(lambda p: jax.tree_util.tree_map_with_path(cast, p))(params)


def model_overrides(param_dtype: str = "", dtype: str = "", remat_policy: str = "") -> dict:
    """The non-empty of the trainers' precision / remat keys, as model config overrides."""
    return {k: v for k, v in dict(param_dtype=param_dtype, dtype=dtype, remat_policy=remat_policy).items() if v}


def with_overrides(model, params, **overrides):
    """(model, params) with model config keys changed (dtype, param_dtype, remat_policy, ...); params
    are cast to the new param dtypes."""
    if not overrides:
        return model, params
    model = model.clone(cfg=config_lib.replace(model.cfg, **overrides))
    return model, (cast_params(params, model.cfg) if params is not None else None)


__all__ = ["param_dtypes", "cast_params", "compute_copy", "model_overrides", "with_overrides"]
