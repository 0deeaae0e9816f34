"""Resumable training state with Orbax: params + optimizer state + a JSON of loop state.

    ckpt = Checkpointer(run_dir / "checkpoints", max_to_keep=2)
    ckpt.save(step, state, meta={"data": pipe.get_state(), "rng": ...})
    state, meta = ckpt.restore(abstract_state)        # latest step; None if there is none

Restore takes the abstract target (e.g. `jax.eval_shape` of the state, or the live state) so
arrays come back with the same structure, dtypes and shardings.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = os.path.abspath(os.fspath(directory))
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict | None = None, wait: bool = True) -> None:
        self.manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta or {})))
        if wait:
            self.manager.wait_until_finished()

    def restore(self, target, step: int | None = None):
        """-> (state, meta) of `step` (default: latest), or (None, None) when there is no checkpoint."""
        step = self.latest_step() if step is None else step
        if step is None:
            return None, None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                 meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def close(self):
        self.manager.close()


def save_params(path: str | os.PathLike, params) -> None:
    """One-off save of a params pytree (Orbax StandardCheckpointer)."""
    ck = ocp.StandardCheckpointer()
    ck.save(os.path.abspath(os.fspath(path)), params, force=True)
    ck.wait_until_finished()


def restore_params(path: str | os.PathLike, target=None):
    ck = ocp.StandardCheckpointer()
    if target is not None:
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return ck.restore(os.path.abspath(os.fspath(path)), target)
