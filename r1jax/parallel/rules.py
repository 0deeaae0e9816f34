"""The one table of logical-axis rules: logical array axis name -> mesh axes.

Mesh axes (r1jax.parallel.mesh): ``data`` (pure data parallel: params replicated), ``fsdp``
(data parallel with params/optimizer state sharded, ZeRO-3 style), ``expert`` (routed experts
sharded; for everything else it acts as another fsdp axis) and ``tensor`` (heads / MLP hidden /
vocab split, Megatron style).

Flax resolves a logical spec with these rules in table order: an array dimension takes the
first rule for its name whose mesh axes are all still unused by that array, so a name may have
fallback entries. Example: an expert weight ("exp", "embed", "mlp") -> ("expert", "fsdp",
"tensor") (embed falls back from (fsdp, expert) to fsdp because exp already took expert); a
dense weight ("embed", "mlp") -> (("fsdp", "expert"), "tensor"); an activation ("batch", "seq",
"embed") -> (("data", "fsdp", "expert"), None, None); an MLA up-projection ("q_lora", "heads",
"head_dim") -> (("fsdp", "expert"), "tensor", None).

Logical names used by the model (r1jax.model): params -- vocab, embed, heads, kv_heads,
head_dim, q_lora, kv_lora, mlp, exp, norm, mtp_in, layers (scanned stacks); activations --
batch, seq, embed, heads, head_dim, mlp.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn

# Token-carrying ("batch") mesh axes, outermost first: a global batch is split over all three.
BATCH_AXES = ("data", "fsdp", "expert")
# Axes that shard a non-expert parameter's "embed" dimension (ZeRO-3 over fsdp x expert).
PARAM_SHARD_AXES = ("fsdp", "expert")

LOGICAL_RULES: tuple[tuple[str, object], ...] = (
    # activations
    ("batch", BATCH_AXES),
    ("seq", None),
    ("act_embed", None),
    # routed experts: exp first, so expert weights' embed falls back to fsdp
    ("exp", "expert"),
    # parameters
    ("embed", PARAM_SHARD_AXES),
    ("embed", "fsdp"),
    ("mtp_in", PARAM_SHARD_AXES),
    ("mtp_in", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    # MLA up-projections [q_lora | kv_lora, heads, head_dim]: ZeRO-shard the latent dim (the down
    # projections [embed, q_lora | kv_lora] already use fsdp x expert on embed)
    ("q_lora", PARAM_SHARD_AXES),
    ("kv_lora", PARAM_SHARD_AXES),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
)

KNOWN_LOGICAL_AXES = frozenset(name for name, _ in LOGICAL_RULES)


def rules_for(mesh_axis_names, rules=LOGICAL_RULES):
    """The table restricted to the axes a mesh has (a mesh without `tensor` leaves those dims whole)."""
    have = set(mesh_axis_names)
    out = []
    for name, axes in rules:
        if axes is None:
            out.append((name, None))
            continue
        tup = (axes,) if isinstance(axes, str) else tuple(axes)
        kept = tuple(a for a in tup if a in have)
        if not kept:  # rule names only absent axes: drop it (a later fallback may apply)
            continue
        out.append((name, kept[0] if len(kept) == 1 else kept))
    return tuple(out)


@contextlib.contextmanager
def axis_rules(rules=LOGICAL_RULES):
    """Context in which flax's `with_logical_constraint` resolves names with `rules`."""
    with nn.logical_axis_rules(rules):
        yield
