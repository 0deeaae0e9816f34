"""Training throughput: r1jax vs transformers' DeepseekV3ForCausalLM (torch CPU), same machine, one run.

One training step = forward + backward + AdamW (with global-norm clipping) on a batch of random
token ids, next-token cross entropy. Both sides train the *same* model: the r1jax config is turned
into the HF config with `r1jax.config.to_hf_config`, r1jax's random init (normal, std
`initializer_range`) is written with `save_pretrained` and loaded by transformers, so both start
from identical weights (the first-step losses are printed side by side as a check) and route the
same tokens to the same experts.

  (a) small_moe: vocab 32000, d_model 512, 8 layers (first dense), 16 routed experts top-2 +
      1 shared, q_lora 256, kv_lora 128; batch 4 x seq 512.
  (b) the toy R1-Zero base model exactly as the main job pretrains it: `toy_moe` with the toy
      tokenizer's vocabulary (90) and the model overrides of experiments/r1_zero_toy.py, batch x
      seq = its `pretrain.batch_size` x `pretrain.seq_len` (12 x 128); falls back to toy_moe(128),
      16 x 192 when the experiment file is not there. transformers has no MTP, so the ratio row
      trains both without MTP; a second r1jax row ("r1jax+mtp") trains as the toy job does, with
      the MTP head on (its tokens/s is compared with the same transformers figure).

Timing: the two sides alternate in rounds (transformers `--steps` steps, then r1jax `--steps`
steps, `--rounds` times) after warm-up/compilation, and the median seconds per step of each side
is used, so both see the same machine load. Model FLOPs per token come from
`r1jax.config.flops_per_token` (6 x activated matmul params + causal attention); MFU is the
achieved model FLOP/s over the best matmul rate measured in the same run (XLA f32 dot and torch
f32 matmul at the model's GEMM shapes).

    JAX_PLATFORMS=cpu python3 tools/bench_train.py                 # both configs
    JAX_PLATFORMS=cpu python3 tools/bench_train.py --which a --steps 3 --rounds 3 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--which", choices=("a", "b", "both"), default="both")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round per side")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (median step time over all)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side (compile / allocator warm-up)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for torch and XLA (0 = all cores)")
    p.add_argument("--dtype", default="float32", help="r1jax compute dtype (float32 | bfloat16); torch stays f32")
    p.add_argument("--hf-experts", default=None, help="transformers experts_implementation (default: its own)")
    p.add_argument("--no-mtp-row", action="store_true", help="skip the r1jax (b)+MTP row")
    p.add_argument("--json", default=None, help="write the results here")
    return p.parse_args()


ARGS = _parse()
THREADS = ARGS.threads or os.cpu_count()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if ARGS.threads:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={THREADS}")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from r1jax import config as config_lib  # noqa: E402
from r1jax import train  # noqa: E402
from r1jax.checkpoint.hf import save_pretrained  # noqa: E402
from r1jax.model import Transformer, init_params  # noqa: E402

torch.set_num_threads(THREADS)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def toy_case():
    """The toy main job's model and pretraining batch (experiments/r1_zero_toy.py), or a fallback."""
    try:
        import importlib.util

        from r1jax.toy.tokenizer import toy_tokenizer

        spec = importlib.util.spec_from_file_location("r1_zero_toy", os.path.join(ROOT, "experiments", "r1_zero_toy.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        c = mod.get_config()
        vocab = toy_tokenizer().vocab_size

        def cfg():
            return config_lib.replace(config_lib.toy_moe(vocab_size=vocab), **c.model.to_dict())

        return dict(name="toy_moe", cfg=cfg, batch=int(c.pretrain.batch_size), seq=int(c.pretrain.seq_len),
                    source="experiments/r1_zero_toy.py")
    except Exception as e:  # noqa: BLE001 - the benchmark still runs without the experiment file
        print(f"(b): experiments/r1_zero_toy.py not usable ({e!r}); toy_moe(128), 16 x 192")
        return dict(name="toy_moe", cfg=lambda: config_lib.toy_moe(vocab_size=128), batch=16, seq=192,
                    source="fallback")


CASES = {
    "a": lambda: dict(name="small_moe", cfg=lambda: config_lib.small_moe(), batch=4, seq=512, source="preset"),
    "b": toy_case,
}


# ------------------------------------------------------------------------------- matmul peak


def _median_time(fn, reps=5, inner=3):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t0) / inner)
    return statistics.median(ts)


