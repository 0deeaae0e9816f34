"""The toy R1-Zero reproduction: pretrain-toy (cached) -> GRPO (accuracy + format only) -> eval.

    r1jax r1-zero --config experiments/r1_zero_toy.py [--set seed=1] [--run-dir runs/r1_zero_toy]

Writes into the run folder: data/ (train + held-out JSONL), tokenizer/, base/ (the pretrained
base model, HF format; reused from the cache when the same data+model+pretrain config was built
before), grpo/ (TensorBoard logs, checkpoints, final/ HF checkpoint), r1_zero.png (held-out
pass@1, mean response length and reflection-word frequency per step), results.json
{"base": {"pass@1", "cons@k", "mean_length"}, "final": {...}, "minutes"} and results.md.

`seed` is the run's seed: it changes the base model's init, its pretraining corpus and data order,
and GRPO's sampling (so a new seed pretrains a new base model); the train / held-out problems stay
those of `data.seed`, so runs with different seeds are scored on the same held-out set.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import ml_collections

from r1jax import config as config_lib
from r1jax.checkpoint.hf import from_pretrained
from r1jax.data.jsonl import write_jsonl
from r1jax.data.prompts import PROMPT_STYLES
from r1jax.data.tokenizer import load_tokenizer
from r1jax.eval.runner import check_eval_settings, evaluate
from r1jax.model import Transformer, init_params
from r1jax.parallel.placement import Placement
from r1jax.rl.config import grpo_config
from r1jax.rl.trainer import run_grpo
from r1jax.runlog import RunLogger, write_results
from r1jax.sft.trainer import run_sft, sft_config, validate_sft_config
from r1jax.toy.corpus import make_pretrain_corpus
from r1jax.toy.pipelines import checks
from r1jax.toy.pipelines.checks import grpo_block, model_block, sft_block
from r1jax.toy.pipelines.common import config_hash
from r1jax.toy.tasks.arithmetic import make_problems
from r1jax.toy.tokenizer import model_token_ids, save_tokenizer, toy_tokenizer

# What results.json adds per model beyond the three headline keys (see r1jax.eval.runner.evaluate).
EXTRA_KEYS = ("format", "reflection", "truncated", "reasoning_share", "reasoning_accuracy", "direct_accuracy")


DATA_KEYS = dict(seed=0, tasks=("add",), levels=(2,), n_train_problems=0, n_heldout_problems=0, n_corpus=0,
                 p_direct=0.0, p_worked=0.0, p_check=0.0, restate=False, eval_chains=0, direct_error_rate=None)
EVAL_KEYS = dict(problems=0, k=1, temperature=0.6, top_p=0.95, seed=0, harder_levels=(), harder_problems=0,
                 harder_max_new_tokens=0)
# keys of the stage blocks the pipeline sets itself (from the top-level keys)
SET_BY_PIPELINE = {"grpo.run_dir": "run_dir/grpo", "grpo.prompt_style": "the top-level prompt_style",
                   "grpo.seed": "the top-level seed", "grpo.mesh": "the top-level mesh",
                   "pretrain.run_dir": "run_dir/pretrain", "pretrain.mesh": "the top-level mesh"}


def config_schema() -> dict:
    """Every key an `r1jax r1-zero` config may hold (experiments/r1_zero_toy.py): `grpo` holds
    grpo_config keys, `pretrain` sft_config keys, `model` model config keys (overrides of toy_moe)."""

    return dict(run_dir="", cache_dir="", seed=0, mesh="", prompt_style="r1_zero", update_readme=False,
                data=dict(DATA_KEYS), model=model_block(),
                pretrain=sft_block(("run_dir", "mesh", "tokenizer", "init", "model", "data")),
                grpo=grpo_block(("run_dir", "prompt_style", "seed", "mesh")), eval=dict(EVAL_KEYS))


def base_model_config(c, tok=None):
    """The toy base model's config: toy_moe at the toy tokenizer's size, its token ids, `c.model`."""

    tok = tok or toy_tokenizer()
    return config_lib.replace(config_lib.toy_moe(vocab_size=tok.vocab_size), **{**model_token_ids(tok), **c.model})


def validate(c) -> None:
    """Checks the whole r1-zero config before anything runs (r1jax.toy.pipelines.checks): its keys,
    the model config, the pretraining (SFT) and GRPO stage configs as the stages build them, the
    eval settings."""

    what = "r1-zero config"
    checks.check_config(c, config_schema(), what, set_by_pipeline=SET_BY_PIPELINE,
                        required=("run_dir", "cache_dir", "seed", "prompt_style", "data", "model", "pretrain", "grpo",
                                  "eval"))
    config_lib.check_choice(what, "prompt_style", c.prompt_style, PROMPT_STYLES)
    checks.check_tasks(what, c.data.tasks)
    mc = checks.stage(what, "model", lambda: base_model_config(c))
    pre = c.pretrain.to_dict()
    checks.stage(what, "pretrain", lambda: validate_sft_config(sft_config(run_dir="-", mesh=c.get("mesh", ""), **pre)))
    gc = checks.grpo_stage(what, "grpo", lambda: grpo_config(run_dir="-", prompt_style=c.prompt_style, seed=c.seed,
                                                             mesh=c.get("mesh", ""), **c.grpo.to_dict()), mc)
    e = c.eval
    checks.stage(what, "eval", lambda: check_eval_settings(k=e.k, temperature=e.temperature, top_p=e.top_p,
                                                           max_new_tokens=gc.max_new_tokens,
                                                           prompt_style=c.prompt_style))
    if e.get("harder_levels"):
        checks.check_positions(what, "eval.harder_max_new_tokens", e.get("harder_max_new_tokens", gc.max_new_tokens),
                               mc)


def corpus_seed(c) -> int:
    """Seed of the pretraining corpus: `data.seed`, moved by the run's `seed`."""
    return c.data.seed + 7919 * c.seed


