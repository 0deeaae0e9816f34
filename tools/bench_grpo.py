"""One full GRPO step at a given shape: its time and where it goes, MFU, decode vs the HBM roofline.

    JAX_PLATFORMS=cpu python3 tools/bench_grpo.py --model tiny_moe --prompts 4 --group-size 4 --new-tokens 32
    python3 tools/bench_grpo.py --model /ckpts/tiny-hf --prompts 8 --group-size 8 --new-tokens 64 --json out.json
    python3 tools/bench_grpo.py --model qwen2_5_1_5b --prompts 16 --group-size 8 --new-tokens 512 \\
        --dtype bfloat16 --remat full --json qwen1.5b_h100.json               # one GPU
    python3 tools/bench_grpo.py --model small_moe --mesh data=2,expert=4 ...  # a mesh
    # asynchronous GRPO against sync on the same devices: samples trained per second, idle shares
    python3 tools/bench_grpo.py --model tiny_qwen2 --mode async --max-staleness 1 --sampler-devices 4 ...

It runs the GRPO trainer itself (r1jax.rl.trainer.run_grpo: rollouts of P x G samples up to L new
tokens from the rollout engine, the rule rewards accuracy + format, group advantages, the
old-logp recompute with --old-logp recompute, the update passes) for `--warmup` steps (compiles)
and `--steps` more, with random weights at the shape of a preset of r1jax.config or an HF folder's
config.json (its tokenizer too; a preset gets a word-level tokenizer of its vocabulary size). The
prompts are GSM8K questions (--data, default ../shared/data/gsm8k*.jsonl when present) or toy
arithmetic problems, the same P every step (so the measured steps compile nothing new). Each measured step's figures are averaged; printed and written (--json):

  device, model_params (total, activated), step_s = rollout_s + reward_s + logp_s + update_s + other_s
  (other: advantages and batch building on the host), rollout_tokens_per_s (generated tokens),
  train_tokens_per_s (prompt + completion tokens through the update), train_mfu (model FLOPs of
  the update, r1jax.config.flops_per_token at the batch's sequence length, / update_s / peak),
  decode_roofline (bytes one decode step must read, weights in the compute dtype + the latent /
  KV cache at the mean length, / peak bandwidth, / the measured time per decode step), compile_s
  (first step - a measured step).

Peaks: a table for known accelerators (dense bf16 FLOP/s, HBM bytes/s; --peak-tflops /
--peak-gbps override), on CPU the best f32 matmul rate and copy bandwidth measured here.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# dense bf16 TFLOP/s and HBM GB/s per chip (vendor figures)
PEAKS = {
    "H100": (989.0, 3350.0), "H200": (989.0, 4800.0), "A100": (312.0, 2039.0), "L4": (121.0, 300.0),
    "TPU v5p": (459.0, 2765.0), "TPU v6": (918.0, 1640.0), "TPU v5 lite": (197.0, 819.0), "TPU v4": (275.0, 1228.0),
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a preset of r1jax.config (e.g. qwen2_5_1_5b) or an HF folder")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--mesh", default="")
    p.add_argument("--data", default="", help="prompt JSONL (GSM8K fields); default ../shared/data GSM8K or toy")
    p.add_argument("--dtype", default="", help="compute dtype (e.g. bfloat16); master weights stay float32")
    p.add_argument("--remat", default="", help="remat policy of the update (none | full | dots ...)")
    p.add_argument("--logprob-chunk", type=int, default=256)
    p.add_argument("--old-logp", default="sampler", choices=("sampler", "recompute"))
    p.add_argument("--minibatches", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--engine", default="static", choices=("static", "continuous", "auto"))
    p.add_argument("--response-lengths", default="", metavar="lognormal:MEDIAN:SIGMA",
                   help="a long-tail workload: each sample stops at a length drawn from a lognormal (seeded by "
                        "--seed, the step and the sample: the same samples in every run), at most --new-tokens")
    p.add_argument("--no-pack", action="store_true", help="the padded update (rows padded to prompt + budget)")
    p.add_argument("--max-tokens-per-microbatch", type=int, default=0)
    p.add_argument("--kl-coef", type=float, default=0.0, help="> 0: the reference log-prob pass runs too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--peak-gbps", type=float, default=0.0)
    p.add_argument("--mode", default="sync", choices=("sync", "async"),
                   help="rollout_mode: async = a sampler thread generating the next steps while the trainer updates")
    p.add_argument("--max-staleness", type=int, default=1, help="async: the rollout of step s is drawn by weights s - K")
    p.add_argument("--sampler-devices", type=int, default=0,
                   help="async: devices of the process that only sample (the rest train; 0: shared)")
    p.add_argument("--inflight", action="store_true", help="async + --engine continuous: in-flight weight updates")
    p.add_argument("--json", default="")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model config overrides for a preset (e.g. num_hidden_layers=4)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ peaks


def cpu_peaks() -> tuple[float, float]:
    """(best f32 matmul GFLOP/s of jit(dot) over a few shapes, copy GB/s of a 512 MB array)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    best = 0.0
    f = jax.jit(jnp.dot)
    for m, k, n in ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 1024, 1024)):
        a = jnp.ones((m, k), jnp.float32)
        b = jnp.ones((k, n), jnp.float32)
        f(a, b).block_until_ready()
        t0 = time.perf_counter()
        for _ in range(3):
            f(a, b).block_until_ready()
        best = max(best, 2.0 * m * k * n * 3 / (time.perf_counter() - t0) / 1e9)
    x = np.ones(2**27, np.float32)  # 512 MB
    y = np.empty_like(x)
    np.copyto(y, x)
    t0 = time.perf_counter()
    for _ in range(3):
        np.copyto(y, x)
    gbps = 2 * x.nbytes * 3 / (time.perf_counter() - t0) / 1e9  # read + write
    return best, gbps


