"""Rejection sampling (DeepSeek-R1 §2.3.3): many samples per prompt, keep the good ones, add
non-reasoning data, write an SFT JSONL.

    r1jax rejection-sample --config experiments/rejection_sample_toy.py [--set checkpoint=DIR]

    from r1jax.toy.pipelines.rejection_sample import rejection_sample, filter_samples
    records, counts = rejection_sample(model, params, tokenizer, prompts, n_samples=8, ...)

Filters, applied in this order to each sample (a sample must pass all):
  format          `<think> T </think> A` (format reward, template "r1" by default; "r1_zero" for
                  the R1-Zero format) - R1 drops outputs that are hard to read;
  correct         accuracy reward == 1 against the record's `answer`;
  single_language language-consistency reward == 1 in the record's language (toy languages
                  "en"/"fr" are judged by their word tables, r1jax.toy.language_mixing): every
                  word of the chain of thought is in the prompt's language;
  non_repetitive  no n-gram of `ngram` whitespace tokens occurs `max_repeats` or more times
                  (default: the same 8-gram 3+ times) - loops and degenerate text;
then `max_per_prompt` distinct kept completions per prompt at most (duplicates dropped first).

Non-reasoning data: `non_reasoning_frac` of the final set are general records
(r1jax.toy.r1_toy.make_general_records: echo requests and one-digit sums answered without a
chain of thought), as R1 mixed ~200k non-reasoning samples into its ~600k reasoning ones.

Counts per filter (printed and written to `<out>.counts.json`): samples, passed after each
filter (cumulative), rejected by each filter, duplicates / over the per-prompt cap, prompts
with at least one kept sample, reasoning kept, non_reasoning added, total written.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Sequence

import ml_collections
from tqdm import tqdm

from r1jax.checkpoint.hf import from_pretrained
from r1jax.config import check_choice, from_hf_config, override
from r1jax.data.jsonl import read_jsonl, write_jsonl
from r1jax.data.prompts import PROMPT_STYLES, PromptFormat, decode_completion, prompt_of
from r1jax.data.tokenizer import check_fits_model, load_tokenizer
from r1jax.eval.runner import check_eval_settings
from r1jax.generation.engine import generate
from r1jax.rewards import accuracy_rewards, format_reward, language_consistency_reward
from r1jax.rewards.format import TEMPLATES
from r1jax.toy.language_mixing import register_toy_languages, toy_language_name
from r1jax.toy.r1_toy import make_general_records
from r1jax.toy.tasks.arithmetic import LANGUAGES

FILTERS = ("format", "correct", "single_language", "non_repetitive")


def rejection_sample_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        run_dir="runs/rejection_sample",
        checkpoint="",  # HF folder of the model to sample from
        tokenizer="",  # default: the checkpoint folder
        data="",  # JSONL of prompts: problem, answer (+ language)
        out="",  # output SFT JSONL (default: run_dir/sft.jsonl)
        n_prompts=0,  # first N prompts (0: all)
        n_samples=8,
        temperature=0.8,
        top_p=0.95,
        max_new_tokens=160,
        prompt_style="r1_zero",
        template="r1",  # format filter: "r1" (think then answer) or "r1_zero"
        ngram=8,
        max_repeats=3,
        max_per_prompt=4,
        non_reasoning_frac=0.1,
        non_reasoning_min=0,  # at least this many non-reasoning records (tiny runs that keep nothing)
        languages=("en", "fr"),  # languages of the non-reasoning records
        batch_prompts=64,
        seed=0,
    ))

    return override(c, kw, "rejection-sample config")


def validate_rejection_config(c) -> None:
    """Fails naming the key on a setting rejection sampling cannot run with (before the model loads)."""

    what = "rejection-sample config"
    check_choice(what, "prompt_style", c.prompt_style, PROMPT_STYLES)
    check_choice(what, "template", c.template, TEMPLATES)
    check_eval_settings(k=c.n_samples, temperature=c.temperature, top_p=c.top_p, max_new_tokens=c.max_new_tokens,
                        prompt_style=c.prompt_style, template=c.template, batch_prompts=c.batch_prompts, what=what)
    for k in ("ngram", "max_repeats"):
        if c[k] < 1:
            raise ValueError(f"{what}: {k}={c[k]!r} must be >= 1")
    for k in ("n_prompts", "max_per_prompt", "non_reasoning_min"):
        if c[k] < 0:
            raise ValueError(f"{what}: {k}={c[k]!r} must be >= 0")
    if not 0 <= c.non_reasoning_frac < 1:
        raise ValueError(f"{what}: non_reasoning_frac={c.non_reasoning_frac!r} must be in [0, 1)")


# ------------------------------------------------------------------------------ filters


def has_repetition(text: str, ngram: int = 8, max_repeats: int = 3) -> bool:
    """True if some run of `ngram` whitespace tokens occurs `max_repeats` or more times."""
    toks = text.split()
    if len(toks) < ngram:
        return False
    counts = Counter(tuple(toks[i:i + ngram]) for i in range(len(toks) - ngram + 1))
    return max(counts.values()) >= max_repeats


def reward_language(language: str | None) -> str:
    """The language-reward name of a record's language (toy "en" -> "toy_en"; others unchanged)."""

    lang = language or "en"
    if lang in LANGUAGES or lang.startswith("toy_"):
        register_toy_languages()
        return toy_language_name(lang)
    return lang