def base_cache_dir(c, cache_root: str) -> str:
    """Where the base model of this data + model + pretraining config and seed is cached."""
    return os.path.join(cache_root, f"toy_base_{config_hash(c.data, c.model, c.pretrain, c.prompt_style, c.seed)}")


def build_toy_data(c, out_dir: str) -> dict:
    """Tokenizer + train/held-out problem JSONL + the pretraining corpus records."""

    d = c.data
    os.makedirs(out_dir, exist_ok=True)
    tok = toy_tokenizer()
    save_tokenizer(tok, os.path.join(out_dir, "tokenizer"))
    train = []
    heldout = []
    for task in d.tasks:
        train += make_problems(task, d.n_train_problems, seed=d.seed, levels=tuple(d.levels), split="train")
        heldout += make_problems(task, d.n_heldout_problems, seed=d.seed + 1, levels=tuple(d.levels),
                                 split="heldout")
    for r in train + heldout:
        r["answer"] = str(r["answer"])
    write_jsonl(os.path.join(out_dir, "train.jsonl"), train)
    write_jsonl(os.path.join(out_dir, "heldout.jsonl"), heldout)
    extra = {}
    if d.get("direct_error_rate") is not None:  # one rate for every level (default: the corpus' per-level table)
        extra["direct_error_rate"] = float(d.direct_error_rate)
    corpus = make_pretrain_corpus(d.n_corpus, seed=corpus_seed(c), p_direct=d.p_direct, p_worked=d.p_worked,
                                  p_check=d.p_check, levels=tuple(d.levels), tasks=tuple(d.tasks), **extra,
                                  prompt_style=c.prompt_style, restate=bool(d.get("restate", False)))
    write_jsonl(os.path.join(out_dir, "pretrain.jsonl"),
                [{"prompt": x["prompt"], "completion": x["completion"], "mode": x["mode"]} for x in corpus])
    return {"tokenizer": tok, "train": train, "heldout": heldout, "corpus": corpus}


def heldout_chains(c) -> list[dict] | None:
    """`data.eval_chains` worked chains on held-out problems (prompt, " " + completion): pretraining
    reports how reliably the base completes them (teacher-forced eval/exact, r1jax.sft.heldout)."""

    n = int(c.data.get("eval_chains", 0))
    if not n:
        return None
    d = c.data
    docs = make_pretrain_corpus(n, seed=corpus_seed(c) + 1, p_direct=0.0, p_worked=1.0, p_check=0.0,
                                levels=tuple(d.levels), tasks=tuple(d.tasks), split="heldout",
                                prompt_style=c.prompt_style, restate=bool(d.get("restate", False)))
    return [{"prompt": x["prompt"], "completion": " " + x["completion"]} for x in docs]


