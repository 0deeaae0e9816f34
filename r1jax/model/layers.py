"""Basic layers: RMSNorm, dense projections with logical-axis partitioning, the gated MLP.

Parameters are annotated with logical axis names (see `r1jax.parallel.rules`); `init_params`
unboxes them so a model's params are a plain pytree of arrays.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax import backends
from r1jax.config import dtype_of

# A masked logit (attention scores, sampling filters): its exp is exactly 0 in float32, and unlike
# -inf a row whose every entry is masked stays finite (no NaN from inf - inf).
NEG_INF = -1e30


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


def rms_norm(cfg, dim: int, name: str, eps: float | None = None) -> RMSNorm:
    """RMSNorm with eps `cfg.rms_norm_eps` (or `eps`). Its weight is float32 whatever `cfg.param_dtype`
    (a norm weight is tiny and its updates must not round away in bf16); output in the compute dtype."""
    return RMSNorm(dim, eps=cfg.rms_norm_eps if eps is None else eps, dtype=compute_dtype(cfg),
                   param_dtype=jnp.float32, name=name)


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


# ------------------------------------------------------------------------------------ LM head


def head_matmul_reference(x, kernel):
    """logits = x @ kernel. x: [..., hidden], kernel: [hidden, vocab]."""
    return jnp.einsum("...d,dv->...v", x, kernel)


def head_logits(x, kernel):
    """logits = x @ kernel, x: [..., hidden], kernel: [hidden, vocab], in their (common) dtype.

    A backend may bring its own 2-D matmul for it (r1jax.backends.lm_head_matmul: on CPU one with
    a backward laid out for XLA:CPU, the tokens flattened); elsewhere the plain einsum. Used by
    `LMHead` and by the chunked log-probs (r1jax.model.logprobs), so both compute the same logits."""

    mm = backends.lm_head_matmul()
    if mm is not None:
        y = mm(x.reshape(-1, x.shape[-1]), kernel)
        return y.reshape(x.shape[:-1] + (kernel.shape[-1],))
    return head_matmul_reference(x, kernel)


class LMHead(nn.Module):
    """The untied output projection: logits = x @ kernel, kernel [hidden, vocab].

    The param is "kernel" [hidden, vocab] with the init and logical axes nn.DenseGeneral gave it
    (same tree, same checkpoints). The matmul is `head_logits` (a backend's own, or the einsum).
    """

    cfg: object

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        kernel = self.param("kernel", normal_init(cfg, ("embed", "vocab")), (cfg.hidden_size, cfg.vocab_size),
                            param_dtype(cfg))
        dt = compute_dtype(cfg)
        return head_logits(x.astype(dt), kernel.astype(dt))
