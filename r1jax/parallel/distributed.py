"""Multi-host start-up: `jax.distributed.initialize` from the environment.

    from r1jax.parallel import distributed
    info = distributed.initialize()      # call before any other JAX work; no-op on one host

Where the process count comes from:
  - explicit arguments, or the variables JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID (R1JAX_* spellings are accepted too): GPU clusters
    without a scheduler, the loopback test;
  - a Cloud TPU VM pod slice (several TPU_WORKER_HOSTNAMES, or R1JAX_DISTRIBUTED=1 / `force=True`
    to let JAX ask the TPU metadata server) or SLURM (SLURM_NTASKS > 1, srun) or Open MPI
    (OMPI_COMM_WORLD_SIZE > 1): JAX detects the coordinator, count and id itself
    (`jax.distributed.initialize()` with no arguments);
  - otherwise one process: nothing to do.

After it, `jax.devices()` lists every process's devices (the global mesh is built over them)
and `jax.local_devices()` this host's. Each process feeds only its rows of the global batch
(`r1jax.parallel.shard_batch` / `process_batch_slice`).
"""

from __future__ import annotations

import os

import jax


def _env(*names):
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return v
    return None


def _cluster_detected() -> str | None:
    if int(os.environ.get("SLURM_NTASKS", os.environ.get("SLURM_NPROCS", "1")) or 1) > 1 and "SLURM_JOB_ID" in os.environ:
        return "slurm"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return "ompi"
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts:
        return "tpu"
    if os.environ.get("CLOUD_TPU_TASK_ID") is not None or os.environ.get("TPU_WORKER_ID") is not None:
        return "tpu"
    return None


def is_initialized() -> bool:
    from jax._src import distributed as _d  # the state object has no public accessor

    return getattr(_d.global_state, "client", None) is not None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids=None, *, force: bool | None = None,
               timeout_s: int = 300) -> dict:
    """Starts the JAX distributed runtime when the environment describes several processes.

    Returns {"process_index", "process_count", "local_devices", "global_devices", "how"}.
    """
    coordinator_address = coordinator_address or _env("JAX_COORDINATOR_ADDRESS", "R1JAX_COORDINATOR_ADDRESS")
    if num_processes is None and _env("JAX_NUM_PROCESSES", "R1JAX_NUM_PROCESSES") is not None:
        num_processes = int(_env("JAX_NUM_PROCESSES", "R1JAX_NUM_PROCESSES"))
    if process_id is None and _env("JAX_PROCESS_ID", "R1JAX_PROCESS_ID") is not None:
        process_id = int(_env("JAX_PROCESS_ID", "R1JAX_PROCESS_ID"))
    if force is None:
        force = os.environ.get("R1JAX_DISTRIBUTED", "") not in ("", "0")
    how = "single"
    if is_initialized():
        how = "already"
    elif coordinator_address and num_processes is not None and process_id is not None:
        if num_processes > 1:
            jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                       process_id=process_id, local_device_ids=local_device_ids,
                                       initialization_timeout=timeout_s)
            how = "env"
    elif (cluster := _cluster_detected() or ("auto" if force else None)) is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids,
                                   initialization_timeout=timeout_s)
        how = cluster
    elif coordinator_address or num_processes or process_id:
        missing = [n for n, v in (("JAX_COORDINATOR_ADDRESS", coordinator_address),
                                  ("JAX_NUM_PROCESSES", num_processes), ("JAX_PROCESS_ID", process_id)) if v is None]
        raise ValueError(f"distributed: incomplete environment, missing {missing}")
    return dict(process_index=jax.process_index(), process_count=jax.process_count(),
                local_devices=len(jax.local_devices()), global_devices=len(jax.devices()), how=how)


def shutdown() -> None:
    if is_initialized():
        jax.distributed.shutdown()


__all__ = ["initialize", "shutdown", "is_initialized"]
