"""Host memory of reading a large prompt dataset: a 1M-row Parquet file vs the same rows as JSONL.

    python3 tools/bench_records.py --rows 1000000 --dir /tmp/records_bench

Writes GSM8K-shaped rows (a ~230-character question, a ~300-character worked answer ending in
"#### N", verl's extra columns) once as Parquet (row groups of 10,000) and as JSONL, then in a fresh
process for each: r1jax.data.prompts.read_prompt_records (every row checked) and 8 batches of 64 drawn
by the shuffled PromptPipeline, printing seconds and the process's peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make(rows: int, out_dir: str) -> tuple[str, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    pq_path, jl_path = os.path.join(out_dir, "train.parquet"), os.path.join(out_dir, "train.jsonl")
    if os.path.exists(pq_path) and os.path.exists(jl_path):
        return pq_path, jl_path
    writer = None
    with open(jl_path, "w") as jl:
        for a in range(0, rows, 10_000):
            chunk = []
            for i in range(a, min(a + 10_000, rows)):
                q = f"Problem {i}: a farmer has {i % 97} cows and buys {i % 13} more each week. " * 3
                ans = f"Each week adds {i % 13}; after the weeks there are {i % 97 + i % 13} cows. " * 4 + \
                    f"#### {i % 97 + i % 13}"
                chunk.append({"question": q, "answer": ans, "data_source": "synthetic",
                              "extra_info": {"index": i, "split": "train"}})
            for r in chunk:
                jl.write(json.dumps(r) + "\n")
            t = pa.Table.from_pylist(chunk)
            if writer is None:
                writer = pq.ParquetWriter(pq_path, t.schema)
            writer.write_table(t, row_group_size=10_000)
    writer.close()
    return pq_path, jl_path


def read(path: str) -> dict:
    from r1jax.data.pipeline import PromptPipeline
    from r1jax.data.prompts import read_prompt_records

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    recs = read_prompt_records(path, problem_key="question", answer_format="gsm8k")
    t1 = time.perf_counter()
    pipe = PromptPipeline(recs, batch_size=64, seed=0)
    for _ in range(8):
        batch = next(pipe)
    t2 = time.perf_counter()
    return {"path": path, "rows": len(recs), "read_s": t1 - t0, "eight_batches_s": t2 - t1,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_at_start_mib": base,
            "last_answer": batch[-1]["answer"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dir", default="/tmp/records_bench")
    p.add_argument("--read", default="", help=argparse.SUPPRESS)  # the child process's job
    args = p.parse_args(argv)
    if args.read:
        print(json.dumps(read(args.read)))
        return
    paths = make(args.rows, args.dir)
    for path in paths:
        out = subprocess.run([sys.executable, __file__, "--read", path], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        size = os.path.getsize(path) / 2**20
        print(f"{os.path.basename(path):14s} {size:7.0f} MiB on disk: {res['rows']} rows read and checked in "
              f"{res['read_s']:.1f} s, 8 shuffled batches of 64 in {res['eight_batches_s']:.2f} s, peak RSS "
              f"{res['peak_rss_mib']:.0f} MiB (at start {res['rss_at_start_mib']:.0f})", flush=True)


if __name__ == "__main__":
    main()
