"""Distillation vs RL for a small dense student (DeepSeek-R1 §4.1, Table 6), at toy scale.

    r1jax distill --config experiments/distill_toy.py        # after `r1jax r1 --config experiments/r1_toy.py`

The student is a smaller dense Qwen2-architecture model (r1jax.config.toy_qwen2) with its own
base: pretrained on the same mixed-language corpus as the R1 teacher's base (read from
<r1_run_dir>/data/pretrain.jsonl; cached in cache_dir). From that base:

  distilled   SFT on the teacher's stage-3 traces (<r1_run_dir>/rejection/sft.jsonl: the
              rejection-sampled reasoning traces of the stage-2 model + non-reasoning records),
              plus, with `teacher_traces.n_prompts` > 0, traces of the final R1 model on more
              training problems kept by the same filters (the paper distilled ~800k samples
              "curated with DeepSeek-R1"; the toy's stage 3 keeps ~1k);
  rl          GRPO directly from the student base (accuracy + format rewards, as R1-Zero-Qwen
              in the paper) for the same compute as the distillation SFT.

Same compute, in forward-token passes (a training token costs 3: forward + backward; a
generated token 1): SFT = steps x batch_size x seq_len x 3; one GRPO step =
rows x (prompt + max_new_tokens) for generation + mu x rows x train_seq_len x 3 with rows =
prompts_per_step x group_size. With `rl.steps = 0` the RL student gets
floor(SFT compute / GRPO step compute) steps (at least `min_rl_steps`). The base's pretraining
is shared and the teacher's cost of making the traces is not charged to either student (as in
the paper's comparison). Both students, the base and (if present) the teacher are measured by
r1jax.toy.stage_eval.evaluate_stage on the teacher run's held-out problems. Writes results.json,
results.md and distill_toy.png.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time

import jax
import ml_collections

from r1jax import config as config_lib
from r1jax.data.jsonl import read_jsonl
from r1jax.data.prompts import PROMPT_STYLES, PromptFormat
from r1jax.data.tokenizer import load_tokenizer
from r1jax.eval.runner import check_eval_settings
from r1jax.model import Transformer, init_params
from r1jax.rl.config import grpo_config
from r1jax.runlog import write_results
from r1jax.sft.trainer import run_sft, sft_config, validate_sft_config
from r1jax.toy.language_mixing import register_toy_languages
from r1jax.toy.pipelines import checks, r1
from r1jax.toy.pipelines.checks import grpo_block, model_block, sft_block
from r1jax.toy.pipelines.common import config_dict, config_hash, stage_done
from r1jax.toy.pipelines.r1 import eval_dir, grpo_stage, sft_stage
from r1jax.toy.pipelines.rejection_sample import rejection_sample_config, sample_checkpoint, validate_rejection_config
from r1jax.toy.tokenizer import model_token_ids, toy_tokenizer

LABELS = {"student_base": "student base (Qwen2 toy)", "distilled": "student: SFT on R1 traces (distilled)",
          "rl": "student: GRPO from its base (same compute)", "teacher": "teacher: R1 (stage 5)"}


def _file_hash(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def pretrain_student(c, corpus_path: str, tok, tok_dir: str) -> str:
    """Trains (or reuses from cache_dir) the student's base on the corpus JSONL. Returns its HF folder."""


    mc = student_config(c, tok)
    # the whole model config is in the key (not only the overrides): a changed preset retrains
    key = config_hash(mc, c.student_pretrain, _file_hash(corpus_path))
    cached = os.path.join(c.cache_dir, f"toy_student_{key}")
    if os.path.exists(os.path.join(cached, "model.safetensors")):
        print(f"[distill] student base: cached {cached}")
        return cached
    sc = sft_config(run_dir=os.path.join(c.run_dir, "student_pretrain"), tokenizer=tok_dir,
                    **config_dict(c.student_pretrain))
    model = Transformer(mc)
    params = init_params(mc, jax.random.PRNGKey(c.student_pretrain.seed))
    recs = [{"prompt": x["prompt"], "completion": " " + x["completion"]}
            for x in read_jsonl(corpus_path, required=("prompt", "completion"))]
    run_sft(sc, recs, model=model, params=params, tokenizer=tok)
    os.makedirs(c.cache_dir, exist_ok=True)
    tmp = cached + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(os.path.join(sc.run_dir, "final"), tmp)
    tok.save(tmp)
    os.replace(tmp, cached)
    return cached


