"""GRPO: the loss, advantages and batches as pure functions (grpo, samples, packed, batch,
rollout_correction), the policy's log-probs (policy), the async sampler (async_sampler), the run's
config (config) and the trainer (trainer).

Rewards are their own package, below this one: ``r1jax.rewards`` (with the reward model,
``r1jax.rewards.reward_model``). They were ``r1jax.rl.rewards`` / ``r1jax.rl.reward_model`` until
issue 33's layering; the old names still import the new modules (the same module objects, so one
reward registry), with a DeprecationWarning, and go in 0.3.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_MOVED = {"r1jax.rl.rewards": "r1jax.rewards", "r1jax.rl.reward_model": "r1jax.rewards.reward_model"}


def _new_name(fullname: str) -> str | None:
    for old, new in _MOVED.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `r1jax.rl.rewards[.x]` as `r1jax.rewards[.x]` (the module object itself)."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if _new_name(fullname) else None

    def create_module(self, spec):
        new = _new_name(spec.name)
        warnings.warn(f"{spec.name} moved to {new}; import it from there (the old name goes in 0.3)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass  # the new module has run already


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name):
    if f"r1jax.rl.{name}" in _MOVED:  # from r1jax.rl import rewards
        return importlib.import_module(f"r1jax.rl.{name}")
    raise AttributeError(f"module 'r1jax.rl' has no attribute {name!r}")
