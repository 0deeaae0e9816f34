"""Tokenized examples as one flat int32 array: 4 bytes a token, in RAM or on disk (np.memmap).

    store = TokenStore.build(examples, path=None)    # examples: iterable of (prompt ids, completion ids)
    toks, prompt_len = store.example(i)              # np.int32 [len], int
    store.lengths                                    # [n] int64 tokens per example

With `path`, the tokens are written to `path` in chunks as the examples come and read back through
a memory map, so a million-example SFT set costs its token count in disk, not in host RAM (the
per-example offsets and prompt lengths, 12 bytes each, stay in RAM).
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

CHUNK = 1 << 20  # tokens buffered before a write


class TokenStore:
    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, prompt_lens: np.ndarray):
        self.tokens, self.offsets, self.prompt_lens = tokens, offsets, prompt_lens

    def __len__(self) -> int:
        return len(self.prompt_lens)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, i: int) -> tuple[np.ndarray, int]:
        return np.asarray(self.tokens[self.offsets[i]:self.offsets[i + 1]]), int(self.prompt_lens[i])

    def id_range(self) -> tuple[int, int]:
        """(min, max) token id over every example (a pass over the store, a chunk at a time)."""
        lo, hi = None, None
        for a in range(0, len(self.tokens), CHUNK):
            x = np.asarray(self.tokens[a:a + CHUNK])
            lo = int(x.min()) if lo is None else min(lo, int(x.min()))
            hi = int(x.max()) if hi is None else max(hi, int(x.max()))
        return (0, 0) if lo is None else (lo, hi)

    @classmethod
    def build(cls, examples: Iterable[tuple[Sequence[int], Sequence[int]]], path: str | None = None) -> "TokenStore":
        offsets, plens, buf, n_buf = [0], [], [], 0
        out = open(path, "wb") if path else None
        chunks = []
        try:
            for prompt, completion in examples:
                toks = np.concatenate([np.asarray(prompt, np.int32).reshape(-1),
                                       np.asarray(completion, np.int32).reshape(-1)])
                buf.append(toks)
                n_buf += len(toks)
                offsets.append(offsets[-1] + len(toks))
                plens.append(len(prompt))
                if n_buf >= CHUNK:
                    block = np.concatenate(buf)
                    out.write(block.tobytes()) if out else chunks.append(block)
                    buf, n_buf = [], 0
            if buf:
                block = np.concatenate(buf)
                out.write(block.tobytes()) if out else chunks.append(block)
        finally:
            if out:
                out.close()
        offsets_a = np.asarray(offsets, np.int64)
        if path:
            n = int(offsets_a[-1])
            tokens = (np.memmap(path, np.int32, mode="r", shape=(n,)) if n and os.path.getsize(path)
                      else np.zeros((0,), np.int32))
        else:
            tokens = np.concatenate(chunks) if chunks else np.zeros((0,), np.int32)
        return cls(tokens, offsets_a, np.asarray(plens, np.int32))


__all__ = ["TokenStore"]
