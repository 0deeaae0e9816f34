"""Train-step tokens/s of the small MoE on 1 CPU device vs the 8-device fake CPU mesh, and the
dispatch overhead of expert parallelism.

    python3 tools/bench_parallel.py                      # small_moe, batch 8 x seq 256
    python3 tools/bench_parallel.py --seq 128 --steps 3 --json /tmp/bench_parallel.json

Rows (same model, same batch, AdamW; the 8 "devices" are XLA host-platform devices that share
this machine's cores, so the mesh rows measure the partitioned program's overheads -- collectives,
dispatch, padding -- not a speed-up; on a real 8-chip slice each device has its own core/HBM):
  1dev            one device, unsharded, the local dropless MoE (sort + blocked matmul on CPU)
  fsdp8           8 devices, params/optimizer state sharded over fsdp, batch split 8 ways, local MoE
  expert8 (EP)    8 devices, experts over `expert` (shard_map all-to-all dispatch), batch split 8 ways
  fsdp2_expert4   fsdp=2 x expert=4 with EP

EP dispatch overhead: one MoE layer's routed-expert forward+backward on the expert=8 mesh, timed
in full and with the expert matmuls skipped (`experts_ep(..., identity_experts=True)`: pack,
all-to-all, return all-to-all, combine); overhead = the latter / the former.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--config", default="small_moe")
p.add_argument("--batch", type=int, default=8)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--steps", type=int, default=5, help="timed steps per row (median)")
p.add_argument("--warmup", type=int, default=1)
p.add_argument("--capacity-factor", type=float, default=2.0)
p.add_argument("--rows", default="1dev,fsdp8,expert8,fsdp2_expert4")
p.add_argument("--json", default=None)
ARGS = p.parse_args()

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from r1jax import config as config_lib, parallel, train  # noqa: E402
from r1jax.model import Transformer, init_params  # noqa: E402
from r1jax.model.moe_ep import experts_ep  # noqa: E402

MESHES = {"fsdp8": dict(fsdp=8), "expert8": dict(fsdp=1, expert=8), "fsdp2_expert4": dict(fsdp=2, expert=4)}


def _time(fn, steps, warmup):
    for _ in range(warmup):
        jax.block_until_ready(fn())
    ts = []
    for _ in range(steps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def batch_of(cfg):
    ids = np.random.RandomState(0).randint(0, cfg.vocab_size, (ARGS.batch, ARGS.seq + 1)).astype(np.int32)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((ARGS.batch, ARGS.seq), np.float32)}


def train_row(name):
    impl = "ep" if name in ("expert8", "fsdp2_expert4") else "ragged"
    cfg = config_lib.get_preset(ARGS.config)
    cfg = config_lib.make_config(**dict(cfg.to_dict(), moe_impl=impl, capacity_factor=ARGS.capacity_factor))
    tx = train.make_optimizer(train.optimizer_config(learning_rate=1e-4, schedule="constant"))
    model = Transformer(cfg)
    batch = batch_of(cfg)
    t0 = time.perf_counter()
    if name == "1dev":
        dev = jax.devices()[0]
        with jax.default_device(dev):
            state = train.init_train_state(init_params(cfg, jax.random.PRNGKey(0)), tx)
            step = train.make_train_step(model, train.lm_loss, tx)
            b = jax.tree.map(lambda x: jax.device_put(x, dev), batch)
            holder = [state]

            def one():
                holder[0], m = step(holder[0], b)
                return m["loss"]

            compile_s = (jax.block_until_ready(one()), time.perf_counter() - t0)[1]
            sec = _time(one, ARGS.steps, ARGS.warmup)
    else:
        mesh = parallel.make_mesh(MESHES[name])
        state, sh = parallel.init_sharded_state(cfg, tx, mesh, jax.random.PRNGKey(0))
        step = parallel.make_sharded_train_step(model, train.lm_loss, tx, mesh, sh)
        b = parallel.shard_batch(batch, mesh)
        holder = [state]

        def one():
            holder[0], m = step(holder[0], b)
            return m["loss"]

        compile_s = (jax.block_until_ready(one()), time.perf_counter() - t0)[1]
        sec = _time(one, ARGS.steps, ARGS.warmup)
    tok = ARGS.batch * ARGS.seq
    return dict(row=name, moe_impl=impl, step_s=sec, tokens_per_s=tok / sec, first_step_s=compile_s)


def dispatch_overhead():
    cfg = config_lib.get_preset(ARGS.config)
    e, k, d, inter = cfg.n_routed_experts, cfg.num_experts_per_tok, cfg.hidden_size, cfg.moe_intermediate_size
    n = ARGS.batch * ARGS.seq
    rs = np.random.RandomState(0)
    x = jnp.asarray(rs.randn(n, d), jnp.float32)
    idx = jnp.asarray(np.argsort(rs.rand(n, e), axis=1)[:, :k], jnp.int32)
    w = jnp.asarray(rs.rand(n, k), jnp.float32)
    wg, wu = (jnp.asarray(rs.randn(e, d, inter) * 0.02, jnp.float32) for _ in range(2))
    wd = jnp.asarray(rs.randn(e, inter, d) * 0.02, jnp.float32)
    mesh = parallel.make_mesh(MESHES["expert8"])
    out = {}
    for label, ident in (("full", False), ("dispatch_only", True)):
        f = jax.jit(jax.grad(lambda x, w, wg, wu, wd, ident=ident: (experts_ep(
            x, idx, w, wg, wu, wd, cfg, capacity_factor=ARGS.capacity_factor, identity_experts=ident)[0] ** 2).sum(),
            argnums=(0, 1, 2, 3, 4)))
        with parallel.use_mesh(mesh):
            xs = jax.device_put(x, parallel.batch_sharding(mesh))
            out[label] = _time(lambda: f(xs, w, wg, wu, wd), ARGS.steps, ARGS.warmup)
    return dict(moe_layer_fwd_bwd_s=out["full"], dispatch_fwd_bwd_s=out["dispatch_only"],
                dispatch_fraction=out["dispatch_only"] / out["full"], tokens=n, experts=e, top_k=k)


def main():
    print(f"{ARGS.config}: batch {ARGS.batch} x seq {ARGS.seq}, {jax.device_count()} CPU devices on "
          f"{os.cpu_count()} cores", flush=True)
    rows = []
    for name in ARGS.rows.split(","):
        r = train_row(name)
        rows.append(r)
        print(f"  {name:14s} moe={r['moe_impl']:6s} step {r['step_s'] * 1e3:8.1f} ms  {r['tokens_per_s']:9.0f} tokens/s"
              f"  (first step incl. compile {r['first_step_s']:.1f}s)", flush=True)
    ov = dispatch_overhead()
    print(f"  EP dispatch (expert=8, one MoE layer fwd+bwd, {ov['tokens']} tokens): full {ov['moe_layer_fwd_bwd_s'] * 1e3:.1f}"
          f" ms, dispatch+return+combine only {ov['dispatch_fwd_bwd_s'] * 1e3:.1f} ms "
          f"= {100 * ov['dispatch_fraction']:.0f}% of the layer")
    res = dict(config=ARGS.config, batch=ARGS.batch, seq=ARGS.seq, cores=os.cpu_count(), rows=rows, ep_dispatch=ov)
    if ARGS.json:
        with open(ARGS.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
