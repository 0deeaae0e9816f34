"""r1jax.parallel.handoff on one process (8 fake CPU devices): the helpers the multi-process GRPO
loop uses read exactly the values of the sharded arrays (tests/test_multihost.py runs them across
two processes)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax import parallel
from r1jax.parallel import handoff


def test_local_rows_and_replica_single_process():
    mesh = parallel.make_mesh("data=2,fsdp=2,expert=2")
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    g = jax.device_put(x, parallel.batch_sharding(mesh))
    np.testing.assert_array_equal(handoff.local_rows(g), x)
    tree = {"w": jax.device_put(x, NamedSharding(mesh, P("fsdp", None))), "b": jnp.arange(3, dtype=jnp.float32)}
    reps = handoff.replicate_on(tree, handoff.local_mesh(), mesh)  # a whole copy on each local device
    assert len(reps["w"].addressable_shards) == 8
    for s in reps["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(s.data), x)
    host = handoff.host_leaves(tree, "bfloat16")  # one leaf at a time, cast on device
    assert host["w"].dtype == jnp.bfloat16 and isinstance(host["w"], np.ndarray)
    np.testing.assert_array_equal(host["w"].astype(np.float32), x)  # small integers: exact in bf16
    assert handoff.host_leaves({"i": jnp.arange(3)}, "bfloat16")["i"].dtype == np.int32  # ints are not cast
    np.testing.assert_array_equal(handoff.allgather_rows(x), x)
    assert handoff.host_scalar(jnp.float32(2.5)) == 2.5
    assert handoff.host_tree({"a": jnp.ones(2)})["a"].tolist() == [1.0, 1.0]


def test_reshard_seconds_moves_the_bytes():
    mesh = parallel.make_mesh("fsdp=8")
    x = jax.device_put(jnp.ones((1024, 256), jnp.float32), NamedSharding(mesh, P("fsdp", None)))
    r = handoff.reshard_seconds({"w": x}, {"w": NamedSharding(mesh, P())}, repeats=2)
    assert r["gb"] == 1024 * 256 * 4 / 1e9 and r["seconds"] > 0
    np.testing.assert_allclose(r["seconds_per_gb"], r["seconds"] / r["gb"])


def test_replicate_on_devices_outside_the_arrays_mesh():
    """Asynchronous GRPO's push: weights sharded over a training mesh of devices 0-3 land whole on each
    of the sampler's devices 4-7 (gathered over the training mesh, then single-device copies)."""
    devs = jax.devices()
    train = parallel.make_mesh("fsdp=4", devices=devs[:4])
    target = parallel.make_mesh({"data": 4}, devices=devs[4:])
    x = np.arange(8 * 6, dtype=np.float32).reshape(8, 6)
    tree = {"w": jax.device_put(x, NamedSharding(train, P("fsdp", None))), "b": jnp.arange(3.0)}
    tree["b"] = jax.device_put(tree["b"], NamedSharding(train, P()))
    out = handoff.replicate_on(tree, target, train)
    for k, ref in (("w", x), ("b", np.arange(3.0))):
        assert {s.device for s in out[k].addressable_shards} == set(devs[4:])
        for s in out[k].addressable_shards:
            np.testing.assert_array_equal(np.asarray(s.data), ref)
