"""The weighted sum of named rewards used by the GRPO trainer.

    total_i = sum_k  w_k * s_{k,i}        over rewards k with w_k != 0
    total_i = None   if any s_{k,i} with w_k != 0 is None   (the sample is skipped, e.g. its
                     gold answer does not parse)
    mean_k  = mean of the non-None s_{k,i}   (nan when there are none)

Configs name rewards by the names of the reward registry (r1jax.rewards.registry).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence


def combine_rewards(
    named_scores: Mapping[str, Sequence[float | None]], weights: Mapping[str, float]
) -> tuple[list[float | None], dict[str, float]]:
    """Weighted sum per sample and the per-reward means (formulas in the module docstring).

    Every reward in ``weights`` must be in ``named_scores`` and vice versa (a weight of 0 logs a
    reward without training on it); all score lists must have the same length.
    """
    missing = sorted(set(weights) - set(named_scores))
    if missing:
        raise KeyError(f"combine_rewards: weights name reward(s) {missing} with no scores; got {sorted(named_scores)}")
    unweighted = sorted(set(named_scores) - set(weights))
    if unweighted:
        raise KeyError(f"combine_rewards: reward(s) {unweighted} have scores but no weight (use 0.0 to only log them)")
    lengths = {k: len(v) for k, v in named_scores.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"combine_rewards: score lists differ in length: {lengths}")
    n = next(iter(lengths.values()), 0)
    totals: list[float | None] = []
    for i in range(n):
        t = 0.0
        for k, w in weights.items():
            if w == 0:
                continue
            s = named_scores[k][i]
            if s is None:
                t = None
                break
            t += float(w) * float(s)
        totals.append(t)
    means = {}
    for k, v in named_scores.items():
        vals = [float(s) for s in v if s is not None]
        means[k] = sum(vals) / len(vals) if vals else math.nan
    return totals, means
