"""Multi-head Latent Attention (DeepSeek-V2/V3).

    q      = W_UQ RMSNorm(W_DQ x)                (or W_Q x without q_lora)  -> [q_nope | q_rope] per head
    c_kv   = RMSNorm(W_DKV x)        [kv_lora_rank]     (the compressed latent)
    k_rope = RoPE(W_KR x)            [qk_rope_head_dim] (one decoupled rope key shared by all heads)
    k_nope = c_kv W_UK,  v = c_kv W_UV   (per head; W_UK|W_UV = kv_b_proj)

Two equal ways to attend:
  - expanded (training/prefill): build k = [k_nope | k_rope], v per head, ordinary attention;
  - absorbed (decode): fold W_UK into the query, q_lat = q_nope W_UK^T  [kv_lora_rank], and attend
    over the latent `[c_kv | k_rope]` of each token: score = q_lat . c_kv + q_rope . k_rope; the
    output stays in latent space, o = (sum p c_kv) W_UV. The KV cache holds only that latent:
    `[batch, max_len, kv_lora_rank + qk_rope_head_dim]` per layer.

Which one a layer runs is its `MLAPath`, set by the module's (mode, absorb) in `mla_path`: EXPANDED
(training), ABSORBED (training with absorb=True, tests), PREFILL (expanded + cache write), DECODE
(absorbed over the cache).
"""

from __future__ import annotations

import enum

import flax.linen as nn
import jax.numpy as jnp

from r1jax.model import rope as rope_lib
from r1jax.model.attention import (
    NEG_INF,
    attend_causal,
    cache_mask,
    causal_segment_mask,
    output_projection,
    over_cache_prefix,
    write_cache,
)
from r1jax.model.kernel_shards import on_shards
from r1jax.model.layers import compute_dtype, dense, normal_init, param_dtype, rms_norm

# The latent norms (q_a_layernorm, kv_a_layernorm) use 1e-6 whatever rms_norm_eps says, as DeepSeek's
# reference code and transformers do (a V3-architecture config may set rms_norm_eps 1e-5, e.g. Moonlight).
LATENT_NORM_EPS = 1e-6


def latent_dim(cfg) -> int:
    return cfg.kv_lora_rank + cfg.qk_rope_head_dim


def init_mla_cache(cfg, batch: int, max_len: int, dtype) -> jnp.ndarray:
    """The latent cache of one layer: [batch, max_len, kv_lora_rank + qk_rope_head_dim]."""
    return jnp.zeros((batch, max_len, latent_dim(cfg)), dtype)


def absorbed_attention(q_nope, q_rope, latent, mask, w_uk, w_uv, scale, kv_lora_rank):
    """Attention over the latent cache with W_UK/W_UV absorbed (plain JAX).

    q_nope: [b, s, h, nope], q_rope: [b, s, h, rope], latent: [b, t, kv_lora + rope],
    mask: [b, 1, s, t], w_uk: [kv_lora, h, nope], w_uv: [kv_lora, h, v] -> [b, s, h, v]
    """
    # One query [q_lat | q_rope] against the whole latent row: q_lat . c_kv + q_rope . k_rope in one
    # matmul, and p @ latent then keeps its first kv_lora_rank columns (no strided copies of the
    # c_kv / k_rope slices of the cache).
    q_lat = jnp.einsum("bshd,rhd->bshr", q_nope, w_uk.astype(q_nope.dtype), preferred_element_type=jnp.float32)
    q_full = jnp.concatenate([q_lat, q_rope.astype(jnp.float32)], axis=-1) * scale
    lat = latent.astype(jnp.float32)
    s = jnp.einsum("bshr,btr->bhst", q_full, lat, preferred_element_type=jnp.float32)
    s = jnp.where(mask, s, NEG_INF)
    p = jnp.exp(s - s.max(-1, keepdims=True))
    p = jnp.where(mask, p, 0.0)
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
    o_lat = jnp.einsum("bhst,btr->bshr", p, lat)[..., :kv_lora_rank]
    o = jnp.einsum("bshr,rhv->bshv", o_lat, w_uv.astype(jnp.float32))
    return o.astype(q_nope.dtype)


