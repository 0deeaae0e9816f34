"""Packing (prompt, completion) token lists into fixed-length training rows.

`pack(examples, seq_len)` -> dict of int32/float32 arrays [rows, seq_len]:
  input_ids, targets (next token within the same example), loss_mask (1 where the target is a
  completion token; every token when `loss_on_prompt`), segment_ids (1, 2, ... per example in a
  row; 0 = padding), positions (restart at 0 for each example).
Examples are placed first-fit in order; one longer than `seq_len` is truncated (counted).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pack(examples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, *, loss_on_prompt: bool = False,
         pad_id: int = 0) -> tuple[dict, dict]:
    rows: list[list[tuple[list[int], int]]] = []  # per row: list of (tokens, prompt_len)
    space: list[int] = []
    truncated = 0
    for prompt, completion in examples:
        toks = list(prompt) + list(completion)
        if len(toks) > seq_len:
            toks = toks[:seq_len]
            truncated += 1
        if len(toks) < 2:
            continue
        for i, free in enumerate(space):
            if free >= len(toks):
                rows[i].append((toks, len(prompt)))
                space[i] -= len(toks)
                break
        else:
            rows.append([(toks, len(prompt))])
            space.append(seq_len - len(toks))
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
    stats = {"examples": len(examples), "rows": n, "truncated": truncated,
             "fill": float((out["segment_ids"] > 0).mean()) if n else 0.0}
    return out, stats
