"""The peer of tools/bench_grpo.py: one GRPO step of TRL's GRPOTrainer (transformers + torch) at the same settings.

    python3 tools/bench_trl_grpo.py --model qwen2_5_1_5b --prompts 16 --group-size 8 --new-tokens 512 \\
        --remat full --json trl_qwen1.5b.json --compare qwen1.5b_gpu.json      # one GPU, vs bench_grpo's JSON
    JAX_PLATFORMS=cpu python3 tools/bench_trl_grpo.py --model /ckpts/tiny-hf --prompts 2 --group-size 2 --new-tokens 8

Same model shape (a preset of r1jax.config or an HF folder's config.json, exported with
r1jax.config.to_hf_config and built by transformers' AutoModelForCausalLM with random weights,
`attn_implementation` sdpa by default), the same tokenizer folder, prompts (bench_grpo.prompt_records:
GSM8K questions or toy problems, the r1_zero prompt), P prompts x G samples up to L new tokens at
temperature 1, the same rewards (r1jax's accuracy + 0.5 x format, as TRL reward functions), the
same loss settings as bench_grpo's trainer defaults (token-mean = TRL's "dapo", clip 0.2 / 0.28,
kl 0 unless --kl, group-scaled advantages, AdamW lr 1e-4 constant, grad clip 1), one generation
round per optimizer step (TRL: steps_per_generation = gradient_accumulation_steps = --grad-accum, so
no old-logp pass, as bench_grpo's default `--old-logp sampler`). `transformers.generate` does the
rollouts (no vLLM: the peer the issue names is TRL + transformers).

Weights: --torch-dtype bfloat16 (default) holds the model and AdamW in bf16 (TRL's common setup, the
fastest for the peer; r1jax keeps fp32 master weights, so the ratio is conservative for r1jax);
--torch-dtype float32 with --amp bf16 is the mixed-precision twin of r1jax's setup.

Measured per step (the first --warmup steps are left out), printed and written (--json):
step_s = rollout_s (TRL's `_generate`: tokenizing + transformers.generate) + reward_s
(`_calculate_rewards`) + logp_s (the rest of `_generate_and_score_completions`: padding, ref /
old log-probs when on, advantages) + update_s (the rest of the optimizer step: forward, backward,
AdamW). With --compare FILE (a bench_grpo JSON) it prints the ratios TRL / r1jax of the step and its parts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# r1jax is imported for configs, prompts and rewards only: keep JAX off the GPU torch uses
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bench_grpo  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a preset of r1jax.config (e.g. qwen2_5_1_5b) or an HF folder")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--data", default="", help="prompt JSONL (GSM8K fields); default ../shared/data GSM8K or toy")
    p.add_argument("--torch-dtype", default="", help="weights + AdamW dtype (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--amp", default="", choices=("", "bf16"), help="autocast compute (with --torch-dtype float32)")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--remat", default="", help="full = gradient checkpointing (r1jax's remat full); else none")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (P x G / N rows each)")
    p.add_argument("--kl", type=float, default=0.0, help="beta (k3 KL to a reference copy)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--json", default="")
    p.add_argument("--compare", default="", help="a tools/bench_grpo.py JSON of the same settings: print ratios")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="model config overrides for a preset (e.g. num_hidden_layers=4)")
    return p.parse_args(argv)


def build_model(cfg, dtype, attn: str, tmp: str):
    """transformers' model of the r1jax config `cfg` (random weights) on the torch device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from r1jax.config import to_hf_config

    hf = to_hf_config(cfg)
    hf["torch_dtype"] = str(dtype).replace("torch.", "")
    d = os.path.join(tmp, "hf_config")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(hf, f)
    conf = AutoConfig.from_pretrained(d)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation=attn)
    return model.to("cuda" if torch.cuda.is_available() else "cpu")


def reward_functions():
    """r1jax's accuracy and format rewards as TRL reward functions (weights 1.0 and 0.5 in the config)."""
    from r1jax.rewards.accuracy import accuracy_rewards
    from r1jax.rewards.format import format_reward

    def accuracy(completions, answer, **_):
        return [float(r) if r is not None else 0.0 for r in accuracy_rewards(list(completions), list(answer))]

    def format_(completions, **_):
        return [format_reward(c, "r1_zero") for c in completions]

    format_.__name__ = "format"
    return [accuracy, format_]


def timed_trainer_class():
    """GRPOTrainer with the rollout, reward and scoring phases timed (CUDA synchronised)."""
    import torch
    from trl import GRPOTrainer

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class TimedGRPOTrainer(GRPOTrainer):
        phase_s: dict

        def _timed(self, key, fn, *a, **kw):
            sync()
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            sync()
            self.phase_s[key] = self.phase_s.get(key, 0.0) + time.perf_counter() - t0
            return out

        def _generate(self, *a, **kw):
            return self._timed("rollout", super()._generate, *a, **kw)

        def _calculate_rewards(self, *a, **kw):
            return self._timed("reward", super()._calculate_rewards, *a, **kw)

        def _generate_and_score_completions(self, *a, **kw):
            return self._timed("prepare", super()._generate_and_score_completions, *a, **kw)

    return TimedGRPOTrainer, sync