def pretrain_toy(c, data: dict, run_dir: str, cache_root: str) -> str:
    """Trains (or reuses from the cache) the tiny DeepSeek-V3-shaped base model. Returns its HF folder."""

    cached = base_cache_dir(c, cache_root)
    if os.path.exists(os.path.join(cached, "model.safetensors")):
        print(f"[r1-zero] base model: cached {cached}")
        return cached
    mc = base_model_config(c, data["tokenizer"])
    pre = c.pretrain.to_dict()
    pre["seed"] = c.pretrain.seed + c.seed  # data order
    pre["tokenizer"] = os.path.join(run_dir, "data", "tokenizer")
    sc = sft_config(run_dir=os.path.join(run_dir, "pretrain"), mesh=c.get("mesh", ""), **pre)

    model = Transformer(mc)
    params = init_params(mc, jax.random.PRNGKey(c.pretrain.seed + c.seed))
    recs = [{"prompt": x["prompt"], "completion": " " + x["completion"]} for x in data["corpus"]]
    run_sft(sc, recs, model=model, params=params, tokenizer=data["tokenizer"], eval_records=heldout_chains(c))
    os.makedirs(cache_root, exist_ok=True)
    tmp = cached + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(os.path.join(sc.run_dir, "final"), tmp)
    save_tokenizer(data["tokenizer"], tmp)
    os.replace(tmp, cached)
    return cached


def run(c: ml_collections.ConfigDict) -> dict:

    validate(c)  # every key and stage config, before the data, the pretraining or any rollout
    t_start = time.time()
    load_start = os.getloadavg()[0]
    run_dir = c.run_dir
    os.makedirs(run_dir, exist_ok=True)
    print(f"[r1-zero] run folder {run_dir}; JAX devices: {jax.device_count()} x {jax.devices()[0].platform}")
    data = build_toy_data(c, os.path.join(run_dir, "data"))
    base_dir = pretrain_toy(c, data, run_dir, c.cache_dir)
    tok = load_tokenizer(os.path.join(run_dir, "data", "tokenizer"))
    model, params = from_pretrained(base_dir)
    heldout = data["heldout"][: c.eval.problems]
    ev = dict(k=c.eval.k, temperature=c.eval.temperature, top_p=c.eval.top_p, max_new_tokens=c.grpo.max_new_tokens,
              prompt_style=c.prompt_style, seed=c.eval.seed)
    place = Placement(c.get("mesh", ""))
    print(f"[r1-zero] evaluating the base model ... ({place})")
    params = place.params(model.cfg, params)  # (outside the mesh context: it traces the init)
    with place.context():
        base = evaluate(model, params, tok, heldout, **ev)
    print(f"[r1-zero] base: pass@1 {base['pass@1']:.3f}  cons@{c.eval.k} {base['cons@k']:.3f}  "
          f"mean length {base['mean_length']:.1f}  (reasons in {base['reasoning_share']:.0%} of samples, "
          f"right in {base['reasoning_accuracy']:.0%} of those; direct answers right in {base['direct_accuracy']:.0%})")
    harder = None
    if c.eval.get("harder_levels"):  # one more digit than trained on: does the skill generalise?

        hp = []
        for task in c.data.tasks:
            hp += make_problems(task, c.eval.get("harder_problems", 100), seed=c.data.seed + 2,
                                levels=tuple(c.eval.harder_levels), split="heldout")
        for r in hp:
            r["answer"] = str(r["answer"])
        hev = dict(ev, max_new_tokens=c.eval.get("harder_max_new_tokens", c.grpo.max_new_tokens))
        print(f"[r1-zero] evaluating the base model on {len(hp)} harder problems (levels {tuple(c.eval.harder_levels)})")
        # before GRPO: its train state takes these params' buffers (donated by its first step)
        with place.context():
            hb = evaluate(model, params, tok, hp, **hev)
        harder = {"records": hp, "ev": hev, "base": {k: hb[k] for k in ("pass@1", "mean_length", "reflection")}}
    gc = grpo_config(run_dir=os.path.join(run_dir, "grpo"), prompt_style=c.prompt_style, seed=c.seed,
                     mesh=c.get("mesh", ""), **c.grpo.to_dict())
    _, final_params = run_grpo(gc, model=model, params=params, tokenizer=tok, train_records=data["train"],
                               eval_records=data["heldout"])
    print("[r1-zero] evaluating the final model ...")
    with place.context():
        final = evaluate(model, final_params, tok, heldout, **ev)
    if harder is not None:
        with place.context():
            hf = evaluate(model, final_params, tok, harder["records"], **harder["ev"])
        harder = {"levels": list(c.eval.harder_levels), "problems": len(harder["records"]),
                  "base": harder["base"], "final": {k: hf[k] for k in ("pass@1", "mean_length", "reflection")}}
    minutes = (time.time() - t_start) / 60
    keys = ("pass@1", "cons@k", "mean_length")
    results = {"base": {k: base[k] for k in keys}, "final": {k: final[k] for k in keys}, "minutes": minutes,
               "k": c.eval.k, "problems": len(heldout), "seed": c.seed,
               "load_start": load_start, "load_end": os.getloadavg()[0],
               "base_extra": {k: base[k] for k in EXTRA_KEYS},
               "final_extra": {k: final[k] for k in EXTRA_KEYS},
               "final_samples": final["samples"][:4]}
    # the R1-Zero observations: response length over the RL steps, self-checking before / after,
    # accuracy on a harder level than trained on before / after
    steps = [json.loads(x) for x in open(os.path.join(gc.run_dir, "metrics.jsonl")) if x.strip()]
    lengths = [(r["step"], r["rollout/response_length"]) for r in steps if "rollout/response_length" in r]
    results["response_length_by_step"] = [round(v, 2) for _, v in sorted(lengths)]
    results["self_check"] = {"base": base["reflection"], "final": final["reflection"],
                             "by_step": [round(r["rollout/reflection"], 4) for r in steps
                                         if "rollout/reflection" in r]}
    if harder is not None:
        results["harder"] = harder
    log = RunLogger(gc.run_dir, resume_step=10**9, tensorboard=False)
    png = log.plot(os.path.join(run_dir, "r1_zero.png"), [
        ("eval/pass@1", "held-out pass@1 (T=0.6)"), ("rollout/response_length", "mean response length (tokens)"),
        ("rollout/reflection", "share with a self-check (wait/check/recheck)"),
        ("reward/accuracy", "train accuracy reward")],
        title="toy R1-Zero: GRPO with accuracy + format rewards")
    write_results(run_dir, results, results_table(results), png=png, tag="r1-zero", minutes=minutes)
    if c.get("update_readme", False) and png:
        update_readme(results, png)
    return results


