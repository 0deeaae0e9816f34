"""Compile the MLA Pallas kernels for a TPU (Mosaic) without a TPU.

libtpu (`pip install 'jax[tpu]==<installed jax version>'`) provides a compiler for a described
topology: jax.experimental.topologies.get_topology_desc(platform="tpu", topology_name="v5p:2x2x1")
yields 4 TPU devices; a jit of shard_map(kernel) over a mesh of them lowers (interpret=None
picks the Mosaic branch because the lowering platform is "tpu") and compiles on this CPU host.
Skips only when libtpu cannot be imported.
"""
import importlib.util
import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed (pip install 'jax[tpu]==<jax version>')")

# Compile-only use of libtpu: don't take its one-process-per-host lockfile (another process on
# the machine, e.g. an AOT tool, may hold it).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

from pallas_kernels import mla_decode, mla_prefill  # noqa: E402

TOPOLOGY = "v5p:2x2x1"


@pytest.fixture(scope="module")
def mesh():
    try:
        import libtpu  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"libtpu not importable: {e}")
    from jax.experimental import topologies
    topo = topologies.get_topology_desc(platform="tpu", topology_name=TOPOLOGY)
    assert len(topo.devices) == 4 and "TPU" in topo.devices[0].device_kind
    return Mesh(np.array(topo.devices), ("x",))


def _sds(mesh, shape, dtype, row_major=False):
    sharding = NamedSharding(mesh, P("x"))
    if row_major:
        # Pin the row-major HBM layout the kernel reads. Left free, XLA:TPU picks a
        # [.., 576]-minor-dim-avoiding layout for an entry parameter and inserts a copy of the
        # whole cache before the kernel; a decode loop that keeps the cache in its carry gets
        # the kernel's layout by layout assignment.
        from jax.experimental.layout import Format, Layout
        sharding = Format(Layout(major_to_minor=tuple(range(len(shape)))), sharding)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def _compile(fn, mesh, *avals):
    f = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P("x"), out_specs=P("x")))
    lowered = f.lower(*avals)
    text = lowered.as_text()
    # the Mosaic kernels are in the module (not the interpreter's XLA loops)
    assert "tpu_custom_call" in text, "expected Mosaic custom calls in the lowered module"
    compiled = lowered.compile()
    mem = compiled.memory_analysis()
    print(fn.__name__, mem)
    return compiled, mem


def _sane(mem, arg_bytes, max_temp):
    assert mem is not None
    # TPU pads small minor dims to its (8, 128) tiles: arguments may be a little larger
    assert arg_bytes <= mem.argument_size_in_bytes <= 1.15 * arg_bytes + (1 << 16)
    assert 0 < mem.output_size_in_bytes
    # O(seq) workspace, never a [seq, seq] score matrix in HBM
    assert mem.temp_size_in_bytes < max_temp, mem.temp_size_in_bytes


# V3 head dims, 4 sequences of 1024 tokens (one per device), 4 heads per device.
B, S, H, DQK, DV = 4, 1024, 4, 192, 128


def _prefill_avals(mesh):
    return (_sds(mesh, (B, S, H, DQK), jnp.bfloat16), _sds(mesh, (B, S, H, DQK), jnp.bfloat16),
            _sds(mesh, (B, S, H, DV), jnp.bfloat16))


def test_prefill_forward_compiles_for_tpu(mesh):
    def prefill_fwd(q, k, v):
        return mla_prefill(q, k, v, sm_scale=DQK ** -0.5)

    _, mem = _compile(prefill_fwd, mesh, *_prefill_avals(mesh))
    per_dev_args = S * H * (2 * DQK + DV) * 2
    scores_bytes = H * S * S * 4
    _sane(mem, per_dev_args, max_temp=scores_bytes)


def test_prefill_backward_compiles_for_tpu(mesh):
    def prefill_fwd_bwd(q, k, v, seg, do):
        o, vjp = jax.vjp(lambda q, k, v: mla_prefill(q, k, v, sm_scale=DQK ** -0.5,
                                                     segment_ids=seg), q, k, v)
        return vjp(do)

    avals = _prefill_avals(mesh) + (_sds(mesh, (B, S), jnp.int32),
                                    _sds(mesh, (B, S, H, DV), jnp.bfloat16))
    _, mem = _compile(prefill_fwd_bwd, mesh, *avals)
    per_dev_args = S * H * (2 * DQK + 2 * DV) * 2 + S * 4
    _sane(mem, per_dev_args, max_temp=H * S * S * 4)


def test_decode_compiles_for_tpu(mesh):
    Bd, T, Hd, r, dr = 8, 2048, 16, 512, 64

    def decode(ql, qr, cache, lengths):
        return mla_decode(ql, qr, cache, lengths, sm_scale=192 ** -0.5, kv_lora_rank=r)

    avals = (_sds(mesh, (Bd, 1, Hd, r), jnp.bfloat16), _sds(mesh, (Bd, 1, Hd, dr), jnp.bfloat16),
             _sds(mesh, (Bd, T, r + dr), jnp.bfloat16, row_major=True),
             _sds(mesh, (Bd,), jnp.int32))
    _, mem = _compile(decode, mesh, *avals)
    per_dev = Bd // 4
    cache_bytes = per_dev * T * (r + dr) * 2
    _sane(mem, cache_bytes + per_dev * Hd * (r + dr) * 2 + per_dev * 4,
          max_temp=cache_bytes // 8)   # no copy of the cache, only q / partial outputs
