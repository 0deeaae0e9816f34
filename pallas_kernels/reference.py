"""Plain-JAX references for the MLA kernels (same math, no Pallas).

Shapes (DeepSeek-V3 sizes in brackets):
  prefill:  q, k [batch, seq, heads, qk_dim (192 = nope 128 + rope 64)],
            v [batch, seq, heads, v_dim (128)] -> o [batch, seq, heads, v_dim]
  decode:   q_latent [batch, q_len, heads, kv_lora_rank (512)], q_rope [batch, q_len, heads, rope (64)],
            cache [batch, max_len, kv_lora_rank + rope] (c_kv | k_rope, shared by all heads),
            lengths [batch] = valid cache entries INCLUDING the q_len new tokens
            -> o_latent [batch, q_len, heads, kv_lora_rank]
  absorption weights: w_uk [kv_lora_rank, heads, qk_nope_dim], w_uv [kv_lora_rank, heads, v_dim]
            (k_nope[t, h] = c_kv[t] @ w_uk[:, h], v[t, h] = c_kv[t] @ w_uv[:, h];
             q_latent = einsum('blhn,rhn->blhr', q_nope, w_uk);
             out = einsum('blhr,rhv->blhv', o_latent, w_uv)).

A query row that may attend to no key outputs 0 (and gets zero gradients).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._common import NEG


def _masked_softmax(logits, mask):
    logits = jnp.where(mask, logits, NEG)
    w = jax.nn.softmax(logits, axis=-1)
    return jnp.where(mask, w, 0.0)


def prefill_mask(seq: int, segment_ids=None, causal: bool = True):
    """[batch or 1, 1, seq_q, seq_k] bool: query i may attend key j."""
    mask = jnp.ones((1, 1, seq, seq), bool)
    if causal:
        mask = mask & jnp.tril(jnp.ones((seq, seq), bool))[None, None]
    if segment_ids is not None:
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return mask


def mla_prefill_reference(q, k, v, *, sm_scale, segment_ids=None, causal=True, precision=None):
    """Softmax attention with per-head q/k dim != v dim. q, k: [b, s, h, dqk]; v: [b, s, h, dv]."""
    seq = q.shape[1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision,
                        preferred_element_type=jnp.float32) * sm_scale
    w = _masked_softmax(logits, prefill_mask(seq, segment_ids, causal))
    o = jnp.einsum("bhqk,bkhd->bqhd", w.astype(v.dtype) if v.dtype != jnp.float32 else w, v,
                   precision=precision, preferred_element_type=jnp.float32)
    return o.astype(q.dtype)


def decode_mask(lengths, q_len: int, max_len: int):
    """[batch, q_len, max_len] bool: new token t (at position lengths-q_len+t) sees positions <= it."""
    pos = jnp.arange(max_len)[None, None, :]
    limit = lengths[:, None, None] - q_len + jnp.arange(q_len)[None, :, None] + 1
    return pos < limit


def mla_decode_reference(q_latent, q_rope, cache, lengths, *, sm_scale, kv_lora_rank, precision=None):
    """Absorbed MLA decode on the latent cache, plain einsums."""
    b, q_len, h, r = q_latent.shape
    assert r == kv_lora_rank, (q_latent.shape, kv_lora_rank)
    c_kv = cache[..., :kv_lora_rank]
    k_rope = cache[..., kv_lora_rank:]
    logits = (jnp.einsum("blhr,btr->blht", q_latent, c_kv, precision=precision,
                         preferred_element_type=jnp.float32)
              + jnp.einsum("blhd,btd->blht", q_rope, k_rope, precision=precision,
                           preferred_element_type=jnp.float32)) * sm_scale
    mask = decode_mask(lengths, q_len, cache.shape[1])[:, :, None, :]
    w = _masked_softmax(logits, mask)
    o = jnp.einsum("blht,btr->blhr", w, c_kv.astype(jnp.float32), precision=precision)
    return o.astype(q_latent.dtype)


def absorb_q(q_nope, w_uk, precision=None):
    """q_latent = q_nope @ W_UK per head: [b, l, h, nope] x [r, h, nope] -> [b, l, h, r]."""
    return jnp.einsum("blhn,rhn->blhr", q_nope, w_uk, precision=precision)


def unabsorb_o(o_latent, w_uv, precision=None):
    """o = o_latent @ W_UV per head: [b, l, h, r] x [r, h, v] -> [b, l, h, v]."""
    return jnp.einsum("blhr,rhv->blhv", o_latent, w_uv, precision=precision)


def mla_decode_expanded_reference(q_nope, q_rope, cache, lengths, w_uk, w_uv, *, sm_scale,
                                  kv_lora_rank, precision=None):
    """Non-absorbed MLA decode: re-expand per-head K/V from the latent cache, then attention.

    q_nope [b, q_len, h, nope], q_rope [b, q_len, h, rope], cache [b, max_len, r + rope],
    w_uk [r, h, nope], w_uv [r, h, v_dim] -> [b, q_len, h, v_dim].
    """
    b, q_len, h, _ = q_nope.shape
    max_len = cache.shape[1]
    c_kv = cache[..., :kv_lora_rank]
    k_rope = cache[..., kv_lora_rank:]
    k_nope = jnp.einsum("btr,rhn->bthn", c_kv, w_uk, precision=precision)      # [b, t, h, nope]
    v = jnp.einsum("btr,rhv->bthv", c_kv, w_uv, precision=precision)           # [b, t, h, v]
    k = jnp.concatenate([k_nope, jnp.broadcast_to(k_rope[:, :, None, :],
                                                  (b, max_len, h, k_rope.shape[-1]))], -1)
    q = jnp.concatenate([q_nope, q_rope], -1)
    logits = jnp.einsum("blhd,bthd->bhlt", q, k, precision=precision,
                        preferred_element_type=jnp.float32) * sm_scale
    mask = decode_mask(lengths, q_len, max_len)[:, None, :, :]
    w = _masked_softmax(logits, mask)
    o = jnp.einsum("bhlt,bthv->blhv", w, v.astype(jnp.float32), precision=precision)
    return o.astype(q_nope.dtype)


def mla_prefill_blockwise_reference(q, k, v, *, sm_scale, segment_ids=None, causal=True,
                                    block_k=128, precision=None):
    """O(seq) memory plain-JAX flash attention (lax.scan over key blocks); forward only."""
    b, s, h, d = q.shape
    nb = -(-s // block_k)
    pad = nb * block_k - s
    kp = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
    vp = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
    seg = segment_ids if segment_ids is not None else jnp.zeros((b, s), jnp.int32)
    segk = jnp.pad(seg, ((0, 0), (0, pad)), constant_values=-1)
    qpos = jnp.arange(s)

    def step(carry, j):
        acc, m, l = carry
        kb = lax.dynamic_slice_in_dim(kp, j * block_k, block_k, 1)
        vb = lax.dynamic_slice_in_dim(vp, j * block_k, block_k, 1)
        sb = lax.dynamic_slice_in_dim(segk, j * block_k, block_k, 1)
        kpos = j * block_k + jnp.arange(block_k)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, kb, precision=precision,
                            preferred_element_type=jnp.float32) * sm_scale
        mask = (seg[:, None, :, None] == sb[:, None, None, :])
        if causal:
            mask = mask & (kpos[None, None, None, :] <= qpos[None, None, :, None])
        logits = jnp.where(mask, logits, NEG)
        m_new = jnp.maximum(m, logits.max(-1))
        p = jnp.where(mask, jnp.exp(logits - m_new[..., None]), 0.0)
        alpha = jnp.exp(m - m_new)
        l = alpha * l + p.sum(-1)
        acc = alpha[..., None] * acc + jnp.einsum("bhqk,bkhd->bhqd", p, vb.astype(jnp.float32),
                                                  precision=precision)
        return (acc, m_new, l), None

    init = (jnp.zeros((b, h, s, v.shape[-1]), jnp.float32), jnp.full((b, h, s), NEG, jnp.float32),
            jnp.zeros((b, h, s), jnp.float32))
    (acc, m, l), _ = lax.scan(step, init, jnp.arange(nb))
    o = jnp.where(l[..., None] > 0, acc / jnp.where(l > 0, l, 1.0)[..., None], 0.0)
    return jnp.transpose(o, (0, 2, 1, 3)).astype(q.dtype)