def main(argv=None):
    args = parse(argv)
    import numpy as np
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    from r1jax import config as config_lib
    from r1jax.data.prompts import PromptFormat

    ours = None
    if args.compare:  # before the run: a JSON of other settings is refused at once
        with open(args.compare) as f:
            ours = json.load(f)
        here = dict(model=args.model, prompts=args.prompts, group_size=args.group_size, new_tokens=args.new_tokens,
                    remat="full" if args.remat == "full" else "none", grad_accum=args.grad_accum,
                    minibatches=1, old_logp="sampler")  # TRL here: one optimizer step per round, no old-logp pass
        differ = [k for k, v in here.items() if k in ours and ours[k] != v]
        if differ:
            raise SystemExit(f"bench_trl_grpo: {args.compare} was measured at other settings: "
                             + ", ".join(f"{k} {ours.get(k)!r} there, {here[k]!r} here" for k in differ))
    cuda = torch.cuda.is_available()
    tmp = tempfile.mkdtemp(prefix="bench_trl_grpo_")
    args.mesh, args.dtype = "", ""  # bench_grpo.model_config: no r1jax mesh or compute dtype here
    cfg, tok_dir = bench_grpo.model_config(args, tmp)
    dtype = getattr(torch, args.torch_dtype or ("bfloat16" if cuda else "float32"))
    model = build_model(cfg, dtype, args.attn, tmp)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    recs, _ = bench_grpo.prompt_records(args, args.prompts)
    fmt = PromptFormat("r1_zero")
    ds = Dataset.from_list([{"prompt": fmt.text(tok, r["problem"]), "answer": str(r["answer"])} for r in recs])
    n_rows = args.prompts * args.group_size
    if n_rows % args.grad_accum:
        raise SystemExit(f"--grad-accum {args.grad_accum} must divide prompts x group size = {n_rows}")
    n_steps = args.warmup + args.steps
    # one optimizer step per generation round of all P prompts: each epoch of the P-record dataset is one step
    c = GRPOConfig(
        output_dir=os.path.join(tmp, "out"), per_device_train_batch_size=n_rows // args.grad_accum,
        gradient_accumulation_steps=args.grad_accum, steps_per_generation=args.grad_accum,
        num_generations=args.group_size, max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0,
        top_k=0, beta=args.kl, epsilon=0.2, epsilon_high=0.28, loss_type="dapo", scale_rewards="group",
        num_iterations=1, reward_weights=[1.0, 0.5], learning_rate=1e-4, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, max_steps=n_steps, logging_steps=1, report_to=[],
        save_strategy="no", bf16=args.amp == "bf16", gradient_checkpointing=args.remat == "full",
        use_vllm=False, log_completions=False, seed=0, disable_tqdm=True, use_cpu=not cuda,
        dataloader_num_workers=0,
    )
    Trainer, sync = timed_trainer_class()
    rows: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync()
            trainer.phase_s = {}
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            sync()
            step_s = time.perf_counter() - self.t0
            p = dict(trainer.phase_s)
            rows.append(dict(step_s=step_s, rollout_s=p.get("rollout", 0.0), reward_s=p.get("reward", 0.0),
                             prepare_s=p.get("prepare", 0.0)))
            print(f"[bench_trl_grpo] step {len(rows) - 1}: {step_s:.2f} s (rollout {rows[-1]['rollout_s']:.2f})",
                  flush=True)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and rows and "completions/mean_length" in logs:
                rows[-1]["mean_response_length"] = float(logs["completions/mean_length"])

    trainer = Trainer(model=model, reward_funcs=reward_functions(), args=c, train_dataset=ds, processing_class=tok,
                      callbacks=[StepTimer()])
    trainer.phase_s = {}
    trainer.train()
    if len(rows) != n_steps:
        raise SystemExit(f"bench_trl_grpo: expected {n_steps} optimizer steps, TRL ran {len(rows)}")
    meas = rows[args.warmup:]
    mean = lambda k: float(np.mean([r[k] for r in meas]))  # noqa: E731
    step_s, rollout_s, reward_s, prepare_s = mean("step_s"), mean("rollout_s"), mean("reward_s"), mean("prepare_s")
    resp = mean("mean_response_length") if all("mean_response_length" in r for r in meas) else float("nan")
    prompt_len = float(np.mean([len(tok(r["prompt"])["input_ids"]) for r in ds]))
    seq_tokens = n_rows * (prompt_len + resp)
    update_s = step_s - prepare_s
    res = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "peer": "trl GRPOTrainer + transformers.generate",
        "model": args.model, "model_params": int(sum(p.numel() for p in model.parameters())),
        "model_params_r1jax": config_lib.count_params(cfg)["total"],
        "prompts": args.prompts, "group_size": args.group_size, "new_tokens": args.new_tokens,
        "torch_dtype": str(dtype).replace("torch.", ""), "amp": args.amp or "none", "attn": args.attn,
        "remat": "full" if args.remat == "full" else "none", "grad_accum": args.grad_accum, "kl": args.kl,
        "step_s": step_s, "rollout_s": rollout_s, "reward_s": reward_s, "logp_s": prepare_s - rollout_s - reward_s,
        "update_s": update_s, "first_step_s": rows[0]["step_s"], "mean_response_length": resp,
        "rollout_tokens_per_s": n_rows * resp / max(rollout_s, 1e-9),
        "train_tokens_per_s": seq_tokens / max(update_s, 1e-9), "steps_measured": len(meas),
        "versions": {m: __import__(m).__version__ for m in ("trl", "transformers", "torch")},
    }
    found = bench_grpo.table_peaks(torch.cuda.get_device_name(0)) if cuda else None
    if found is not None:
        flops = config_lib.flops_per_token(cfg, int(round(prompt_len + resp))) * seq_tokens
        res["train_mfu"] = flops / max(update_s, 1e-9) / (found[1] * 1e12)
    if ours is not None:
        res["vs_r1jax"] = {k: res[k] / ours[k] for k in ("step_s", "rollout_s", "update_s") if ours.get(k)}
        res["vs_r1jax"]["r1jax_json"] = args.compare
    bench_grpo.report(res, args.json, "bench_trl_grpo")
    return res


if __name__ == "__main__":
    main()
