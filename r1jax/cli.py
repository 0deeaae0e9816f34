"""The `r1jax` command: each stage from a config file in experiments/.

    r1jax r1-zero --config experiments/r1_zero_toy.py            # the toy R1-Zero main job
    r1jax pretrain-toy --config experiments/r1_zero_toy.py       # only the base model
    r1jax sft --config experiments/sft_cold_start.py --set init=DIR --set data=FILE.jsonl   # SFT
    r1jax grpo --config experiments/grpo_gsm8k.py --set init=DIR --set train_data=FILE.jsonl  # GRPO
    r1jax eval --checkpoint DIR --data FILE.jsonl --k 8 --prompt-style chat   # pass@1 over k, cons@k
    r1jax convert --checkpoint DIR --out DIR [--fp8]             # HF safetensors re-export

A config file is a Python file with `get_config()` returning an ml_collections.ConfigDict;
`--set key.sub=value` overrides any key (the value is parsed as a Python literal when it can be).
An unknown key fails naming the dotted key and the closest valid one; every stage checks its whole
config (and the tokenizer against the model) before anything heavy runs.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys

import r1jax
from r1jax import config as config_lib
from r1jax.config import override, schema_of
from r1jax.data.prompts import R1_ZERO_SYSTEM, PromptFormat, prompt_of, read_prompt_records
from r1jax.data.tokenizer import check_fits_model, load_tokenizer
from r1jax.eval.runner import check_eval_settings, evaluate
from r1jax.generation.engine import check_positions
from r1jax.parallel import distributed
from r1jax.rewards.sandbox import check_sandbox
from r1jax.rl.config import OPEN_KEYS, REPLACED_KEYS, grpo_config, validate_config
from r1jax.rl.trainer import run_grpo
from r1jax.sft.trainer import run_sft, sft_config, validate_sft_config
from r1jax.toy.pipelines import r1_zero
from r1jax.toy.pipelines.rejection_sample import rejection_sample_config, validate_rejection_config
from r1jax.toy.pipelines.train_rm import train_rm_config, validate_train_rm_config

OPEN_BLOCKS = ("model", "student", "rewards", "loss_kwargs")  # dicts of free keys: checked when the stage builds them


def load_config(path: str, sets: list[str] | None = None, schema=None):
    """The config of an experiment file with `--set key.sub=value` overrides. An unknown key fails
    naming the dotted key and the closest valid one. `schema` (r1jax.config.schema_of of the stage's
    full config): keys a partial block of the file leaves out but the stage takes can be set too.
    Keys under a block of free keys (model, rewards, loss_kwargs) are checked when the stage builds
    its config (the trainers check them before anything heavy runs)."""

    if not os.path.exists(path):
        raise SystemExit(f"r1jax: config file {path} does not exist")
    spec = importlib.util.spec_from_file_location("r1jax_experiment_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "get_config"):
        raise SystemExit(f"r1jax: {path} has no get_config()")
    cfg = mod.get_config()
    nested, open_blocks, replaced = {}, set(), set()
    for s in sets or []:
        if "=" not in s:
            raise SystemExit(f"r1jax: --set {s!r} is not key=value")
        key, val = s.split("=", 1)
        try:
            val = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            pass
        parts = key.split(".")
        node = nested
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if p in OPEN_BLOCKS:
                open_blocks.add(".".join(parts[:i + 1]))
        node[parts[-1]] = val
        if isinstance(val, dict):  # a whole block given as a dict replaces the file's
            replaced.add(key)
    try:  # the one override walk of every config (r1jax.config.override)
        override(cfg, nested, f"r1jax: {path}", replace=tuple(replaced), open=tuple(open_blocks), schema=schema)
    except (KeyError, ValueError) as e:
        raise SystemExit(str(e)) from None
    return cfg


def config_schema(cmd: str):
    """The full schema (nested dict of keys, r1jax.config.schema_of) of a stage's config, or None."""

    if cmd == "grpo":
        return schema_of(grpo_config(), open=OPEN_KEYS + REPLACED_KEYS)
    if cmd == "sft":
        return schema_of(sft_config(), open=("model",))
    name = {"pretrain-toy": "r1-zero"}.get(cmd, cmd).replace("-", "_")
    try:
        mod = importlib.import_module(f"r1jax.toy.pipelines.{name}")
    except ModuleNotFoundError:
        return None
    return mod.config_schema() if hasattr(mod, "config_schema") else None


