"""Basic layers: RMSNorm, dense projections with logical-axis partitioning, the gated MLP.

Parameters are annotated with logical axis names (see `r1jax.parallel.rules`); `init_params`
unboxes them so a model's params are a plain pytree of arrays.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.config import dtype_of


def normal_init(cfg, axes: Sequence[str | None]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), tuple(axes))


def param_dtype(cfg):
    return dtype_of(cfg.param_dtype)


def compute_dtype(cfg):
    return dtype_of(cfg.dtype)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, computed in float32 (as transformers does)."""

    dim: int
    eps: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        w = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones, ("norm",)), (self.dim,),
                       self.param_dtype)
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        return (w.astype(jnp.float32) * y).astype(self.dtype) if self.dtype != jnp.float32 else w * y


def rms_norm(cfg, dim: int, name: str) -> RMSNorm:
    return RMSNorm(dim, eps=cfg.rms_norm_eps, dtype=compute_dtype(cfg), param_dtype=param_dtype(cfg), name=name)


def dense(cfg, features, in_axis: str, out_axes: Sequence[str], name: str, use_bias: bool = False):
    """A projection x[..., in] -> [..., *features] with logically partitioned kernel [in, *features]."""
    feats = tuple(features) if isinstance(features, (tuple, list)) else (features,)
    out_axes = tuple(out_axes)
    return nn.DenseGeneral(
        features=feats if len(feats) > 1 else feats[0],
        use_bias=use_bias,
        dtype=compute_dtype(cfg),
        param_dtype=param_dtype(cfg),
        kernel_init=normal_init(cfg, (in_axis,) + out_axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, out_axes),
        name=name,
    )


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)). x: [..., hidden] -> [..., hidden]."""

    cfg: object
    intermediate_size: int

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        g = dense(cfg, self.intermediate_size, "embed", ("mlp",), "gate_proj")(x)
        u = dense(cfg, self.intermediate_size, "embed", ("mlp",), "up_proj")(x)
        h = nn.silu(g) * u
        h = nn.with_logical_constraint(h, ("batch", "seq", "mlp"))
        return dense(cfg, cfg.hidden_size, "mlp", ("embed",), "down_proj")(h)
