"""GRPO: the loss, advantages and batches as pure functions (grpo, samples, packed, batch,
rollout_correction), the policy's log-probs (policy), the async sampler (async_sampler), the run's
config (config) and the trainer (trainer).

Rewards are their own package, below this one: ``r1jax.rewards`` (they were ``r1jax.rl.rewards``
until the layering of issue 33; ``from r1jax.rl import rewards`` still works, with a
DeprecationWarning, and will be removed in 0.3).
"""

import importlib
import warnings

_MOVED = {"rewards": "r1jax.rewards", "reward_model": "r1jax.rewards.reward_model"}


def __getattr__(name):
    if name in _MOVED:
        warnings.warn(f"r1jax.rl.{name} moved to {_MOVED[name]}; import it from there (the old name goes in 0.3)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'r1jax.rl' has no attribute {name!r}")