def validate_stage_config(cmd: str, cfg) -> None:
    """Checks a stage's whole config as the stage will (keys at any depth, enumerated settings, the
    loss options, reward names, every sub-stage of a pipeline) without loading or running anything."""
    if cmd == "grpo":
        validate_config(grpo_config(**cfg.to_dict()))
    elif cmd == "sft":
        validate_sft_config(sft_config(**cfg.to_dict()))
    elif cmd == "rejection-sample":
        validate_rejection_config(rejection_sample_config(**cfg.to_dict()))
    elif cmd == "train-rm":
        validate_train_rm_config(train_rm_config(**cfg.to_dict()))
    else:
        name = {"pretrain-toy": "r1-zero"}.get(cmd, cmd).replace("-", "_")
        importlib.import_module(f"r1jax.toy.pipelines.{name}").validate(cfg)


def _init_distributed():
    """jax.distributed from the environment (TPU pod / SLURM / JAX_COORDINATOR_ADDRESS...); no-op alone."""

    distributed.initialize()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="r1jax", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("r1-zero", "pretrain-toy", "sft", "grpo", "r1", "distill", "rejection-sample", "train-rm"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True)
        p.add_argument("--set", action="append", default=[], help="override: key.sub=value")
        p.add_argument("--run-dir", default=None)
    e = sub.add_parser("eval")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--k", type=int, default=8)
    e.add_argument("--temperature", type=float, default=0.6)
    e.add_argument("--top-p", type=float, default=0.95)
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--problems", type=int, default=0, help="first N problems (0: all)")
    e.add_argument("--prompt-style", default="r1_zero", choices=["r1_zero", "short", "chat", "raw"],
                   help="chat: the checkpoint's own chat template")
    e.add_argument("--system-prompt", default="", help="chat: a system message ('r1_zero': the R1-Zero instruction)")
    e.add_argument("--user-template", default="{problem}", help="the user message around {problem}")
    e.add_argument("--format-template", default="", choices=["", "r1_zero", "r1"],
                   help="format reward: r1_zero (<think>..</think><answer>..</answer>) or r1 (<think>..</think> answer);"
                        " default r1_zero with the R1-Zero template or system prompt, else r1")
    e.add_argument("--problem-key", default="", help="JSONL field of the problem (default: problem / question)")
    e.add_argument("--answer-key", default="answer")
    e.add_argument("--answer-format", default="auto", choices=["raw", "gsm8k", "boxed", "auto"],
                   help="how the gold answer is read from the answer field (auto: '####' -> gsm8k, \\boxed -> boxed)")
    e.add_argument("--dtype", default="float32", help="compute and param dtype (e.g. bfloat16)")
    e.add_argument("--tokenizer", default="")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--engine", default="auto", choices=["auto", "static", "continuous"],
                   help="rollout engine (auto: continuous, 64 x k rows refilled as samples end, past 64 problems)")
    e.add_argument("--out", default="", help="write the metrics as JSON here")
    e.add_argument("--sandbox", default="auto", choices=["auto", "unsafe"],
                   help="isolation of the math workers that score answers (unsafe: none, where isolation is impossible)")
    cv = sub.add_parser("convert")
    cv.add_argument("--checkpoint", required=True)
    cv.add_argument("--out", required=True)
    cv.add_argument("--fp8", action="store_true")
    cv.add_argument("--dtype", default=None)
    args = ap.parse_args(argv)

    try:
        _init_distributed()
    except ImportError:
        pass

    if args.cmd == "eval":
        return _eval(args)
    if args.cmd == "convert":
        model, params = r1jax.from_pretrained(args.checkpoint)
        r1jax.save_pretrained(params, model.cfg, args.out, fp8=args.fp8, dtype=args.dtype)
        print(f"wrote {args.out}")
        return 0
    cfg = load_config(args.config, args.set + ([f"run_dir={args.run_dir!r}"] if args.run_dir else []),
                      schema=config_schema(args.cmd))
    try:  # the whole config, before anything loads or runs (each stage checks it again itself)
        validate_stage_config(args.cmd, cfg)
    except (ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"r1jax {args.cmd}: {args.config}: {e.args[0] if e.args else e}") from None
    if args.cmd == "r1-zero":
        r1_zero.run(cfg)
    elif args.cmd == "pretrain-toy":
        data = r1_zero.build_toy_data(cfg, os.path.join(cfg.run_dir, "data"))
        print(r1_zero.pretrain_toy(cfg, data, cfg.run_dir, cfg.cache_dir))
    elif args.cmd == "sft":
        run_sft(sft_config(**cfg.to_dict()))
    elif args.cmd == "grpo":
        run_grpo(grpo_config(**cfg.to_dict()))
    else:
        try:
            mod = importlib.import_module(f"r1jax.toy.pipelines.{args.cmd.replace('-', '_')}")
        except ModuleNotFoundError:
            raise SystemExit(f"r1jax: the `{args.cmd}` stage is not implemented in this version") from None
        mod.run(cfg)
    return 0


