"""A shim for flax 0.12: `DenseGeneral` with multi-dim features under a global mesh.

`nn.DenseGeneral(features=(h, d), kernel_init=nn.with_logical_partitioning(init, names))` calls
the init with the *flattened* 2-D kernel shape and unboxes that value (applying the logical
sharding constraint) before reshaping it to the 3-D kernel. With a mesh in context
(`jax.set_mesh`), that constraint has 3 names for a rank-2 value and jax raises "is only valid
for values of rank at least 3" -- on init and on every apply (flax re-traces the init to check
shapes). The shim skips the constraint only when the value's rank differs from the number of
names (the transient flat kernel); the reshaped kernel is constrained as usual.
"""

from __future__ import annotations

from flax.linen import spmd

_PATCHED = "_r1jax_rank_safe"


def install() -> None:
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
