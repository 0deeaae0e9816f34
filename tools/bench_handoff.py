"""The weight handoff from the trainer's layout to the rollout's: seconds per GB of params.

    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
        python3 tools/bench_handoff.py --model qwen2_5_1_5b --layers 2 --train-mesh fsdp=8
    python3 tools/bench_handoff.py --model v3_moe_2b --train-mesh fsdp=2,expert=4 --json handoff.json   # a GPU box

The GRPO trainer's rollout reads the trainer's params with no host copy: with one process the
engine runs on them as they are sharded (rollout_placement "mesh": no reshard, 0 s); with
several processes each process all-gathers a replica onto each of its local devices ("local",
r1jax.parallel.handoff.replicate_on). When a rollout wants another layout than training's
(replicated, or tensor-parallel decode), the params move device to device; this times that move
(a jitted identity with the target out-shardings, compiled first, best of --repeats) for the
compute-dtype weights (what the rollout reads) from the `--train-mesh` layout to: replicated
on every device, tensor=N over the same devices, and a local replica (the multi-process path).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2_5_1_5b", help="a preset of r1jax.config")
    p.add_argument("--layers", type=int, default=0, help="override num_hidden_layers (fit the host's memory)")
    p.add_argument("--train-mesh", default="fsdp=-1")
    p.add_argument("--dtype", default="bfloat16", help="the rollout's (compute) dtype")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    from r1jax import config as config_lib, parallel
    from r1jax.model import abstract_params
    from r1jax.parallel import handoff

    cfg = config_lib.get_preset(args.model)
    if args.layers:
        cfg = config_lib.replace(cfg, num_hidden_layers=args.layers,
                                 first_k_dense_replace=min(cfg.first_k_dense_replace, args.layers))
    cfg = config_lib.replace(cfg, dtype=args.dtype, param_dtype=args.dtype)
    n = jax.device_count()
    train_mesh = parallel.make_mesh(args.train_mesh)
    sh_train = parallel.param_shardings(cfg, train_mesh)
    import flax.linen as nn

    shapes = nn.unbox(abstract_params(cfg))
    # random-free: ones in the rollout dtype, created directly in the training layout
    params = jax.jit(lambda: jax.tree.map(lambda a: jnp.ones(a.shape, a.dtype), shapes), out_shardings=sh_train)()
    gb = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params)) / 1e9
    res = {"device": f"{n} x {jax.devices()[0].device_kind}", "model": args.model, "layers": cfg.num_hidden_layers,
           "params_gb": gb, "train_mesh": parallel.describe(train_mesh), "targets": {}}
    rep = jax.tree.map(lambda _: NamedSharding(train_mesh, P()), params)
    res["targets"]["replicated"] = handoff.reshard_seconds(params, rep, args.repeats)
    tmesh = parallel.make_mesh(f"tensor={n}")
    res["targets"][f"tensor={n}"] = handoff.reshard_seconds(params, parallel.param_shardings(cfg, tmesh), args.repeats)
    res["targets"]["same (rollout_placement=mesh)"] = handoff.reshard_seconds(params, sh_train, args.repeats)
    print(f"params {gb:.3f} GB ({args.dtype}) in layout {res['train_mesh']} on {res['device']}")
    for k, v in res["targets"].items():
        print(f"  -> {k:32s} {v['seconds'] * 1e3:9.2f} ms  {v['seconds_per_gb']:.3f} s/GB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
