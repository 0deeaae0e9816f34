"""One process of a multi-process (multi-host) training run on CPU: the loopback test's worker.

    # two shells (or the test): 4 CPU devices per process, process 0 hosts the coordinator
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
        python3 tools/multihost_worker.py --devices 4 --mesh data=2,expert=4 --steps 5 --out /tmp/losses.json
    JAX_COORDINATOR_ADDRESS=127.0.0.1:12345 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \\
        python3 tools/multihost_worker.py --devices 4 --mesh data=2,expert=4 --steps 5

Each process: `r1jax.parallel.distributed.initialize()` from the environment, a global mesh over
all processes' devices, the train state created already sharded, and per step the global batch
(the same deterministic stream everywhere) of which each process transfers only the rows its
devices hold. Process 0 writes the losses (and what it saw) as JSON.

`train_losses(mesh_spec, steps)` is also the single-process reference (mesh_spec=None: one
device, unsharded, the dense MoE reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the GRPO reward below: "multihost_worker:..."

BATCH, SEQ, VOCAB = 8, 16, 97


def make_batches(steps: int, seed: int = 0, distinct: int = 2, batch: int = BATCH):
    """`steps` batches cycling over `distinct` fixed random ones (so the loss visibly falls)."""
    import numpy as np

    rs = np.random.RandomState(seed)
    fixed = []
    for _ in range(distinct):
        ids = rs.randint(0, VOCAB, (batch, SEQ + 1)).astype(np.int32)
        fixed.append({"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((batch, SEQ), np.float32)})
    return [fixed[i % distinct] for i in range(steps)]


def setup(moe_impl: str):
    from r1jax import config as config_lib, train

    # capacity_factor = E / k: the dispatch buffer holds every token, nothing can be dropped
    cfg = config_lib.tiny_moe(moe_impl=moe_impl, capacity_factor=8 / 2)
    tx = train.make_optimizer(train.optimizer_config(learning_rate=3e-3, schedule="constant", weight_decay=0.01))
    return cfg, tx


def scalar(x) -> float:
    """A replicated scalar as float, also when it spans other processes' devices."""
    from r1jax.parallel.handoff import host_scalar

    return host_scalar(x)


def train_losses(mesh_spec=None, steps: int = 5, seed: int = 0, router_bias_rate: float = 1e-3,
                 batch: int = BATCH, initial_state: list | None = None) -> list[float]:
    """Losses of `steps` train steps. `initial_state`: a list that receives the (sharded) state
    as created, before the first step donates it (tests inspect its layout)."""
    import jax
    import jax.numpy as jnp

    from r1jax import parallel, train
    from r1jax.model import Transformer, init_params

    batches = make_batches(steps, seed, batch=batch)
    rng = jax.random.PRNGKey(seed)
    losses = []
    if mesh_spec is None:
        cfg, tx = setup("dense")
        state = train.init_train_state(init_params(cfg, rng), tx)
        step = train.make_train_step(Transformer(cfg), train.lm_loss, tx, router_bias_update_rate=router_bias_rate)
        for b in batches:
            state, m = step(state, jax.tree.map(jnp.asarray, b))
            losses.append(scalar(m["loss"]))
        return losses
    cfg, tx = setup("ep")
    mesh = parallel.make_mesh(mesh_spec)
    state, sh = parallel.init_sharded_state(cfg, tx, mesh, rng)
    if initial_state is not None:
        initial_state.append(jax.tree.map(lambda x: x.copy(), state))
    step = parallel.make_sharded_train_step(Transformer(cfg), train.lm_loss, tx, mesh, sh,
                                            router_bias_update_rate=router_bias_rate)
    for b in batches:
        state, m = step(state, parallel.shard_batch(b, mesh))
        losses.append(scalar(m["loss"]))
    return losses


def digit_share(texts, records):
    """A reward with spread on a random model's samples: the share of digits among the characters
    of the response (the rule rewards would be 0 for every sample, hence a zero loss)."""
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


GRPO_STEPS, GRPO_PROMPTS, GRPO_G, GRPO_NEW = 3, 8, 4, 12


