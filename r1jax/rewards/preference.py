"""The "preference" reward: a learned reward model's scores (R1's reward for general data), on from
the step `preference_start_frac * steps` (R1 applies it in the last part of RL only).

The reward models a process has loaded are kept by (folder, prompt style), so a run loads its
model once (the cache lives for the process, like the compiled steps)."""

from __future__ import annotations

import os

from r1jax.rewards.reward_model import preference_reward_fn

_SCORERS: dict = {}  # (abs folder, prompt_style) -> fn(texts, records) -> list (r1jax.rewards.reward_model)


def preference_active(c, step: int | None) -> bool:
    """The "preference" reward counts from the 0-based step index `preference_start_frac * steps` on
    (None: always)."""
    return step is None or step >= c.preference_start_frac * c.steps


def preference_scores(texts: list[str], records: list[dict], *, config, step: int | None = None) -> list:
    """Reward-model scores in [0, 1] (r1jax.rewards.reward_model.preference_reward_fn), 0.0 before the gate."""
    c = config
    if not preference_active(c, step):
        return [0.0] * len(texts)
    if not c.preference_model:
        raise ValueError("grpo config: reward 'preference' needs preference_model (a `r1jax train-rm` folder)")
    key = (os.path.abspath(c.preference_model), c.prompt_style)
    if key not in _SCORERS:
        _SCORERS[key] = preference_reward_fn(c.preference_model, prompt_style=c.prompt_style)
    return list(_SCORERS[key](texts, records))
