"""Rollouts on every device of a process, and caches sized to need (r1jax.generation, handoff).

On the fake 8-device CPU mesh of the tests: the engines under a process's own device mesh
(`rollout_placement="local"`) split their rows (cache, decode state) over all 8 devices with the
weights replicated on each, and draw the samples of one device; the cache is the prompt bucket +
budget rounded to 128 positions; a refill prefills one row per distinct prompt.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config as config_lib, generate
from r1jax.generation import continuous, engine, programs
from r1jax.model import Transformer, init_params
from r1jax.parallel import handoff, use_mesh


@pytest.fixture(scope="module")
def tiny():
    cfg = config_lib.get_preset("tiny_qwen2")
    return Transformer(cfg), init_params(cfg, jax.random.PRNGKey(0))


def _prompts(n, seed=0):
    rs = np.random.RandomState(seed)
    return [list(rs.randint(3, 60, rs.randint(3, 12))) for _ in range(n)]


def test_cache_length_is_a_multiple_of_128_not_a_power_of_two():
    assert programs.cache_length(256, 8192) == 8448  # a power of two: 16,384
    assert programs.cache_length(16, 8) == 128
    assert programs.cache_length(128, 129) == 384
    assert continuous.refill_rows(16, 1) == 1 and continuous.refill_rows(16, 3) == 4
    assert continuous.refill_rows(4, 4) == 4


def test_local_mesh_rows_on_every_device_and_the_same_samples(tiny):
    """generate under the mesh of this process's 8 devices (weights replicated by replicate_on) gives the
    one-device samples, both engines; the static prefill's cache and the continuous engine's cache and
    state hold 1/8 of the rows on each of the 8 devices."""
    model, params = tiny
    mesh = handoff.local_mesh()
    assert mesh.devices.size == len(jax.local_devices()) == 8
    reps = handoff.replicate_on(params, mesh)
    leaf = jax.tree.leaves(reps)[0]
    assert {s.device for s in leaf.addressable_shards} == set(jax.local_devices())
    assert all(s.data.shape == leaf.shape for s in leaf.addressable_shards)  # a whole copy on each
    prompts = _prompts(5)
    kw = dict(max_new_tokens=9, temperature=1.0, seed=4, n=3, eos_id=())
    ref = generate(model, params, prompts, **kw)
    ref_c = generate(model, params, prompts, engine="continuous", slots=4, **kw)
    with use_mesh(mesh):
        got = generate(model, reps, prompts, **kw)
        got_c = generate(model, reps, prompts, engine="continuous", slots=4, **kw)
        # the programs' row layout: the static prefill's decode cache, the continuous engine's rows
        m, p = programs.prepare_model(model, reps, False)
        pre, _ = engine._jitted(m, 128, 9, 1.0, 1.0, 0, (), None)
        b, n = 8, 3
        toks = jnp.ones((b, 16), jnp.int32)
        keys = jnp.zeros((b * n, 2), jnp.uint32)
        cache, *_ = pre(p, toks, jnp.full((b,), 4, jnp.int32), keys, jnp.repeat(jnp.arange(b), n),
                        jnp.ones((b * n,), bool), jnp.asarray([-1], jnp.int32), jnp.full((b * n,), 9, jnp.int32))
        rows_cache, st = continuous._new_rows(m, 16, 128, 9, None)
    assert got.tokens == ref.tokens and got_c.tokens == ref_c.tokens
    assert got_c.stats["rows"] == 8  # slots=4 rounded up to the 8 devices
    assert got.stats["row_devices"] == got_c.stats["row_devices"] == 8
    assert ref.stats["row_devices"] == ref_c.stats["row_devices"] == 1
    for arr, rows, ax in [(jax.tree.leaves(cache)[0], b * n, 1), (jax.tree.leaves(rows_cache)[0], 16, 1),
                          (st["out_tok"], 16, 0)]:
        assert arr.shape[ax] == rows
        shards = arr.addressable_shards
        assert {s.device for s in shards} == set(jax.local_devices())
        assert all(s.data.shape[ax] == rows // 8 for s in shards)  # every device holds its rows only
        assert len({s.index[ax].start for s in shards}) == 8


def test_static_cache_sized_to_need(tiny):
    model, params = tiny
    out = generate(model, params, _prompts(3), max_new_tokens=120, seed=1, eos_id=())
    assert out.stats["prompt_bucket"] == 16 and out.stats["cache_len"] == 256  # 16 + 120 -> 256 (was 256)
    out = generate(model, params, _prompts(3), max_new_tokens=150, seed=1, eos_id=())
    assert out.stats["cache_len"] == 256  # 16 + 150 = 166 -> 256 (a power of two: 256 too)
    out = generate(model, params, _prompts(3), max_new_tokens=260, seed=1, eos_id=())
    assert out.stats["cache_len"] == 384  # 16 + 260 = 276 -> 384 (a power of two: 512)