class MLAPath(enum.Enum):
    """The distinct attention paths of MLA (module doc); `mla_path` picks one."""

    EXPANDED = "expanded"  # train: per-head k/v expanded from c_kv, causal (+ segment) attention; no cache
    ABSORBED = "absorbed"  # train, absorb=True: W_UK/W_UV absorbed, over the input's own latents; no cache
    PREFILL = "prefill"  # EXPANDED over the new tokens (which start at slot 0); their latents written to the cache
    DECODE = "decode"  # the new tokens' latents written, then absorbed attention over the cache

    @property
    def uses_cache(self) -> bool:
        return self in (MLAPath.PREFILL, MLAPath.DECODE)


def mla_path(mode: str, absorb: bool = False) -> MLAPath:
    """The path of an MLA layer in `mode` ("train" | "prefill" | "decode"); `absorb` (the absorbed
    path without a cache, which the tests compare with the expanded one) applies to "train" only."""
    if mode == "train":
        return MLAPath.ABSORBED if absorb else MLAPath.EXPANDED
    if mode not in ("prefill", "decode"):
        raise ValueError(f"MLA: mode={mode!r} is not train | prefill | decode")
    if absorb:
        raise ValueError(f"MLA: absorb=True is a mode='train' path (prefill is expanded and decode absorbed "
                         f"whatever absorb says), not mode={mode!r}")
    return MLAPath.PREFILL if mode == "prefill" else MLAPath.DECODE


def _expanded_attention(cfg, q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, segment_ids, scale):
    """EXPANDED / PREFILL: k = [c_kv W_UK | k_rope], v = c_kv W_UV per head, causal attention over the
    tokens given (plain JAX, or the Pallas mla_prefill kernel) -> [b, s, h, v]."""
    k_nope = jnp.einsum("btr,rhd->bthd", c_kv, w_uk)
    v = jnp.einsum("btr,rhd->bthd", c_kv, w_uv)
    k = jnp.concatenate([k_nope, jnp.broadcast_to(k_rope[:, :, None, :], k_nope.shape[:3] + (k_rope.shape[-1],))],
                        axis=-1)
    qf = jnp.concatenate([q_nope, q_rope], axis=-1)
    if cfg.attention_impl == "pallas":
        from pallas_kernels import mla_prefill  # loaded only for attention_impl='pallas'


        heads = ("batch", "seq", "heads", "head_dim")
        return on_shards(lambda q, k, v, s: mla_prefill(q, k, v, sm_scale=scale, segment_ids=s, causal=True),
                         (qf, k.astype(qf.dtype), v.astype(qf.dtype), segment_ids),
                         (heads, heads, heads, ("batch", "seq")), heads)
    return attend_causal(qf, k.astype(qf.dtype), v.astype(qf.dtype), segment_ids, scale)


def _decode_attention(cfg, q_nope, q_rope, cache, positions, w_uk, w_uv, scale):
    """DECODE: absorbed attention of the queries at `positions` over the (already written) latent
    cache [b, L, r + rope] (plain JAX over the smallest cache prefix, or the Pallas mla_decode kernel)
    -> [b, s, h, v]."""
    r = cfg.kv_lora_rank
    if cfg.attention_impl == "pallas":
        from pallas_kernels import mla_decode  # loaded only for attention_impl='pallas'


        q_lat = jnp.einsum("bshd,rhd->bshr", q_nope, w_uk)
        rows = ("batch", "seq", None, None)
        o_lat = on_shards(lambda ql, qr, c, n: mla_decode(ql, qr, c, n, sm_scale=scale, kv_lora_rank=r),
                          (q_lat, q_rope, cache, positions[:, -1] + 1),
                          (rows, rows, ("batch", None, None), ("batch",)), rows)
        return jnp.einsum("bshr,rhv->bshv", o_lat.astype(w_uv.dtype), w_uv)
    return over_cache_prefix(
        lambda t: absorbed_attention(q_nope, q_rope, cache[:, :t], cache_mask(positions, t), w_uk, w_uv, scale, r),
        cache.shape[1], positions)