def matmul_rates(shapes):
    """GFLOP/s of f32 [m,k]@[k,n] in XLA (jit dot) and torch, for each (m, k, n)."""
    rows = []
    for m, k, n in shapes:
        rng = np.random.RandomState(0)
        a, b = rng.randn(m, k).astype(np.float32), rng.randn(k, n).astype(np.float32)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        f = jax.jit(jnp.dot)
        tj = _median_time(lambda: f(ja, jb).block_until_ready())
        ta_, tb_ = torch.from_numpy(a), torch.from_numpy(b)
        tt = _median_time(lambda: torch.matmul(ta_, tb_))
        fl = 2.0 * m * k * n
        rows.append(dict(shape=(m, k, n), xla=fl / tj / 1e9, torch=fl / tt / 1e9))
    return rows


# ------------------------------------------------------------------------------------ sides


def make_batch(batch, seq, vocab, seed=0):
    ids = np.random.RandomState(seed).randint(0, vocab, (batch, seq + 1))
    return ids[:, :-1].astype(np.int32), ids[:, 1:].astype(np.int32)


class R1jaxSide:
    def __init__(self, cfg, params, ids, tgt, mtp: bool):
        self.model = Transformer(cfg)
        opt = train.optimizer_config(learning_rate=1e-4, schedule="constant", weight_decay=0.1, grad_clip=1.0)
        self.tx = train.make_optimizer(opt)
        self.state = train.init_train_state(jax.tree.map(jnp.array, params), self.tx)
        loss = (lambda p, b, m: train.lm_loss(p, b, m)) if mtp else (
            lambda p, b, m: train.lm_loss(p, b, m, mtp_weight=0.0))
        self.step = train.make_train_step(self.model, loss, self.tx, router_bias_update_rate=1e-3)
        self.batch = {"input_ids": jnp.asarray(ids), "targets": jnp.asarray(tgt),
                      "loss_mask": jnp.ones(ids.shape, jnp.float32)}
        self.losses = []

    def compile(self):
        t0 = time.perf_counter()
        self.step = self.step.lower(self.state, self.batch).compile()
        return time.perf_counter() - t0

    def run(self, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.state, m = self.step(self.state, self.batch)
            loss = float(m["ce"])  # blocks
            ts.append(time.perf_counter() - t0)
            self.losses.append(loss)
        return ts


class HFSide:
    def __init__(self, cfg, params, ids, tgt, experts_impl=None):
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.logging.set_verbosity_error()  # the MTP tensors it does not model are expected extras
        with tempfile.TemporaryDirectory() as d:
            save_pretrained(params, cfg, d)
            kw = {"experts_implementation": experts_impl} if experts_impl else {}
            self.model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, **kw)
        self.model.train()
        self.experts_impl = getattr(self.model.config, "_experts_implementation", None)
        self.attn_impl = getattr(self.model.config, "_attn_implementation", None)
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
        self.ids = torch.from_numpy(ids.astype(np.int64))
        self.tgt = torch.from_numpy(tgt.astype(np.int64))
        self.losses = []

    def run(self, n):
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            logits = self.model(input_ids=self.ids, use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), self.tgt.reshape(-1))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.losses.append(float(loss.detach()))
            ts.append(time.perf_counter() - t0)
        return ts


