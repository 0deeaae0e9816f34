"""The routed-expert dispatches tuned for XLA:CPU (same math as r1jax.model.experts.experts_dense).

  - "grouped": sort by expert; all rows in per-expert blocks of 128 through a loop over the blocks
    in use (dropless; the CPU path for training and prefill, where XLA's ragged_dot loops over
    all experts at full size)
  - "blocked": sort by expert; each expert's first C = 1.25 x mean-load rows in one [E, C, d]
    batched matmul, the rows beyond C (if any) through the same block loop (dropless; the CPU
    path for decode, a few rows per expert)
  - "cpu": "grouped" or "blocked" by the token count (what "ragged" resolves to on CPU)

Shapes as in r1jax.model.experts: x [n, d], idx / w [n, k], wg / wu [E, d, I], wd [E, I, d] -> [n, d].
Measurements: docs/PERF_CPU.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.model.experts import _sorted_with_ranks, batched_expert_mlp, swiglu

MAIN_CAPACITY_FACTOR = 1.25  # experts_blocked: rows per expert in the batched pass, x mean load
OVERFLOW_BLOCK = 64  # experts_blocked: rows per block of the overflow loop
GROUPED_BLOCK = 128  # experts_grouped: rows per block


def experts_blocked(x, idx, w, wg, wu, wd, capacity_factor: float = MAIN_CAPACITY_FACTOR,
                    block: int = OVERFLOW_BLOCK):
    """Dropless on CPU: a batched matmul over an [E, C, d] buffer plus an exact overflow loop.

    Assignments are sorted by expert. The first C = capacity_factor * n*k/E (rounded up to 8)
    rows of every expert go to one [E, C, d] buffer evaluated with batched matmuls against the
    expert weights as they are (no per-block weight gather, plain batched weight gradients).
    The rows beyond C (none when the load is balanced) are not dropped: they are grouped by
    expert in blocks of `block` rows and evaluated by `_block_loop_experts`, a loop over blocks that
    skips the unused ones. Same result as `experts_dense` (f32 rounding aside).
    """
    n, k = idx.shape
    e, d, inter = wg.shape
    nk = n * k
    cap = min(-(-int(capacity_factor * nk) // e), n)  # an expert gets at most n rows (top-k is distinct)
    cap = max((cap + 7) // 8 * 8, 8)
    tok, w_sorted, sorted_e, rank, sizes = _sorted_with_ranks(idx, w, e)
    in_main = rank < cap
    # batched pass: slot e * cap + rank; slot e * cap (out of range) is the dump for overflow rows
    slot = jnp.where(in_main, sorted_e * cap + rank, e * cap)
    src = jnp.full((e * cap + 1,), n, jnp.int32).at[slot].set(tok)[:-1]  # token of each slot, n = empty
    wt = jnp.zeros((e * cap + 1,), w.dtype).at[slot].set(w_sorted)[:-1]
    xpad = jnp.concatenate([x, jnp.zeros((1, d), x.dtype)])
    xb = xpad[src].reshape(e, cap, d)
    y = batched_expert_mlp(xb, wg, wu, wd).reshape(e * cap, d)
    out = jnp.zeros((n + 1, d), jnp.float32).at[src].add(y.astype(jnp.float32) * wt[:, None].astype(jnp.float32))
    out = out[:n]
    if cap < n:  # overflow is possible
        out = out + _rows_in_expert_blocks(x, tok, w_sorted, sorted_e, rank, sizes, wg, wu, wd, cap, block)
    return out.astype(x.dtype)


def experts_grouped(x, idx, w, wg, wu, wd, block: int = GROUPED_BLOCK):
    """Dropless on CPU for many tokens: every expert's rows in blocks of `block`, one loop.

    Assignments are sorted by expert and laid out in per-expert blocks of `block` rows (the last
    block of each expert zero-padded); `_block_loop_experts` loops over the blocks in use, each a
    [block, d] x [d, I] SwiGLU MLP against one expert's weights, with a hand-written backward that
    accumulates the weight gradients in place. Compared to `experts_blocked` there is no [E, C, d]
    buffer sized for the mean load, so an unbalanced router costs nothing extra; with a mean load of
    at least a block per expert this is the faster CPU path (docs/PERF_CPU.md). Same result as
    `experts_dense` (f32 rounding aside).
    """
    tok, w_sorted, sorted_e, rank, sizes = _sorted_with_ranks(idx, w, wg.shape[0])
    out = _rows_in_expert_blocks(x, tok, w_sorted, sorted_e, rank, sizes, wg, wu, wd, 0, block)
    return out.astype(x.dtype)


def experts_cpu(x, idx, w, wg, wu, wd):
    """The CPU dispatch: `experts_grouped` when the mean load fills a block per expert (training,
    prefill), else `experts_blocked` (decode: a few rows per expert, one batched matmul)."""
    n, k = idx.shape
    if n * k >= wg.shape[0] * GROUPED_BLOCK:
        return experts_grouped(x, idx, w, wg, wu, wd)
    return experts_blocked(x, idx, w, wg, wu, wd)


def _rows_in_expert_blocks(x, tok, w_sorted, sorted_e, rank, sizes, wg, wu, wd, cap: int, block: int):
    """The sorted assignments with rank >= cap in each expert, as per-expert blocks through
    `_block_loop_experts` -> [n, d] f32 (zero when no expert has more than `cap` rows).

    x: [n, d]; tok, w_sorted, sorted_e, rank: [n*k] assignments sorted by expert (token, weight,
    expert, position within the expert); sizes: [E] rows per expert; wg/wu: [E, d, I], wd: [E, I, d];
    cap, block: static ints.
    """
    n, d = x.shape
    nk = tok.shape[0]
    k = nk // n
    e = sizes.shape[0]
    block = int(max(8, min(block, pl2(max(n - cap, 1)))))
    in_blocks = rank >= cap
    over = jnp.maximum(sizes - cap, 0)
    padded = (over + block - 1) // block * block
    pend = jnp.cumsum(padded)
    pstart = pend - padded
    rows = (k * (n - cap) + e * (block - 1) + block - 1) // block * block  # static bound
    oslot = jnp.where(in_blocks, pstart[sorted_e] + rank - cap, rows)
    osrc = jnp.full((rows + 1,), n, jnp.int32).at[oslot].set(tok)[:-1].reshape(rows // block, block)
    owt = jnp.zeros((rows + 1,), w_sorted.dtype).at[oslot].set(w_sorted)[:-1].reshape(rows // block, block)
    bexp = jnp.clip(jnp.searchsorted(pend, jnp.arange(rows // block) * block, side="right"), 0, e - 1)
    used = pend[-1] // block
    args = (x, owt.astype(jnp.float32), osrc, bexp.astype(jnp.int32), used, wg, wu, wd)
    # skipped as a whole (forward and backward) when no row is beyond cap (experts_blocked's usual case)
    return jax.lax.cond(used > 0, lambda a: _block_loop_experts(*a), lambda a: jnp.zeros((n, d), jnp.float32), args)


def _expert_mlp(xb, wg, wu, wd):
    g, u = xb @ wg, xb @ wu
    return swiglu(g, u) @ wd


@jax.custom_vjp
def _block_loop_experts(x, wt, src, bexp, used, wg, wu, wd):
    """sum over the block rows r: wt[r] * mlp_{bexp}(x[src[r]]) added at row src[r] -> [n, d] f32.

    x: [n, d], wt/src: [nb, B] (src == n: empty row), bexp: [nb] expert of each block, used:
    blocks in use (the rest are skipped). A loop over blocks: no [nb, d, I] weight gather; the
    backward accumulates the weight gradients in place and recomputes the activations.
    """
    return _block_loop_fwd(x, wt, src, bexp, used, wg, wu, wd)[0]


def _block_loop_fwd(x, wt, src, bexp, used, wg, wu, wd):
    n, d = x.shape
    xpad = jnp.concatenate([x, jnp.zeros((1, d), x.dtype)])

    def body(out, t):
        s, w_, ei, j = t

        def add(out):
            y = _expert_mlp(xpad[s], wg[ei], wu[ei], wd[ei])
            return out.at[s].add(y.astype(jnp.float32) * w_[:, None])

        return jax.lax.cond(j < used, add, lambda o: o, out), None

    out, _ = jax.lax.scan(body, jnp.zeros((n + 1, d), jnp.float32), (src, wt, bexp, jnp.arange(src.shape[0])))
    return out[:n], (x, wt, src, bexp, used, wg, wu, wd)


def _block_loop_bwd(res, dout):
    x, wt, src, bexp, used, wg, wu, wd = res
    n, d = x.shape
    xpad = jnp.concatenate([x, jnp.zeros((1, d), x.dtype)])
    dpad = jnp.concatenate([dout, jnp.zeros((1, d), dout.dtype)])

    def body(acc, t):
        s, w_, ei, j = t

        def grads(acc):
            dx, dwg, dwu, dwd = acc
            xb = xpad[s]
            g, u = xb @ wg[ei], xb @ wu[ei]
            sg = jax.nn.silu(g)
            h = sg * u
            y = h @ wd[ei]
            dyw = dpad[s]  # [B, d] f32
            dwt = (dyw * y.astype(jnp.float32)).sum(-1)
            dy = (dyw * w_[:, None]).astype(y.dtype)
            dh = dy @ wd[ei].T
            sig = jax.nn.sigmoid(g)
            dg = dh * u * (sig * (1 + g * (1 - sig)))
            du = dh * sg
            dxb = dg @ wg[ei].T + du @ wu[ei].T
            upd = lambda a, v: jax.lax.dynamic_update_index_in_dim(a, a[ei] + v.astype(a.dtype), ei, 0)  # noqa: E731
            acc = (dx.at[s].add(dxb.astype(dx.dtype)), upd(dwg, xb.T @ dg), upd(dwu, xb.T @ du), upd(dwd, h.T @ dy))
            return acc, dwt

        return jax.lax.cond(j < used, grads, lambda a: (a, jnp.zeros(s.shape, jnp.float32)), acc)

    acc = (jnp.zeros((n + 1, d), x.dtype), jnp.zeros_like(wg), jnp.zeros_like(wu), jnp.zeros_like(wd))
    (dx, dwg, dwu, dwd), dwt = jax.lax.scan(body, acc, (src, wt, bexp, jnp.arange(src.shape[0])))
    return dx[:n], dwt.astype(wt.dtype), None, None, None, dwg, dwu, dwd


_block_loop_experts.defvjp(_block_loop_fwd, _block_loop_bwd)


def pl2(v: int) -> int:
    """Largest power of two <= v (>= 1)."""
    v = max(int(v), 1)
    return 1 << (v.bit_length() - 1)


CPU_EXPERT_FNS = {"blocked": experts_blocked, "grouped": experts_grouped, "cpu": experts_cpu}
