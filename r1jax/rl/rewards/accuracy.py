"""Rule-based accuracy reward for math (DeepSeek-R1 §2.2.2 "accuracy rewards").

    r_acc(completion, answer) = 1.0  if extract_answer(completion) is equivalent to answer
                                0.0  if it is not, if no answer can be extracted, or on timeout
                                None if the gold ``answer`` itself does not parse (skip the sample):
                                     math_verify yields no sympy expression for it (empty,
                                     unbalanced braces, bare operators)

Equivalence (in this order):

1. Fast exact path, in-process: when both strings are plain decimals (``-?\\d+(\\.\\d*)?``, after
   stripping spaces and ``$``), compare them as :class:`decimal.Decimal` (``5 == 5.0``). A plain
   gold with no extracted prediction is 0.0 at once. Toy tasks never touch sympy.
2. Otherwise ``math_verify``: both sides are parsed with
   ``[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]`` after wrapping in
   ``\\boxed{..}`` (or as prose when they hold ``$``/``\\(``), and compared with
   ``math_verify.verify(gold, pred)`` (symbolic equality, numeric tolerance, fractions vs
   decimals, intervals, sets, tuples, ``\\text{}``/unit stripping). Gold parses are cached.
   This runs in a worker process of :mod:`r1jax.rl.rewards.pool` under a hard wall-clock limit
   (``timeout``, default 1.5 s, counted from when the task reaches a started worker): an
   expression that hangs or crashes sympy scores 0.0 and its worker is killed and replaced.
   Extracted answers longer than ``MAX_ANSWER_CHARS`` score 0.0 without parsing.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Sequence

from r1jax.rl.rewards.extract import extract_answer
from r1jax.rl.rewards.pool import get_pool

DEFAULT_TIMEOUT = 1.5
_NUM_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_MAX_FAST_LEN = 200
MAX_ANSWER_CHARS = 10_000  # a longer "final answer" is not an answer: 0.0 without parsing


def _plain_number(s: str | None) -> Decimal | None:
    if s is None:
        return None
    t = s.replace(" ", "").strip("$")
    if len(t) > _MAX_FAST_LEN or not _NUM_RE.fullmatch(t):
        return None
    try:
        return Decimal(t)
    except InvalidOperation:
        return None


def _gold_string(answer: str) -> str:
    """The gold answer as given; a gold that is itself a boxed solution is reduced to the box."""
    if "\\boxed" in answer or "\\fbox" in answer or "<answer>" in answer:
        return extract_answer(answer) or ""
    return answer.strip()


def _fast(gold: str, pred: str | None) -> float | None | str:
    """1.0/0.0 when decided without sympy; the string "slow" otherwise."""
    g = _plain_number(gold)
    if g is None:
        return "slow"
    if pred is None:
        return 0.0
    p = _plain_number(pred)
    if p is None:
        return "slow"
    return 1.0 if p == g else 0.0


def accuracy_rewards(
    completions: Sequence[str],
    answers: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    num_workers: int | None = None,
) -> list[float | None]:
    """Batched :func:`accuracy_reward`: one entry per (completion, answer) pair.

    Pairs not settled by the fast path are spread over a persistent pool of ``num_workers``
    worker processes (default ``min(4, cpu_count)``; created on first use, killed at exit).
    """
    if len(completions) != len(answers):
        raise ValueError(f"accuracy_rewards: {len(completions)} completions but {len(answers)} answers")
    out: list = [None] * len(completions)
    slow_idx, slow_pairs = [], []
    for i, (c, a) in enumerate(zip(completions, answers)):
        gold = _gold_string(a if a is not None else "")
        if not gold:
            out[i] = None
            continue
        pred = extract_answer(c or "")
        if pred is not None and len(pred) > MAX_ANSWER_CHARS:
            pred = None
        r = _fast(gold, pred)
        if r == "slow":
            slow_idx.append(i)
            slow_pairs.append((gold, pred))
        else:
            out[i] = r
    if slow_pairs:
        for i, r in zip(slow_idx, get_pool(num_workers).map(slow_pairs, timeout=timeout)):
            out[i] = r
    return out


def accuracy_reward(completion: str, answer: str, *, timeout: float = DEFAULT_TIMEOUT) -> float | None:
    """1.0 if the completion's final answer equals ``answer``, 0.0 if not, None if the gold does not parse."""
    return accuracy_rewards([completion], [answer], timeout=timeout)[0]
