"""Loading a researcher's function named in a config: "package.module:function" (imported) or
"path/to/file.py:function" (loaded from the file). The loss registry (r1jax.rl.grpo.get_loss_fn)
and the reward registry (r1jax.rewards.registry.get_reward) resolve such names here."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Callable


def is_spec(name: str) -> bool:
    """Whether `name` is a "module:function" / "file.py:function" name."""
    return isinstance(name, str) and ":" in name


def load_file(path: str, what: str = "plugin"):
    """The module of a .py file, loaded (and kept in sys.modules as r1jax_user_<what>_<stem>)."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} file {path!r} does not exist")
    mod_name = f"r1jax_user_{what}_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


def load_callable(spec: str, what: str = "plugin") -> Callable:
    """The function a "module:function" or "file.py:function" name refers to; errors name `what`
    ("loss", "reward") and the spec."""
    mod_path, _, attr = spec.rpartition(":")
    if mod_path.endswith(".py"):
        module = load_file(mod_path, what)
    else:
        try:
            module = importlib.import_module(mod_path)
        except ImportError as e:
            raise ValueError(f"cannot import module {mod_path!r} for {what} {spec!r}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{mod_path!r} has no callable {attr!r} ({what} {spec!r})")
    return fn
