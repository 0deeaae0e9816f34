"""Generation speed: r1jax.generate vs transformers' `generate`, same model, same CPU, one run.

    JAX_PLATFORMS=cpu python3 tools/bench_generate.py                 # small MoE, batch 32 both sides, 128 + 256 new
    python3 tools/bench_generate.py --batch 8 --new 64                  # quicker
    python3 tools/bench_generate.py --workload longtail                 # continuous vs static batching, same rows
    python3 tools/bench_generate.py --compare-decode-options 3          # A/B of the decode's XLA:CPU options

Both sides sample (temperature 1.0, top-p 1.0) from the same random weights (r1jax writes an HF
checkpoint that transformers loads), with no EOS so every sequence makes its budget of tokens; by
default at the same batch and number of new tokens (`--hf-batch` / `--hf-new` change transformers'
side; both sides' settings are printed). Prints new tokens/s of each and the ratio, and the KV-cache
bytes of r1jax's latent cache versus a full per-head K/V cache of the same model.

`--workload longtail`: `--requests` requests (default 64) whose budgets are drawn from a lognormal
(median `--median`, sigma `--sigma`, capped at `--new`), like reasoning traces, served with `--slots`
rows (default 16) by the static engine (requests in order, `--slots` at a time, each batch until its
longest ends) and by the continuous engine (rows refilled as requests end). Both draw each request's
tokens from (seed, request index), so their outputs must be identical (checked); prints both
tokens/s, the ratio, and the continuous engine's row utilization. `--compare-decode-options N` instead alternates r1jax's
decode program compiled with and without `r1jax.backends.cpu_compile.CPU_DECODE_COMPILER_OPTIONS`, N rounds in one
process (the only figures that compare on a noisy machine), and prints both medians.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="small_moe")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--hf-batch", type=int, default=0, help="transformers batch (0: --batch)")
    ap.add_argument("--hf-new", type=int, default=0, help="new tokens for the transformers side (0: --new)")
    ap.add_argument("--workload", choices=("uniform", "longtail"), default="uniform")
    ap.add_argument("--requests", type=int, default=64, help="longtail: requests")
    ap.add_argument("--slots", type=int, default=16, help="longtail: decode rows of both engines")
    ap.add_argument("--median", type=float, default=48, help="longtail: median budget (new tokens)")
    ap.add_argument("--sigma", type=float, default=1.0, help="longtail: lognormal sigma of the budgets")
    ap.add_argument("--rounds", type=int, default=2, help="longtail: timed rounds (static, continuous alternated)")
    ap.add_argument("--temperature", type=float, default=1.0, help="longtail: sampling temperature (0: greedy)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compare-decode-options", type=int, default=0, metavar="ROUNDS")
    args = ap.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import torch

    import r1jax
    from r1jax import config as config_lib
    from r1jax.model import Transformer, init_params, init_cache

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config_lib.get_preset(args.preset)
    cfg = config_lib.replace(cfg, num_nextn_predict_layers=0)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    rs = np.random.RandomState(0)
    prompts = [list(rs.randint(2, cfg.vocab_size, args.prompt)) for _ in range(args.batch)]

    if args.compare_decode_options:
        return compare_decode_options(model, params, prompts, args)
    if args.workload == "longtail":
        return longtail(model, params, cfg, args)
    args.hf_batch = args.hf_batch or args.batch
    args.hf_new = args.hf_new or args.new

    # r1jax: one warm-up call (compiles), then the timed call
    r1jax.generate(model, params, prompts, max_new_tokens=args.new, temperature=1.0, seed=0)
    t = time.perf_counter()
    out = r1jax.generate(model, params, prompts, max_new_tokens=args.new, temperature=1.0, seed=1)
    dt = time.perf_counter() - t
    ours = sum(len(x) for x in out.tokens) / dt
    print(f"r1jax        batch {args.batch:3d}  prompt {args.prompt}  new {args.new}: {ours:8.1f} new tokens/s "
          f"({dt:.1f} s; compiles {out.stats['compiles']})", flush=True)

    # transformers on the same weights
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as d:
        r1jax.save_pretrained(params, cfg, d)
        hf = AutoModelForCausalLM.from_pretrained(d).float().eval()
    ids = torch.tensor(np.array(prompts[: args.hf_batch]))
    with torch.no_grad():
        hf.generate(ids[:, :8], max_new_tokens=2, do_sample=True, pad_token_id=0)
        t = time.perf_counter()
        hf.generate(ids, max_new_tokens=args.hf_new, min_new_tokens=args.hf_new, do_sample=True, top_p=1.0,
                    temperature=1.0, pad_token_id=0, eos_token_id=None)
        dt_hf = time.perf_counter() - t
    theirs = args.hf_batch * args.hf_new / dt_hf
    print(f"transformers batch {args.hf_batch:3d}  prompt {args.prompt}  new {args.hf_new}: {theirs:8.1f} new tokens/s "
          f"({dt_hf:.1f} s)", flush=True)
    same = args.hf_batch == args.batch and args.hf_new == args.new
    print(f"ratio r1jax / transformers: {ours / theirs:.1f}x "
          f"({'same settings' if same else 'different batch / new tokens: see the settings above'})")

    # cache memory per token: latent vs full K/V
    lat = sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(jax.eval_shape(lambda: init_cache(cfg, 1, 1, np.float32))))
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    full = cfg.num_hidden_layers * cfg.num_attention_heads * (qk + cfg.v_head_dim) * 4
    print(f"KV cache per token (fp32, all layers): latent {lat} B vs full K/V {full} B ({full / lat:.1f}x smaller)")


def longtail_budgets(n: int, median: float, sigma: float, cap: int, seed: int = 0) -> list[int]:
    """n budgets from a lognormal(log(median), sigma), in [1, cap]."""
    rs = np.random.RandomState(seed)
    return [int(x) for x in np.clip(np.round(rs.lognormal(np.log(median), sigma, n)), 1, cap)]


def longtail(model, params, cfg, args):
    """Static (waves of --slots requests) vs continuous (--slots rows) on long-tail budgets."""
    import r1jax

    rs = np.random.RandomState(1)
    prompts = [list(rs.randint(2, cfg.vocab_size, rs.randint(args.prompt // 2, args.prompt + 1)))
               for _ in range(args.requests)]
    budgets = longtail_budgets(args.requests, args.median, args.sigma, args.new)
    s = args.slots

    def static(seed):
        toks, steps = [], 0
        for i in range(0, len(prompts), s):
            o = r1jax.generate(model, params, prompts[i:i + s], max_new_tokens=budgets[i:i + s],
                               temperature=args.temperature,
                               eos_id=(), seed=seed, first_request=i, min_batch=s)
            toks += list(zip(o.tokens, o.logprobs))
            steps += o.stats["decode_steps"]
        return toks, {"decode_steps": steps}

    def partings(a_out, b_out):
        """[(request, first differing token, max |d log-prob| before it)] of requests that differ."""
        out = []
        for j, ((ta, la), (tb, lb)) in enumerate(zip(a_out, b_out)):
            if ta != tb:
                k = next((t for t in range(min(len(ta), len(tb))) if ta[t] != tb[t]), min(len(ta), len(tb)))
                out.append((j, k, float(max([abs(x - y) for x, y in zip(la[:k], lb[:k])] + [0.0]))))
        return out

    def cont(seed):
        o = r1jax.generate(model, params, prompts, max_new_tokens=budgets, temperature=args.temperature, eos_id=(),
                           seed=seed, engine="continuous", slots=s)
        return list(zip(o.tokens, o.logprobs)), o.stats

    print(f"longtail: {args.requests} requests, prompts {args.prompt // 2}-{args.prompt} tokens, budgets lognormal "
          f"median {args.median:g} sigma {args.sigma:g} cap {args.new}: min {min(budgets)} mean "
          f"{np.mean(budgets):.0f} max {max(budgets)}, {sum(budgets)} tokens; {s} rows each engine; "
          f"preset {args.preset}; temperature {args.temperature:g}", flush=True)
    static(0), cont(0)  # compile
    rates = {"static": [], "continuous": []}
    outs, same = {}, True
    for r in range(args.rounds):
        for name, fn in (("static", static), ("continuous", cont)):
            t = time.perf_counter()
            toks, st = fn(1)
            dt = time.perf_counter() - t
            rates[name].append(sum(len(t) for t, _ in toks) / dt)
            outs[name] = toks
            extra = (f", {st['segments']} segments, row utilization {st['row_utilization']:.2f}"
                     if name == "continuous" else "")
            print(f"round {r}: {name:10s} {rates[name][-1]:7.1f} new tokens/s ({dt:.1f} s, "
                  f"{st['decode_steps']} decode steps{extra})", flush=True)
        parted = partings(outs["static"], outs["continuous"])
        if parted:
            same = False
            print(f"{len(parted)} of {len(prompts)} requests part (request, token, |d log-prob| before it): "
                  f"{parted[:8]}")
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"longtail, {s} rows: static {med['static']:.1f}, continuous {med['continuous']:.1f} new tokens/s = "
          f"{med['continuous'] / med['static']:.2f}x; outputs identical: {same}")
    if not same:
        print("(a parting after log-probs equal to ~1e-6 is a draw at a CDF boundary under float rounding of a "
              "differently shaped batch; a wrong engine parts with large log-prob differences)")


def compare_decode_options(model, params, prompts, args):
    """Alternate generate with the decode program compiled with / without the CPU options."""
    import r1jax
    from r1jax.backends import cpu_compile

    options = cpu_compile.CPU_DECODE_COMPILER_OPTIONS
    variants = {"without": None, "with": options}

    def run(name, seed):
        # generate compiles (once) and caches a decode program per options value
        cpu_compile.CPU_DECODE_COMPILER_OPTIONS = variants[name]
        t = time.perf_counter()
        out = r1jax.generate(model, params, prompts, max_new_tokens=args.new, temperature=1.0, seed=seed)
        return sum(len(x) for x in out.tokens) / (time.perf_counter() - t)

    try:
        for name in variants:
            run(name, 0)  # compiles
        rates = {name: [] for name in variants}
        for r in range(args.compare_decode_options):
            for name in variants:
                rates[name].append(run(name, 1))
                print(f"round {r}: {name:7s} the options: {rates[name][-1]:7.1f} new tokens/s", flush=True)
    finally:
        cpu_compile.CPU_DECODE_COMPILER_OPTIONS = options
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"median new tokens/s, batch {args.batch}, {args.new} new: without {med['without']:.1f}, "
          f"with {med['with']:.1f} ({options}) = {med['with'] / med['without']:.2f}x")


if __name__ == "__main__":
    main()