def teacher_traces(tc, teacher_dir: str, tok, train: list, prompt_style: str, out_path: str, seed: int):
    """More R1 traces for the distillation set: rejection sampling (the stage-3 filters: R1
    format, correct, single-language, non-repetitive; `tc.non_reasoning_frac` general records) of
    the final R1 model on train[prompt_offset : prompt_offset + n_prompts], cached at out_path.
    Returns (records, counts)."""

    if os.path.exists(out_path + ".counts.json"):
        print(f"[distill] teacher traces: done before ({out_path})")
        with open(out_path + ".counts.json") as f:
            return read_jsonl(out_path), json.load(f)
    prompts = train[tc.prompt_offset:tc.prompt_offset + tc.n_prompts]
    if len(prompts) < tc.n_prompts:
        end = tc.prompt_offset + tc.n_prompts
        raise SystemExit(f"distill: teacher_traces wants train problems {tc.prompt_offset}..{end} but the teacher "
                         f"run's train.jsonl has {len(train)}")
    if not os.path.exists(os.path.join(teacher_dir, "config.json")):
        raise SystemExit(f"distill: teacher_traces needs the R1 model {teacher_dir} (stage 5 of `r1jax r1`)")
    print(f"[distill] teacher traces: {len(prompts)} prompts x {tc.n_samples} samples from {teacher_dir}")
    counts = sample_checkpoint(teacher_dir, tok, prompts, out_path, tc, prompt_style=prompt_style,
                               languages=tc.languages, seed=seed + 1)
    return read_jsonl(out_path), counts


def config_schema() -> dict:
    """Every key an `r1jax distill` config may hold (experiments/distill_toy.py): `student` holds
    model config keys (overrides of toy_qwen2), `student_pretrain` / `distill_sft` sft_config keys,
    `rl` grpo_config keys, `teacher_traces` rejection-sampling keys, less those the stages set."""

    return dict(run_dir="", cache_dir="", r1_run_dir="", traces="", seed=0, prompt_style="r1_zero",
                student=model_block(), student_pretrain=sft_block(("run_dir", "tokenizer", "init", "model", "data")),
                eval=r1.config_schema()["eval"],
                teacher_traces=dict(r1.REJECTION_KEYS, languages=("en",)),
                distill_sft=sft_block(("run_dir", "init", "tokenizer", "seed", "model", "data")),
                rl=grpo_block(("run_dir", "init", "tokenizer", "prompt_style", "seed")), min_rl_steps=1)


def student_config(c, tok):
    """The student's model config: toy_qwen2 at the tokenizer's size, its token ids, `c.student`."""

    return config_lib.replace(config_lib.toy_qwen2(vocab_size=tok.vocab_size), **{**model_token_ids(tok), **c.student})


def validate(c) -> None:
    """Checks the whole distill config before anything runs (r1jax.toy.pipelines.checks)."""

    what = "distill config"
    checks.check_config(c, config_schema(), what, required=("run_dir", "cache_dir", "r1_run_dir", "seed",
                                                             "prompt_style", "student", "student_pretrain", "eval",
                                                             "distill_sft", "rl"))
    config_lib.check_choice(what, "prompt_style", c.prompt_style, PROMPT_STYLES)
    mc = checks.stage(what, "student", lambda: student_config(c, toy_tokenizer()))
    checks.stage(what, "student_pretrain", lambda: validate_sft_config(sft_config(
        run_dir="-", **config_dict(c.student_pretrain))))
    checks.stage(what, "distill_sft", lambda: validate_sft_config(sft_config(run_dir="-", seed=c.seed,
                                                                             **config_dict(c.distill_sft))))
    checks.grpo_stage(what, "rl", lambda: grpo_config(run_dir="-", prompt_style=c.prompt_style, seed=c.seed,
                                                      **dict(config_dict(c.rl), steps=max(int(c.rl.get("steps", 1)), 1))),
                      mc)
    e = c.eval
    checks.stage(what, "eval", lambda: check_eval_settings(k=e.k, temperature=e.temperature, top_p=e.top_p,
                                                           max_new_tokens=e.max_new_tokens,
                                                           prompt_style=c.prompt_style))
    checks.check_positions(what, "eval.max_new_tokens", e.max_new_tokens, mc)
    if c.get("teacher_traces") and c.teacher_traces.n_prompts:
        t = {k: v for k, v in config_dict(c.teacher_traces).items() if k != "prompt_offset"}
        checks.stage(what, "teacher_traces", lambda: validate_rejection_config(rejection_sample_config(
            prompt_style=c.prompt_style, **t)))


