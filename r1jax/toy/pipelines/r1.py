"""The full DeepSeek-R1 recipe at toy scale, and R1-Zero on the same mixed-language base.

    r1jax r1 --config experiments/r1_toy.py [--set seed=1] [--run-dir runs/r1_toy]

Data: the arithmetic task posed in two toy languages ("en", "fr"); the pretraining corpus
mixes them inside one chain of thought (`p_mix` of the worked chains switch language at a
random step), so a model that reasons from it mixes languages, as R1-Zero did.

Stages (each writes run_dir/<stage>/, an HF checkpoint in <stage>/final, and is skipped when
its output exists, so a rerun resumes; GRPO/SFT also resume from their Orbax checkpoints):

  base          tiny DeepSeek-V3-shaped model pretrained on the mixed corpus (cached in
                cache_dir, r1jax.toy.pipelines.r1_zero.pretrain_toy)
  r1_zero       GRPO from the base with accuracy + format rewards only (the comparison)
  1 cold_start  SFT of the base on a few hundred readable single-language long-CoT traces
                with a summary at the end (r1jax.toy.r1_toy: `<think> steps </think> summary
                <answer> .. </answer>`)
  2 reasoning_rl  GRPO with accuracy + format ("r1" template) + language-consistency rewards
  3 rejection   samples from the stage-2 model on training prompts, kept if correct,
                single-language and non-repetitive, plus non-reasoning records
                (r1jax.toy.pipelines.rejection_sample) -> rejection/sft.jsonl + counts
  4 sft         SFT of the *base* on the stage-3 dataset
    rm          a Bradley-Terry reward model (backbone: the stage-4 model) on toy preference
                pairs (r1jax.toy.pipelines.train_rm)
  5 alignment_rl  GRPO from stage 4 on reasoning prompts (rule rewards) + general prompts
                (echo / simple: judged by the reward model), the "preference" reward enabled
                only after `preference_start_frac` of the steps, as R1 did

Every model is measured by r1jax.toy.stage_eval.evaluate_stage on the same held-out problems
(both languages): pass@1 over k samples, cons@k, mean response length, language-mixing rate.
Writes results.json, results.md (the table) and r1_toy.png (pass@1, length, mixing per stage).
"""

from __future__ import annotations

import json
import os
import time

import jax
import ml_collections

from r1jax import config as config_lib
from r1jax.checkpoint.hf import from_pretrained
from r1jax.data.jsonl import read_jsonl, write_jsonl
from r1jax.data.prompts import PROMPT_STYLES
from r1jax.eval.runner import check_eval_settings
from r1jax.rewards import accuracy_rewards, format_reward, language_consistency_reward
from r1jax.rl.config import grpo_config
from r1jax.rl.trainer import run_grpo
from r1jax.runlog import write_results
from r1jax.sft.trainer import run_sft, sft_config, validate_sft_config
from r1jax.toy.corpus import make_pretrain_corpus
from r1jax.toy.language_mixing import register_toy_languages
from r1jax.toy.pipelines import checks, r1_zero
from r1jax.toy.pipelines.checks import grpo_block, model_block, sft_block
from r1jax.toy.pipelines.common import config_dict, stage_done
from r1jax.toy.pipelines.r1_zero import corpus_seed
from r1jax.toy.pipelines.rejection_sample import (
    format_counts,
    rejection_sample_config,
    reward_language,
    sample_checkpoint,
    validate_rejection_config,
)
from r1jax.toy.pipelines.train_rm import train_rm, train_rm_config, validate_train_rm_config
from r1jax.toy.r1_toy import make_cold_start_records, make_general_records, make_problems_multi
from r1jax.toy.stage_eval import evaluate_stage
from r1jax.toy.tokenizer import save_tokenizer, toy_tokenizer

MODEL_STAGES = ("base", "r1_zero", "cold_start", "reasoning_rl", "sft", "alignment_rl")
STAGE_LABELS = {
    "base": "base (mixed corpus)",
    "r1_zero": "R1-Zero (GRPO acc+format)",
    "cold_start": "1 cold-start SFT",
    "reasoning_rl": "2 reasoning RL (+language)",
    "sft": "4 SFT on rejection samples",
    "alignment_rl": "5 alignment RL = R1",
}


# ------------------------------------------------------------------------------ data


