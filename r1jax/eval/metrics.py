"""Evaluation metrics: pass@k, pass@1 over k samples (as DeepSeek-R1 reports), cons@k majority vote.

    pass_at_k(n, c, k)               unbiased pass@k from n samples with c correct (Chen et al. 2021)
    pass1_over_k(correct)            correct: [problems, k] bool -> mean over problems of the
                                     per-problem fraction correct (R1's "pass@1" with k samples)
    cons_at_k(preds, gold, judge)    majority vote over each problem's k extracted answers, judged
    majority_vote(answers)           the representative answer of the largest group (or None)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["pass_at_k", "pass1_over_k", "majority_vote", "cons_at_k", "default_normalize", "exact_match"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k): the probability that at least one of k samples
    drawn without replacement from n samples (c of them correct) is correct.

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which is numerically stable for large n.
    """
    n, c, k = int(n), int(c), int(k)
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass1_over_k(correct) -> float:
    """pass@1 estimated from k samples per problem: mean over problems of mean correctness.

    ``correct``: [problems, k] bools (array or nested lists). Rows of different lengths are
    allowed (each problem is averaged over its own samples); an empty row is an error.
    """
    rows = [np.asarray(r, dtype=bool).reshape(-1) for r in correct]
    if not rows:
        raise ValueError("pass1_over_k: no problems")
    for i, r in enumerate(rows):
        if r.size == 0:
            raise ValueError(f"pass1_over_k: problem {i} has no samples")
    return float(np.mean([r.mean() for r in rows]))


def default_normalize(answer: str) -> str:
    """Default answer key for grouping: surrounding whitespace stripped."""
    return answer.strip()


def exact_match(pred: str, gold: str) -> bool:
    """Default judge: equal after stripping surrounding whitespace."""
    return default_normalize(str(pred)) == default_normalize(str(gold))


def majority_vote(answers: Sequence[str | None], normalize: Callable[[str], str] = default_normalize):
    """The most common answer after ``normalize`` (None answers ignored; ties go to the answer
    group that occurs first). Returns the first original answer of the winning group, or None
    when every answer is None."""
    counts: dict = {}
    first: dict = {}
    for a in answers:
        if a is None:
            continue
        key = normalize(a)
        if key not in counts:
            counts[key] = 0
            first[key] = a
        counts[key] += 1
    if not counts:
        return None
    best = max(counts.values())
    for key in counts:  # dicts keep insertion order = first occurrence
        if counts[key] == best:
            return first[key]


def cons_at_k(
    predicted_answers: Sequence[Sequence[str | None]],
    gold: Sequence[str],
    judge: Callable[[str, str], bool] = exact_match,
    normalize: Callable[[str], str] = default_normalize,
) -> float:
    """cons@k: fraction of problems whose majority-vote answer is judged correct.

    predicted_answers: per problem, the k extracted final answers (None = no answer extracted).
    gold: per problem, the reference answer.
    judge(pred, gold) -> bool; pred is the first original (un-normalized) answer of the winning
      group, so a math-aware judge (e.g. math-verify) sees the model's own text. A problem with
      no answer at all counts as wrong.
    normalize: the key answers are grouped by (default: strip surrounding whitespace). Pass a
      canonicalizer (e.g. one that parses LaTeX) to merge equivalent spellings.
    """
    if len(predicted_answers) != len(gold):
        raise ValueError(f"cons_at_k: {len(predicted_answers)} prediction lists but {len(gold)} gold answers")
    if not gold:
        raise ValueError("cons_at_k: no problems")
    n_ok = 0
    for preds, g in zip(predicted_answers, gold):
        voted = majority_vote(preds, normalize)
        if voted is not None and judge(voted, g):
            n_ok += 1
    return n_ok / len(gold)
