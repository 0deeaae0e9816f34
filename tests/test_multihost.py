"""A real multi-host run on loopback: two OS processes, 4 CPU devices each, one global mesh.

Each process runs tools/multihost_worker.py: `jax.distributed.initialize` from JAX_COORDINATOR_
ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (process 0 hosts the coordinator on a free local
port), a data=2 x expert=4 mesh over the 8 global devices (each process holds one data slice),
the train state created sharded, and each process transfers only its half of every batch. The
losses of the train steps must equal the single-process, single-device reference (dense MoE).
"""

import json
import os
import sys

import numpy as np
import pytest

import loopback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tools", "multihost_worker.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
STEPS = 5


@pytest.mark.slow  # the GRPO tests below run the same two-process path in the default suite
def test_two_processes_match_single_process_losses(tmp_path):
    out = tmp_path / "losses.json"
    results = _run_workers(2, 4, ["--mesh", "data=2,expert=4", "--steps", str(STEPS), "--out", str(out)])
    for i, r in enumerate(results):
        assert r["process_index"] == i and r["process_count"] == 2 and r["how"] == "env"
        assert r["local_devices"] == 4 and r["global_devices"] == 8 and r["devices_per_process"] == [4, 4]
    # data sharded per process: process 0 feeds rows 0-3 of each batch, process 1 rows 4-7
    assert [r["rows"] for r in results] == [[0, 4], [4, 8]]
    assert json.loads(out.read_text())["losses"] == results[0]["losses"]

    from multihost_worker import train_losses

    ref = train_losses(None, steps=STEPS)
    print("single process:", ref, "\ntwo processes: ", results[0]["losses"])
    for r in results:
        np.testing.assert_allclose(r["losses"], ref, rtol=2e-5)
    assert ref[-1] < ref[0]


def _run_workers(n_proc: int, devices: int, args: list, timeout: int = 1500) -> list[dict]:
    """n_proc worker processes on loopback (one: no distributed runtime) -> each one's JSON line."""
    logs = loopback.wait(loopback.launch([WORKER, "--devices", str(devices)] + args, n_proc), timeout)
    return [json.loads([ln for ln in log.splitlines() if ln.startswith("{")][-1]) for log in logs]


@pytest.fixture(scope="module")
def grpo_one_process(tmp_path_factory):
    """The reference: the GRPO steps of 1 process x 8 devices (sampling SPMD on the mesh)."""
    from multihost_worker import GRPO_STEPS

    run_dir = tmp_path_factory.mktemp("grpo_one")
    one = _run_workers(1, 8, ["--mesh", "data=2,expert=4", "--steps", str(GRPO_STEPS), "--grpo", str(run_dir),
                              "--rollout-placement", "auto"])[0]  # one process: auto = mesh
    assert one["process_count"] == 1
    losses = [s["train/loss"] for s in one["steps"]]
    assert min(abs(x) for x in losses) > 1e-4  # non-trivial: the advantages are not all zero
    assert len({round(x, 6) for x in losses}) == GRPO_STEPS  # and the steps differ
    return one["steps"]


@pytest.mark.parametrize("placement", ["local", pytest.param("mesh", marks=pytest.mark.slow)])
def test_grpo_two_processes_match_one_process(tmp_path, grpo_one_process, placement):
    """GRPO (rollouts, a reward with spread, recomputed old log-probs, two mini-batches, the update)
    with 2 processes x 4 devices; the update's global arrays are built from the process-local rows.
    local: each process samples its half of the prompts on a local replica of the weights; mesh: one
    sampling program over all 8 devices of both processes (every process passes every prompt and keeps
    its half). The losses, rewards and lengths of 3 steps equal those of 1 process x 8 devices."""
    from multihost_worker import GRPO_STEPS

    args = ["--mesh", "data=2,expert=4", "--steps", str(GRPO_STEPS), "--rollout-placement", placement]
    two = _run_workers(2, 4, args + ["--grpo", str(tmp_path / "two")])
    assert [r["process_count"] for r in two] == [2, 2]
    # only process 0 writes the run's metrics
    assert (tmp_path / "two" / "metrics.jsonl").exists()
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == GRPO_STEPS
    ref = grpo_one_process
    print("one process: ", [r["train/loss"] for r in ref])
    for r in two:
        print(f"two processes ({placement}):", [s["train/loss"] for s in r["steps"]])
        assert len(r["steps"]) == GRPO_STEPS
        for a, b in zip(r["steps"], ref):
            # the same samples: rewards and lengths equal, losses to float rounding
            assert a["rollout/response_length"] == b["rollout/response_length"]
            np.testing.assert_allclose(a["reward/total"], b["reward/total"], rtol=1e-6)
            np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_async_grpo_two_processes_with_sampler_devices(tmp_path):
    """rollout_mode=async, max_staleness=1, sampler_devices=2: each of 2 processes x 4 devices samples
    on 2 of its devices and trains on the other 2 (mesh data=2 x expert=2 over the 4 training devices
    of both), the weights pushed after each update device to device (the push runs under a
    device-to-host transfer guard: a host copy would fail). The same as 1 process x 8 devices with 4
    sampler devices (the same schedule and samples): lengths and rewards equal, losses to rounding."""
    from multihost_worker import GRPO_STEPS

    args = ["--mesh", "data=2,expert=2", "--steps", str(GRPO_STEPS), "--rollout-mode", "async",
            "--max-staleness", "1"]
    one = _run_workers(1, 8, args + ["--sampler-devices", "4", "--grpo", str(tmp_path / "one")])[0]["steps"]
    two = _run_workers(2, 4, args + ["--sampler-devices", "2", "--grpo", str(tmp_path / "two")])
    assert [s["async/lag_max"] for s in one] == [0.0, 1.0, 1.0]
    for r in two:
        assert [s["rollout/devices"] for s in r["steps"]] == [2.0] * GRPO_STEPS
        for a, b in zip(r["steps"], one):
            assert a["async/lag_max"] == b["async/lag_max"]
            assert a["rollout/response_length"] == b["rollout/response_length"]
            np.testing.assert_allclose(a["reward/total"], b["reward/total"], rtol=1e-6)
            np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-4, atol=1e-7)