def device_peaks(args) -> tuple[str, float, float, str]:
    """(device description, peak FLOP/s, peak bytes/s, where the peaks come from)."""
    import jax

    d = jax.devices()[0]
    desc = f"{jax.device_count()} x {getattr(d, 'device_kind', d.platform)}"
    if args.peak_tflops and args.peak_gbps:
        return desc, args.peak_tflops * 1e12, args.peak_gbps * 1e9, "given"
    if d.platform == "cpu":
        gf, gb = cpu_peaks()
        return desc, gf * 1e9, gb * 1e9, "measured on this CPU (f32 matmul, copy)"
    kind = getattr(d, "device_kind", "")
    found = table_peaks(kind)
    if found is None:
        raise SystemExit(f"bench_grpo: no peak figures for {kind!r}: pass --peak-tflops and --peak-gbps")
    name, tf, gbs = found
    n = jax.device_count()
    return desc, (args.peak_tflops or tf) * 1e12 * n, (args.peak_gbps or gbs) * 1e9 * n, f"table ({name})"


def table_peaks(kind: str):
    """(table name, dense bf16 TFLOP/s, HBM GB/s) of one chip whose device name contains a PEAKS
    name (e.g. "NVIDIA H100 80GB HBM3"), or None."""
    for name, (tf, gbs) in PEAKS.items():
        if name.lower() in kind.lower():
            return name, tf, gbs
    return None