def bench_case(key, log):
    case = CASES[key]()
    cfg = case["cfg"]()
    cfg = config_lib.replace(cfg, dtype=ARGS.dtype)
    b, s = case["batch"], case["seq"]
    tokens = b * s
    fpt = config_lib.flops_per_token(cfg, s)
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids, tgt = make_batch(b, s, cfg.vocab_size)
    log(f"[{key}] {case['name']} ({case['source']}): batch {b} x seq {s}, params {sum(x.size for x in jax.tree.leaves(params)) / 1e6:.1f}M, "
        f"{fpt / 1e6:.1f} MFLOP/token (train)")
    hf = HFSide(cfg, params, ids, tgt, ARGS.hf_experts)
    rj = R1jaxSide(cfg, params, ids, tgt, mtp=False)
    sides = {"transformers": hf, "r1jax": rj}
    want_mtp = key == "b" and cfg.num_nextn_predict_layers and not ARGS.no_mtp_row
    if want_mtp:
        sides["r1jax+mtp"] = R1jaxSide(cfg, params, ids, tgt, mtp=True)
    compile_s = {}
    for name, side in sides.items():
        if isinstance(side, R1jaxSide):
            compile_s[name] = side.compile()
        side.run(ARGS.warmup)
        log(f"  warm-up {name}: first loss {side.losses[0]:.5f}"
            + (f" (compile {compile_s[name]:.1f}s)" if name in compile_s else ""))
    times = {name: [] for name in sides}
    for r in range(ARGS.rounds):
        for name, side in sides.items():
            times[name] += side.run(ARGS.steps)
        log(f"  round {r + 1}/{ARGS.rounds}: " + ", ".join(
            f"{n} {statistics.median(t[-ARGS.steps:]):.3f}s/step" for n, t in times.items()))
    out = dict(case=key, name=case["name"], source=case["source"], batch=b, seq=s, flops_per_token=fpt,
               hf_experts_impl=hf.experts_impl, hf_attn_impl=hf.attn_impl, compile_s=compile_s,
               first_loss={n: sd.losses[0] for n, sd in sides.items()}, sides={})
    for name, t in times.items():
        med = statistics.median(t)
        out["sides"][name] = dict(step_s=med, step_s_min=min(t), step_s_all=t, tokens_per_s=tokens / med,
                                  tokens_per_s_best=tokens / min(t), gflops=tokens * fpt / med / 1e9)
    return out


def main():
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__}, threads {THREADS}, "
        f"cores {os.cpu_count()}, r1jax dtype {ARGS.dtype}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
        f"load average {os.getloadavg()[0]:.1f}")
    keys = ["a", "b"] if ARGS.which == "both" else [ARGS.which]
    # GEMM shapes of the benchmark models: (a) dense MLP / LM head / attention projections / an
    # expert block; plus a square one.
    shapes = [(2048, 512, 1408), (2048, 512, 32000), (2048, 512, 512), (256, 512, 352), (1024, 1024, 1024),
              (3072, 128, 384)]
    results = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv, "threads": THREADS, "cases": [],
               "loadavg_start": os.getloadavg()}
    for key in keys:
        results["cases"].append(bench_case(key, log))
    log("matmul rates (f32 GFLOP/s):")
    mm = matmul_rates(shapes)
    for r in mm:
        log(f"  {'x'.join(map(str, r['shape'])):>16}: XLA {r['xla']:7.1f}   torch {r['torch']:7.1f}")
    peak = max(max(r["xla"], r["torch"]) for r in mm)
    results["matmul"] = mm
    results["peak_gflops"] = peak
    log(f"best matmul rate: {peak:.1f} GFLOP/s (MFU denominator)\n")

    results["loadavg_end"] = os.getloadavg()
    hdr = (f"{'config':<14}{'side':<14}{'s/step':>8}{'tokens/s':>10}{'GFLOP/s':>9}{'MFU':>7}{'vs HF':>8}"
           f"{'best tok/s':>12}{'vs HF':>8}")
    lines = [hdr, "-" * len(hdr)]
    for c in results["cases"]:
        hf_tps = c["sides"]["transformers"]["tokens_per_s"]
        for name, sd in c["sides"].items():
            sd["mfu"] = sd["gflops"] / peak
            ratio = sd["tokens_per_s"] / hf_tps
            sd["ratio_vs_hf"] = ratio
            best_ratio = sd["tokens_per_s_best"] / c["sides"]["transformers"]["tokens_per_s_best"]
            sd["best_ratio_vs_hf"] = best_ratio
            lines.append(f"{'(' + c['case'] + ') ' + c['name']:<14}{name:<14}{sd['step_s']:>8.3f}"
                         f"{sd['tokens_per_s']:>10.0f}{sd['gflops']:>9.1f}{sd['mfu'] * 100:>6.1f}%{ratio:>7.2f}x"
                         f"{sd['tokens_per_s_best']:>12.0f}{best_ratio:>7.2f}x")
    log("\n".join(lines))
    log("s/step, tokens/s, GFLOP/s, MFU: median over all timed steps; best: the fastest step. "
        f"Load average at start/end: {results['loadavg_start'][0]:.1f} / {results['loadavg_end'][0]:.1f} "
        f"on {os.cpu_count()} cores.")
    for c in results["cases"]:
        log(f"({c['case']}) transformers experts_implementation={c['hf_experts_impl']}, "
            f"attn={c['hf_attn_impl']}; first-step loss: "
            + ", ".join(f"{n} {v:.5f}" for n, v in c["first_loss"].items()))
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