def update_readme(results: dict, png: str, readme: str = "README.md", image: str = "docs/r1_zero_toy.png") -> bool:
    """Regenerates the README's results block (between RESULTS markers) and its PNG, when run from
    the repository root."""
    begin, end = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
    if not os.path.exists(readme):
        return False
    text = open(readme).read()
    if begin not in text or end not in text:
        return False
    os.makedirs(os.path.dirname(image), exist_ok=True)
    shutil.copy(png, image)
    block = (f"{begin}\nMeasured by the command above ({time.strftime('%Y-%m-%d')}, "
             f"{os.cpu_count()} CPU cores):\n\n{results_table(results)}\n\n![toy R1-Zero curves]({image})\n{end}")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(readme, "w") as f:
        f.write(head + block + tail)
    print(f"[r1-zero] updated {readme} and {image}")
    return True


def results_table(r: dict) -> str:
    k = r["k"]
    lines = [f"| model | pass@1 (k={k}, T=0.6, top-p 0.95) | cons@{k} | mean length (tokens) |",
             "|---|---|---|---|"]
    for name in ("base", "final"):
        x = r[name]
        lines.append(f"| {name} | {x['pass@1']:.3f} | {x['cons@k']:.3f} | {x['mean_length']:.1f} |")
    lines.append(f"\n{r['problems']} held-out problems, seed {r['seed']}, {r['minutes']:.1f} minutes in all"
                 + (f" (load average {r['load_start']:.1f} at the start, {r['load_end']:.1f} at the end)"
                    if "load_start" in r else "") + ".")
    ls = r.get("response_length_by_step")
    if ls:
        q = max(len(ls) // 5, 1)
        lines.append(f"Mean response length over the GRPO steps: {sum(ls[:q]) / q:.1f} (first {q} steps) -> "
                     f"{sum(ls[-q:]) / q:.1f} (last {q}).")
    sc = r.get("self_check")
    if sc:
        lines.append(f"Samples with a self-check (`wait` / `check` / `recheck`): {sc['base']:.1%} (base) -> "
                     f"{sc['final']:.1%} (final).")
    h = r.get("harder")
    if h:
        lines.append(f"Harder held-out level {'/'.join(map(str, h['levels']))} (not trained on, {h['problems']} "
                     f"problems): pass@1 {h['base']['pass@1']:.3f} (base) -> {h['final']['pass@1']:.3f} (final).")
    b, f = r.get("base_extra", {}), r.get("final_extra", {})
    if "reasoning_share" in b and "reasoning_share" in f:
        lines.append(
            f"The base model reasons (non-empty `<think>`) in {b['reasoning_share']:.0%} of its samples, right "
            f"{b['reasoning_accuracy']:.0%} of the time, and otherwise answers directly "
            f"({b['direct_accuracy']:.0%} right); after GRPO it reasons in {f['reasoning_share']:.0%}"
            + (f", right {f['reasoning_accuracy']:.0%} of the time." if f['reasoning_share'] else "."))
    return "\n".join(lines)
