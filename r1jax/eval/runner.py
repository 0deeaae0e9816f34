"""Evaluation: pass@1 averaged over k samples and cons@k majority vote, judged by the accuracy reward.

    res = evaluate(model, params, tokenizer, records, k=8, temperature=0.6, top_p=0.95, max_new_tokens=256)
    res["pass@1"], res["cons@k"], res["mean_length"], res["format"], res["reflection"]

`records` have `problem` and `answer` (r1jax.eval.benchmarks.load_benchmark reads MATH-500 /
GSM8K / toy JSONL as-is). Prompts (r1jax.data.prompts.PromptFormat) use the checkpoint's own chat
template ("chat", with an optional system prompt and user template), the R1-Zero template
("r1_zero"), its short tail ("short") or the problem as it is ("raw"); generation stops on the
tokenizer's EOS set. When the prompt opens a <think> block (an R1-Distill template), the format
reward scores "<think>" + completion. pass@1 = mean over problems of the fraction of the k samples
judged correct (how the R1 paper reports it); cons@k = the majority answer (extract_answer) judged
correct.
"""

from __future__ import annotations

import re
import time
from typing import Sequence

import jax
import numpy as np

from r1jax.config import check_choice
from r1jax.data.prompts import PROMPT_STYLES, PromptFormat, prompt_of, whole_response
from r1jax.data.prompts import decode_completion as dec
from r1jax.data.templates import think_of
from r1jax.data.tokenizer import check_fits_model
from r1jax.eval.metrics import cons_at_k, pass1_over_k
from r1jax.generation.engine import ENGINES, check_positions, generate
from r1jax.model.precision import compute_copy
from r1jax.parallel.handoff import allgather_rows
from r1jax.rewards import accuracy_rewards, extract_answer, format_reward
from r1jax.rewards.format import TEMPLATES
from r1jax.rewards.sandbox import check_sandbox

REFLECTION_WORDS = ("wait", "check", "recheck")
_REFLECT_RE = re.compile(r"\b(" + "|".join(REFLECTION_WORDS) + r")\b", re.IGNORECASE)


def has_reflection(text: str) -> bool:
    return bool(_REFLECT_RE.search(text))


def reasons(text: str) -> bool:
    """True when the response's <think> block has content (it reasoned before answering)."""

    return bool(think_of(text))


def decode_completion(tokenizer, tokens: Sequence[int], eos_ids: int | Sequence[int] = ()) -> str:
    """The completion's text without the EOS token that ended it (r1jax.data.prompts)."""

    return dec(tokenizer, tokens, [eos_ids] if isinstance(eos_ids, int) else eos_ids)


