"""Pallas flash attention for the MLA train/prefill path (q/k dim != v dim).

    o = mla_prefill(q, k, v, sm_scale=..., segment_ids=None, causal=True)

q, k: [batch, seq, heads, qk_dim] (DeepSeek-V3: 192 = nope 128 + rope 64),
v:    [batch, seq, heads, v_dim]  (V3: 128)  ->  o: [batch, seq, heads, v_dim] in q.dtype.

Forward: one program per (batch, head, query block); it keeps the query block and loops over
key blocks with an online softmax (fp32 max / sum / accumulator) and writes o and the
logsumexp. Key blocks that are entirely visible run without mask arithmetic; only the
diagonal (causal) / last (padding) blocks are masked. segment_ids [batch, seq] int32:
query i may attend key j iff the ids are equal (and j <= i when causal); a row with no
allowed key outputs 0.

Backward (jax.custom_vjp), FlashAttention-2 style, both in Pallas:
  * dq kernel: per (batch, head, query block), loop over key blocks, recompute p from the
    saved logsumexp, ds = p * (do.v - delta), dq += ds @ k.
  * dk/dv kernel: per (batch, head, key block), loop over query blocks, dv += p^T do,
    dk += ds^T q.
  delta = rowsum(o * do) is one fused elementwise XLA op.

Sequences that are not a multiple of the block sizes are padded inside the wrapper (padded keys
are masked, padded query rows dropped). See _backend.py for per-backend layouts and blocks.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _backend as bk
from ._common import NEG, cdiv, dot_nn, dot_nt, dot_tn, precision

_BIG = 0.7 * float(jnp.finfo(jnp.float32).max)     # logsumexp of a row with no allowed key


# ----------------------------------------------------------------------------- helpers
def _idiv(a, b: int):
    return lax.div(a, jnp.int32(b))


def _mask(q_start, k_start, shape, *, causal, seq_len, qseg=None, kseg=None):
    """Allowed-entry mask of a [bq, bk] tile (None if nothing to mask)."""
    mask = None

    def _and(m, x):
        return x if m is None else jnp.logical_and(m, x)

    if causal or seq_len is not None:
        k_pos = k_start + lax.broadcasted_iota(jnp.int32, shape, 1)
        if causal:
            q_pos = q_start + lax.broadcasted_iota(jnp.int32, shape, 0)
            mask = _and(mask, k_pos <= q_pos)
        if seq_len is not None:
            mask = _and(mask, k_pos < seq_len)
    if qseg is not None:
        mask = _and(mask, qseg == kseg)
    return mask


# ----------------------------------------------------------------------------- forward kernel
def _fwd_kernel(*refs, n_parts, sm_scale, causal, has_seg, seq_len, padded, block_q, block_k,
                q_axis, reverse_q, nq):
    q_refs = refs[:n_parts]
    k_refs = refs[n_parts:2 * n_parts]
    v_ref = refs[2 * n_parts]
    rest = refs[2 * n_parts + 1:]
    if has_seg:
        qseg_ref, kseg_ref, o_ref, lse_ref = rest
    else:
        o_ref, lse_ref = rest
    prec = precision(q_refs[0].dtype)
    i = pl.program_id(q_axis)
    if reverse_q:
        i = nq - 1 - i
    q_start = i * block_q
    qs = [r[...] for r in q_refs]
    qseg = qseg_ref[...] if has_seg else None
    dv = v_ref.shape[-1]
    shape = (block_q, block_k)

    def body(j, carry, masked):
        acc, m, l = carry
        k_start = pl.multiple_of(j * block_k, block_k)
        s = None
        for q_p, k_ref in zip(qs, k_refs):
            t = dot_nt(q_p, k_ref[pl.ds(k_start, block_k), :], prec)
            s = t if s is None else s + t
        s = s * sm_scale
        kseg = kseg_ref[:, pl.ds(k_start, block_k)] if has_seg else None
        mask = _mask(q_start, k_start, shape, causal=causal and masked,
                     seq_len=seq_len if (masked and padded) else None, qseg=qseg, kseg=kseg)
        if mask is not None:
            s = jnp.where(mask, s, NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new)
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
        v = v_ref[pl.ds(k_start, block_k), :]
        acc = alpha * acc + dot_nn(p.astype(v.dtype), v, prec)
        return acc, m_new, l

    carry = (jnp.zeros((block_q, dv), jnp.float32), jnp.full((block_q, 1), NEG, jnp.float32),
             jnp.zeros((block_q, 1), jnp.float32))
    n_valid = seq_len // block_k                     # key blocks without padding
    n_total = cdiv(seq_len, block_k)
    if causal:
        n_full = jnp.minimum(_idiv(q_start + 1, block_k), n_valid)
        n_end = jnp.minimum(cdiv(q_start + block_q, block_k), n_total)
    else:
        n_full, n_end = n_valid, n_total
    carry = lax.fori_loop(0, n_full, functools.partial(body, masked=False), carry)
    acc, m, l = lax.fori_loop(n_full, n_end, functools.partial(body, masked=True), carry)
    ok = l > 0.0
    inv = jnp.where(ok, 1.0 / jnp.where(ok, l, 1.0), 0.0)
    o_ref[...] = (acc * inv).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(ok, m + jnp.log(jnp.where(ok, l, 1.0)), _BIG)


# ----------------------------------------------------------------------------- backward kernels
def _dq_kernel(*refs, n_parts, sm_scale, causal, has_seg, seq_len, padded, block_q, block_k,
               q_axis, reverse_q, nq):
    q_refs = refs[:n_parts]
    k_refs = refs[n_parts:2 * n_parts]
    v_ref, do_ref, lse_ref, delta_ref = refs[2 * n_parts:2 * n_parts + 4]
    rest = refs[2 * n_parts + 4:]
    if has_seg:
        qseg_ref, kseg_ref = rest[:2]
        rest = rest[2:]
    dq_refs = rest
    prec = precision(q_refs[0].dtype)
    i = pl.program_id(q_axis)
    if reverse_q:
        i = nq - 1 - i
    q_start = i * block_q
    qs = [r[...] for r in q_refs]
    do = do_ref[...]
    lse = lse_ref[...]
    delta = delta_ref[...]
    qseg = qseg_ref[...] if has_seg else None
    shape = (block_q, block_k)

    def body(j, dqs, masked):
        k_start = pl.multiple_of(j * block_k, block_k)
        ks = [r[pl.ds(k_start, block_k), :] for r in k_refs]
        s = None
        for q_p, k_p in zip(qs, ks):
            t = dot_nt(q_p, k_p, prec)
            s = t if s is None else s + t
        s = s * sm_scale
        kseg = kseg_ref[:, pl.ds(k_start, block_k)] if has_seg else None
        mask = _mask(q_start, k_start, shape, causal=causal and masked,
                     seq_len=seq_len if (masked and padded) else None, qseg=qseg, kseg=kseg)
        p = jnp.exp(s - lse)
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        v = v_ref[pl.ds(k_start, block_k), :]
        dp = dot_nt(do, v, prec)
        ds = (p * (dp - delta) * sm_scale)
        return tuple(dq + dot_nn(ds.astype(k_p.dtype), k_p, prec) for dq, k_p in zip(dqs, ks))

    dqs = tuple(jnp.zeros((block_q, r.shape[-1]), jnp.float32) for r in q_refs)
    n_valid = seq_len // block_k
    n_total = cdiv(seq_len, block_k)
    if causal:
        n_full = jnp.minimum(_idiv(q_start + 1, block_k), n_valid)
        n_end = jnp.minimum(cdiv(q_start + block_q, block_k), n_total)
    else:
        n_full, n_end = n_valid, n_total
    dqs = lax.fori_loop(0, n_full, functools.partial(body, masked=False), dqs)
    dqs = lax.fori_loop(n_full, n_end, functools.partial(body, masked=True), dqs)
    for r, dq in zip(dq_refs, dqs):
        r[...] = dq.astype(r.dtype)


def _dkv_kernel(*refs, n_parts, sm_scale, causal, has_seg, seq_len, padded, block_q, block_k,
                k_axis, nq_total):
    del padded  # padded keys' dk/dv are dropped; padded query rows have do = 0.
    q_refs = refs[:n_parts]
    k_refs = refs[n_parts:2 * n_parts]
    v_ref, do_ref, lse_ref, delta_ref = refs[2 * n_parts:2 * n_parts + 4]
    rest = refs[2 * n_parts + 4:]
    if has_seg:
        qseg_ref, kseg_ref = rest[:2]
        rest = rest[2:]
    dk_refs, dv_ref = rest[:n_parts], rest[n_parts]
    prec = precision(q_refs[0].dtype)
    j = pl.program_id(k_axis)
    k_start = j * block_k
    ks = [r[...] for r in k_refs]
    v = v_ref[...]
    kseg = kseg_ref[...] if has_seg else None
    shape = (block_q, block_k)

    def body(i, carry, masked):
        dks, dv = carry
        q_start = pl.multiple_of(i * block_q, block_q)
        qb = [r[pl.ds(q_start, block_q), :] for r in q_refs]
        s = None
        for q_p, k_p in zip(qb, ks):
            t = dot_nt(q_p, k_p, prec)
            s = t if s is None else s + t
        s = s * sm_scale
        qseg = qseg_ref[pl.ds(q_start, block_q), :] if has_seg else None
        mask = _mask(q_start, k_start, shape, causal=causal and masked, seq_len=None,
                     qseg=qseg, kseg=kseg)
        lse = lse_ref[pl.ds(q_start, block_q), :]
        p = jnp.exp(s - lse)
        if mask is not None:
            p = jnp.where(mask, p, 0.0)
        do = do_ref[pl.ds(q_start, block_q), :]
        dv = dv + dot_tn(p.astype(do.dtype), do, prec)
        dp = dot_nt(do, v, prec)
        delta = delta_ref[pl.ds(q_start, block_q), :]
        ds = (p * (dp - delta) * sm_scale).astype(qb[0].dtype)
        dks = tuple(dk + dot_tn(ds, q_p, prec) for dk, q_p in zip(dks, qb))
        return dks, dv

    carry = (tuple(jnp.zeros((block_k, r.shape[-1]), jnp.float32) for r in k_refs),
             jnp.zeros((block_k, v_ref.shape[-1]), jnp.float32))
    nq_valid = cdiv(seq_len, block_q)    # query blocks holding real rows
    if causal:
        i_begin = _idiv(k_start, block_q)
        i_full = jnp.minimum(cdiv(k_start + block_k - 1, block_q), nq_valid)
        i_full = jnp.maximum(i_full, i_begin)
    else:
        i_begin = i_full = 0
    carry = lax.fori_loop(i_begin, i_full, functools.partial(body, masked=True), carry)
    dks, dv = lax.fori_loop(i_full, nq_valid, functools.partial(body, masked=False), carry)
    del nq_total
    for r, dk in zip(dk_refs, dks):
        r[...] = dk.astype(r.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------- specs / layout
class _Layout:
    """BlockSpec factory. gpu: arrays [b, s, h, d], grid (q/k block [reversed], h, b).
    tpu: arrays [b, h, s, d], grid (b, h, q/k block)."""

    def __init__(self, backend, batch, heads, nblocks, reverse):
        self.backend = backend
        self.gpu = backend == "gpu"
        self.nblocks = nblocks
        self.reverse = reverse
        self.grid = (nblocks, heads, batch) if self.gpu else (batch, heads, nblocks)
        self.axis = 0 if self.gpu else 2

    def ids(self, *g):
        if self.gpu:
            i, h, b = g
            if self.reverse:
                i = self.nblocks - 1 - i
            return b, h, i
        return g

    def act(self, rows, width, col, full):
        if _bshd(self.backend):
            return pl.BlockSpec((None, rows, None, width),
                                lambda *g: (lambda b, h, i: (b, 0 if full else i, h, col))(*self.ids(*g)))
        return pl.BlockSpec((None, None, rows, width),
                            lambda *g: (lambda b, h, i: (b, h, 0 if full else i, col))(*self.ids(*g)))

    def row_stat(self, rows, full):    # [b, h, s, 1]
        return pl.BlockSpec((None, None, rows, 1),
                            lambda *g: (lambda b, h, i: (b, h, 0 if full else i, 0))(*self.ids(*g)))

    def qseg(self, rows, full):        # [b, s, 1]
        return pl.BlockSpec((None, rows, 1),
                            lambda *g: (lambda b, h, i: (b, 0 if full else i, 0))(*self.ids(*g)))

    def kseg(self, cols, full):        # [b, 1, s]
        return pl.BlockSpec((None, 1, cols),
                            lambda *g: (lambda b, h, i: (b, 0, 0 if full else i))(*self.ids(*g)))

    def params(self, num_warps, num_stages, vmem_bytes):
        if self.gpu:
            return bk.compiler_params("gpu", num_warps=num_warps, num_stages=num_stages)
        return bk.compiler_params("tpu", dimension_semantics=("parallel",) * 3,
                                  vmem_limit_bytes=bk.tpu_vmem_limit(vmem_bytes))


# Activation layout per backend: [b, s, h, d] on gpu (Triton takes the head stride for free);
# head-major [b, h, s, d] on tpu (a squeezed head dim in the second-minor position of a block
# would be a strided sublane gather).
TPU_LAYOUT = "bhsd"


def _bshd(backend):
    return backend == "gpu" or TPU_LAYOUT == "bshd"


def _to_layout(x, s_pad, backend):
    x = jnp.pad(x, ((0, 0), (0, s_pad - x.shape[1]), (0, 0), (0, 0)))
    return x if _bshd(backend) else jnp.transpose(x, (0, 2, 1, 3))


def _from_layout(x, s, backend):
    if not _bshd(backend):
        x = jnp.transpose(x, (0, 2, 1, 3))
    return x[:, :s]


def _seg_arrays(seg, s_pad):
    seg = jnp.pad(seg.astype(jnp.int32), ((0, 0), (0, s_pad - seg.shape[1])), constant_values=-1)
    return seg[:, :, None], seg[:, None, :]


def _geometry(q, v, backend, block_q, block_k, tuning=None):
    b, s, h, dqk = q.shape
    blocks = bk.prefill_blocks(backend, s, dqk, v.shape[-1], block_q, block_k)
    if tuning:
        blocks = dataclasses.replace(blocks, **dict(tuning))
    lcm = math.lcm(blocks.block_q, blocks.block_k, blocks.bwd_block_q, blocks.bwd_block_k)
    return blocks, bk.round_up(s, lcm)


# ----------------------------------------------------------------------------- pallas calls
def _fwd_impl(q, k, v, seg, *, sm_scale, causal, block_q, block_k, tuning, backend, interpret):
    b, s, h, dqk = q.shape
    dv = v.shape[-1]
    blocks, s_pad = _geometry(q, v, backend, block_q, block_k, tuning)
    bq, bkk = blocks.block_q, blocks.block_k
    parts = bk.dim_parts(dqk, backend)
    nq = s_pad // bq
    lay = _Layout(backend, b, h, nq, reverse=causal)
    qx, kx, vx = (_to_layout(x, s_pad, backend) for x in (q, k, v))
    has_seg = seg is not None
    in_specs = ([lay.act(bq, w, off // w, False) for off, w in parts]
                + [lay.act(s_pad, w, off // w, True) for off, w in parts]
                + [lay.act(s_pad, dv, 0, True)])
    args = [qx] * len(parts) + [kx] * len(parts) + [vx]
    if has_seg:
        qseg, kseg = _seg_arrays(seg, s_pad)
        in_specs += [lay.qseg(bq, False), lay.kseg(s_pad, True)]
        args += [qseg, kseg]
    o_shape = (b, s_pad, h, dv) if _bshd(backend) else (b, h, s_pad, dv)
    out_shape = [bk.out_struct(o_shape, q.dtype, qx),
                 bk.out_struct((b, h, s_pad, 1), jnp.float32, qx)]
    out_specs = [lay.act(bq, dv, 0, False), lay.row_stat(bq, False)]
    isz = q.dtype.itemsize
    vmem = 2 * (bq * dqk * isz + s_pad * (dqk + dv) * isz + bq * dv * isz + bq * 512
                + (s_pad * 4 * 8 if has_seg else 0)) + 4 * bq * bkk * 4 + bq * dv * 4
    kernel = functools.partial(
        _fwd_kernel, n_parts=len(parts), sm_scale=float(sm_scale), causal=causal, has_seg=has_seg,
        seq_len=s, padded=s_pad != s, block_q=bq, block_k=bkk, q_axis=lay.axis,
        reverse_q=lay.gpu and lay.reverse, nq=nq)
    o, lse = pl.pallas_call(
        kernel, grid=lay.grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=lay.params(blocks.num_warps, blocks.num_stages, vmem),
        interpret=interpret, name="mla_prefill_fwd",
    )(*args)
    return _from_layout(o, s, backend), lse[:, :, :s, 0]


def _bwd_impl(q, k, v, seg, o, lse, do, *, sm_scale, causal, block_q, block_k, tuning, backend,
              interpret):
    b, s, h, dqk = q.shape
    dv = v.shape[-1]
    blocks, s_pad = _geometry(q, v, backend, block_q, block_k, tuning)
    bq, bkk = blocks.bwd_block_q, blocks.bwd_block_k
    parts = bk.dim_parts(dqk, backend)
    has_seg = seg is not None
    delta = jnp.einsum("bshd,bshd->bhs", o.astype(jnp.float32), do.astype(jnp.float32))
    stat_pad = ((0, 0), (0, 0), (0, s_pad - s))
    lse_x = jnp.pad(lse, stat_pad)[..., None]
    delta_x = jnp.pad(delta, stat_pad)[..., None]
    qx, kx, vx, dox = (_to_layout(x, s_pad, backend) for x in (q, k, v, do.astype(q.dtype)))
    if has_seg:
        qseg, kseg = _seg_arrays(seg, s_pad)
    isz = q.dtype.itemsize
    act_shape = lambda d: (b, s_pad, h, d) if _bshd(backend) else (b, h, s_pad, d)

    # dq: grid over query blocks, loop over key blocks.
    nq = s_pad // bq
    lay = _Layout(backend, b, h, nq, reverse=causal)
    in_specs = ([lay.act(bq, w, off // w, False) for off, w in parts]
                + [lay.act(s_pad, w, off // w, True) for off, w in parts]
                + [lay.act(s_pad, dv, 0, True), lay.act(bq, dv, 0, False),
                   lay.row_stat(bq, False), lay.row_stat(bq, False)])
    args = [qx] * len(parts) + [kx] * len(parts) + [vx, dox, lse_x, delta_x]
    if has_seg:
        in_specs += [lay.qseg(bq, False), lay.kseg(s_pad, True)]
        args += [qseg, kseg]
    vmem = 2 * (bq * (dqk + dv) * isz + s_pad * (dqk + dv) * isz + 2 * bq * 512 + bq * dqk * isz
                + (s_pad * 4 * 8 if has_seg else 0)) + 6 * bq * bkk * 4 + bq * dqk * 4
    dq_parts = pl.pallas_call(
        functools.partial(_dq_kernel, n_parts=len(parts), sm_scale=float(sm_scale), causal=causal,
                          has_seg=has_seg, seq_len=s, padded=s_pad != s, block_q=bq, block_k=bkk,
                          q_axis=lay.axis, reverse_q=lay.gpu and lay.reverse, nq=nq),
        grid=lay.grid, in_specs=in_specs,
        out_specs=[lay.act(bq, w, 0, False) for _, w in parts],
        out_shape=[bk.out_struct(act_shape(w), q.dtype, qx) for _, w in parts],
        compiler_params=lay.params(blocks.bwd_num_warps, blocks.bwd_num_stages, vmem),
        interpret=interpret, name="mla_prefill_bwd_dq",
    )(*args)

    # dk, dv: grid over key blocks, loop over query blocks.
    nk = s_pad // bkk
    lay = _Layout(backend, b, h, nk, reverse=False)
    in_specs = ([lay.act(s_pad, w, off // w, True) for off, w in parts]
                + [lay.act(bkk, w, off // w, False) for off, w in parts]
                + [lay.act(bkk, dv, 0, False), lay.act(s_pad, dv, 0, True),
                   lay.row_stat(s_pad, True), lay.row_stat(s_pad, True)])
    args = [qx] * len(parts) + [kx] * len(parts) + [vx, dox, lse_x, delta_x]
    if has_seg:
        in_specs += [lay.qseg(s_pad, True), lay.kseg(bkk, False)]
        args += [qseg, kseg]
    vmem = 2 * (s_pad * (dqk + dv) * isz + 2 * s_pad * 512 + bkk * (dqk + dv) * isz * 2
                + (s_pad * 512 if has_seg else 0)) + 6 * bq * bkk * 4 + bkk * (dqk + dv) * 4
    outs = pl.pallas_call(
        functools.partial(_dkv_kernel, n_parts=len(parts), sm_scale=float(sm_scale),
                          causal=causal, has_seg=has_seg, seq_len=s, padded=s_pad != s,
                          block_q=bq, block_k=bkk, k_axis=lay.axis, nq_total=nq),
        grid=lay.grid, in_specs=in_specs,
        out_specs=[lay.act(bkk, w, 0, False) for _, w in parts] + [lay.act(bkk, dv, 0, False)],
        out_shape=([bk.out_struct(act_shape(w), k.dtype, qx) for _, w in parts]
                   + [bk.out_struct(act_shape(dv), v.dtype, qx)]),
        compiler_params=lay.params(blocks.bwd_num_warps, blocks.bwd_num_stages, vmem),
        interpret=interpret, name="mla_prefill_bwd_dkv",
    )(*args)
    dk_parts, dv_x = outs[:len(parts)], outs[len(parts)]
    cat = lambda xs: xs[0] if len(xs) == 1 else jnp.concatenate(xs, axis=-1)
    dq = _from_layout(cat(dq_parts), s, backend)
    dk = _from_layout(cat(dk_parts), s, backend)
    return dq, dk, _from_layout(dv_x, s, backend)


# ----------------------------------------------------------------------------- public API
@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _prefill(q, k, v, seg, cfg):
    return _prefill_fwd(q, k, v, seg, cfg)[0]


def _run_fwd(q, k, v, seg, cfg):
    sm_scale, causal, block_q, block_k, interpret, backend, tuning = cfg
    impl = functools.partial(_fwd_impl, sm_scale=sm_scale, causal=causal, block_q=block_q,
                             block_k=block_k, tuning=tuning)
    return bk.dispatch(impl, (q, k, v, seg), interpret=interpret, backend=backend)


def _prefill_fwd(q, k, v, seg, cfg):
    o, lse = _run_fwd(q, k, v, seg, cfg)
    return o, (q, k, v, seg, o, lse)


def _prefill_bwd(cfg, res, do):
    q, k, v, seg, o, lse = res
    sm_scale, causal, block_q, block_k, interpret, backend, tuning = cfg
    impl = functools.partial(_bwd_impl, sm_scale=sm_scale, causal=causal, block_q=block_q,
                             block_k=block_k, tuning=tuning)
    dq, dk, dv = bk.dispatch(impl, (q, k, v, seg, o, lse, do), interpret=interpret,
                             backend=backend)
    return dq, dk, dv, None


_prefill.defvjp(_prefill_fwd, _prefill_bwd)


def mla_prefill(q, k, v, *, sm_scale, segment_ids=None, causal=True, block_q=None, block_k=None,
                interpret=None, backend=None, tuning=None):
    """Causal (optionally segmented) flash attention with qk_dim != v_dim.

    Args:
      q, k: [batch, seq, heads, qk_dim]; v: [batch, seq, heads, v_dim].
      sm_scale: logit scale (python float).
      segment_ids: optional [batch, seq] int: attend only within equal ids (packing / padding).
      causal: key j visible to query i only if j <= i.
      block_q, block_k: override the per-backend block sizes (forward and backward).
      interpret: None = interpret on CPU, compile on TPU/GPU (decided at lowering);
        True = always the Pallas interpreter.
      backend: None, "tpu" or "gpu": force one variant's layout/blocks (tests, AOT).
      tuning: optional dict overriding _backend.PrefillBlocks fields (bwd_block_q, num_warps,
        num_stages, bwd_num_warps, ...), used by tools/bench_mla.py.
    Returns: o [batch, seq, heads, v_dim] in q.dtype. Differentiable in q, k, v.
    """
    if q.ndim != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"mla_prefill expects q, k [b, s, h, dqk] and v [b, s, h, dv]; got "
                         f"q{q.shape} k{k.shape} v{v.shape}")
    if segment_ids is not None and segment_ids.shape != q.shape[:2]:
        raise ValueError(f"segment_ids must be [batch, seq] = {q.shape[:2]}, got {segment_ids.shape}")
    k = k.astype(q.dtype)
    v = v.astype(q.dtype)
    tuning = tuple(sorted(tuning.items())) if tuning else None
    cfg = (float(sm_scale), bool(causal), block_q, block_k, interpret, backend, tuning)
    return _prefill(q, k, v, segment_ids, cfg)