def build_mixed_data(c, out_dir: str) -> dict:
    """Tokenizer, train / held-out problems (half in each language) and the mixed corpus."""

    d = c.data
    os.makedirs(out_dir, exist_ok=True)
    tok = toy_tokenizer()
    save_tokenizer(tok, os.path.join(out_dir, "tokenizer"))
    langs = tuple(d.languages)
    train, heldout = [], []
    for task in d.tasks:
        train += make_problems_multi(task, d.n_train_problems, d.seed, levels=tuple(d.levels), split="train",
                                     languages=langs)
        heldout += make_problems_multi(task, d.n_heldout_problems, d.seed + 1, levels=tuple(d.levels),
                                       split="heldout", languages=langs)
    for r in train + heldout:
        r["answer"] = str(r["answer"])
    write_jsonl(os.path.join(out_dir, "train.jsonl"), train)
    write_jsonl(os.path.join(out_dir, "heldout.jsonl"), heldout)
    corpus = make_pretrain_corpus(d.n_corpus, seed=corpus_seed(c), p_direct=d.p_direct, p_worked=d.p_worked,
                                  p_check=d.p_check, levels=tuple(d.levels), tasks=tuple(d.tasks), languages=langs,
                                  p_mix=d.p_mix, mix_style=d.mix_style, prompt_style=c.prompt_style,
                                  restate=bool(d.get("restate", False)))
    write_jsonl(os.path.join(out_dir, "pretrain.jsonl"),
                [{"prompt": x["prompt"], "completion": x["completion"], "mode": x["mode"], "language": x["language"]}
                 for x in corpus])
    return {"tokenizer": tok, "train": train, "heldout": heldout, "corpus": corpus,
            "tokenizer_dir": os.path.join(out_dir, "tokenizer")}


# ------------------------------------------------------------------ rule rewards of stage 5
# Rule rewards apply to reasoning prompts; general prompts (kind == "general") get 0 from them
# and are judged by the reward model ("preference") alone, as in R1's alignment stage.


def _reasoning(records):
    return [r.get("kind", "reasoning") != "general" for r in records]


def reasoning_accuracy(texts, records):
    acc = accuracy_rewards(list(texts), [str(r["answer"]) for r in records])
    return [a if ok else 0.0 for a, ok in zip(acc, _reasoning(records))]


def reasoning_format(texts, records):
    return [format_reward(t, template="r1") if ok else 0.0 for t, ok in zip(texts, _reasoning(records))]


def reasoning_language(texts, records):
    return [language_consistency_reward(t, reward_language(r.get("language"))) if ok else 0.0
            for t, r, ok in zip(texts, records, _reasoning(records))]


STAGE5_RULES = {"reasoning_accuracy": 1.0, "reasoning_format": 0.5, "reasoning_language": 0.5}  # default weights
# The GRPO config's reward_functions binding those names to the functions above: the rewards are
# passed in with the config, the global registry (r1jax.rewards.registry.REWARDS) stays as it is.
STAGE5_FUNCTIONS = {name: f"{__name__}:{name}" for name in STAGE5_RULES}


def toy_language_records(records):
    """Copies of `records` whose language is the language reward's toy name ("en" -> "toy_en")."""

    return [dict(r, language=reward_language(r.get("language"))) for r in records]


# ------------------------------------------------------------------------------ config checks

STAGES = MODEL_STAGES[1:] + ("rejection", "rm")
STAGE_NEEDS = {"reasoning_rl": "cold_start", "rejection": "reasoning_rl", "alignment_rl": "sft"}  # checkpoints
REJECTION_KEYS = dict(prompt_offset=0, n_prompts=0, n_samples=1, temperature=0.8, top_p=0.95, max_new_tokens=1,
                      ngram=8, max_repeats=3, max_per_prompt=4, non_reasoning_frac=0.1, non_reasoning_min=0,
                      batch_prompts=64)
_GRPO_SET = ("run_dir", "init", "tokenizer", "prompt_style", "seed")
_SFT_SET = ("run_dir", "init", "tokenizer", "seed")
_RM_SET = ("run_dir", "init", "tokenizer", "languages", "levels", "restate", "prompt_style", "seed")