def report(res: dict, json_path: str, tag: str) -> None:
    """Print the figures one per line and write them as JSON to json_path (when given)."""
    for k, v in res.items():
        print(f"  {k:24s} {v:.4g}" if isinstance(v, float) else f"  {k:24s} {v}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(res, f, indent=2)
        print(f"[{tag}] wrote {json_path}")


# ------------------------------------------------------------------------------------ inputs


def model_config(args, tmp: str):
    """(model config, tokenizer folder) of a preset or an HF folder's config.json (--set, --dtype and
    --mesh applied; a preset gets a word-level tokenizer of its vocabulary size, written under tmp)."""
    from r1jax import config as config_lib
    from r1jax.data.tokenizer import load_tokenizer

    hf_dir = os.path.isdir(args.model)
    if hf_dir:
        cfg = config_lib.from_hf_config(os.path.join(args.model, "config.json"))
    else:
        cfg = config_lib.get_preset(args.model)
    changes = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        changes[k] = type(cfg[k])(v) if cfg.get(k) is not None and not isinstance(cfg[k], bool) else json.loads(v)
    cfg = config_lib.replace(cfg, **changes)
    tok_dir = args.model
    if not hf_dir:  # a word-level tokenizer of the (overridden) vocabulary size, its special ids in the config
        from r1jax.toy.tokenizer import model_token_ids, save_tokenizer, toy_tokenizer

        tok_dir = os.path.join(tmp, "tokenizer")
        save_tokenizer(toy_tokenizer(vocab_size=cfg.vocab_size), tok_dir)
        cfg = config_lib.replace(cfg, **model_token_ids(load_tokenizer(tok_dir)))
    if args.dtype:
        cfg = config_lib.replace(cfg, dtype=args.dtype)
    if getattr(args, "mesh", "") and config_lib.is_moe(cfg):
        cfg = config_lib.replace(cfg, moe_impl="ep")
    return cfg, tok_dir


def model_and_tokenizer(args, tmp: str):
    """(model, random params, tokenizer) of a preset or an HF folder's config."""
    import jax

    from r1jax.data.tokenizer import load_tokenizer
    from r1jax.model import Transformer, init_params

    cfg, tok_dir = model_config(args, tmp)
    params = init_params(cfg, jax.random.PRNGKey(0))
    return Transformer(cfg), params, load_tokenizer(tok_dir)


def prompt_records(args, n: int) -> tuple[list[dict], dict]:
    """n records and the grpo config keys that read them."""
    from r1jax.data.prompts import read_prompt_records

    path = args.data
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        found = sorted(glob.glob(os.path.join(here, "..", "..", "shared", "data", "gsm8k*.jsonl")))
        path = found[0] if found else ""
    if path:
        recs = read_prompt_records(path, problem_key="question", answer_format="gsm8k")
        return (recs * (n // len(recs) + 1))[:n], dict(problem_key="question", answer_format="gsm8k")
    from r1jax.toy.tasks.arithmetic import make_problems

    recs = make_problems("add", n, seed=0, levels=(2, 3, 4), split="train")
    for r in recs:
        r["answer"] = str(r["answer"])
    return recs, {}


# ------------------------------------------------------------------------------------ figures


def decode_bytes_per_step(cfg, rows: int, mean_len: float) -> float:
    """Bytes one decode step reads: the weights a step touches (compute dtype; routed experts: the
    expected number of distinct ones `rows` tokens choose per layer) + the cache at `mean_len`."""
    import numpy as np

    from r1jax import config as config_lib

    c = config_lib.count_params(cfg)
    wbytes = np.dtype(config_lib.dtype_of(cfg.dtype)).itemsize
    weights = c["total"] - (c["embed"] if c["head"] else 0)  # untied: the embedding is read one row per token
    if config_lib.is_moe(cfg):
        e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
        per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
        touched = e * (1 - (1 - k / e) ** rows)
        weights -= config_lib.num_moe_layers(cfg) * (e - touched) * per_expert
    if cfg.model_type == "deepseek_v3":
        per_tok_layer = cfg.kv_lora_rank + cfg.qk_rope_head_dim  # the compressed latent + rope key
    else:
        per_tok_layer = 2 * cfg.num_key_value_heads * cfg.head_dim
    cache = rows * mean_len * cfg.num_hidden_layers * per_tok_layer * wbytes
    return weights * wbytes + cache


def parse_lengths(spec: str):
    """"lognormal:MEDIAN:SIGMA" -> (median, sigma)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "lognormal":
        raise SystemExit(f"bench_grpo: --response-lengths {spec!r}: expected lognormal:MEDIAN:SIGMA")
    return float(parts[1]), float(parts[2])


def drawn_lengths(seed: int, step: int, n: int, median: float, sigma: float, budget: int):
    """Each sample's stop length (>= 1, <= budget): the same for a (seed, step) in every run."""
    import numpy as np

    rng = np.random.default_rng([seed, step, 0x1E5])
    return np.clip(np.round(median * np.exp(sigma * rng.standard_normal(n))), 1, budget).astype(int)


def stop_at_drawn_lengths(args):
    """Makes every rollout of the trainer stop each sample at its drawn length (r1jax.rl.trainer.GRPOTrainer.rollout
    wrapped: tokens, log-probs and routes cut there; finish_reason "length" only at the budget). With
    random weights samples seldom end by themselves, so this is the long-tail workload on any model."""
    import dataclasses

    from r1jax.rl import trainer

    median, sigma = parse_lengths(args.response_lengths)
    inner = trainer.GRPOTrainer.rollout

    def rollout(run, state, recs, step, **kw):
        ro = inner(run, state, recs, step, **kw)
        g = ro.gen
        cut = drawn_lengths(args.seed, step, len(g.tokens), median, sigma, args.new_tokens)
        tokens = [list(t)[:k] for t, k in zip(g.tokens, cut)]
        gen = dataclasses.replace(
            g, tokens=tokens, logprobs=[list(lp)[:k] for lp, k in zip(g.logprobs, cut)],
            finish_reason=["length" if len(t) >= args.new_tokens else "stop" for t in tokens],
            routes=None if g.routes is None else [r[:k] for r, k in zip(g.routes, cut)])
        texts = [run.tokenizer.decode(t) for t in tokens]
        return dataclasses.replace(ro, gen=gen, texts=texts)

    trainer.GRPOTrainer.rollout = rollout


def main(argv=None):
    args = parse(argv)
    if args.response_lengths:
        stop_at_drawn_lengths(args)
    import jax
    import numpy as np

    from r1jax import config as config_lib
    from r1jax.rl.config import grpo_config
    from r1jax.rl.trainer import run_grpo

    tmp = tempfile.mkdtemp(prefix="bench_grpo_")
    model, params, tok = model_and_tokenizer(args, tmp)
    cfg = model.cfg
    n_steps = args.warmup + args.steps
    recs, keys = prompt_records(args, args.prompts)
    # P records: every step is one epoch of them, the same prompts (shuffled), so the same shapes
    c = grpo_config(run_dir=os.path.join(tmp, "grpo"), group_size=args.group_size, prompts_per_step=args.prompts,
                    max_new_tokens=args.new_tokens, steps=n_steps, mesh=args.mesh, dtype=args.dtype,
                    remat_policy=args.remat, logprob_chunk=args.logprob_chunk, old_logp=args.old_logp,
                    minibatches=args.minibatches, grad_accum=args.grad_accum, rollout_engine=args.engine,
                    rewards={"accuracy": 1.0, "format": 0.5}, eval_every=0, save_every=0, save_hf=False,
                    progress=False, route_agreement_mib=0, prompt_style="r1_zero", pack=not args.no_pack,
                    max_tokens_per_microbatch=args.max_tokens_per_microbatch, seed=args.seed,
                    loss_kwargs=dict(kl_coef=args.kl_coef), rollout_mode=args.mode, max_staleness=args.max_staleness,
                    sampler_devices=args.sampler_devices, inflight_updates=args.inflight, **keys)
    rows: list[dict] = []
    walls: list[float] = []
    t_last = [time.perf_counter()]

    def on_step(step, vals):
        now = time.perf_counter()
        walls.append(now - t_last[0])
        t_last[0] = now
        rows.append(dict(vals))
        print(f"[bench_grpo] step {step}: {vals['time/step_s']:.2f} s (rollout {vals['time/generate_s']:.2f}, "
              f"update {vals['time/train_s']:.2f})", flush=True)

    t_last[0] = time.perf_counter()
    run_grpo(c, model=model, params=params, tokenizer=tok, train_records=recs, on_step=on_step)
    meas = rows[args.warmup:]
    mean = lambda k: float(np.mean([r[k] for r in meas]))  # noqa: E731
    step_s, rollout_s, reward_s = mean("time/step_s"), mean("time/generate_s"), mean("time/reward_s")
    logp_s, update_s = mean("time/logp_s"), mean("time/train_s")
    n_samples = args.prompts * args.group_size
    gen_tokens = mean("rollout/response_length") * n_samples
    seq_tokens = mean("train/seq_tokens")
    seq_len = int(mean("train/seq_len"))
    desc, peak_flops, peak_bw, peak_src = device_peaks(args)
    cp = config_lib.count_params(cfg)
    # update FLOPs: 3x forward per trained token (+1x forward per recomputed token, counted in logp_s)
    update_flops = config_lib.flops_per_token(cfg, seq_len) * seq_tokens
    mean_len = mean("rollout/response_length")
    prompt_len = seq_tokens / max(n_samples, 1) - mean_len
    per_step = decode_bytes_per_step(cfg, n_samples, prompt_len + mean_len / 2)
    decode_step_s = rollout_s / max(args.new_tokens, 1)  # the engine decodes until the longest sample ends
    res = {
        "device": desc, "model": args.model, "model_params": {"total": cp["total"], "activated": cp["activated"]},
        "prompts": args.prompts, "group_size": args.group_size, "new_tokens": args.new_tokens, "mesh": args.mesh or "",
        "dtype": cfg.dtype, "remat": args.remat or cfg.remat_policy or "none", "old_logp": args.old_logp,
        "grad_accum": args.grad_accum, "minibatches": args.minibatches, "pack": not args.no_pack,
        "response_lengths": args.response_lengths or "model", "update_and_logp_s": update_s + logp_s,
        "train_fill": mean("train/fill"), "micro_batches": mean("train/micro_batches"),
        "step_s": step_s, "rollout_s": rollout_s, "reward_s": reward_s, "logp_s": logp_s, "update_s": update_s,
        "other_s": step_s - rollout_s - reward_s - logp_s - update_s,
        "rollout_tokens_per_s": gen_tokens / max(rollout_s, 1e-9),
        "train_tokens_per_s": seq_tokens / max(update_s, 1e-9),
        "train_mfu": update_flops / max(update_s, 1e-9) / peak_flops,
        "decode_roofline": per_step / peak_bw / max(decode_step_s, 1e-12),
        "decode_bytes_per_step": per_step, "decode_step_s": decode_step_s,
        "compile_s": max(walls[0] - float(np.mean(walls[args.warmup:])), 0.0),
        "first_step_s": walls[0], "mean_response_length": mean_len, "train_seq_len": seq_len,
        "peak_tflops": peak_flops / 1e12, "peak_gbps": peak_bw / 1e9, "peaks_from": peak_src,
        "jax": jax.__version__, "steps_measured": len(meas),
        "mode": args.mode, "max_staleness": args.max_staleness if args.mode == "async" else 0,
        "sampler_devices": args.sampler_devices,
    }
    # samples trained per second of wall time (between the measured steps' ends), and each side's idle share:
    # sync: the trainer idles while sampling and scoring, the sampler while the update runs; async: measured
    wall = float(np.sum(walls[args.warmup:]))
    res["wall_s"] = wall
    res["samples_per_s"] = n_samples * len(meas) / max(wall, 1e-9)
    if args.mode == "async":
        res["trainer_idle_frac"] = float(np.sum([r["async/trainer_wait_s"] for r in meas])) / max(wall, 1e-9)
        # the sampler's own time split over the measured steps' rollouts (it ran them one step ahead)
        idle, busy = (float(np.sum([r[k] for r in meas])) for k in ("async/sampler_idle_s", "async/sampler_busy_s"))
        res["sampler_idle_frac"] = idle / max(idle + busy, 1e-9)
        res["lag_mean"] = mean("async/lag_mean")
        res["push_s"] = mean("async/push_s")  # publication -> the weights on the sampler's devices
        res["push_gb"] = mean("async/push_gb")
        res["publish_s"] = mean("async/publish_s")  # the trainer's own time handing them over
    else:
        res["trainer_idle_frac"] = (rollout_s + reward_s) * len(meas) / max(wall, 1e-9)
        res["sampler_idle_frac"] = 1.0 - res["trainer_idle_frac"]
    report(res, args.json, "bench_grpo")
    return res


if __name__ == "__main__":
    main()