def filter_samples(texts: Sequence[str], records: Sequence[dict], *, template: str = "r1", ngram: int = 8,
                   max_repeats: int = 3) -> tuple[list[str | None], dict]:
    """Judges each sample (records aligned with texts). Returns (reason per sample: None = kept,
    else the first filter it failed, one of FILTERS), counts (see module doc)."""

    if len(texts) != len(records):
        raise ValueError(f"filter_samples: {len(texts)} texts but {len(records)} records")
    acc = accuracy_rewards(list(texts), [str(r["answer"]) for r in records])
    reasons: list[str | None] = []
    for t, r, a in zip(texts, records, acc):
        if format_reward(t, template=template) != 1.0:
            reasons.append("format")
        elif a != 1.0:
            reasons.append("correct")
        elif language_consistency_reward(t, reward_language(r.get("language"))) != 1.0:
            reasons.append("single_language")
        elif has_repetition(t, ngram, max_repeats):
            reasons.append("non_repetitive")
        else:
            reasons.append(None)
    counts = {"samples": len(texts)}
    left = len(texts)
    for f in FILTERS:
        rej = sum(1 for x in reasons if x == f)
        left -= rej
        counts[f"rejected_{f}"] = rej
        counts[f"passed_{f}"] = left
    counts["passed_all"] = left
    return reasons, counts


def select(texts: Sequence[str], prompt_index: Sequence[int], reasons: Sequence[str | None],
           max_per_prompt: int) -> tuple[list[int], dict]:
    """Indices of kept samples: passing all filters, distinct per prompt, at most max_per_prompt each."""
    kept, dup, cap = [], 0, 0
    seen: dict[int, set] = {}
    for i, (t, p, r) in enumerate(zip(texts, prompt_index, reasons)):
        if r is not None:
            continue
        s = seen.setdefault(p, set())
        key = " ".join(t.split())
        if key in s:
            dup += 1
            continue
        if max_per_prompt and len(s) >= max_per_prompt:
            cap += 1
            continue
        s.add(key)
        kept.append(i)
    return kept, {"duplicates": dup, "over_cap": cap, "prompts_with_kept": sum(1 for v in seen.values() if v)}


# ------------------------------------------------------------------------------ sampling


def rejection_sample(model, params, tokenizer, records: Sequence[dict], *, n_samples: int = 8,
                     temperature: float = 0.8, top_p: float = 0.95, max_new_tokens: int = 160,
                     prompt_style: str = "r1_zero", template: str = "r1", ngram: int = 8, max_repeats: int = 3,
                     max_per_prompt: int = 4, non_reasoning_frac: float = 0.1, non_reasoning_min: int = 0,
                     languages=("en", "fr"),
                     batch_prompts: int = 64, seed: int = 0, progress: bool = True) -> tuple[list[dict], dict]:
    """Samples, filters, selects, adds non-reasoning records. Returns (SFT records, counts).

    SFT record: prompt (the template around the problem), completion (the sample, as decoded),
    problem, answer, language, kind ("reasoning" | "general"), id (and task/level when known)."""


    t0 = time.perf_counter()
    eos = tuple(tokenizer.eos_token_ids)
    fmt = PromptFormat(prompt_style)
    texts, pidx = [], []
    chunks = range(0, len(records), batch_prompts)
    for s in tqdm(chunks, desc="rejection-sample", disable=not progress, dynamic_ncols=True):
        chunk = records[s:s + batch_prompts]
        prompts = fmt.render_all(tokenizer, [prompt_of(r) for r in chunk])[0]
        out = generate(model, params, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       eos_id=eos, seed=seed * 1_000_003 + s, n=n_samples)
        texts += [decode_completion(tokenizer, t, eos) for t in out.tokens]
        pidx += [s + i for i in out.prompt_index]
    recs = [records[i] for i in pidx]
    reasons, counts = filter_samples(texts, recs, template=template, ngram=ngram, max_repeats=max_repeats)
    kept, sel = select(texts, pidx, reasons, max_per_prompt)
    counts.update(sel)
    counts["prompts"] = len(records)
    out_recs = []
    for i in kept:
        r = recs[i]
        rec = dict(prompt=fmt.text(tokenizer, r["problem"]), completion=texts[i], problem=r["problem"],
                   answer=str(r["answer"]), language=r.get("language", "en"), kind="reasoning", id=r.get("id", ""))
        for k in ("task", "level", "a", "b"):
            if k in r:
                rec[k] = r[k]
        out_recs.append(rec)
    counts["reasoning_kept"] = len(out_recs)
    n_nr = 0
    if non_reasoning_frac > 0:
        n_nr = max(int(round(non_reasoning_frac / (1.0 - non_reasoning_frac) * len(out_recs))), non_reasoning_min)
    if n_nr:
        gen = make_general_records(n_nr, seed, languages=tuple(languages), prompt_style=prompt_style)
        keys = ("prompt", "completion", "problem", "answer", "language", "kind", "id", "task", "level", "a", "b")
        out_recs += [{k: g[k] for k in keys} for g in gen]
    counts["non_reasoning"] = n_nr
    counts["total"] = len(out_recs)
    counts["seconds"] = time.perf_counter() - t0
    return out_recs, counts


