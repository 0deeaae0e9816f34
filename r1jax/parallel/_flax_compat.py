"""A shim for flax 0.12: `DenseGeneral` with multi-dim features under a global mesh.

`nn.DenseGeneral(features=(h, d), kernel_init=nn.with_logical_partitioning(init, names))` calls
the init with the *flattened* 2-D kernel shape and unboxes that value (applying the logical
sharding constraint) before reshaping it to the 3-D kernel. With a mesh in context
(`jax.set_mesh`), that constraint has 3 names for a rank-2 value and jax raises "is only valid
for values of rank at least 3" -- on init and on every apply (flax re-traces the init to check
shapes). The shim skips the constraint only when the value's rank differs from the number of
names (the transient flat kernel); the reshaped kernel is constrained as usual.

`r1jax.parallel.mesh.use_mesh` installs it on entering a mesh (the only place where it matters),
on the flax versions that need it (`needed()`). When to drop it: flax issue google/flax#3676
(DenseGeneral constrains the flat kernel before its reshape) is open as of flax 0.12.8. Once a
flax release constrains the reshaped kernel instead, set FIXED_IN to that version (the shim then
stays out on it); once setup.py requires flax >= FIXED_IN, delete this module and its call.
"""

from __future__ import annotations

import re

import flax
from flax.linen import spmd

_PATCHED = "_r1jax_rank_safe"
FIXED_IN: tuple[int, ...] | None = None  # the first flax release without the bug (None: none known yet)


def _version(v: str) -> tuple[int, ...]:
    """"0.12.8" -> (0, 12, 8); "0.13.0rc1" -> (0, 13, 0) (the leading numbers of each part)."""
    out = []
    for part in v.split(".")[:3]:
        m = re.match(r"\d+", part)
        if m is None:
            break
        out.append(int(m.group()))
    return tuple(out)


def needed(version: str = flax.__version__) -> bool:
    """Whether the installed flax (or `version`) has the bug the shim works around."""
    return FIXED_IN is None or _version(version) < FIXED_IN


def install() -> None:
    """Patches flax's LogicallyPartitioned.unbox where `needed()`; once per process (idempotent)."""
    if not needed():
        return
    cls = spmd.LogicallyPartitioned
    if getattr(cls.unbox, _PATCHED, False):
        return
    orig = cls.unbox

    def unbox(self, apply_constraint=True):
        ndim = getattr(self.value, "ndim", None)
        if apply_constraint and ndim is not None and self.names is not None and ndim != len(self.names):
            return self.value
        return orig(self, apply_constraint)

    setattr(unbox, _PATCHED, True)
    cls.unbox = unbox
