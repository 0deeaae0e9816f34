"""Temporaries of the compiled GRPO update per row length: does memory grow linearly with length?

    JAX_PLATFORMS=cpu python3 tools/memory_scaling.py                       # dense + MLA, 2k..16k
    python3 tools/memory_scaling.py --models tiny_qwen2 --lengths 2048,4096 --json out.json

For each model (a preset, at default settings: attention_impl and remat as the preset has them,
the GRPO config's logprob_chunk) and each length L it compiles, without running, the packed
update's per-micro-batch program (r1jax.train.AccumStep.accumulate: forward, token log-probs,
GRPO loss, backward) for one row of L tokens holding two samples, and prints
`compiled.memory_analysis().temp_size_in_bytes` and the ratio to the previous length (linear
memory: 2.0 per doubling; quadratic attention memory: 4.0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def temporaries(preset: str, length: int, **overrides) -> int:
    """Bytes of temporaries of the packed update's micro-batch program at one row of `length` tokens."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from r1jax import config as config_lib
    from r1jax import train
    from r1jax.model import Transformer, init_params
    from r1jax.rl import grpo
    from r1jax.rl.config import grpo_config
    from r1jax.rl.packed import PackSpec, pack_samples
    from r1jax.rl.policy import make_policy_loss

    cfg = config_lib.get_preset(preset)
    cfg = config_lib.replace(cfg, **{"max_position_embeddings": max(length, cfg.max_position_embeddings), **overrides})
    model = Transformer(cfg)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    gc = grpo_config()
    loss_fn = make_policy_loss(grpo.grpo_loss, 1.0, gc.loss_kwargs.to_dict(), chunk=gc.logprob_chunk)
    step = train.AccumStep(model, loss_fn, optax.sgd(0.1))
    half = length // 2
    prompts = [[1] * 64, [2] * 64]
    comps = [[3] * (half - 64), [4] * (length - half - 64)]
    mb, _ = pack_samples(PackSpec(pack_len=length, rows_per_rank=1, sample_capacity=2), prompts, comps,
                         [[-1.0] * len(c) for c in comps], np.ones(2, np.float32), np.ones(2, bool), 0)
    mb = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.asarray(x).dtype), mb[0])
    acc = jax.eval_shape(step.zeros, params, mb)
    compiled = step.accumulate.lower(acc, params, mb).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny_qwen2,tiny_moe")
    p.add_argument("--lengths", default="2048,4096,8192,16384")
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out = {}
    for name in args.models.split(","):
        prev, rows = None, []
        for L in [int(x) for x in args.lengths.split(",")]:
            b = temporaries(name, L)
            ratio = b / prev if prev else float("nan")
            rows.append({"length": L, "temp_mib": b / 2**20, "ratio": ratio})
            print(f"{name:12s} {L:6d} tokens: {b / 2**20:9.1f} MiB temporaries" +
                  (f"  (x{ratio:.2f} for x2 tokens)" if prev else ""), flush=True)
            prev = b
        out[name] = rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
