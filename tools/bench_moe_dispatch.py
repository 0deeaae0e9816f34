"""CPU MoE dispatches side by side in one process: "blocked" vs "grouped" (r1jax.model.moe).

Two measurements, each alternating the variants in rounds so they see the same machine load
(on a noisy machine only these same-process ratios compare):

  --what step     the small_moe train step (forward + backward + AdamW, batch 4 x 512, as
                  tools/bench_train.py (a)) compiled once per dispatch via `Transformer(cfg,
                  moe_impl=...)`; prints the first-step losses (must agree) and s/step
  --what experts  the routed experts alone, forward + backward, 2048 tokens x top-2 over 16
                  experts (d 512, I 352), plus "ideal": one dense MLP over the same 4096 rows
                  (the matmul work with no dispatch at all)

    JAX_PLATFORMS=cpu python3 tools/bench_moe_dispatch.py --what step --rounds 4
    JAX_PLATFORMS=cpu python3 tools/bench_moe_dispatch.py --what experts
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config as config_lib  # noqa: E402
from r1jax import train  # noqa: E402
from r1jax.model import Transformer, init_params  # noqa: E402
from r1jax import backends  # noqa: E402
from r1jax.model import experts as experts_lib  # noqa: E402

VARIANTS = ("blocked", "grouped")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _alternate(runs: dict, rounds: int, per_round: int, log):
    times = {k: [] for k in runs}
    for r in range(rounds):
        for name, fn in runs.items():
            times[name] += [_timed(fn) for _ in range(per_round)]
        log(f"  round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {statistics.median(v[-per_round:]) * 1e3:.1f} ms" for k, v in times.items()))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_step(args, log):
    cfg = config_lib.small_moe()
    b, s = 4, 512
    params = init_params(cfg, jax.random.PRNGKey(0))
    ids = np.random.RandomState(0).randint(0, cfg.vocab_size, (b, s + 1))
    batch = {"input_ids": jnp.asarray(ids[:, :-1], jnp.int32), "targets": jnp.asarray(ids[:, 1:], jnp.int32),
             "loss_mask": jnp.ones((b, s), jnp.float32)}
    tx = train.make_optimizer(train.optimizer_config(learning_rate=1e-4, schedule="constant", weight_decay=0.1,
                                                     grad_clip=1.0))
    loss = lambda p, bb, m: train.lm_loss(p, bb, m, mtp_weight=0.0)  # noqa: E731
    runs = {}
    for impl in VARIANTS:
        step = train.make_train_step(Transformer(cfg, moe_impl=impl), loss, tx,
                                     router_bias_update_rate=1e-3)
        holder = {"state": train.init_train_state(jax.tree.map(jnp.array, params), tx)}
        t0 = time.perf_counter()
        compiled = step.lower(holder["state"], batch).compile()
        holder["state"], m = compiled(holder["state"], batch)
        log(f"{impl}: compile {time.perf_counter() - t0:.1f} s, first loss {float(m['ce']):.6f}")

        def run(c=compiled, h=holder):
            h["state"], m = c(h["state"], batch)
            float(m["ce"])

        run()
        runs[impl] = run
    return _alternate(runs, args.rounds, 2, log)


def bench_experts(args, log):
    rs = np.random.RandomState(0)
    n, d, e, inter, k = 2048, 512, 16, 352, 2
    x = jnp.asarray(rs.randn(n, d), jnp.float32)
    idx = jnp.asarray(np.argsort(-rs.randn(n, e), -1)[:, :k], jnp.int32)
    w = jnp.asarray(rs.rand(n, k), jnp.float32)
    wg, wu = (jnp.asarray(rs.randn(e, d, inter) * 0.02, jnp.float32) for _ in range(2))
    wd = jnp.asarray(rs.randn(e, inter, d) * 0.02, jnp.float32)
    g = jnp.asarray(rs.randn(n, d), jnp.float32)

    def ideal(x, idx, w, wg, wu, wd):  # the same matmul work (n*k rows, one expert's shapes), no dispatch
        xx = jnp.concatenate([x] * k)
        y = experts_lib.swiglu(xx @ wg[0], xx @ wu[0]) @ wd[0]
        return y.reshape(k, n, d).sum(0)

    fns = {impl: backends.expert_fn(impl) for impl in VARIANTS}
    fns["ideal"] = ideal
    runs = {}
    for name, fn in fns.items():
        grad = jax.jit(jax.grad(lambda x, w, wg, wu, wd, fn=fn: jnp.sum(fn(x, idx, w, wg, wu, wd) * g),
                                argnums=(0, 1, 2, 3, 4)))
        run = (lambda f=grad: jax.block_until_ready(f(x, w, wg, wu, wd)))
        run()
        runs[name] = run
    return _alternate(runs, args.rounds, 5, log)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--what", choices=("step", "experts"), default="experts")
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"jax {jax.__version__} ({jax.default_backend()}), cores {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}")
    med = (bench_step if args.what == "step" else bench_experts)(args, log)
    base = med["blocked"]
    for name, t in med.items():
        log(f"{name:>8}: {t * 1e3:9.1f} ms  (blocked / {name} = {base / t:.2f}x)")


if __name__ == "__main__":
    main()