def format_counts(counts: dict) -> str:
    n = max(counts.get("samples", 0), 1)
    lines = [f"rejection sampling: {counts.get('prompts', '?')} prompts, {counts['samples']} samples"]
    for f in FILTERS:
        lines.append(f"  {f:<16} rejected {counts[f'rejected_{f}']:>6}   left {counts[f'passed_{f}']:>6} "
                     f"({counts[f'passed_{f}'] / n:.1%})")
    for k in ("duplicates", "over_cap", "prompts_with_kept", "reasoning_kept", "non_reasoning", "total"):
        if k in counts:
            lines.append(f"  {k:<16} {counts[k]}")
    return "\n".join(lines)


def sample_checkpoint(checkpoint: str, tokenizer, records: Sequence[dict], out: str, rc, *, prompt_style: str,
                      languages, seed: int, template: str = "r1") -> dict:
    """Rejection-samples the HF model in `checkpoint` on `records` with the settings of `rc` (a
    rejection-sample config block: n_samples, temperature, top_p, max_new_tokens, ngram,
    max_repeats, max_per_prompt, non_reasoning_frac, optional non_reasoning_min / batch_prompts),
    writes the SFT JSONL `out` and `out`.counts.json, prints the counts. Returns the counts."""

    model, params = from_pretrained(checkpoint)
    out_recs, counts = rejection_sample(
        model, params, tokenizer, records, n_samples=rc.n_samples, temperature=rc.temperature, top_p=rc.top_p,
        max_new_tokens=rc.max_new_tokens, prompt_style=prompt_style, template=template, ngram=rc.ngram,
        max_repeats=rc.max_repeats, max_per_prompt=rc.max_per_prompt, non_reasoning_frac=rc.non_reasoning_frac,
        non_reasoning_min=rc.get("non_reasoning_min", 0), languages=tuple(languages),
        batch_prompts=rc.get("batch_prompts", 64), seed=seed)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_jsonl(out, out_recs)
    counts["out"] = out
    with open(out + ".counts.json", "w") as f:
        json.dump(counts, f, indent=2)
    print(format_counts(counts))
    return counts


def run(c) -> dict:
    """`r1jax rejection-sample`: reads the prompts and the model, writes the SFT JSONL + counts."""


    c = rejection_sample_config(**(c.to_dict() if hasattr(c, "to_dict") else dict(c)))
    validate_rejection_config(c)
    if not c.checkpoint:
        raise SystemExit("rejection-sample: set checkpoint (an HF folder), e.g. --set checkpoint=runs/r1_toy/stage2/final")
    tok = load_tokenizer(c.tokenizer or c.checkpoint)
    check_fits_model(tok, from_hf_config(c.checkpoint).vocab_size, tokenizer_where=repr(c.tokenizer or c.checkpoint),
                     model_where=repr(c.checkpoint), what="rejection-sample")
    os.makedirs(c.run_dir, exist_ok=True)
    records = read_jsonl(c.data, required=("problem", "answer"))
    if c.n_prompts:
        records = records[: c.n_prompts]
    out = c.out or os.path.join(c.run_dir, "sft.jsonl")
    counts = sample_checkpoint(c.checkpoint, tok, records, out, c, prompt_style=c.prompt_style,
                               languages=c.languages, seed=c.seed, template=c.template)
    print(f"[rejection-sample] wrote {out} ({counts['total']} records) and {out}.counts.json")
    return counts
