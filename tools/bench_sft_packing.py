"""SFT packing at a cold-start set's size: time and peak host memory of the token store and the plan.

    python3 tools/bench_sft_packing.py --examples 1000000 --seq-len 4096 --disk /tmp/toks.bin
    python3 tools/bench_sft_packing.py --examples 8000 --compare   # also the first-fit scan it replaces

Synthetic examples (prompt ~ lognormal median 200, completion ~ lognormal median 600 tokens, random
ids) go through what run_sft does before its first step: r1jax.data.token_store.TokenStore.build
(streamed to --disk when given, else in RAM) and r1jax.data.packing.PackPlan.build (best-fit
decreasing by windows); then one batch of rows is built (fill_rows), as a step asks for it. Prints
seconds per phase, rows, fill, and the process's peak resident memory (ru_maxrss) after each
phase. --compare also times the first-fit linear scan the packing replaced, on the same lengths.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def synthetic(n: int, seq_len: int, seed: int = 0, chunk: int = 65536):
    """(prompt ids, completion ids) one at a time, ids drawn a chunk at a time."""
    rng = np.random.default_rng(seed)
    for a in range(0, n, chunk):
        m = min(chunk, n - a)
        pl = np.clip(rng.lognormal(np.log(200), 0.5, m), 4, seq_len // 2).astype(int)
        cl = np.clip(rng.lognormal(np.log(600), 0.8, m), 1, seq_len).astype(int)
        ids = rng.integers(3, 32000, int((pl + cl).sum()), dtype=np.int32)
        off = 0
        for p, c in zip(pl, cl):
            yield ids[off:off + p], ids[off + p:off + p + c]
            off += p + c


def first_fit_scan(lengths, seq_len: int) -> int:
    """The packing it replaced: first fit in order, a linear scan of the open rows (-> rows)."""
    space: list[int] = []
    for L in lengths:
        for i, free in enumerate(space):
            if free >= L:
                space[i] -= L
                break
        else:
            space.append(seq_len - L)
    return len(space)


def main(argv=None):
    from r1jax.data.packing import PackPlan, fill_rows
    from r1jax.data.token_store import TokenStore

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=1_000_000)
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--window", type=int, default=65536)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--disk", default="", help="token store file (memory-mapped); default: in RAM")
    p.add_argument("--compare", action="store_true")
    args = p.parse_args(argv)
    print(f"start: peak RSS {peak_mib():.0f} MiB", flush=True)
    t0 = time.perf_counter()
    store = TokenStore.build(synthetic(args.examples, args.seq_len), path=args.disk or None)
    t1 = time.perf_counter()
    print(f"token store: {len(store)} examples, {int(store.offsets[-1])} tokens "
          f"({'disk ' + args.disk if args.disk else 'RAM'}) in {t1 - t0:.1f} s; peak RSS {peak_mib():.0f} MiB",
          flush=True)
    plan = PackPlan.build(store.lengths, args.seq_len, window=args.window)
    t2 = time.perf_counter()
    print(f"plan: {plan.rows} rows of {args.seq_len}, fill {plan.fill:.4f} in {t2 - t1:.2f} s "
          f"(best-fit decreasing, windows of {args.window}); peak RSS {peak_mib():.0f} MiB", flush=True)
    sel = np.random.default_rng(0).permutation(plan.rows)[:args.batch]
    rows = [[(store.example(j)[0][:args.seq_len], store.example(j)[1]) for j in plan.row(r)] for r in sel]
    batch = fill_rows(rows, args.seq_len)
    t3 = time.perf_counter()
    print(f"one batch of {args.batch} rows: {(t3 - t2) * 1e3:.1f} ms, {sum(v.nbytes for v in batch.values()) / 2**20:.1f}"
          f" MiB; peak RSS {peak_mib():.0f} MiB", flush=True)
    if args.compare:
        lengths = np.minimum(store.lengths, args.seq_len)
        t = time.perf_counter()
        n_old = first_fit_scan(lengths.tolist(), args.seq_len)
        t_old = time.perf_counter() - t
        t = time.perf_counter()
        new = PackPlan.build(store.lengths, args.seq_len, window=len(lengths))
        t_new = time.perf_counter() - t
        print(f"compare ({len(lengths)} examples, one window): first-fit scan {t_old:.2f} s, {n_old} rows; "
              f"best-fit decreasing {t_new:.2f} s, {new.rows} rows ({t_old / max(t_new, 1e-9):.1f}x)")


if __name__ == "__main__":
    main()
