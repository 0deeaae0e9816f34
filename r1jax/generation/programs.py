"""How the rollout engines' programs are built: shape buckets, the trace counter, XLA:CPU options
for decode, per-layer params on CPU. Shared by the static and continuous engines (engine.py,
continuous.py); nothing here samples or decodes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from r1jax import backends
from r1jax.config import num_moe_layers
from r1jax.data.buckets import round_up
from r1jax.model.transformer import unstack_layers
from r1jax.parallel.mesh import batch_axis_size
from r1jax.parallel.rules import BATCH_AXES

_TRACES = {"prefill": 0, "decode": 0, "refill": 0, "segment": 0}


def count_trace(name: str) -> None:
    """Called from inside a program being traced: one more compile of `name`."""
    _TRACES[name] += 1


def compile_count() -> dict:
    """How many times each engine program was traced (= compiled) in this process."""
    return dict(_TRACES)


CACHE_ALIGN = 128  # cache positions are a multiple of this (a TPU lane tile; the decode kernels' blocks)


def cache_length(prompt_len: int, steps: int) -> int:
    """Cache positions for prompts of `prompt_len` (their bucket) and `steps` new tokens: their sum
    rounded up to a multiple of CACHE_ALIGN, not to a power of two (a 256-token prompt bucket + 8,192
    new tokens: 8,448 positions, where a power of two held 16,384). The length is fixed by the
    prompt bucket and the budget, so a run with one budget meets one cache length per prompt bucket."""
    return round_up(int(prompt_len) + int(steps), CACHE_ALIGN)


def pad_positions(cache, max_len: int, axis: int):
    """A prefill's cache (positions along `axis`, as many as the prompt bucket) padded with zeros to
    `max_len` positions: the decode cache, allocated once, with no second full-length copy."""
    def pad(c):
        widths = [(0, 0)] * c.ndim
        widths[axis] = (0, max_len - c.shape[axis])
        return jnp.pad(c, widths)

    return jax.tree.map(pad, cache)


@dataclasses.dataclass
class GenerationOutput:
    tokens: list[list[int]]  # completion tokens (EOS included when it stopped there)
    logprobs: list[list[float]]  # per completion token, under log_softmax(logits / T)
    finish_reason: list[str]  # "eos" | "length"
    prompt_index: list[int]  # which prompt each sample continues
    stats: dict
    # with return_routes=True on an MoE model: per sample [len(tokens), n_moe_layers, k] int16, the
    # experts each completion token chose when it was fed back (-1 for the last token, never fed)
    routes: list | None = None
    # with a weight_source (continuous engine, in-flight weight updates): per sample, each completion
    # token's weights version
    versions: list | None = None


def route_shape(cfg) -> tuple[int, int] | None:
    """(MoE layers, experts per token) of a model, or None for a dense one."""

    n = num_moe_layers(cfg)
    return (n, int(cfg.num_experts_per_tok)) if n else None


def decode_step(dec, params, tok, pos, cache, record: bool):
    """One decode step of [b] tokens at positions [b] -> (logits [b, V], cache, route [b, n_moe, k] int16
    or None)."""
    out = dec.apply({"params": params}, tok[:, None], pos[:, None], cache=cache)  # a ModelOutput
    if not record:
        return out.logits[:, 0], out.cache, None
    return out.logits[:, 0], out.cache, jnp.moveaxis(out.aux["route"][:, :, 0, :], 0, 1).astype(jnp.int16)


def routes_of(routes, n_tokens: int):
    """A row's recorded routes [steps, n_moe, k] -> [n_tokens, n_moe, k], -1 for the last token."""
    out = np.array(routes[:n_tokens], np.int16)
    if n_tokens:
        out[n_tokens - 1] = -1
    return out


def decode_options_key() -> tuple:
    """The backend's compiler options of the decode programs as a hashable key of the program caches."""

    return tuple(sorted((backends.decode_compiler_options() or {}).items()))


def jit_decode(fn, options, **kw):
    """jax.jit(fn, **kw) with the backend's decode compiler options (r1jax.backends.jit_with_options)."""

    return backends.jit_with_options(fn, options, **kw)


def prepare_model(model, params, unstacked: bool | None):
    """Where the backend asks for it (r1jax.backends.unstack_for_decode: CPU) or unstacked=True, the
    layer params are split once per call into one array per layer, for an unstacked model (why:
    r1jax.model.transformer's module doc). It holds a second copy of the layer weights during the
    call. -> (model, params)."""
    if unstacked is None:
        unstacked = backends.unstack_for_decode()
    if unstacked:
        model = model.clone(unstacked=True)
        params = _unstack_jit(params, model.cfg)
    return model, params


def _unstack(params, cfg):
    return unstack_layers(params, cfg)


_unstack_jit = jax.jit(_unstack, static_argnums=(1,))


def active_mesh():
    """The (abstract) mesh set by `r1jax.parallel.use_mesh` / `jax.set_mesh` around a generate call,
    or None; usable on the host and while tracing."""
    m = jax.sharding.get_abstract_mesh()
    return None if m is None or m.empty else m


def row_multiple() -> int:
    """Decode rows are padded to a multiple of this: the active mesh's batch ways (1 without a mesh),
    so that every device of the mesh holds rows."""
    m = active_mesh()
    if m is None:
        return 1

    return batch_axis_size(m)


def rows_over_mesh(tree, axis_of):
    """Constrains each array of `tree` (under jit) to split its rows over the active mesh's batch axes
    (`axis_of(leaf)`: the rows' axis), where the rows divide evenly; a no-op without a mesh. The
    engines' caches and decode state are created inside their programs with this, so that no device
    ever holds all the rows."""
    m = active_mesh()
    if m is None:
        return tree


    axes = tuple(a for a in BATCH_AXES if a in m.shape and m.shape[a] > 1)
    ways = int(np.prod([m.shape[a] for a in axes])) if axes else 1
    if ways == 1:
        return tree

    def put(x):
        ax = axis_of(x)
        if x.ndim <= ax or x.shape[ax] % ways:
            return x
        spec = [None] * x.ndim
        spec[ax] = axes
        return jax.lax.with_sharding_constraint(x, P(*spec))  # against the context's mesh

    return jax.tree.map(put, tree)


def row_devices(x) -> int:
    """How many of this process's devices hold distinct rows (leading dim) of `x`, an engine output:
    1 on one device, every local device when the rows are split over a mesh of them."""
    shards = getattr(x, "addressable_shards", None)
    if not shards:
        return 1
    return len({(s.index[0].start or 0) if s.index else 0 for s in shards})


def cache_batch_axis(model) -> int:
    """The batch axis of the cache arrays: per-layer [b, L, ...] or stacked [n_layers, b, L, ...]."""
    return 0 if model.unstacked else 1
