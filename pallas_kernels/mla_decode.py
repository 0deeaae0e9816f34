"""Pallas absorbed MLA decode (flash-decoding over the latent KV cache).

    o_latent = mla_decode(q_latent, q_rope, cache, lengths, sm_scale=..., kv_lora_rank=...)

q_latent [batch, q_len, heads, kv_lora_rank] (= q_nope @ W_UK, done by the caller),
q_rope   [batch, q_len, heads, rope_dim],
cache    [batch, max_len, kv_lora_rank + rope_dim]  (c_kv | k_rope, shared by all heads),
lengths  [batch] int32: valid cache entries INCLUDING the q_len new tokens, which sit at
         positions lengths-q_len .. lengths-1 (new token t sees positions < lengths-q_len+t+1).
-> o_latent [batch, q_len, heads, kv_lora_rank] in q_latent.dtype (caller applies W_UV).

All heads (and all q_len new tokens) of a sequence are the rows of ONE query matrix
[heads * q_len, rank + rope]: MLA's shared latent cache behaves like multi-query attention, so
each cache block is loaded once and used by every head (the rows are split into `block_m`-row
programs only to bound the accumulator; those programs are adjacent in launch order so the
second read of a block hits L2 on GPU / is skipped by the TPU pipeline). The cache axis is
split into `num_splits` chunks (flash-decoding): each (sequence, row block, split) program runs
an online softmax over its chunk and writes a partial output and its logsumexp; a small XLA
step combines the splits. Programs stop at the sequence's length (no work past lengths[b]).
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from . import _backend as bk
from ._common import NEG, cdiv, dot_nn, dot_nt, precision


def _decode_kernel(*refs, parts, rank, q_len, sm_scale, block_m, block_k, chunk, axes):
    n = len(parts)
    q_refs, c_refs = refs[:n], refs[n:2 * n]
    len_ref, o_ref, lse_ref = refs[2 * n:]
    b = pl.program_id(axes[0])
    sp = pl.program_id(axes[1])
    r = pl.program_id(axes[2])
    prec = precision(q_refs[0].dtype)
    length = len_ref[b]
    base = sp * chunk
    qs = [ref[...] for ref in q_refs]
    shape = (block_m, block_k)
    row = r * block_m + lax.broadcasted_iota(jnp.int32, shape, 0)
    # new token t = row % q_len (rows are head-major: row = head * q_len + t)
    limit = length - q_len + 1 + lax.rem(row, jnp.int32(q_len)) - base   # chunk-relative
    # latent (value) columns: the parts that start before `rank`; width used inside each part.
    vparts = [(i, off, min(w, rank - off)) for i, (off, w) in enumerate(parts) if off < rank]

    def body(j, carry, masked):
        accs, m, l = carry
        start = pl.multiple_of(j * block_k, block_k)
        tiles = [ref[pl.ds(start, block_k), :] for ref in c_refs]
        s = None
        for q_p, t_p in zip(qs, tiles):
            x = dot_nt(q_p, t_p, prec)
            s = x if s is None else s + x
        s = s * sm_scale
        if masked:
            mask = start + lax.broadcasted_iota(jnp.int32, shape, 1) < limit
            s = jnp.where(mask, s, NEG)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        alpha = jnp.exp(m - m_new)
        p = jnp.exp(s - m_new)
        if masked:
            p = jnp.where(mask, p, 0.0)
        l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
        new = []
        for acc, (i, off, w) in zip(accs, vparts):
            t = tiles[i]
            v = t if t.shape[1] == w else t[:, :w]
            new.append(alpha * acc + dot_nn(p.astype(v.dtype), v, prec))
        return tuple(new), m_new, l

    carry = (tuple(jnp.zeros((block_m, w), jnp.float32) for _, _, w in vparts),
             jnp.full((block_m, 1), NEG, jnp.float32), jnp.zeros((block_m, 1), jnp.float32))
    nblk = chunk // block_k
    n_end = jnp.clip(cdiv(length - base, block_k), 0, nblk)
    # blocks every row may see entirely: positions < length - q_len + 1
    n_full = jnp.clip(lax.div(length - q_len + 1 - base, jnp.int32(block_k)), 0, n_end)
    carry = lax.fori_loop(0, n_full, functools.partial(body, masked=False), carry)
    accs, m, l = lax.fori_loop(n_full, n_end, functools.partial(body, masked=True), carry)
    ok = l > 0.0
    inv = jnp.where(ok, 1.0 / jnp.where(ok, l, 1.0), 0.0)
    if len(vparts) == 1:
        o_ref[...] = (accs[0] * inv).astype(o_ref.dtype)
    else:
        for acc, (_, off, w) in zip(accs, vparts):
            o_ref[:, pl.ds(off, w)] = (acc * inv).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(ok, m + jnp.log(jnp.where(ok, l, 1.0)), NEG)


def _decode_impl(q, cache, lengths, *, sm_scale, rank, q_len, block_k, num_splits, block_m,
                 num_warps, num_stages, out_dtype, backend, interpret):
    """q: [batch, rows = heads*q_len (head-major), rank + rope]. Returns [batch, rows, rank]."""
    b, rows, d = q.shape
    max_len = cache.shape[1]
    blk = bk.decode_blocks(backend, b, rows, max_len, rank, block_k, num_splits, block_m,
                           num_warps, num_stages)
    parts = bk.latent_parts(rank, d - rank, backend)
    rows_pad = bk.round_up(rows, blk.block_m)
    if rows_pad != rows:
        q = jnp.pad(q, ((0, 0), (0, rows_pad - rows), (0, 0)))
    if blk.padded_len != max_len:   # only for odd max_len / explicit num_splits: copies the cache
        cache = jnp.pad(cache, ((0, 0), (0, blk.padded_len - max_len), (0, 0)))
    nr, ns = rows_pad // blk.block_m, blk.num_splits
    gpu = backend == "gpu"
    if gpu:   # row blocks of one (sequence, split) are adjacent in launch order (L2 reuse)
        grid, axes = (nr, ns, b), (2, 1, 0)
        ids = lambda r, s, bb: (bb, s, r)
    else:
        grid, axes = (b, ns, nr), (0, 1, 2)
        ids = lambda bb, s, r: (bb, s, r)
    bm = blk.block_m
    q_specs = [pl.BlockSpec((None, bm, w), lambda *g, c=off // w: (lambda bb, s, r: (bb, r, c))(*ids(*g)))
               for off, w in parts]
    c_specs = [pl.BlockSpec((None, blk.chunk, w),
                            lambda *g, c=off // w: (lambda bb, s, r: (bb, s, c))(*ids(*g)))
               for off, w in parts]
    if gpu:
        len_spec = pl.BlockSpec((b,), lambda *g: (0,))
        params = bk.compiler_params("gpu", num_warps=blk.num_warps, num_stages=blk.num_stages)
    else:
        from jax.experimental.pallas import tpu as pltpu
        len_spec = pl.BlockSpec(memory_space=pltpu.SMEM)
        isz = cache.dtype.itemsize
        vmem = (2 * (blk.chunk * d * isz + bm * d * q.dtype.itemsize + bm * rank * 4 + bm * 512)
                + 4 * bm * blk.block_k * 4 + bm * rank * 4)
        params = bk.compiler_params("tpu", dimension_semantics=("parallel",) * 3,
                                    vmem_limit_bytes=bk.tpu_vmem_limit(vmem))
    o_dtype = out_dtype if ns == 1 else jnp.float32
    out_specs = [pl.BlockSpec((None, None, bm, rank), lambda *g: (lambda bb, s, r: (bb, s, r, 0))(*ids(*g))),
                 pl.BlockSpec((None, None, bm, 1), lambda *g: (lambda bb, s, r: (bb, s, r, 0))(*ids(*g)))]
    out_shape = [bk.out_struct((b, ns, rows_pad, rank), o_dtype, q),
                 bk.out_struct((b, ns, rows_pad, 1), jnp.float32, q)]
    kernel = functools.partial(_decode_kernel, parts=parts, rank=rank, q_len=q_len,
                               sm_scale=float(sm_scale), block_m=bm, block_k=blk.block_k,
                               chunk=blk.chunk, axes=axes)
    o, lse = pl.pallas_call(
        kernel, grid=grid, in_specs=q_specs + c_specs + [len_spec], out_specs=out_specs,
        out_shape=out_shape, compiler_params=params, interpret=interpret, name="mla_decode",
    )(*([q] * len(parts) + [cache] * len(parts) + [lengths.astype(jnp.int32)]))
    if ns == 1:
        o = o[:, 0]
    else:   # combine the splits' partial softmaxes
        m = jnp.max(lse, axis=1, keepdims=True)
        w = jnp.exp(lse - m)
        o = (jnp.sum(w * o, axis=1) / jnp.sum(w, axis=1)).astype(out_dtype)
    return o[:, :rows]


def mla_decode(q_latent, q_rope, cache, lengths, *, sm_scale, kv_lora_rank, block_k=None,
               num_splits=None, interpret=None, backend=None, block_m=None, num_warps=None,
               num_stages=None):
    """Absorbed MLA decode attention over the latent cache (see module docstring).

    Args:
      q_latent: [batch, q_len, heads, kv_lora_rank]; q_rope: [batch, q_len, heads, rope_dim].
      cache: [batch, max_len, kv_lora_rank + rope_dim]; lengths: [batch] int32 (incl. new tokens).
      sm_scale: logit scale. kv_lora_rank: latent width (split point of the cache rows).
      block_k: cache rows per inner step; num_splits: flash-decoding splits (None = heuristic).
      interpret: None = interpret on CPU, compile on TPU/GPU; True = Pallas interpreter.
      backend: None | "tpu" | "gpu" (force a variant); block_m / num_warps / num_stages: tuning.
    Returns: o_latent [batch, q_len, heads, kv_lora_rank] in q_latent.dtype.
    """
    b, q_len, h, r = q_latent.shape
    if r != kv_lora_rank or q_rope.shape[:3] != (b, q_len, h):
        raise ValueError(f"mla_decode: q_latent {q_latent.shape} / q_rope {q_rope.shape} do not "
                         f"match kv_lora_rank={kv_lora_rank}")
    if cache.ndim != 3 or cache.shape[0] != b or cache.shape[2] != r + q_rope.shape[-1]:
        raise ValueError(f"mla_decode: cache must be [batch, max_len, {r}+{q_rope.shape[-1]}], "
                         f"got {cache.shape}")
    if lengths.shape != (b,):
        raise ValueError(f"mla_decode: lengths must be [batch]={b}, got {lengths.shape}")
    d = cache.shape[-1]
    q = jnp.concatenate([q_latent.astype(cache.dtype), q_rope.astype(cache.dtype)], axis=-1)
    q = jnp.transpose(q, (0, 2, 1, 3)).reshape(b, h * q_len, d)    # rows = head * q_len + t
    impl = functools.partial(_decode_impl, sm_scale=sm_scale, rank=r, q_len=q_len,
                             block_k=block_k, num_splits=num_splits, block_m=block_m,
                             num_warps=num_warps, num_stages=num_stages,
                             out_dtype=q_latent.dtype)
    o = bk.dispatch(impl, (q, cache, lengths.astype(jnp.int32)), interpret=interpret,
                    backend=backend)
    return jnp.transpose(o.reshape(b, h, q_len, r), (0, 2, 1, 3))
