"""How far the rollout engine's log-probs are from the trainer's, per precision / kernel / MoE path.

    JAX_PLATFORMS=cpu python3 tools/measure_agreement.py                      # tiny_moe, all variants
    python3 tools/measure_agreement.py --preset small_moe --variants f32,bf16 --json out.json

For each variant: sample `--prompts` x `--n` completions of up to `--new` tokens with r1jax.generate
(the sampler: weights in the compute dtype, decode path, ragged MoE: never drops), then compute the
same tokens' log-probs with the trainer's forward (fp32 master weights, compute dtype, chunked LM
head, the variant's attention and MoE paths) and print r1jax.rl.rollout_correction.agreement
(mean k3 KL, max |delta log-prob|, fraction of ratios outside [0.8, 1.2]) over the completion tokens,
and for MoE the fraction of the sampler's expert choices the trainer did not make.

Variants:
  f32          f32 compute, XLA attention on both sides (the gap is float rounding)
  bf16         bf16 compute on both sides, XLA attention
  bf16-pallas  bf16, Pallas MLA kernels on both sides (mla_decode in the sampler, mla_prefill in the
               trainer; interpret mode on CPU)
  bf16-ep      bf16, the trainer's MoE as expert parallelism over an 8-device mesh (`expert=8`, fake
               CPU devices) with capacity factor `--capacity` (tokens over capacity are dropped in
               training; decode never drops); also prints the dropped fraction of all routed assignments (padding included)
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny_moe")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--capacity", type=float, default=1.0)
    ap.add_argument("--variants", default="f32,bf16,bf16-pallas,bf16-ep")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if "bf16-ep" in args.variants and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    import jax
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import r1jax
    from r1jax import config as config_lib
    from r1jax.model import Transformer, init_params, precision
    from r1jax.parallel.placement import Placement
    from r1jax.rl.rollout_correction import agreement, expert_mismatch
    from r1jax.data.buckets import round_up
    from r1jax.rl.batch import ROW_MULTIPLE, build_batch
    from r1jax.rl.policy import make_logprob_fn

    base = config_lib.get_preset(args.preset)
    base = config_lib.replace(base, num_nextn_predict_layers=0)
    master = init_params(config_lib.make_config(**base.to_dict()), jax.random.PRNGKey(0))  # fp32 master weights
    rs = np.random.RandomState(0)
    prompts = [list(rs.randint(2, base.vocab_size, rs.randint(8, 33))) for _ in range(args.prompts)]
    results = {}
    for name in args.variants.split(","):
        dtype = "float32" if name == "f32" else "bfloat16"
        attn = "pallas" if name == "bf16-pallas" else "xla"
        s_cfg = config_lib.make_config(**{**base.to_dict(), "dtype": dtype, "attention_impl": attn})
        t_over = {"dtype": dtype, "attention_impl": attn}
        mesh = ""
        if name == "bf16-ep":
            t_over.update(moe_impl="ep", capacity_factor=args.capacity)
            mesh = "expert=8"
        t_cfg = config_lib.make_config(**{**base.to_dict(), **t_over})
        sampler, trainer = Transformer(s_cfg), Transformer(t_cfg)
        rollout = precision.compute_copy(master, s_cfg)
        gen = r1jax.generate(sampler, rollout, prompts, max_new_tokens=args.new, temperature=1.0, eos_id=(),
                             seed=1, n=args.n, return_routes=True)
        pn = [prompts[i] for i in gen.prompt_index]
        seq = round_up(max(map(len, prompts)) + args.new, ROW_MULTIPLE)
        host = build_batch(pn, gen.tokens, gen.logprobs, np.zeros(len(pn)), np.ones(len(pn), bool), 0, seq,
                           routes=gen.routes)
        place = Placement(mesh)
        params = place.params(t_cfg, master)
        batch = place.batch(host)
        with place.context():
            logp = make_logprob_fn(trainer, 1.0, 256)(params, batch["input_ids"], batch["targets"],
                                                     batch["token_mask"])
            extra = {}
            aux = trainer.apply({"params": params}, batch["input_ids"], token_mask=batch["token_mask"] > 0,
                                output=True, compute_mtp=False).aux
            if "route" in aux:
                extra["expert_mismatch"] = float(expert_mismatch(np.moveaxis(np.asarray(aux["route"]), 0, 2),
                                                                 host["sampler_route"]))
            if name == "bf16-ep":
                if "ep_dropped" in aux:
                    routed = float(np.asarray(aux["route"]).size)  # all assignments, padding rows included
                    extra["ep_dropped_frac"] = float(np.sum(jax.device_get(aux["ep_dropped"]))) / routed
        m = {k: float(v) for k, v in agreement(np.asarray(logp), host["sampler_logp"], host["loss_mask"], 0.2).items()}
        m.update(extra, tokens=int(host["loss_mask"].sum()))
        results[name] = m
        print(f"{name:12s} " + "  ".join(f"{k} {v:.3g}" for k, v in m.items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "prompts": args.prompts, "n": args.n, "new": args.new,
                       "capacity": args.capacity, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
