"""Generation speed: r1jax.generate vs transformers' `generate`, same model, same CPU, one run.

    JAX_PLATFORMS=cpu python3 tools/bench_generate.py                 # small MoE, batch 32, prompt 128, 256 new
    python3 tools/bench_generate.py --batch 8 --new 64 --hf-batch 8     # quicker
    python3 tools/bench_generate.py --compare-decode-options 3          # A/B of the decode's XLA:CPU options

Both sides sample (temperature 1.0, top-p 1.0) from the same random weights (r1jax writes an HF
checkpoint that transformers loads), with no EOS so every sequence makes `--new` tokens. Prints
new tokens/s of each and the ratio, and the KV-cache bytes of r1jax's latent cache versus a full
per-head K/V cache of the same model. `--compare-decode-options N` instead alternates r1jax's
decode program compiled with and without `engine.CPU_DECODE_COMPILER_OPTIONS`, N rounds in one
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
    ap.add_argument("--hf-batch", type=int, default=8, help="transformers batch (it is slow; 8 as measured before)")
    ap.add_argument("--hf-new", type=int, default=32, help="new tokens for the transformers side")
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
    cfg.num_nextn_predict_layers = 0
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    rs = np.random.RandomState(0)
    prompts = [list(rs.randint(2, cfg.vocab_size, args.prompt)) for _ in range(args.batch)]

    if args.compare_decode_options:
        return compare_decode_options(model, params, prompts, args)

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
    print(f"ratio r1jax / transformers: {ours / theirs:.1f}x (each at its batch; target >= 10x)")

    # cache memory per token: latent vs full K/V
    lat = sum(int(np.prod(x.shape)) * 4 for x in jax.tree.leaves(jax.eval_shape(lambda: init_cache(cfg, 1, 1, np.float32))))
    qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
    full = cfg.num_hidden_layers * cfg.num_attention_heads * (qk + cfg.v_head_dim) * 4
    print(f"KV cache per token (fp32, all layers): latent {lat} B vs full K/V {full} B ({full / lat:.1f}x smaller)")


def compare_decode_options(model, params, prompts, args):
    """Alternate generate with the decode program compiled with / without the CPU options."""
    import r1jax
    from r1jax.generate import engine

    options = engine.CPU_DECODE_COMPILER_OPTIONS
    variants = {"without": None, "with": options}

    def run(name, seed):
        # generate compiles (once) and caches a decode program per options value
        engine.CPU_DECODE_COMPILER_OPTIONS = variants[name]
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
        engine.CPU_DECODE_COMPILER_OPTIONS = options
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"median new tokens/s, batch {args.batch}, {args.new} new: without {med['without']:.1f}, "
          f"with {med['with']:.1f} ({options}) = {med['with'] / med['without']:.2f}x")


if __name__ == "__main__":
    main()