def grpo_losses(mesh_spec: str, run_dir: str, steps: int = GRPO_STEPS, rollout_placement: str = "local",
                old_logp: str = "recompute", minibatches: int = 2, **extra) -> dict:
    """GRPO steps of a random tiny DeepSeek-V3 (expert-parallel on the mesh) on toy arithmetic
    prompts with the `digit_share` reward: each step's losses (one per mini-batch) and figures."""
    import jax

    from r1jax import config as config_lib
    from r1jax.toy.tasks.arithmetic import make_problems
    from r1jax.toy.tokenizer import model_token_ids, toy_tokenizer
    from r1jax.model import Transformer, init_params
    from r1jax.rl.config import grpo_config
    from r1jax.rl.trainer import run_grpo

    tok = toy_tokenizer()
    cfg = config_lib.tiny_moe(vocab_size=tok.vocab_size, moe_impl="ep", capacity_factor=8 / 2,
                              **model_token_ids(tok))
    params = init_params(cfg, jax.random.PRNGKey(0))
    records = make_problems("add", 64, seed=0, levels=(2, 3), split="train")
    for r in records:
        r["answer"] = str(r["answer"])
    c = grpo_config(run_dir=run_dir, mesh=mesh_spec, rewards={"multihost_worker:digit_share": 1.0},
                    group_size=GRPO_G, prompts_per_step=GRPO_PROMPTS, max_new_tokens=GRPO_NEW, temperature=1.0,
                    steps=steps, minibatches=minibatches, old_logp=old_logp, rollout_placement=rollout_placement,
                    optimizer=dict(learning_rate=1e-2), eval_every=0, save_every=0, save_hf=False,
                    progress=False, seed=3, **extra)
    rows = []
    run_grpo(c, model=Transformer(cfg), params=params, tokenizer=tok, train_records=records,
             on_step=lambda step, vals: rows.append({"step": step, **{k: vals[k] for k in (
                 "train/loss", "reward/total", "reward/multihost_worker:digit_share", "rollout/response_length",
                 "train/kl" if "train/kl" in vals else "train/loss")}, **{k: v for k, v in vals.items() if k.startswith(
                     ("async/", "rollout/devices"))}}))
    return {"steps": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=4,
                   help="fake CPU devices of this process; 0 = the machine's own accelerators (TPU/GPU)")
    p.add_argument("--mesh", default="data=2,expert=4")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=BATCH, help="global batch (a multiple of data x fsdp x expert)")
    p.add_argument("--out", default=None)
    p.add_argument("--grpo", default="", metavar="RUN_DIR",
                   help="run GRPO steps (grpo_losses) with this run folder instead of the train steps")
    p.add_argument("--rollout-placement", default="local")
    p.add_argument("--rollout-mode", default="sync", choices=("sync", "async"))
    p.add_argument("--max-staleness", type=int, default=1)
    p.add_argument("--sampler-devices", type=int, default=0)
    args = p.parse_args(argv)
    if args.devices:
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    t0 = time.time()
    from r1jax.parallel import distributed

    info = distributed.initialize()
    import jax

    from r1jax import parallel

    if args.grpo:
        extra = dict(rollout_mode=args.rollout_mode, max_staleness=args.max_staleness,
                     sampler_devices=args.sampler_devices) if args.rollout_mode == "async" else {}
        res = dict(info, **grpo_losses(args.mesh, args.grpo, steps=args.steps,
                                       rollout_placement=args.rollout_placement, **extra), seconds=time.time() - t0)
        print(json.dumps(res), flush=True)
        if args.out and jax.process_index() == 0:
            with open(args.out, "w") as f:
                json.dump(res, f)
        distributed.shutdown()
        return
    losses = train_losses(args.mesh, args.steps, batch=args.batch)
    mesh = parallel.make_mesh(args.mesh)
    rows = parallel.process_batch_slice(args.batch, mesh)
    res = dict(info, losses=losses, rows=[rows.start, rows.stop], seconds=time.time() - t0,
               mesh=parallel.describe(mesh), devices_per_process=[
                   sum(1 for d in jax.devices() if d.process_index == i) for i in range(jax.process_count())])
    print(json.dumps(res), flush=True)
    if args.out and jax.process_index() == 0:
        with open(args.out, "w") as f:
            json.dump(res, f)
    distributed.shutdown()


if __name__ == "__main__":
    main()