def check_eval_settings(*, k: int = 8, temperature: float = 0.6, top_p: float = 0.95, max_new_tokens: int = 256,
                        prompt_style: str = "r1_zero", template: str = "r1_zero", engine: str = "auto",
                        batch_prompts: int = 64, what: str = "evaluate") -> None:
    """evaluate's settings, checked before a model loads or anything is sampled: ValueError naming
    the setting, its value and the valid ones."""

    check_choice(what, "prompt_style", prompt_style, PROMPT_STYLES)
    check_choice(what, "template", template, TEMPLATES)
    check_choice(what, "engine", engine, ENGINES)
    for key, v in (("k", k), ("max_new_tokens", max_new_tokens), ("batch_prompts", batch_prompts)):
        if int(v) < 1:
            raise ValueError(f"{what}: {key}={v!r} must be >= 1")
    if not temperature >= 0:
        raise ValueError(f"{what}: temperature={temperature!r} must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError(f"{what}: top_p={top_p!r} must be in (0, 1]")


def evaluate(model, params, tokenizer, records, *, k: int = 8, temperature: float = 0.6, top_p: float = 0.95,
             max_new_tokens: int = 256, prompt_style: str = "r1_zero", seed: int = 0, batch_prompts: int = 64,
             template: str = "r1_zero", keep_texts: bool = False, system_prompt: str = "",
             user_template: str = "{problem}", engine: str = "auto", sandbox: str = "auto") -> dict:
    """Samples k completions per record and scores them (see module doc). keep_texts=True adds every
    completion ("texts", record-major: record i's samples are texts[i*k:(i+1)*k]), its accuracy
    reward ("accuracy", None where the gold answer could not be parsed).

    engine: "static" generates `batch_prompts` records at a time; "continuous" streams all records
    through batch_prompts * k decode rows, refilled as samples end (no row waits for the slowest
    sample of its chunk); "auto": continuous when there is more than one chunk. Sample j of record
    i is request i * k + j of one seed either way, so both give the same samples. sandbox: the math
    workers' isolation ("auto" | "unsafe", r1jax.rewards.sandbox), checked before generating."""


    check_eval_settings(k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        prompt_style=prompt_style, template=template, engine=engine, batch_prompts=batch_prompts)
    if getattr(model.cfg, "vocab_size", None) is not None:
        check_fits_model(tokenizer, model.cfg.vocab_size, what="evaluate")
    check_sandbox(sandbox)  # the answers are scored in confined workers: fail now, not after sampling
    fmt = PromptFormat(prompt_style, system_prompt=system_prompt, user_template=user_template)
    eos = tuple(tokenizer.eos_token_ids)
    params = compute_copy(params, model.cfg)
    t0 = time.perf_counter()
    prompts, ptexts = fmt.render_all(tokenizer, [prompt_of(r) for r in records])
    check_positions(model.cfg, [len(p) for p in prompts], max_new_tokens, what="evaluate", key="max_new_tokens")
    # Several processes, each with its own copy of the weights: each samples a block of the records
    # (request ids as one process numbers them, so the same samples up to the float rounding of other
    # batch shapes, as between the engines) and the completions are gathered.
    # Weights spanning processes (one SPMD program): every process samples every record.
    split = jax.process_count() > 1 and all(getattr(x, "is_fully_addressable", True)
                                            for x in jax.tree.leaves(params))
    per = -(-len(records) // jax.process_count()) if split else len(records)
    lo = min(jax.process_index() * per, len(records)) if split else 0
    hi = min(lo + per, len(records))
    if engine == "auto":  # from all the records, so that every process count picks the same engine
        engine = "continuous" if len(records) > batch_prompts else "static"
    chunk_size = max(hi - lo, 1) if engine == "continuous" else batch_prompts
    tokens, finish = [], []
    for s in range(lo, hi, chunk_size):
        e = min(s + chunk_size, hi)
        out = generate(model, params, prompts[s:e], max_new_tokens=max_new_tokens, temperature=temperature,
                       top_p=top_p, eos_id=eos, seed=seed, n=k, first_request=s * k, engine=engine,
                       slots=batch_prompts * k if engine == "continuous" else None)
        tokens += out.tokens
        finish += out.finish_reason
    if split:
        tokens, finish = _gather_samples(tokens, finish, per * k, max_new_tokens, len(records) * k)
    texts = [decode_completion(tokenizer, t, eos) for t in tokens]
    lengths = [len(t) for t in tokens]
    whole = [whole_response(ptexts[i // k], t) for i, t in enumerate(texts)]  # what the rewards read
    answers = [str(r["answer"]) for r in records for _ in range(k)]
    acc = accuracy_rewards(texts, answers, isolation=sandbox)
    valid = [i for i in range(len(records)) if all(acc[i * k + j] is not None for j in range(k))]
    correct = np.array([[acc[i * k + j] == 1.0 for j in range(k)] for i in valid], bool)
    preds = [[_norm(extract_answer(texts[i * k + j])) for j in range(k)] for i in valid]
    gold = [str(records[i]["answer"]) for i in valid]

    def judge(pred, g):
        return accuracy_rewards([f"<answer> {pred} </answer>"], [g], isolation=sandbox)[0] == 1.0

    res = {
        "pass@1": pass1_over_k(correct) if len(valid) else float("nan"),
        "cons@k": cons_at_k(preds, gold, judge=judge) if len(valid) else float("nan"),
        "k": k,
        "problems": len(records),
        "skipped_gold": len(records) - len(valid),
        "mean_length": float(np.mean(lengths)),
        "format": float(np.mean([format_reward(w, template=template) for w in whole])),
        "reflection": float(np.mean([has_reflection(t) for t in texts])),
        "truncated": float(np.mean([r == "length" for r in finish])),
        "seconds": time.perf_counter() - t0,
    }
    # How the model answers: the share of responses that reason (non-empty <think>), and the accuracy of
    # those and of the direct ones (the base model's pass@1 decomposes into these).
    thought = np.array([reasons(w) for w in whole], bool)
    ok = np.array([a == 1.0 for a in acc], bool)
    res["reasoning_share"] = float(thought.mean()) if len(texts) else float("nan")
    res["reasoning_accuracy"] = float(ok[thought].mean()) if thought.any() else float("nan")
    res["direct_accuracy"] = float(ok[~thought].mean()) if (~thought).any() else float("nan")
    res["samples"] = [{"problem": records[i // k]["problem"], "answer": str(records[i // k]["answer"]),
                       "completion": texts[i], "correct": acc[i]} for i in range(min(len(texts), 4 * k))]
    if keep_texts:
        res.update(texts=texts, accuracy=acc)
    return res


def _gather_samples(tokens, finish, rows: int, width: int, total: int):
    """Every process's completions (token lists, finish reasons) in process order, the first `total`:
    each process pads its own to `rows` x `width` for one all-gather (r1jax.parallel.handoff)."""

    ids = np.full((rows, width), -1, np.int32)
    meta = np.zeros((rows, 2), np.int32)  # length, stopped at EOS
    for i, (t, f) in enumerate(zip(tokens, finish)):
        ids[i, :len(t)] = t
        meta[i] = (len(t), f == "eos")
    ids, meta = allgather_rows(ids), allgather_rows(meta)
    keep = [i for i in range(len(ids)) if meta[i, 0] > 0]  # a completion has >= 1 token; padding 0
    if len(keep) != total:
        raise RuntimeError(f"evaluate: gathered {len(keep)} completions from the processes, expected {total}")
    return ([[int(x) for x in ids[i, :meta[i, 0]]] for i in keep],
            ["eos" if meta[i, 1] else "length" for i in keep])


def _norm(a):
    return None if a is None else re.sub(r"\s+", "", a)
