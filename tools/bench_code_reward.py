"""Throughput of the code reward: HumanEval's canonical solutions (all pass) and a broken variant
(all fail) through the sandbox, one program at a time and ``--workers`` at a time.

    python3 tools/bench_code_reward.py --json new.json
    python3 tools/bench_code_reward.py --json old.json           # e.g. from a checkout of an older commit
    python3 tools/bench_code_reward.py --compare old.json new.json   # ratios, same machine, same samples

Prints programs per second and the median wall time per program; scores are checked (canonical
1.0, ``return None`` bodies < 1.0) so a fast wrong harness cannot look good. Run both sides in one
session on an otherwise idle machine: a speed-up is a ratio of two runs on the same samples.
"""
import argparse
import json
import os
import statistics
import sys
import time

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "humaneval.jsonl")


def _rows(path, n):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return rows[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="HumanEval JSONL (default: ../shared/data/humaneval.jsonl)")
    ap.add_argument("--n", type=int, default=164, help="problems")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds (median taken)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="print NEW / OLD ratios of two JSON files")
    a = ap.parse_args()
    if a.compare:
        old, new = (json.load(open(p)) for p in a.compare)
        for k in ("seq_programs_per_s", "par_programs_per_s"):
            print(f"{k}: old {old[k]:.2f}  new {new[k]:.2f}  new/old {new[k] / old[k]:.3f}")
        print(f"median_s_per_program: old {old['median_s_per_program']:.4f}  new {new['median_s_per_program']:.4f}  "
              f"new/old {new['median_s_per_program'] / old['median_s_per_program']:.3f}")
        return
    import r1jax
    from r1jax.rewards import code_reward, code_rewards

    rows = _rows(a.data, a.n)
    comps = ["```python\n" + r["canonical_solution"] + "```" for r in rows]
    broken = ["```python\n    return None\n```" for _ in rows]
    tests = [{"test": r["test"], "entry_point": r["entry_point"]} for r in rows]
    prompts = [r["prompt"] for r in rows]
    code_reward(comps[0], tests[0], prompt=prompts[0])  # warm up (imports, page cache)
    seq, par, per = [], [], []
    for _ in range(a.rounds):
        t0 = time.perf_counter()
        scores = []
        for c, t, p in zip(comps, tests, prompts):
            t1 = time.perf_counter()
            scores.append(code_reward(c, t, prompt=p))
            per.append(time.perf_counter() - t1)
        seq.append(time.perf_counter() - t0)
        assert scores == [1.0] * len(rows), [rows[i]["task_id"] for i, s in enumerate(scores) if s != 1.0]
        t0 = time.perf_counter()
        bad = code_rewards(broken, tests, prompts=prompts, max_workers=a.workers)
        par.append(time.perf_counter() - t0)
        assert all(s < 1.0 for s in bad)
    out = {
        "r1jax": os.path.dirname(r1jax.__file__), "programs": len(rows), "workers": a.workers,
        "seq_programs_per_s": len(rows) / statistics.median(seq), "par_programs_per_s": len(rows) / statistics.median(par),
        "median_s_per_program": statistics.median(per), "rounds": a.rounds,
    }
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
