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
    tree = {"w": jax.device_put(x, NamedSharding(mesh, P("fsdp", None)))}
    assert handoff.local_replica(tree, mesh) is tree  # one process: the arrays as they are
    np.testing.assert_array_equal(handoff.allgather_rows(x), x)
    assert handoff.host_scalar(jnp.float32(2.5)) == 2.5
    assert handoff.host_tree({"a": jnp.ones(2)})["a"].tolist() == [1.0, 1.0]


def test_reshard_seconds_moves_the_bytes():
    mesh = parallel.make_mesh("fsdp=8")
    x = jax.device_put(jnp.ones((1024, 256), jnp.float32), NamedSharding(mesh, P("fsdp", None)))
    r = handoff.reshard_seconds({"w": x}, {"w": NamedSharding(mesh, P())}, repeats=2)
    assert r["gb"] == 1024 * 256 * 4 / 1e9 and r["seconds"] > 0
    np.testing.assert_allclose(r["seconds_per_gb"], r["seconds"] / r["gb"])