def config_schema() -> dict:
    """Every key an `r1jax r1` config may hold (experiments/r1_toy.py): the GRPO stage blocks
    (r1_zero, reasoning_rl, alignment_rl) hold grpo_config keys, the SFT ones sft_config keys,
    `rm` train_rm_config keys, less the keys each stage sets itself."""

    sft = sft_block(_SFT_SET + ("model", "data"))
    return dict(run_dir="", cache_dir="", seed=0, mesh="", prompt_style="r1_zero", stages=STAGES,
                data=dict(r1_zero.DATA_KEYS, languages=("en",), p_mix=0.0, mix_style="switch"),
                model=model_block(), pretrain=r1_zero.config_schema()["pretrain"],
                eval=dict(problems=0, k=1, temperature=0.6, top_p=0.95, seed=0, max_new_tokens=1),
                r1_zero=grpo_block(_GRPO_SET), reasoning_rl=grpo_block(_GRPO_SET),
                alignment_rl=dict(grpo_block(_GRPO_SET + ("rewards", "preference_model", "format_template")),
                                  general_frac=0.2, preference_weight=1.0),
                cold_start=dict(n=0, p_check=0.0, sft=sft), rejection=dict(REJECTION_KEYS), sft=sft,
                rm={k: v for k, v in config_lib.schema_of(train_rm_config(), open=("model",)).items()
                    if k not in _RM_SET})


def validate(c) -> None:
    """Checks the whole r1 config before the first stage (r1jax.toy.pipelines.checks): its keys, the
    stages and their order, the base model config, every stage's config as the stage builds it."""

    what = "r1 config"
    checks.check_config(c, config_schema(), what, required=("run_dir", "cache_dir", "seed", "prompt_style", "stages",
                                                             "data", "model", "pretrain", "eval"))
    config_lib.check_choice(what, "prompt_style", c.prompt_style, PROMPT_STYLES)
    stages = tuple(c.stages)
    for st in stages:
        config_lib.check_choice(what, "stages", st, STAGES)
        if st not in c and st in ("r1_zero", "cold_start", "reasoning_rl", "rejection", "sft", "rm", "alignment_rl"):
            raise config_lib.ConfigKeyError(f"{what}: stage {st!r} has no {st!r} block")
        need = STAGE_NEEDS.get(st)
        if need and need not in stages:
            raise ValueError(f"{what}: stages: {st!r} starts from the {need!r} stage's model: add {need!r} to stages")
    checks.check_tasks(what, c.data.tasks)
    mc = checks.stage(what, "model", lambda: r1_zero.base_model_config(c))
    pre = c.pretrain.to_dict()
    checks.stage(what, "pretrain", lambda: validate_sft_config(sft_config(run_dir="-", mesh=c.get("mesh", ""), **pre)))
    e = c.eval
    checks.stage(what, "eval", lambda: check_eval_settings(k=e.k, temperature=e.temperature, top_p=e.top_p,
                                                           max_new_tokens=e.max_new_tokens,
                                                           prompt_style=c.prompt_style))
    checks.check_positions(what, "eval.max_new_tokens", e.max_new_tokens, mc)
    for name in ("r1_zero", "reasoning_rl", "alignment_rl"):
        if name not in stages:
            continue
        block = config_dict(c[name])
        extra = {}
        if name == "alignment_rl":
            block = {k: v for k, v in block.items() if k not in ("general_frac", "preference_weight")}
            extra = dict(rewards=dict(STAGE5_RULES), reward_functions=dict(STAGE5_FUNCTIONS),
                         format_template="r1")  # preference: its model comes later
        checks.grpo_stage(what, name, lambda: grpo_config(run_dir="-", prompt_style=c.prompt_style, seed=c.seed,
                                                          **dict(block, **extra)), mc)
    for name, block in (("cold_start.sft", c.get("cold_start", {}).get("sft") if "cold_start" in stages else None),
                        ("sft", c.get("sft") if "sft" in stages else None)):
        if block is not None:
            checks.stage(what, name, lambda: validate_sft_config(sft_config(run_dir="-", seed=c.seed,
                                                                            **config_dict(block))))
    if "rejection" in stages:
        r = {k: v for k, v in config_dict(c.rejection).items() if k != "prompt_offset"}
        checks.stage(what, "rejection", lambda: validate_rejection_config(rejection_sample_config(
            prompt_style=c.prompt_style, **r)))
        checks.check_positions(what, "rejection.max_new_tokens", c.rejection.max_new_tokens, mc)
    if "rm" in stages:
        checks.stage(what, "rm", lambda: validate_train_rm_config(train_rm_config(
            prompt_style=c.prompt_style, languages=tuple(c.data.languages), **config_dict(c.rm))))