def sft_compute(steps: int, batch_size: int, seq_len: int) -> float:
    """Forward-token passes of SFT: every packed token is trained on (x3)."""
    return 3.0 * steps * batch_size * seq_len


def grpo_step_compute(prompts_per_step: int, group_size: int, prompt_len: int, max_new_tokens: int, mu: int = 1,
                      multiple: int = 32) -> float:
    """Forward-token passes of one GRPO step: generation (x1) + mu training passes (x3) over
    rows padded to a multiple of 32 (as the trainer pads them)."""
    rows = prompts_per_step * group_size
    train_len = int(math.ceil((prompt_len + max_new_tokens) / multiple) * multiple)
    return rows * (prompt_len + max_new_tokens) + 3.0 * mu * rows * train_len


def run(c: ml_collections.ConfigDict) -> dict:

    validate(c)  # every key and stage config, before the student's pretraining or any stage
    t_start = time.time()
    register_toy_languages()
    rd = c.run_dir
    os.makedirs(os.path.join(rd, "evals"), exist_ok=True)
    src = c.r1_run_dir
    tok_dir = os.path.join(src, "data", "tokenizer")
    traces_path = c.traces or os.path.join(src, "rejection", "sft.jsonl")
    for p, what in ((tok_dir, "tokenizer"), (traces_path, "stage-3 traces"),
                    (os.path.join(src, "data", "pretrain.jsonl"), "pretraining corpus")):
        if not os.path.exists(p):
            raise SystemExit(f"distill: {what} {p} does not exist; run `r1jax r1 --config experiments/r1_toy.py "
                             f"--run-dir {src}` first (or set r1_run_dir / traces)")
    print(f"[distill] run folder {rd}; teacher run {src}; JAX devices: {jax.device_count()} x {jax.devices()[0].platform}")
    tok = load_tokenizer(tok_dir)
    heldout = read_jsonl(os.path.join(src, "data", "heldout.jsonl"))[: c.eval.problems]
    train = read_jsonl(os.path.join(src, "data", "train.jsonl"))
    traces = read_jsonl(traces_path, required=("prompt", "completion"))
    minutes = {}
    evals = {}
    t0 = time.time()
    base_dir = pretrain_student(c, os.path.join(src, "data", "pretrain.jsonl"), tok, tok_dir)
    minutes["student_base"] = (time.time() - t0) / 60
    n_stage3 = len(traces)
    teacher = os.path.join(src, "alignment_rl", "final")
    tt_counts = None
    if c.get("teacher_traces") and c.teacher_traces.n_prompts:
        t0 = time.time()
        extra, tt_counts = teacher_traces(c.teacher_traces, teacher, tok, train, c.prompt_style,
                                          os.path.join(rd, "teacher_traces", "sft.jsonl"), c.seed)
        traces = traces + extra
        minutes["teacher_traces"] = (time.time() - t0) / 60
        print(f"[distill] SFT set: {n_stage3} stage-3 records + {len(extra)} R1 traces = {len(traces)}")

    def ev(name, d):
        t = time.time()
        r = eval_dir(c, d, tok, heldout, os.path.join(rd, "evals", f"{name}.json"))
        minutes[f"eval_{name}"] = (time.time() - t) / 60
        evals[name] = r
        print(f"[distill] {name}: pass@1 {r['pass@1']:.3f}  length {r['mean_length']:.1f}  "
              f"mixing {r['language_mixing']:.3f}")

    ev("student_base", base_dir)
    # distilled student: SFT on the teacher's traces
    t0 = time.time()
    dist_dir = sft_stage("distilled", c, c.distill_sft, base_dir, tok, tok_dir, traces, rd)
    minutes["distilled"] = (time.time() - t0) / 60
    ev("distilled", dist_dir)
    with open(os.path.join(rd, "distilled", "metrics.jsonl")) as f:
        sft_steps = max(json.loads(x)["step"] for x in f if x.strip())
    s_comp = sft_compute(sft_steps, c.distill_sft.batch_size, c.distill_sft.seq_len)
    # RL student: GRPO from the student base for the same compute

    prompt_len = int(round(sum(len(PromptFormat(c.prompt_style).render(tok, r["problem"])[0]) for r in train[:256])
                           / min(len(train), 256)))
    rl = c.rl
    step_comp = grpo_step_compute(rl.prompts_per_step, rl.group_size, prompt_len, rl.max_new_tokens, rl.get("mu", 1))
    rl_steps = int(rl.steps) or max(int(c.min_rl_steps), int(s_comp // step_comp))
    print(f"[distill] compute: SFT {sft_steps} steps = {s_comp:.3g} token-passes; GRPO step {step_comp:.3g} "
          f"-> {rl_steps} GRPO steps")
    t0 = time.time()
    rl_cfg = dict(config_dict(rl), steps=rl_steps)
    rl_dir = grpo_stage("rl", c, rl_cfg, base_dir, tok, tok_dir, train, rd)
    minutes["rl"] = (time.time() - t0) / 60
    ev("rl", rl_dir)
    if stage_done(os.path.join(src, "alignment_rl")):
        ev("teacher", teacher)
    keys = ("pass@1", "cons@k", "mean_length", "language_mixing", "format_r1", "format_r1_zero", "pass@1/en", "pass@1/fr")
    total = (time.time() - t_start) / 60
    results = {"models": {n: {k: evals[n].get(k) for k in keys} for n in evals},
               "compute": {"sft_steps": sft_steps, "sft_token_passes": s_comp, "grpo_steps": rl_steps,
                           "grpo_token_passes": rl_steps * step_comp, "prompt_len": prompt_len},
               "traces": len(traces), "stage3_traces": n_stage3, "teacher_traces": tt_counts, "minutes": total,
               "stage_minutes": minutes, "k": c.eval.k,
               "problems": len(heldout), "seed": c.seed,
               "samples": {n: evals[n]["samples"][:3] for n in evals}}
    png = plot(results, os.path.join(rd, "distill_toy.png"))
    write_results(rd, results, results_table(results), png=png, tag="distill", minutes=total)
    return results


def results_table(r: dict) -> str:
    k = r["k"]
    lines = [f"| model | pass@1 (k={k}) | cons@{k} | mean length | language mixing | training compute (token-passes) |",
             "|---|---|---|---|---|---|"]
    comp = {"distilled": r["compute"]["sft_token_passes"], "rl": r["compute"]["grpo_token_passes"]}
    for n, x in r["models"].items():
        cp = f"{comp[n]:.3g}" if n in comp else "-"
        lines.append(f"| {LABELS.get(n, n)} | {x['pass@1']:.3f} | {x['cons@k']:.3f} | {x['mean_length']:.1f} | "
                     f"{x['language_mixing']:.3f} | {cp} |")
    c = r["compute"]
    return "\n".join(lines) + (
        f"\n\nDistillation: SFT on {r['traces']} records ({r.get('stage3_traces', r['traces'])} from stage 3, the rest "
        f"sampled from R1 with the stage-3 filters), {c['sft_steps']} steps; RL: {c['grpo_steps']} GRPO "
        f"steps for the same compute. {r['problems']} held-out problems, k={k} at T=0.6 / top-p 0.95, seed "
        f"{r['seed']}, {r['minutes']:.1f} minutes in all.")


def plot(r: dict, path: str) -> str:
    import matplotlib  # heavy (~0.5 s): loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["models"])
    labels = [LABELS.get(n, n).replace(": ", ":\n") for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, (key, title) in zip(axes, (("pass@1", "held-out pass@1"), ("mean_length", "mean response length"))):
        vals = [r["models"][n][key] for n in names]
        ax.bar(range(len(names)), vals, color=["#888888", "#1f77b4", "#d62728", "#2ca02c"][:len(names)])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(labels, fontsize=7, rotation=20, ha="right")
        ax.set_title(title)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("toy distillation: small Qwen2 student, SFT on R1 traces vs GRPO (same compute)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