def _eval(args):
    # every setting, the tokenizer against the model's config.json and the prompts against its
    # positions, before the weights load
    what = "r1jax eval"
    config_lib.check_choice(what, "--dtype", args.dtype, config_lib.DTYPES)
    system = R1_ZERO_SYSTEM if args.system_prompt == "r1_zero" else args.system_prompt
    template = args.format_template or ("r1_zero" if args.prompt_style == "r1_zero" or system == R1_ZERO_SYSTEM
                                        else "r1")
    check_eval_settings(k=args.k, temperature=args.temperature, top_p=args.top_p,
                        max_new_tokens=args.max_new_tokens, prompt_style=args.prompt_style, template=template,
                        engine=args.engine, what=what)
    if args.problems < 0:
        raise SystemExit(f"{what}: --problems={args.problems} must be >= 0")
    fmt = PromptFormat(args.prompt_style, system_prompt=system, user_template=args.user_template)
    model_cfg = config_lib.from_hf_config(args.checkpoint)
    tok_dir = args.tokenizer or args.checkpoint
    tok = load_tokenizer(tok_dir)
    check_fits_model(tok, model_cfg.vocab_size, tokenizer_where=repr(tok_dir), model_where=repr(args.checkpoint),
                     what=what)
    recs = read_prompt_records(args.data, problem_key=args.problem_key, answer_key=args.answer_key,
                               answer_format=args.answer_format)
    if args.problems:
        recs = recs[: args.problems]
    check_positions(model_cfg, [len(p) for p in fmt.render_all(tok, [prompt_of(r) for r in recs])[0]],
                    args.max_new_tokens, what=f"{what}: {args.data}", key="--max-new-tokens")

    check_sandbox(args.sandbox)  # before the weights load and the samples are drawn
    model, params = r1jax.from_pretrained(args.checkpoint, dtype=args.dtype)
    res = evaluate(model, params, tok, recs, k=args.k, temperature=args.temperature, top_p=args.top_p,
                   max_new_tokens=args.max_new_tokens, prompt_style=args.prompt_style, seed=args.seed,
                   system_prompt=system, user_template=args.user_template, template=template, engine=args.engine,
                   sandbox=args.sandbox)
    samples = res.pop("samples")
    print(json.dumps(res, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(res, samples=samples), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