# ------------------------------------------------------------------------------ helpers


class _Clock:
    """Minutes per stage, kept in `path` (JSON) across reruns: a stage skipped because its output
    exists keeps the minutes it took when it ran."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.t = {}
        if path and os.path.exists(path):
            with open(path) as f:
                self.t = json.load(f)
        self.here = set()

    def add(self, name, minutes):
        self.t[name] = (self.t.get(name, 0.0) if name in self.here else 0.0) + minutes
        self.here.add(name)
        if self.path:
            with open(self.path, "w") as f:
                json.dump(self.t, f, indent=2)

    def run(self, name, fn, *a, skipped: bool = False, **kw):
        t0 = time.time()
        out = fn(*a, **kw)
        if not skipped:
            self.add(name, (time.time() - t0) / 60)
        return out


def grpo_stage(name: str, c, stage_cfg, init_dir: str, tok, tok_dir: str, records, run_dir: str, **extra):
    """GRPO from `init_dir` (skipped when <run_dir>/<name>/final exists). Returns the final dir."""

    d = os.path.join(run_dir, name)
    if stage_done(d):
        print(f"[r1] {name}: done before ({d}/final)")
        return os.path.join(d, "final")
    print(f"[r1] {name}: GRPO from {init_dir}")
    gc = grpo_config(run_dir=d, init=init_dir, tokenizer=tok_dir, prompt_style=c.prompt_style, seed=c.seed,
                     **dict(config_dict(stage_cfg), **extra))
    model, params = from_pretrained(init_dir)
    run_grpo(gc, model=model, params=params, tokenizer=tok, train_records=records)
    return os.path.join(d, "final")


def sft_stage(name: str, c, stage_cfg, init_dir: str, tok, tok_dir: str, records, run_dir: str) -> str:
    d = os.path.join(run_dir, name)
    if stage_done(d):
        print(f"[r1] {name}: done before ({d}/final)")
        return os.path.join(d, "final")
    print(f"[r1] {name}: SFT of {init_dir} on {len(records)} records")
    os.makedirs(d, exist_ok=True)
    write_jsonl(os.path.join(d, "data.jsonl"), records)
    sc = sft_config(run_dir=d, init=init_dir, tokenizer=tok_dir, seed=c.seed, **config_dict(stage_cfg))
    model, params = from_pretrained(init_dir)
    run_sft(sc, [{"prompt": r["prompt"], "completion": " " + r["completion"]} for r in records], model=model,
            params=params, tokenizer=tok)
    return os.path.join(d, "final")


def eval_dir(c, ckpt_dir: str, tok, heldout, cache_path: str) -> dict:
    """evaluate_stage of an HF checkpoint (cached as JSON next to the run)."""

    if os.path.exists(cache_path):
        with open(cache_path) as f:
            return json.load(f)
    model, params = from_pretrained(ckpt_dir)
    e = c.eval
    res = evaluate_stage(model, params, tok, heldout, k=e.k, temperature=e.temperature, top_p=e.top_p,
                         max_new_tokens=e.max_new_tokens, prompt_style=c.prompt_style, seed=e.seed)
    with open(cache_path, "w") as f:
        json.dump(res, f, indent=2)
    return res


# ------------------------------------------------------------------------------ run


def run(c: ml_collections.ConfigDict) -> dict:

    validate(c)  # every key and stage config, before the data, the pretraining or any stage
    t_start = time.time()
    register_toy_languages()
    rd = c.run_dir
    os.makedirs(rd, exist_ok=True)
    os.makedirs(os.path.join(rd, "evals"), exist_ok=True)
    print(f"[r1] run folder {rd}; JAX devices: {jax.device_count()} x {jax.devices()[0].platform}")
    clock = _Clock(os.path.join(rd, "stage_minutes.json"))
    data = clock.run("data", build_mixed_data, c, os.path.join(rd, "data"))
    tok, tok_dir = data["tokenizer"], data["tokenizer_dir"]
    base_cached = os.path.exists(os.path.join(r1_zero.base_cache_dir(c, c.cache_dir), "model.safetensors"))
    base_dir = clock.run("base", r1_zero.pretrain_toy, c, data, rd, c.cache_dir, skipped=base_cached)
    heldout = data["heldout"][: c.eval.problems]
    evals: dict[str, dict] = {}
    ckpts = {"base": base_dir}
    stages = tuple(c.stages)

    def ev(name):
        print(f"[r1] evaluating {name} ...")
        cache = os.path.join(rd, "evals", f"{name}.json")
        r = clock.run(f"eval_{name}", eval_dir, c, ckpts[name], tok, heldout, cache, skipped=os.path.exists(cache))
        evals[name] = r
        print(f"[r1] {name}: pass@1 {r['pass@1']:.3f}  length {r['mean_length']:.1f}  "
              f"mixing {r['language_mixing']:.3f}  format(r1) {r['format_r1']:.2f}")

    ev("base")
    # R1-Zero on the mixed corpus (accuracy + format only)
    if "r1_zero" in stages:
        ckpts["r1_zero"] = clock.run("r1_zero", grpo_stage, "r1_zero", c, c.r1_zero, base_dir, tok, tok_dir,
                                     data["train"], rd, skipped=stage_done(os.path.join(rd, "r1_zero")))
        ev("r1_zero")
    # 1. cold start
    if "cold_start" in stages:
        cs = c.cold_start
        recs = make_cold_start_records(cs.n, c.seed, levels=tuple(c.data.levels), tasks=tuple(c.data.tasks),
                                       languages=tuple(c.data.languages), p_check=cs.p_check,
                                       prompt_style=c.prompt_style, restate=bool(c.data.get("restate", False)))
        ckpts["cold_start"] = clock.run("cold_start", sft_stage, "cold_start", c, cs.sft, base_dir, tok, tok_dir,
                                        recs, rd, skipped=stage_done(os.path.join(rd, "cold_start")))
        ev("cold_start")
    # 2. reasoning RL
    if "reasoning_rl" in stages:
        ckpts["reasoning_rl"] = clock.run("reasoning_rl", grpo_stage, "reasoning_rl", c, c.reasoning_rl,
                                          ckpts["cold_start"], tok, tok_dir, toy_language_records(data["train"]), rd,
                                          skipped=stage_done(os.path.join(rd, "reasoning_rl")))
        ev("reasoning_rl")
    # 3. rejection sampling
    counts = None
    rs_path = os.path.join(rd, "rejection", "sft.jsonl")
    if "rejection" in stages:
        if os.path.exists(rs_path + ".counts.json"):
            print(f"[r1] rejection: done before ({rs_path})")
            with open(rs_path + ".counts.json") as f:
                counts = json.load(f)
            print(format_counts(counts))
        else:
            r = c.rejection
            t0 = time.time()
            prompts = data["train"][r.prompt_offset:r.prompt_offset + r.n_prompts]
            counts = sample_checkpoint(ckpts["reasoning_rl"], tok, prompts, rs_path, r, prompt_style=c.prompt_style,
                                       languages=c.data.languages, seed=c.seed)
            clock.add("rejection", (time.time() - t0) / 60)
    # 4. SFT of the base on the rejection-sampled data
    if "sft" in stages:
        recs = read_jsonl(rs_path, required=("prompt", "completion"))
        ckpts["sft"] = clock.run("sft", sft_stage, "sft", c, c.sft, base_dir, tok, tok_dir, recs, rd,
                                 skipped=stage_done(os.path.join(rd, "sft")))
        ev("sft")
    # reward model
    rm_res = None
    if "rm" in stages:
        rm_dir = os.path.join(rd, "rm")
        if os.path.exists(os.path.join(rm_dir, "rm_results.json")):
            with open(os.path.join(rm_dir, "rm_results.json")) as f:
                rm_res = json.load(f)
        else:
            init = ckpts.get("sft", base_dir)
            rm_res = clock.run("rm", train_rm, train_rm_config(
                run_dir=rm_dir, init=init, tokenizer=tok_dir, languages=tuple(c.data.languages),
                levels=tuple(c.data.levels), restate=bool(c.data.get("restate", False)), prompt_style=c.prompt_style,
                seed=c.seed, **config_dict(c.rm)))
        print(f"[r1] reward model: held-out pairwise accuracy {rm_res['pair_acc']:.3f}")
    # 5. alignment RL
    if "alignment_rl" in stages:
        a = c.alignment_rl
        n_gen = int(round(a.general_frac / (1 - a.general_frac) * len(data["train"])))
        general = make_general_records(n_gen, c.seed + 17, languages=tuple(c.data.languages),
                                       prompt_style=c.prompt_style)
        recs = [dict(r, kind="reasoning") for r in data["train"]] + [
            {k: g[k] for k in ("problem", "answer", "language", "kind", "id", "general")} for g in general]
        rewards = dict(STAGE5_RULES)
        if "rm" in stages:
            rewards["preference"] = a.preference_weight
        gcfg = {k: v for k, v in config_dict(a).items() if k not in ("general_frac", "preference_weight")}
        ckpts["alignment_rl"] = clock.run(
            "alignment_rl", grpo_stage, "alignment_rl", c, gcfg, ckpts["sft"], tok, tok_dir, recs, rd,
            rewards=rewards, reward_functions=dict(STAGE5_FUNCTIONS),
            preference_model=os.path.join(rd, "rm", "final") if "rm" in stages else "", format_template="r1",
            skipped=stage_done(os.path.join(rd, "alignment_rl")))
        ev("alignment_rl")

    minutes = (time.time() - t_start) / 60
    keys = ("pass@1", "cons@k", "mean_length", "language_mixing", "language_mixing_any", "format_r1", "summary",
            "reflection", "pass@1/en", "pass@1/fr")
    results = {"stages": {s: {k: evals[s].get(k) for k in keys} for s in MODEL_STAGES if s in evals},
               "rejection": counts, "reward_model": rm_res and {k: rm_res[k] for k in ("pair_acc", "per_kind", "pairs")},
               "minutes": minutes, "minutes_all_stages": sum(clock.t.values()), "stage_minutes": clock.t, "k": c.eval.k, "problems": len(heldout), "seed": c.seed,
               "samples": {s: evals[s]["samples"][:3] for s in evals}}
    png = plot_stages(results, os.path.join(rd, "r1_toy.png"))
    write_results(rd, results, results_table(results), png=png, tag="r1", minutes=minutes)
    return results


def results_table(r: dict) -> str:
    k = r["k"]
    lines = [f"| stage | pass@1 (k={k}) | cons@{k} | mean length | language mixing | R1 format | summary | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    sm = r.get("stage_minutes", {})
    for s, x in r["stages"].items():
        mins = sm.get(s, 0.0) + sm.get(f"eval_{s}", 0.0)  # the stage's training + its eval
        lines.append(f"| {STAGE_LABELS.get(s, s)} | {x['pass@1']:.3f} | {x['cons@k']:.3f} | {x['mean_length']:.1f} | "
                     f"{x['language_mixing']:.3f} | {x['format_r1']:.2f} | {x['summary']:.2f} | {mins:.1f} |")
    extra = []
    if r.get("rejection"):
        q = r["rejection"]
        extra.append(f"3 rejection sampling: {q['samples']} samples -> format {q['passed_format']}, correct "
                     f"{q['passed_correct']}, single-language {q['passed_single_language']}, non-repetitive "
                     f"{q['passed_non_repetitive']}; kept {q['reasoning_kept']} (+{q['non_reasoning']} non-reasoning) "
                     f"= {q['total']} SFT records ({sm.get('rejection', 0.0):.1f} min).")
    if r.get("reward_model"):
        extra.append(f"Reward model: held-out pairwise accuracy {r['reward_model']['pair_acc']:.3f} "
                     f"({r['reward_model']['pairs']} pairs; {sm.get('rm', 0.0):.1f} min).")
    extra.append(f"{r['problems']} held-out problems (en + fr), k={k} samples at T=0.6 / top-p 0.95, seed {r['seed']}; "
                 f"{r['minutes_all_stages']:.1f} minutes over all stages (data, base pretraining, each stage and "
                 f"eval; this invocation {r['minutes']:.1f}).")
    return "\n".join(lines) + "\n\n" + "\n".join(extra)


def plot_stages(r: dict, path: str) -> str:
    import matplotlib  # heavy (~0.5 s): loaded only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["stages"])
    labels = [STAGE_LABELS.get(s, s).replace(" (", "\n(") for s in names]
    panels = [("pass@1", "held-out pass@1"), ("mean_length", "mean response length (tokens)"),
              ("language_mixing", "language-mixing rate")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = ["#888888" if s == "base" else "#d62728" if s == "r1_zero" else "#1f77b4" for s in names]
    for ax, (key, title) in zip(axes, panels):
        vals = [r["stages"][s][key] for s in names]
        ax.bar(range(len(names)), vals, color=colors)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        ax.set_title(title)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="bottom", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("toy DeepSeek-R1: stages vs R1-Zero (red) on a two-language mixed corpus")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
