"""Blockwise causal attention whose memory is linear in the sequence length, forward and backward
(the FlashAttention algorithm in plain JAX: runs on every XLA backend, CPU included).

    o = flash_attention(q, k, v, segment_ids, scale, num_kv_groups=g)   # == attend(... causal_segment_mask)

q: [b, s, h, d], k: [b, s, h // g, d], v: [b, s, h // g, dv], segment_ids: [b, s] int or None
-> [b, s, h, dv] in q.dtype. Query i sees key j iff j <= i and segment_ids[i] == segment_ids[j].

Forward: query blocks of `block` rows, each scanning the key blocks up to its diagonal with an
online softmax (running max m, running sum l); it keeps only o and the row log-sum-exp
lse = m + log l. Backward (``jax.custom_vjp``): per key block, the query blocks from its diagonal
on recompute p = exp(s - lse) block by block and accumulate dv += p^T do, dk += ds^T q, dq += ds k
with ds = p * (do v^T - rowsum(do * o)). Nothing of size s x s is ever held: the score and
probability blocks are [block, block] per head, so the temporaries grow linearly with s (the
residuals kept for the backward are q, k, v, o, lse). Key blocks above the diagonal are skipped
(their scores are all masked), so the work is about half the s x s of the plain path. The
reference it is tested against is :func:`r1jax.model.attention.attend` with
:func:`r1jax.model.attention.causal_segment_mask` (values and gradients, f32).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model.layers import NEG_INF

BLOCK = 512  # rows (and keys) per block


def _pad(x, n, axis, value=0):
    if n == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, n)
    return jnp.pad(x, widths, constant_values=value)


def _mask(seg, i, j, block):
    """[b, 1, 1, block, block] bool for query block i against key block j (causal + segment)."""
    qi = i * block + jnp.arange(block)
    kj = j * block + jnp.arange(block)
    m = kj[None, :] <= qi[:, None]
    sq = jax.lax.dynamic_slice_in_dim(seg, i * block, block, axis=1)
    sk = jax.lax.dynamic_slice_in_dim(seg, j * block, block, axis=1)
    return (m[None] & (sq[:, :, None] == sk[:, None, :]))[:, None, None]


def _blk(x, i, block, axis):
    return jax.lax.dynamic_slice_in_dim(x, i * block, block, axis=axis)


def _forward(qh, kh, vh, seg, scale, block):
    """qh: [b, kvh, g, S, d], kh: [b, kvh, S, d], vh: [b, kvh, S, dv] (S a multiple of block)
    -> o [b, kvh, g, S, dv] f32, lse [b, kvh, g, S] f32."""
    b, kvh, g, S, _ = qh.shape
    dv = vh.shape[-1]
    nb = S // block

    def q_block(i):
        q = _blk(qh, i, block, 3)

        def body(j, carry):
            o, m, l = carry
            k, v = _blk(kh, j, block, 2), _blk(vh, j, block, 2)
            s = jnp.einsum("bkgqd,bktd->bkgqt", q, k, preferred_element_type=jnp.float32) * scale
            s = jnp.where(_mask(seg, i, j, block), s, NEG_INF)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m - m_new)
            l = l * corr + p.sum(-1)
            o = o * corr[..., None] + jnp.einsum("bkgqt,bktd->bkgqd", p.astype(vh.dtype), v,
                                                 preferred_element_type=jnp.float32)
            return o, m_new, l

        init = (jnp.zeros((b, kvh, g, block, dv), jnp.float32), jnp.full((b, kvh, g, block), NEG_INF, jnp.float32),
                jnp.zeros((b, kvh, g, block), jnp.float32))
        o, m, l = jax.lax.fori_loop(0, i + 1, body, init)
        l = jnp.where(l > 0, l, 1.0)
        return o / l[..., None], m + jnp.log(l)

    o, lse = jax.lax.map(q_block, jnp.arange(nb))  # [nb, b, kvh, g, block, ...]
    o = jnp.moveaxis(o, 0, 3).reshape(b, kvh, g, S, dv)
    lse = jnp.moveaxis(lse, 0, 3).reshape(b, kvh, g, S)
    return o, lse


def _backward(qh, kh, vh, seg, o, lse, do, scale, block):
    b, kvh, g, S, d = qh.shape
    nb = S // block
    delta = jnp.sum(do * o, axis=-1)  # [b, kvh, g, S]

    def k_block(dq, j):
        k, v = _blk(kh, j, block, 2), _blk(vh, j, block, 2)

        def body(i, carry):
            dq, dk, dv = carry
            q, doi = _blk(qh, i, block, 3), _blk(do, i, block, 3)
            s = jnp.einsum("bkgqd,bktd->bkgqt", q, k, preferred_element_type=jnp.float32) * scale
            mask = _mask(seg, i, j, block)
            p = jnp.where(mask, jnp.exp(s - _blk(lse, i, block, 3)[..., None]), 0.0)
            dv = dv + jnp.einsum("bkgqt,bkgqd->bktd", p, doi.astype(jnp.float32))
            dp = jnp.einsum("bkgqd,bktd->bkgqt", doi.astype(jnp.float32), v.astype(jnp.float32))
            ds = p * (dp - _blk(delta, i, block, 3)[..., None])
            dk = dk + jnp.einsum("bkgqt,bkgqd->bktd", ds, q.astype(jnp.float32)) * scale
            dqi = _blk(dq, i, block, 3) + jnp.einsum("bkgqt,bktd->bkgqd", ds, k.astype(jnp.float32)) * scale
            dq = jax.lax.dynamic_update_slice_in_dim(dq, dqi, i * block, axis=3)
            return dq, dk, dv

        init = (dq, jnp.zeros((b, kvh, block, d), jnp.float32), jnp.zeros((b, kvh, block, vh.shape[-1]), jnp.float32))
        dq, dk, dv = jax.lax.fori_loop(j, nb, body, init)
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(k_block, jnp.zeros(qh.shape, jnp.float32), jnp.arange(nb))
    dk = jnp.moveaxis(dk, 0, 2).reshape(b, kvh, S, d)
    dv = jnp.moveaxis(dv, 0, 2).reshape(b, kvh, S, vh.shape[-1])
    return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _flash(qh, kh, vh, seg, scale, block):
    return _forward(qh, kh, vh, seg, scale, block)[0]


def _flash_fwd(qh, kh, vh, seg, scale, block):
    o, lse = _forward(qh, kh, vh, seg, scale, block)
    return o, (qh, kh, vh, seg, o, lse)


def _flash_bwd(scale, block, res, do):
    qh, kh, vh, seg, o, lse = res
    dq, dk, dv = _backward(qh, kh, vh, seg, o, lse, do.astype(jnp.float32), scale, block)
    seg_ct = np.zeros(seg.shape, jax.dtypes.float0)  # integer segment ids: no cotangent
    return dq.astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), seg_ct


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q, k, v, segment_ids, scale, *, num_kv_groups: int = 1, block: int = BLOCK):
    """Causal (+ segment) attention in O(s) memory (module docstring). Same shapes and result as
    ``attend(q, k, v, causal_segment_mask(segment_ids, b, s), scale, num_kv_groups=...)``. ``scale``
    is a Python float (static); blocks hold at most ``block`` rows, a multiple of 8, as few as cover
    the length. Reverse mode only (custom VJP: no jvp / forward-mode)."""
    b, s, h, d = q.shape
    g = num_kv_groups
    kvh = h // g
    nb = -(-s // block)  # blocks of at most `block` rows, sized to the length (2049 -> 5 x 416, not 5 x 512)
    block = -(-(-(-s // nb)) // 8) * 8
    pad = nb * block - s
    seg = jnp.zeros((b, s), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    seg = _pad(seg, pad, 1, value=-1)  # padded keys match only padded queries (whose rows are dropped)
    qh = _pad(q.reshape(b, s, kvh, g, d).transpose(0, 2, 3, 1, 4), pad, 3)  # [b, kvh, g, S, d]
    kh = _pad(k.transpose(0, 2, 1, 3), pad, 2)  # [b, kvh, S, d]
    vh = _pad(v.transpose(0, 2, 1, 3), pad, 2)
    o = _flash(qh, kh, vh, seg, float(scale), int(block))  # [b, kvh, g, S, dv] f32
    o = o[:, :, :, :s]
    return o.transpose(0, 3, 1, 2, 4).reshape(b, s, h, v.shape[-1]).astype(q.dtype)
