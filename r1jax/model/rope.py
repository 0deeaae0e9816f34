"""Rotary position embeddings: default, linear, YaRN (with DeepSeek's mscale), llama3.

`rope_tables(cfg, positions)` gives cos/sin `[batch, seq, rot_dim // 2]` (already multiplied by
YaRN's attention factor), and `apply_rope(x, cos, sin, interleave)` rotates `x: [batch, seq,
heads, rot_dim]`:
  - interleaved (DeepSeek checkpoints): pairs (x0, x1), (x2, x3), ... share one frequency; the
    output is written de-interleaved `[evens' | odds']`, exactly as transformers does, so that
    q.k is unchanged and the layout matches the reference bit for bit;
  - half-split (Llama/Qwen): pairs (x_i, x_{i + d/2}).
`softmax_scale(cfg)` is the attention scale, including YaRN's mscale(factor, mscale_all_dim)^2.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def inv_frequencies(cfg, dim: int) -> tuple[np.ndarray, float]:
    """Inverse frequencies `[dim // 2]` (float32) and the cos/sin attention factor."""
    base = float(cfg.rope_theta)
    rs = cfg.rope_scaling
    exps = np.arange(0, dim, 2, dtype=np.float32) / dim
    pos_freqs = base**exps
    inv = (1.0 / pos_freqs).astype(np.float32)
    t = rs.rope_type
    if t == "default":
        return inv, 1.0
    if t == "linear":
        return (inv / rs.factor).astype(np.float32), 1.0
    if t == "yarn":
        factor = rs.factor
        if rs.attention_factor:
            att = rs.attention_factor
        elif rs.mscale and rs.mscale_all_dim:
            att = _yarn_mscale(factor, rs.mscale) / _yarn_mscale(factor, rs.mscale_all_dim)
        else:
            att = _yarn_mscale(factor)
        orig = rs.original_max_position_embeddings

        def corr_dim(rot):
            return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

        low, high = corr_dim(rs.beta_fast), corr_dim(rs.beta_slow)
        if rs.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
        extrap = 1 - ramp
        inv_interp = 1.0 / (factor * pos_freqs)
        inv_y = inv_interp * (1 - extrap) + inv * extrap
        return inv_y.astype(np.float32), float(att)
    if t == "llama3":
        factor, lo, hi = rs.factor, rs.low_freq_factor, rs.high_freq_factor
        old = rs.original_max_position_embeddings
        low_wl, high_wl = old / lo, old / hi
        wl = 2 * math.pi / inv
        out = np.where(wl > low_wl, inv / factor, inv)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wl < high_wl) & ~(wl > low_wl)
        return np.where(medium, smoothed, out).astype(np.float32), 1.0
    raise ValueError(f"rope_scaling.rope_type={t!r} is not supported")


def softmax_scale(cfg, qk_head_dim: int) -> float:
    """1/sqrt(d_qk), times mscale(factor, mscale_all_dim)^2 for DeepSeek YaRN."""
    scale = qk_head_dim**-0.5
    rs = cfg.rope_scaling
    if rs.rope_type == "yarn" and rs.mscale_all_dim:
        m = _yarn_mscale(rs.factor, rs.mscale_all_dim)
        scale = scale * m * m
    return scale


def rope_tables(cfg, positions: jnp.ndarray, dim: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """positions: [batch, seq] int -> cos, sin: [batch, seq, dim // 2] float32."""
    inv, att = inv_frequencies(cfg, dim)
    ang = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv)
    return jnp.cos(ang) * att, jnp.sin(ang) * att


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray, interleave: bool) -> jnp.ndarray:
    """x: [batch, seq, heads, dim]; cos/sin: [batch, seq, dim // 2]. Computes in float32."""
    dt = x.dtype
    x = x.astype(jnp.float32)
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
    out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    return out.astype(dt)
