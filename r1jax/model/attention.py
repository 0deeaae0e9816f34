"""Attention core shared by MLA and GQA, masks, and the GQA (Qwen2/Llama) attention layer.

Masks. Without a cache (training/prefill), query i may see key j iff j <= i (index causal) and
segment_ids[i] == segment_ids[j] (packed sequences; positions restart per segment, supplied by
the caller). With a cache, token slots equal positions (each sequence is written contiguously
from slot 0), so query at position p may see every slot j <= p.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.model import rope as rope_lib
from r1jax.model.flash import flash_attention
from r1jax.model.kernel_shards import on_shards
from r1jax.model.layers import NEG_INF, compute_dtype, dense, normal_init, param_dtype


def causal_segment_mask(segment_ids: jnp.ndarray | None, batch: int, seq: int) -> jnp.ndarray:
    """[batch, 1, seq, seq] bool: causal by index, within equal segment ids."""
    i = jnp.arange(seq)
    m = (i[None, :] <= i[:, None])[None, None]
    if segment_ids is not None:
        m = m & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return jnp.broadcast_to(m, (batch, 1, seq, seq))


def cache_mask(positions: jnp.ndarray, max_len: int) -> jnp.ndarray:
    """positions: [batch, q] -> [batch, 1, q, max_len] bool: slot j visible iff j <= position."""
    return jnp.arange(max_len)[None, None, None, :] <= positions[:, None, :, None]


DECODE_PREFIX_BUCKETS = 4  # decode attends over the first L, L/2, L/4 or L/8 cache slots
MIN_DECODE_PREFIX = 16


def over_cache_prefix(fn, cache_len: int, positions: jnp.ndarray, *, buckets: int = DECODE_PREFIX_BUCKETS,
                      minimum: int = MIN_DECODE_PREFIX):
    """fn(t) -> attention over the first t cache slots; calls it with the smallest prefix that
    holds every query's slot.

    positions: [batch, q] slots of the queries (= positions). Decode attends over `cache_len`
    slots, but slots after the longest sequence's position are masked for every query (exp gives
    exactly 0), so attending over a prefix t > max(positions) gives the same output. The prefix
    lengths are static (cache_len, cache_len / 2, ... down to `minimum`; at most `buckets`) and
    `lax.switch` picks one at run time, so a generation that has filled half its cache does half
    the attention work. Same result as fn(cache_len). buckets: at most this many prefix lengths
    (1 turns the split off); the defaults are bound at import, so the program follows its arguments
    (assigning DECODE_PREFIX_BUCKETS later changes nothing: pass buckets=).
    """
    sizes = [cache_len]
    while len(sizes) < buckets and sizes[-1] % 2 == 0 and sizes[-1] // 2 >= minimum:
        sizes.append(sizes[-1] // 2)
    if len(sizes) == 1:
        return fn(cache_len)
    sizes = sizes[::-1]  # ascending
    need = jnp.max(positions) + 1
    index = jnp.sum(jnp.asarray(sizes[:-1]) < need)  # first size >= need (the last when none)
    return jax.lax.switch(index, [lambda t=t: fn(t) for t in sizes])


def attend(q, k, v, mask, scale, *, num_kv_groups: int = 1):
    """Plain softmax attention in float32.

    q: [b, s, h, d], k: [b, t, h // g, d], v: [b, t, h // g, dv], mask: [b, 1|h, s, t] bool
    -> [b, s, h, dv] in q.dtype. Rows with no visible key give 0.
    """
    b, s, h, d = q.shape
    g = num_kv_groups
    qg = q.reshape(b, s, h // g, g, d)
    scores = jnp.einsum("bskgd,btkd->bkgst", qg, k, preferred_element_type=jnp.float32) * scale
    m = mask.reshape(b, -1, 1, s, mask.shape[-1]) if mask.shape[1] != 1 else mask[:, :, None]
    scores = jnp.where(m, scores, NEG_INF)
    p = jax.nn.softmax(scores, axis=-1)
    p = jnp.where(m, p, 0.0)
    o = jnp.einsum("bkgst,btkd->bskgd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return o.reshape(b, s, h, v.shape[-1]).astype(q.dtype)


CAUSAL_CHUNK = 128  # query rows per block of `attend_causal`
FLASH_MIN_LEN = 2048  # from this length on, attend_causal is the O(s)-memory blockwise attention (read at trace time)


def attend_causal(q, k, v, segment_ids, scale, *, num_kv_groups: int = 1, chunk: int = CAUSAL_CHUNK):
    """Causal (+ segment) attention, the same math as `attend` with `causal_segment_mask`, faster.

    q: [b, s, h, d], k: [b, s, h // g, d], v: [b, s, h // g, dv], segment_ids: [b, s] or None
    -> [b, s, h, dv] in q.dtype. From s >= FLASH_MIN_LEN on it is `r1jax.model.flash.flash_attention`
    (blockwise, custom VJP recomputing the probabilities: memory linear in s, forward and backward;
    about 1.3x the time of the path below on CPU at 2k-4k tokens, where that one's temporaries grow
    x3.5 per doubling). Below, speed-ups that leave the result unchanged (up to f32 rounding):
      - queries go in blocks of `chunk` rows; block [i, i + chunk) only computes scores against
        keys [0, i + chunk): the skipped keys are masked for all its rows (exp gives exactly 0),
        so about half of the s x s score/probability work and memory is never done;
      - heads-major layout [b, k, g, s, d] for the batched matmuls, the causal mask from iota (no
        [b, 1, s, s] mask in memory), and the softmax normalised after the PV matmul
        (o = (exp(S - max) V) / sum exp(S - max), one pass less over the s x t matrix; the max
        is a constant shift, so it carries no gradient).
    Every row sees at least its own key (the diagonal), so no row is empty.
    """
    b, s, h, d = q.shape
    if s >= FLASH_MIN_LEN:
        return flash_attention(q, k, v, segment_ids, scale, num_kv_groups=num_kv_groups)
    g = num_kv_groups
    kvh = h // g
    qh = q.reshape(b, s, kvh, g, d).transpose(0, 2, 3, 1, 4)  # [b, kvh, g, s, d]
    kh = k.transpose(0, 2, 1, 3)  # [b, kvh, t, d]
    vh = v.transpose(0, 2, 1, 3)
    outs = []
    for i in range(0, s, chunk):
        e = min(i + chunk, s)
        sc = jnp.einsum("bkgsd,bktd->bkgst", qh[:, :, :, i:e], kh[:, :, :e],
                        preferred_element_type=jnp.float32) * scale
        m = jnp.arange(e)[None, :] <= jnp.arange(i, e)[:, None]  # [rows, keys]
        if segment_ids is not None:
            m = m[None] & (segment_ids[:, i:e, None] == segment_ids[:, None, :e])  # [b, rows, keys]
            m = m[:, None, None]
        sc = jnp.where(m, sc, NEG_INF)
        p = jnp.exp(sc - jax.lax.stop_gradient(sc.max(-1, keepdims=True)))
        o = jnp.einsum("bkgst,bktd->bkgsd", p.astype(v.dtype), vh[:, :, :e], preferred_element_type=jnp.float32)
        outs.append(o / p.sum(-1, keepdims=True))
    o = jnp.concatenate(outs, axis=3) if len(outs) > 1 else outs[0]  # [b, kvh, g, s, dv]
    return o.transpose(0, 3, 1, 2, 4).reshape(b, s, h, v.shape[-1]).astype(q.dtype)


def write_cache(cache: jnp.ndarray, new: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """cache: [b, max_len, ...], new: [b, s, ...], positions: [b, s] -> cache with new at its slots."""
    b = cache.shape[0]
    return cache.at[jnp.arange(b)[:, None], positions].set(new.astype(cache.dtype), mode="drop")


def output_projection(cfg, name: str = "o_proj") -> nn.DenseGeneral:
    """The attention output projection of MLA and GQA: o [b, s, heads, head_dim] -> [b, s, hidden];
    kernel [heads, head_dim, hidden], a bias [hidden] with `attention_bias`."""
    return nn.DenseGeneral(
        cfg.hidden_size, axis=(-2, -1), use_bias=cfg.attention_bias, dtype=compute_dtype(cfg),
        param_dtype=param_dtype(cfg), kernel_init=normal_init(cfg, ("heads", "head_dim", "embed")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name,
    )


def causal_gqa(cfg, q, k, v, segment_ids, scale):
    """Training / prefill attention of the GQA path: `attend_causal` (attention_impl="xla"), or the
    Pallas flash kernel (attention_impl="pallas": pallas_kernels.mla_prefill, a flash attention with a
    Pallas backward for any q/k and v widths, Mosaic on TPU, Triton on GPU, interpreted on CPU) with
    each K/V head repeated for its query heads (O(s) extra memory; the repeat's transpose sums the
    heads' dK/dV), per shard under a mesh (r1jax.model.kernel_shards). q: [b, s, h, d]; k, v: [b, s, kv_heads, d] -> [b, s, h, d]."""
    g = q.shape[2] // k.shape[2]
    if cfg.attention_impl == "pallas":
        from pallas_kernels import mla_prefill  # loaded only for attention_impl='pallas'


        kr = jnp.repeat(k, g, axis=2).astype(q.dtype)
        vr = jnp.repeat(v, g, axis=2).astype(q.dtype)
        heads = ("batch", "seq", "heads", "head_dim")
        return on_shards(lambda q, k, v, s: mla_prefill(q, k, v, sm_scale=scale, segment_ids=s, causal=True),
                         (q, kr, vr, segment_ids), (heads, heads, heads, ("batch", "seq")), heads)
    return attend_causal(q, k, v, segment_ids, scale, num_kv_groups=g)


class GQAttention(nn.Module):
    """Grouped-query attention of Llama/Qwen2 (half-split rope, optional qkv bias), with a K/V cache.

    x: [b, s, hidden]; cache: {"k": [b, L, kv_heads, head_dim], "v": same} or None.
    """

    cfg: object
    mode: str = "train"  # train | prefill | decode

    @nn.compact
    def __call__(self, x, positions, segment_ids=None, cache=None):
        cfg = self.cfg
        h, kvh, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        qkv_bias = cfg.qkv_bias or cfg.attention_bias
        q = dense(cfg, (h, hd), "embed", ("heads", "head_dim"), "q_proj", qkv_bias)(x)
        k = dense(cfg, (kvh, hd), "embed", ("kv_heads", "head_dim"), "k_proj", qkv_bias)(x)
        v = dense(cfg, (kvh, hd), "embed", ("kv_heads", "head_dim"), "v_proj", qkv_bias)(x)
        cos, sin = rope_lib.rope_tables(cfg, positions, hd)
        q = rope_lib.apply_rope(q, cos, sin, cfg.rope_interleave)
        k = rope_lib.apply_rope(k, cos, sin, cfg.rope_interleave)
        q = nn.with_logical_constraint(q, ("batch", "seq", "heads", "head_dim"))
        scale = hd**-0.5
        new_cache = None
        if cache is None:
            o = causal_gqa(cfg, q, k, v, segment_ids, scale)
        else:
            kc = write_cache(cache["k"], k, positions)
            vc = write_cache(cache["v"], v, positions)
            new_cache = {"k": kc, "v": vc}
            if self.mode == "prefill":
                o = causal_gqa(cfg, q, k, v, segment_ids, scale)
            else:
                o = over_cache_prefix(
                    lambda t: attend(q, kc[:, :t].astype(q.dtype), vc[:, :t].astype(q.dtype), cache_mask(positions, t),
                                     scale, num_kv_groups=h // kvh), kc.shape[1], positions)
        return output_projection(cfg)(o), new_cache


def init_gqa_cache(cfg, batch: int, max_len: int, dtype) -> dict:
    shape = (batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