class MLA(nn.Module):
    """x: [b, s, hidden] -> ([b, s, hidden], new latent cache or None).

    The path (`MLAPath`) follows from (mode, absorb) (`mla_path`): mode "train" (EXPANDED, or
    ABSORBED with absorb=True; no cache) | "prefill" (PREFILL: expanded over the new tokens, which
    must start at slot 0, and writes the cache) | "decode" (DECODE: absorbed over the whole cache).
    """

    cfg: object
    mode: str = "train"
    absorb: bool = False

    @property
    def path(self) -> MLAPath:
        return mla_path(self.mode, self.absorb)

    @nn.compact
    def __call__(self, x, positions, segment_ids=None, cache=None):
        cfg = self.cfg
        h, nope, rope_d, vd, r = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                                  cfg.v_head_dim, cfg.kv_lora_rank)
        qk = nope + rope_d
        if cfg.q_lora_rank:
            cq = dense(cfg, cfg.q_lora_rank, "embed", ("q_lora",), "q_a_proj", cfg.attention_bias)(x)
            cq = rms_norm(cfg, cfg.q_lora_rank, "q_a_layernorm", eps=LATENT_NORM_EPS)(cq)
            q = dense(cfg, (h, qk), "q_lora", ("heads", "head_dim"), "q_b_proj")(cq)
        else:
            q = dense(cfg, (h, qk), "embed", ("heads", "head_dim"), "q_proj")(x)
        q = nn.with_logical_constraint(q, ("batch", "seq", "heads", "head_dim"))
        q_nope, q_rope = q[..., :nope], q[..., nope:]
        kv = dense(cfg, r + rope_d, "embed", ("kv_lora",), "kv_a_proj_with_mqa", cfg.attention_bias)(x)
        c_kv = rms_norm(cfg, r, "kv_a_layernorm", eps=LATENT_NORM_EPS)(kv[..., :r])
        k_rope = kv[..., r:]
        cos, sin = rope_lib.rope_tables(cfg, positions, rope_d)
        q_rope = rope_lib.apply_rope(q_rope, cos, sin, cfg.rope_interleave)
        k_rope = rope_lib.apply_rope(k_rope[:, :, None, :], cos, sin, cfg.rope_interleave)[:, :, 0, :]
        # kv_b_proj kernel [kv_lora, heads, nope + v]: W_UK = [..., :nope], W_UV = [..., nope:]
        w_kvb = self.param("kv_b_proj", normal_init(cfg, ("kv_lora", "heads", "head_dim")), (r, h, nope + vd),
                           param_dtype(cfg))
        w_kvb = w_kvb.astype(compute_dtype(cfg))
        w_uk, w_uv = w_kvb[..., :nope], w_kvb[..., nope:]
        scale = rope_lib.softmax_scale(cfg, qk)
        latent = jnp.concatenate([c_kv, k_rope.astype(c_kv.dtype)], axis=-1)  # [b, s, r + rope]

        path = self.path
        if path.uses_cache != (cache is not None):
            raise ValueError(f"MLA: the {path.value} path {'needs a' if path.uses_cache else 'takes no'} cache")
        new_cache = write_cache(cache, latent, positions) if path.uses_cache else None
        if path is MLAPath.DECODE:
            o = _decode_attention(cfg, q_nope, q_rope, new_cache, positions, w_uk, w_uv, scale)
        elif path is MLAPath.ABSORBED:
            mask = causal_segment_mask(segment_ids, x.shape[0], x.shape[1])
            o = absorbed_attention(q_nope, q_rope, latent, mask, w_uk, w_uv, scale, r)
        else:  # EXPANDED, PREFILL
            o = _expanded_attention(cfg, q_nope, q_rope, c_kv, k_rope, w_uk, w_uv, segment_ids, scale)
        o = nn.with_logical_constraint(o, ("batch", "seq", "heads", "head_dim"))
        return output_projection(cfg)(o), new_cache
