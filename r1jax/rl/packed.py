"""The packed GRPO update batch: every sample (prompt + completion) a segment of rows of `pack_len`
tokens, rows grouped into micro-batches by a token budget and balanced over data-parallel ranks.

    spec = PackSpec(pack_len=1024, rows_per_rank=4, ranks=8, sample_capacity=64)
    mbs, stats = pack_samples(spec, prompt_ids, completions, sampler_logps, advantages, sample_mask,
                              pad_id, routes=None, n_micro=None)

How samples are placed (all on the host, O(n log n)):
  1. rows: best-fit decreasing of the sample lengths into rows of pack_len (r1jax.data.packing);
  2. micro-batches: m = ceil(rows / (ranks x rows_per_rank)) (or `n_micro`, e.g. the largest over
     processes), and the rows, longest first, each go to the (micro-batch, rank) cell with the
     fewest tokens that has a free row (sort-and-balance: every rank of a micro-batch gets about
     the same tokens, so no rank waits for another).
Rows per micro-batch and their length are fixed for the run (`PackSpec`), so the update is one
program however many micro-batches a step has (r1jax.train.AccumStep).

Each micro-batch (host numpy; its rows in rank order, rank r's rows then rank r+1's):
  input_ids, targets, positions, segment_ids (1, 2, ... per sample in a row; 0 padding),
  token_mask (1 on real tokens: padding counts in no MoE expert load or EP capacity), loss_mask,
  old_logp, sampler_logp (the sampler's, on the completion targets), sample_index (the sample's
  slot; -1 on padding): [rows, pack_len]; advantages [ranks x sample_capacity] (slot -> advantage;
  rank r's samples take the slots r x sample_capacity ...: the sample reductions stay on the rank);
  sampler_route [rows, pack_len, n_moe, k] with routes. The per-sample reductions of the loss run
  over sample_index (r1jax.rl.samples), so loss and gradients equal the padded update's.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from r1jax.data.packing import best_fit_decreasing, rows_of


@dataclass(frozen=True)
class PackSpec:
    pack_len: int  # tokens per row (>= the longest sample)
    rows_per_rank: int  # rows of one micro-batch on one data-parallel rank
    ranks: int = 1  # data-parallel ranks of this process (the batch's leading dim splits into them)
    sample_capacity: int = 0  # samples one rank's rows can hold in a micro-batch (slots; static)

    @property
    def rows(self) -> int:
        return self.rows_per_rank * self.ranks


def sample_lengths(prompt_ids, completions) -> np.ndarray:
    return np.array([len(p) + len(c) for p, c in zip(prompt_ids, completions)], np.int64)


def plan_micro_batches(lengths, spec: PackSpec, n_micro: int | None = None):
    """-> list over micro-batches of [ranks] lists of rows, each row a list of sample indices.
    `n_micro`: at least this many micro-batches (empty ones pad; e.g. to agree across processes)."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and lengths.max() > spec.pack_len:
        i = int(np.argmax(lengths))
        raise ValueError(f"sample {i} has {int(lengths[i])} tokens > pack_len={spec.pack_len}")
    rows = rows_of(best_fit_decreasing(lengths, spec.pack_len)) if lengths.size else []
    tokens = [int(lengths[r].sum()) for r in rows]
    need = -(-len(rows) // spec.rows)
    m = max(need, n_micro or 0, 1)
    cells = [(0, mi, r) for mi in range(m) for r in range(spec.ranks)]  # (tokens, micro-batch, rank)
    heapq.heapify(cells)
    out = [[[] for _ in range(spec.ranks)] for _ in range(m)]
    for i in np.argsort([-t for t in tokens], kind="stable"):
        t, mi, r = heapq.heappop(cells)
        out[mi][r].append([int(x) for x in rows[i]])
        if len(out[mi][r]) < spec.rows_per_rank:
            heapq.heappush(cells, (t + tokens[i], mi, r))
    return out


def pack_samples(spec: PackSpec, prompt_ids, completions, sampler_logps, advantages, sample_mask, pad_id: int, *,
                 routes=None, n_micro: int | None = None, plan=None, slot_offset: int = 0):
    """Samples -> (micro-batches, stats). A sample is prompt + completion; the loss covers its
    completion targets when sample_mask (targets t = token t+1 within the sample). `plan`: from
    plan_micro_batches (default: made here). `slot_offset`: added to sample_index (several processes:
    process p's slots start at p x ranks x sample_capacity of the global advantages array).
    stats: micro_batches, rows, tokens, loss_tokens, fill."""
    lengths = sample_lengths(prompt_ids, completions)
    plan = plan_micro_batches(lengths, spec, n_micro) if plan is None else plan
    R, L, S = spec.rows, spec.pack_len, spec.sample_capacity
    cap = S or max(spec.rows_per_rank * L // 2, 1)
    mbs = []
    for cells in plan:
        ids = np.full((R, L), pad_id, np.int32)
        tg = np.zeros((R, L), np.int32)
        pos = np.zeros((R, L), np.int32)
        seg = np.zeros((R, L), np.int32)
        lm = np.zeros((R, L), np.float32)
        old = np.zeros((R, L), np.float32)
        sidx = np.full((R, L), -1, np.int32)
        adv = np.zeros((spec.ranks * cap,), np.float32)
        sr = None
        if routes is not None:
            sr = np.full((R, L) + tuple(np.shape(routes[0])[1:]), -1, np.int32)
        for rank, rows in enumerate(cells):
            slot = rank * cap
            for j, row in enumerate(rows):
                ri = rank * spec.rows_per_rank + j
                off = 0
                for s, i in enumerate(row, start=1):
                    if slot >= (rank + 1) * cap:
                        raise ValueError(f"more than sample_capacity={cap} samples in one rank's rows")
                    p, c = list(prompt_ids[i]), list(completions[i])
                    seq = p + c
                    n = len(seq)
                    ids[ri, off:off + n] = seq
                    tg[ri, off:off + n - 1] = seq[1:]
                    pos[ri, off:off + n] = np.arange(n)
                    seg[ri, off:off + n] = s
                    sidx[ri, off:off + n] = slot + slot_offset
                    adv[slot] = advantages[i]
                    a, b = off + len(p) - 1, off + n - 1
                    if b > a and sample_mask[i]:
                        lm[ri, a:b] = 1.0
                        old[ri, a:b] = np.asarray(sampler_logps[i][: b - a], np.float32)
                    if sr is not None:
                        r_ = np.asarray(routes[i])[: len(c)]
                        sr[ri, off + len(p):off + len(p) + len(r_)] = r_
                    off += n
                    slot += 1
        mb = {"input_ids": ids, "targets": tg, "positions": pos, "segment_ids": seg,
              "token_mask": (seg > 0).astype(np.int32), "loss_mask": lm, "old_logp": old,
              "sampler_logp": old.copy(), "sample_index": sidx, "advantages": adv}
        if sr is not None:
            mb["sampler_route"] = sr
        mbs.append(mb)
    real = int(lengths.sum())
    stats = {"micro_batches": len(mbs), "rows": sum(len(r) for c in plan for r in c), "tokens": real,
             "loss_tokens": int(sum(mb["loss_mask"].sum() for mb in mbs)),
             "fill": real / max(len(mbs) * R * L, 1)}
    return mbs, stats


def padded_micro_batches(batch: dict, n_micro: int) -> list[dict]:
    """A padded batch (r1jax.rl.batch.build_batch; rows = samples) split into n_micro equal parts:
    the log-prob passes of the padded update run on these, never on all rows at once."""
    n = len(batch["input_ids"])
    if n % n_micro:
        raise ValueError(f"{n} rows do not split into {n_micro} micro-batches")
    k = n // n_micro
    return [{key: v[i * k:(i + 1) * k] for key, v in batch.items()} for i in range(n_micro)]


__all__ = ["PackSpec", "plan_micro_batches", "pack_samples", "sample_lengths", "padded_micro_batches"]
