"""Several OS processes of one JAX job on this machine (loopback): the environment of the README's
multi-process commands (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), fake CPU devices
per process, and waiting for all of them. Used by test_multihost.py and test_multiprocess_cli.py."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list, n_proc: int, devices: int | None = None, **env_extra) -> list:
    """`python ARGS` as n_proc processes (one: no distributed runtime) with `devices` CPU devices each
    (None: the process sets its own count) -> the Popen objects (stdout and stderr together)."""
    port = free_port()
    procs = []
    for pid in range(n_proc):
        env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false",
                   PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tools")]), **env_extra)
        env.pop("XLA_FLAGS", None)
        if devices is not None:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            env.pop(k, None)
        if n_proc > 1:
            env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(n_proc),
                       JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen([sys.executable] + list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return procs


def wait(procs, timeout: float = 1500) -> list:
    """Each process's output, once all ended; kills the rest on a timeout; asserts they all exited 0."""
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-5000:]
    return logs
