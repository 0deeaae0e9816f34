"""Packing token sequences into fixed-length rows, in O(n log n).

    rows = best_fit_decreasing(lengths, capacity)        # row of each item (int array [n])
    plan = PackPlan.build(lengths, seq_len, window=...)  # SFT: rows as index lists, seeded, windowed
    out, stats = pack(examples, seq_len)                 # the rows themselves (small sets, tests)

`best_fit_decreasing` sorts the items by length (longest first) and puts each into the open row
with the least free space that still holds it, opening a row when none does: free spaces are
integers 0..capacity kept in a segment tree of counts, so each item costs O(log capacity) and the
whole packing O(n log n) (the first-fit linear scan it replaces was O(n x rows): 2.7 s for 8k
examples). Rows of the result are as full as first-fit-decreasing's (both are within 11/9 of the
optimum plus a constant).

SFT packs by windows (`PackPlan`): the examples of each `window` (in a seeded order) are packed
together and the rows of all windows are shuffled per epoch; the plan holds index arrays only
(one int per example), and a row's tokens are built when a batch asks for it (`SFTRows.batch`),
from a token store that can live on disk (r1jax.data.token_store). Resuming at step s rebuilds
the same plan from the lengths and the seed and reads the rows of step s: nothing is replayed.

Row layout (both `pack` and `SFTRows`): dict of int32/float32 arrays [rows, seq_len]:
  input_ids, targets (next token within the same example), loss_mask (1 where the target is a
  completion token; every token when `loss_on_prompt`), segment_ids (1, 2, ... per example in a
  row; 0 = padding), positions (restart at 0 for each example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class _FreeSpaceTree:
    """Counts of open rows by free space (0..capacity); `smallest_at_least(s)`: the least free space
    >= s held by some row, or -1. A segment tree over the values: O(log capacity) per operation."""

    def __init__(self, capacity: int):
        self.size = 1 << max(1, int(capacity).bit_length())
        self.count = [0] * (2 * self.size)

    def add(self, free: int, delta: int) -> None:
        i = free + self.size
        while i:
            self.count[i] += delta
            i >>= 1

    def smallest_at_least(self, s: int) -> int:
        count, size = self.count, self.size
        # walk up from leaf s to the first node whose right part (values > the path) holds a row
        i = s + size
        if count[i]:
            return s
        while i > 1:
            if not i & 1 and count[i + 1]:  # i is a left child: its right sibling covers larger values
                i += 1
                while i < size:  # descend to the leftmost non-empty leaf
                    i = 2 * i if count[2 * i] else 2 * i + 1
                return i - size
            i >>= 1
        return -1


def best_fit_decreasing(lengths, capacity: int) -> np.ndarray:
    """Row index of each item ([n] int64), rows numbered in the order they open. Every length must
    be in 1..capacity. O(n log n)."""
    lengths = np.asarray(lengths, np.int64)
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        bad = int(np.argmax((lengths < 1) | (lengths > capacity)))
        raise ValueError(f"item {bad} has length {int(lengths[bad])}: it must be in 1..{capacity} (the row length)")
    order = np.argsort(-lengths, kind="stable")
    tree = _FreeSpaceTree(capacity)
    by_free: dict[int, list[int]] = {}  # free space -> open rows with exactly that space
    row_of = np.empty(len(lengths), np.int64)
    n_rows = 0
    for i in order.tolist():
        L = int(lengths[i])
        f = tree.smallest_at_least(L)
        if f < 0:
            r, f = n_rows, capacity
            n_rows += 1
        else:
            r = by_free[f].pop()
            tree.add(f, -1)
        row_of[i] = r
        nf = f - L
        if nf > 0:
            by_free.setdefault(nf, []).append(r)
            tree.add(nf, 1)
    return row_of


def rows_of(row_of: np.ndarray, members=None) -> list[np.ndarray]:
    """Item indices of each row (in the order best_fit_decreasing placed them: longest first);
    `members`: the item ids (default 0..n-1)."""
    members = np.arange(len(row_of)) if members is None else np.asarray(members)
    if not len(row_of):
        return []
    order = np.argsort(row_of, kind="stable")
    splits = np.flatnonzero(np.diff(row_of[order])) + 1
    return np.split(members[order], splits)


def fill_rows(rows: Sequence[Sequence[tuple[Sequence[int], int]]], seq_len: int, *, loss_on_prompt: bool = False,
              pad_id: int = 0) -> dict:
    """[(tokens, prompt_len), ...] per row -> the row arrays (module doc)."""
    n = len(rows)
    out = {k: np.zeros((n, seq_len), np.int32) for k in ("input_ids", "targets", "segment_ids", "positions")}
    out["input_ids"][:] = pad_id
    out["loss_mask"] = np.zeros((n, seq_len), np.float32)
    for r, row in enumerate(rows):
        off = 0
        for s, (toks, plen) in enumerate(row, start=1):
            L = len(toks)
            sl = slice(off, off + L)
            out["input_ids"][r, sl] = toks
            out["targets"][r, off: off + L - 1] = toks[1:]
            out["segment_ids"][r, sl] = s
            out["positions"][r, sl] = np.arange(L)
            first = 0 if loss_on_prompt else max(plen - 1, 0)  # target index t predicts token t + 1
            out["loss_mask"][r, off + first: off + L - 1] = 1.0
            off += L
    return out


def _fit(prompt, completion, seq_len: int):
    toks = list(prompt) + list(completion)
    return (toks[:seq_len], len(prompt)), len(toks) > seq_len


def pack(examples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, *, loss_on_prompt: bool = False,
         pad_id: int = 0) -> tuple[dict, dict]:
    """(prompt, completion) token lists -> (row arrays, stats), best-fit decreasing; an example longer
    than seq_len is truncated (counted), one of fewer than 2 tokens dropped."""
    items, truncated = [], 0
    for prompt, completion in examples:
        item, cut = _fit(prompt, completion, seq_len)
        truncated += cut
        if len(item[0]) >= 2:
            items.append(item)
    row_of = best_fit_decreasing([len(t) for t, _ in items], seq_len)
    out = fill_rows([[items[i] for i in row] for row in rows_of(row_of)], seq_len, loss_on_prompt=loss_on_prompt,
                    pad_id=pad_id)
    n = out["input_ids"].shape[0]
    stats = {"examples": len(examples), "rows": n, "truncated": truncated,
             "fill": float((out["segment_ids"] > 0).mean()) if n else 0.0}
    return out, stats


@dataclass
class PackPlan:
    """Which examples make each row: `members[offsets[r]:offsets[r + 1]]` are row r's example ids.
    Built from the examples' token counts only (capped at seq_len), `window` examples at a time in
    a seeded order, so its memory is a few ints per example whatever the token count."""
    members: np.ndarray  # [n_packed] int64 example ids, row by row
    offsets: np.ndarray  # [rows + 1] int64
    seq_len: int
    tokens: int  # real tokens over all rows

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def row(self, r: int) -> np.ndarray:
        return self.members[self.offsets[r]:self.offsets[r + 1]]

    @property
    def fill(self) -> float:
        return self.tokens / max(self.rows * self.seq_len, 1)

    @classmethod
    def build(cls, lengths, seq_len: int, *, window: int = 65536, seed: int = 0) -> "PackPlan":
        """lengths: [n] token counts (prompt + completion); examples of fewer than 2 tokens are
        left out, longer ones count as seq_len (they are truncated). O(n log n)."""
        lengths = np.minimum(np.asarray(lengths, np.int64), seq_len)
        ids = np.random.default_rng([seed, 0x9ACC]).permutation(len(lengths))
        ids = ids[lengths[ids] >= 2]
        members, offsets = [], [0]
        for a in range(0, len(ids), max(int(window), 1)):
            w = ids[a:a + window]
            for row in rows_of(best_fit_decreasing(lengths[w], seq_len), w):
                members.append(row)
                offsets.append(offsets[-1] + len(row))
        members = np.concatenate(members) if members else np.zeros((0,), np.int64)
        return cls(members=members, offsets=np.asarray(offsets, np.int64), seq_len=int(seq_len),
                   tokens=int(lengths[members].sum()))


__all__ = ["best_fit_decreasing", "rows_of", "fill_rows", "pack", "PackPlan"]
