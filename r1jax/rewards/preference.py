"""The "preference" reward: a learned reward model's scores (R1's reward for general data), on from
the step `preference_start_frac * steps` (R1 applies it in the last part of RL only).

The reward models loaded are kept in the `scorers` dict the caller passes (the GRPO run owns one
for its life, through r1jax.rewards.registry.compute_rewards), keyed by (folder, prompt style), so a
run loads its model and compiles its scorer once. Without a dict, each call loads the model anew."""

from __future__ import annotations

import os

from r1jax.rewards.reward_model import preference_reward_fn


def preference_active(c, step: int | None) -> bool:
    """The "preference" reward counts from the 0-based step index `preference_start_frac * steps` on
    (None: always)."""
    return step is None or step >= c.preference_start_frac * c.steps


def preference_scores(texts: list[str], records: list[dict], *, config, step: int | None = None,
                      scorers: dict | None = None) -> list:
    """Reward-model scores in [0, 1] (r1jax.rewards.reward_model.preference_reward_fn), 0.0 before the gate.
    scorers: the caller's cache, {("preference", abs folder, prompt_style): fn(texts, records)}, filled here."""
    c = config
    if not preference_active(c, step):
        return [0.0] * len(texts)
    if not c.preference_model:
        raise ValueError("grpo config: reward 'preference' needs preference_model (a `r1jax train-rm` folder)")
    key = ("preference", os.path.abspath(c.preference_model), c.prompt_style)
    scorers = {} if scorers is None else scorers
    if key not in scorers:
        scorers[key] = preference_reward_fn(c.preference_model, prompt_style=c.prompt_style)
    return list(scorers[key](texts, records))
