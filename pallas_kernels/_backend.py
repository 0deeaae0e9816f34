"""Backend selection and block-size heuristics shared by the MLA Pallas kernels.

One kernel body serves every backend; what differs per backend is chosen here:

* ``tpu`` (Mosaic): the last two dims of every block must be multiples of (8, 128) or equal
  to the array's dims, so feature dims travel as ONE full-width block (192, 576, ...) and
  activations are laid out head-major ``[batch, heads, seq, dim]`` (a squeezed head dim in
  the second-minor position would be a strided sublane gather). Big blocks (128..512).
* ``gpu`` (Triton): every tensor a kernel loads must have a power-of-two size, so a
  feature dim like 192 = 128 + 64 or 576 = 512 + 64 is split into power-of-two column
  "parts" (the same array is passed once per part with a BlockSpec whose last-dim block
  index selects the columns; no padding to 256 and no copy). Activations stay
  ``[batch, seq, heads, dim]`` (Triton handles the head stride). Blocks are powers of two.

``dispatch`` picks the variant at LOWERING time with ``lax.platform_dependent``, so the same
jitted function interprets on CPU, compiles Mosaic for TPU (also when cross-compiling for a
TPU topology from a CPU host) and Triton for CUDA/ROCm. ``interpret=True`` forces the
interpreter everywhere; ``backend="tpu"|"gpu"`` forces one variant's layout and blocks
(tests use it to run both variants in interpret mode).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
from jax import lax

from ._common import cdiv

BACKENDS = ("tpu", "gpu")


def next_pow2(x: int) -> int:
    return 1 << max(0, (int(x) - 1).bit_length())


def round_up(x: int, m: int) -> int:
    return -(-int(x) // m) * m


def dim_parts(dim: int, backend: str) -> tuple[tuple[int, int], ...]:
    """Column parts ((offset, width), ...) a feature dim is split into for `backend`.

    tpu: one part of the full width. gpu: power-of-two parts, largest first, so every part's
    offset is a multiple of its width (a BlockSpec block index can address it).
    """
    if backend == "tpu":
        return ((0, dim),)
    parts, off = [], 0
    for bit in reversed(range(dim.bit_length())):
        w = 1 << bit
        if dim & w:
            parts.append((off, w))
            off += w
    return tuple(parts)


def latent_parts(rank: int, rope: int, backend: str) -> tuple[tuple[int, int], ...]:
    """Parts of the [c_kv | k_rope] cache row: on gpu the latent block must start a part."""
    if backend == "tpu":
        return ((0, rank + rope),)
    parts = list(dim_parts(rank, "gpu"))
    for off, w in dim_parts(rope, "gpu"):
        if (rank + off) % w:
            raise ValueError(
                f"kv_lora_rank={rank} and rope dim={rope}: the rope columns cannot be addressed as "
                f"power-of-two blocks (offset {rank + off} is not a multiple of {w})")
        parts.append((rank + off, w))
    return tuple(parts)


@dataclasses.dataclass(frozen=True)
class PrefillBlocks:
    block_q: int
    block_k: int
    bwd_block_q: int
    bwd_block_k: int
    num_warps: int = 4
    num_stages: int = 2
    bwd_num_warps: int = 4
    bwd_num_stages: int = 2


def prefill_blocks(backend: str, seq: int, qk_dim: int, v_dim: int,
                   block_q: int | None, block_k: int | None) -> PrefillBlocks:
    # User block sizes are rounded UP to the backend's legal values (every platform branch is
    # traced by lax.platform_dependent, so a size legal on one backend must not fail on another).
    if backend == "tpu":
        bq = round_up(block_q, 8) if block_q else min(512, round_up(seq, 128))
        bk = round_up(block_k, 128) if block_k else min(512, round_up(seq, 128))
        return PrefillBlocks(bq, bk, bq if block_q else min(bq, 256), bk if block_k else min(bk, 256))
    big = max(qk_dim, v_dim) > 64
    cap = next_pow2(max(seq, 16))
    bq = next_pow2(block_q) if block_q else min(128, cap)
    bk = next_pow2(block_k) if block_k else min(64 if big else 128, cap)
    # H100 sweep (docs/PERF_MLA.md): backward best with 128-row query / 64-row key blocks.
    bbq = next_pow2(block_q) if block_q else min(128 if big else 64, cap)
    bbk = next_pow2(block_k) if block_k else min(64, cap)
    return PrefillBlocks(max(16, bq), max(16, bk), max(16, bbq), max(16, bbk),
                         num_warps=8 if big else 4, num_stages=3,
                         bwd_num_warps=8 if big else 4, bwd_num_stages=2)


@dataclasses.dataclass(frozen=True)
class DecodeBlocks:
    block_m: int      # query rows (heads x q_len) per program
    block_k: int      # cache rows per inner step
    num_splits: int   # flash-decoding splits of the cache axis
    chunk: int        # cache rows per split (multiple of block_k)
    padded_len: int   # num_splits * chunk (> max_len only when the cache must be padded)
    num_warps: int = 4
    num_stages: int = 2


def _largest_divisor_le(n: int, cap: int) -> int:
    for d in range(max(1, min(n, cap)), 0, -1):
        if n % d == 0:
            return d
    return 1


def decode_blocks(backend: str, batch: int, rows: int, max_len: int, rank: int,
                  block_k: int | None, num_splits: int | None, block_m: int | None = None,
                  num_warps: int | None = None, num_stages: int | None = None) -> DecodeBlocks:
    """Blocks for the absorbed decode. The cache is never copied when max_len is a multiple of
    a legal block_k (pow2 >= 16 on gpu, multiple of 128 on tpu) and num_splits is left to the
    heuristic (it then divides the number of cache blocks)."""
    if backend == "tpu":
        bm = round_up(block_m, 8) if block_m else min(256, round_up(rows, 8))
        if block_k is None:
            block_k = next((c for c in (512, 256, 128) if max_len % c == 0),
                           min(512, round_up(max_len, 128)))
        block_k = round_up(block_k, 128)   # (rounded up: see prefill_blocks)
        nkb = cdiv(max_len, block_k)
        programs = batch * cdiv(rows, bm)
        # >= 2 programs for megacore; a split's chunk stays <= 4096 rows of VMEM.
        want = max(2 if programs < 2 else 1, cdiv(nkb * block_k, 4096))
        warps, stages = 1, 1
    else:
        big = rank > 256
        bm = next_pow2(block_m) if block_m else max(16, min(64 if big else 128, next_pow2(rows)))
        if block_k is None:
            cap = 64 if big else 128
            block_k = next((c for c in (cap, cap // 2, cap // 4) if c >= 16 and max_len % c == 0),
                           max(16, min(cap, next_pow2(max_len))))
        block_k = next_pow2(block_k)   # (rounded up: see prefill_blocks)
        nkb = cdiv(max_len, block_k)
        programs = batch * cdiv(rows, bm)
        # flash-decoding: about one full wave of programs on a 132-SM card (the H100 sweep
        # showed a second partial wave costs more than it gains); each split >= 4 blocks.
        want = max(1, min(132 // programs, nkb // 4))
        # H100 sweep: 8 warps for the 64-row x 512-wide accumulator; 4 for <= 32 rows
        # (16 heads: 4 warps 127 us vs 8 warps 141 us).
        warps, stages = (8 if big and bm >= 64 else 4), 2
    if num_splits is None:
        ns = _largest_divisor_le(nkb, want)
    else:
        ns = max(1, min(int(num_splits), nkb))
    chunk = cdiv(nkb, ns) * block_k
    return DecodeBlocks(bm, block_k, ns, chunk, ns * chunk, num_warps or warps, num_stages or stages)


def compiler_params(backend: str, *, num_warps: int = 4, num_stages: int = 2,
                    dimension_semantics=None, vmem_limit_bytes: int | None = None):
    if backend == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        return pltpu.CompilerParams(dimension_semantics=dimension_semantics,
                                    vmem_limit_bytes=vmem_limit_bytes)
    from jax.experimental.pallas import triton as pltriton
    return pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages)


def tpu_vmem_limit(bytes_needed: int) -> int:
    """Scoped-VMEM limit for a kernel whose double-buffered blocks take `bytes_needed`."""
    want = int(bytes_needed * 1.25) + (4 << 20)
    return max(32 << 20, min(want, 100 << 20))


def dispatch(impl: Callable, args: tuple, *, interpret: bool | None, backend: str | None):
    """Call ``impl(*args, backend=..., interpret=...)`` for the platform being lowered for.

    interpret=True: interpreter, `backend` variant (default tpu). backend given and
    interpret=False: that variant compiled. Otherwise `lax.platform_dependent` picks at
    lowering: cpu -> interpreter (tpu variant, or `backend`), tpu -> Mosaic, cuda/rocm -> Triton.
    All branches must return the same shapes (callers return unpadded arrays).
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if interpret:
        return impl(*args, backend=backend or "tpu", interpret=True)
    if backend is not None and interpret is False:
        return impl(*args, backend=backend, interpret=False)
    cpu_backend = backend or "tpu"
    branches = dict(
        cpu=functools.partial(impl, backend=cpu_backend, interpret=interpret is None),
        tpu=functools.partial(impl, backend=backend or "tpu", interpret=False),
        cuda=functools.partial(impl, backend=backend or "gpu", interpret=False),
        rocm=functools.partial(impl, backend=backend or "gpu", interpret=False),
    )
    return lax.platform_dependent(*args, **branches)


def default_interpret() -> bool:
    return jax.default_backend() == "cpu"


def out_struct(shape, dtype, like):
    """ShapeDtypeStruct for a pallas_call output that varies over shard_map mesh axes like `like`.

    Needed under jax.shard_map(check_vma=True); the field is `manual_axis_type` in jax >= 0.10
    and `vma` before it."""
    aval = jax.typeof(like) if hasattr(jax, "typeof") else jax.core.get_aval(like)
    for field in ("manual_axis_type", "vma"):
        val = getattr(aval, field, None)
        if val is not None:
            try:
                return jax.ShapeDtypeStruct(shape, dtype, **{field: val})
            except TypeError:
                continue
    return jax.ShapeDtypeStruct(shape, dtype)
