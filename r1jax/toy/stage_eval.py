"""The eval of the full-recipe toys: pass@1 over k samples, cons@k, response length and the
language-mixing rate, from one generation pass.

    res = evaluate_stage(model, params, tokenizer, heldout, k=4, max_new_tokens=160)
    res["pass@1"], res["cons@k"], res["mean_length"], res["language_mixing"], res["format_r1"], ...

Same generation and judging as r1jax.eval.runner.evaluate (R1's settings: k samples at T=0.6,
top-p 0.95; the accuracy reward judges), plus, over all k x problems completions:
  language_mixing   share whose chain of thought mixes toy languages or uses another language
                    than the prompt's (r1jax.toy.language_mixing, record["language"]);
  format_r1         R1 format (`<think> T </think> A`, A non-empty);  format_r1_zero  R1-Zero format;
  summary           share in R1 format with text between </think> and <answer> (R1's summary);
  pass@1 per prompt language ("pass@1/en", "pass@1/fr").
Every stage and both students are measured by this one function.
"""
from __future__ import annotations

import re

import numpy as np

from r1jax.eval.runner import evaluate
from r1jax.rewards import format_reward
from r1jax.toy.language_mixing import is_mixed


def evaluate_stage(model, params, tokenizer, records, *, k: int = 4, temperature: float = 0.6, top_p: float = 0.95,
                   max_new_tokens: int = 160, prompt_style: str = "r1_zero", seed: int = 0,
                   batch_prompts: int = 64) -> dict:

    res = evaluate(model, params, tokenizer, records, k=k, temperature=temperature, top_p=top_p,
                   max_new_tokens=max_new_tokens, prompt_style=prompt_style, seed=seed, batch_prompts=batch_prompts,
                   template="r1_zero", keep_texts=True)
    texts, acc = res.pop("texts"), res.pop("accuracy")
    langs = [r.get("language") for r in records for _ in range(k)]
    res["format_r1_zero"] = res.pop("format")
    res.update({
        "language_mixing": float(np.mean([is_mixed(t, lg) for t, lg in zip(texts, langs)])),
        "language_mixing_any": float(np.mean([is_mixed(t) for t in texts])),
        "format_r1": float(np.mean([format_reward(t, template="r1") for t in texts])),
        "summary": float(np.mean([_has_summary(t) for t in texts])),
    })
    for lang in sorted({r.get("language") for r in records if r.get("language")}):
        rows = [i * k + j for i, r in enumerate(records) if r.get("language") == lang for j in range(k)]
        res[f"pass@1/{lang}"] = float(np.mean([acc[i] == 1.0 for i in rows]))
    res["samples"] = [{"problem": records[i // k]["problem"], "language": records[i // k].get("language"),
                       "completion": texts[i], "correct": acc[i]} for i in range(0, min(len(texts), 8 * k), k)]
    return res


_SUMMARY_RE = re.compile(r"</think>(.*?)<answer>", re.DOTALL)


def _has_summary(text: str) -> bool:
    """R1 format and text between </think> and <answer>."""

    if format_reward(text, template="r1") != 1.0:
        return False
    m = _SUMMARY_RE.search(text)
    return bool(m and m.group(1).strip())

