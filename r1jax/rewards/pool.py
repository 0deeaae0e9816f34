"""A persistent pool of math-verify worker processes with a hard per-task time limit.

Why not ``multiprocessing.Pool``: a task stuck in C code (``9^{9^{9^{9}}}`` makes sympy build a
370-million-digit integer) cannot be interrupted by a signal, and ``Pool`` cannot kill one stuck
task. Here each worker is a plain subprocess (``python -I _verify_worker.py``; no re-import of the
trainer's ``__main__``, no fork of a multi-threaded JAX process) speaking line-delimited JSON over
pipes. The scheduler hands one task at a time to each idle worker and waits on all busy pipes
with ``select``; a task whose wall-clock deadline passes scores ``timeout_value`` (0.0) and its
worker is SIGKILLed and replaced (the replacement starts in the background; tasks are only handed
to workers that reported ready, so start-up time never counts against a task). A worker that dies
(crash, MemoryError outside the handler) also scores 0.0 and is replaced.

Start-up failures are not scores: a worker that reports ``{"error": ..}`` as its first line
(imports failed, its jail failed, or its post-jail self-test failed - see
:mod:`r1jax.rewards._verify_worker`), exits before reporting ready, or where no worker is
ready after ``start_timeout`` raises :class:`VerifierError` from :meth:`VerifierPool.map` (the
pool is closed). Only tasks that reached a started worker can time out to ``timeout_value``.

Workers are started in their own session (terminal Ctrl-C does not reach them), die with the
parent (PR_SET_PDEATHSIG) and are killed by an ``atexit`` hook. A pool created before a ``fork``
is not used by the child: :func:`get_pool` makes a fresh one per pid.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_verify_worker.py")


class VerifierError(RuntimeError):
    """A math-verify worker could not start (module docstring): the batch is not scored."""


class _Worker:
    def __init__(self, mem_mb: int, isolation: str = "auto"):
        self.proc = subprocess.Popen(
            [sys.executable, "-I", _WORKER, "--mem-mb", str(mem_mb), "--isolation", isolation],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.ready = False
        self.task = None  # (index, deadline) while busy
        self.t0 = time.monotonic()

    def send(self, msg: dict) -> bool:
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def read_lines(self) -> tuple[list[dict], bool]:
        """Drain the pipe; return (complete messages, eof)."""
        eof = False
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            self.buf += chunk
        msgs = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            try:
                msgs.append(json.loads(line))
            except ValueError:
                pass
        return msgs, eof

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class VerifierPool:
    """``n`` math-verify workers; :meth:`map` scores (gold, pred) pairs with a per-task deadline."""

    def __init__(self, num_workers: int = 2, mem_mb: int = 4096, start_timeout: float = 120.0,
                 isolation: str = "auto"):
        if isolation not in ("auto", "unsafe"):
            raise ValueError(f"VerifierPool: isolation={isolation!r} must be auto | unsafe")
        self.num_workers = max(1, int(num_workers))
        self.mem_mb = mem_mb
        self.isolation = isolation
        self.start_timeout = start_timeout
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._workers = [_Worker(mem_mb, isolation) for _ in range(self.num_workers)]
        self.restarts = 0
        self.timeouts = 0
        self.jail_report: dict = {}  # what the workers' confinement achieved (_jail.enter_namespaces + build_root)

    # -- helpers -------------------------------------------------------------------------------
    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self.mem_mb, self.isolation)
        self.restarts += 1

    def close(self) -> None:
        for w in self._workers:
            try:
                w.proc.stdin.close()
            except OSError:
                pass
            w.kill()
        self._workers = []

    # -- main entry ----------------------------------------------------------------------------
    def map(self, pairs, timeout: float = 1.5, timeout_value: float = 0.0) -> list:
        """Score each ``(gold, pred)``; returns 1.0 / 0.0 / None (gold unparseable) per pair."""
        pairs = list(pairs)
        if not pairs:
            return []
        if not self._workers:
            raise RuntimeError("VerifierPool is closed")
        with self._lock:
            return self._map(pairs, timeout, timeout_value)

    def _map(self, pairs, timeout, timeout_value):
        results: list = [None] * len(pairs)
        pending = list(range(len(pairs)))[::-1]  # pop() from the end = in order
        done = 0
        while done < len(pairs):
            now = time.monotonic()
            # hand out work to idle, ready workers
            for i in range(len(self._workers)):
                w = self._workers[i]
                if pending and w.ready and w.task is None:
                    idx = pending.pop()
                    gold, pred = pairs[idx]
                    if w.send({"id": idx, "gold": gold, "pred": pred}):
                        w.task = (idx, now + timeout)
                    else:  # the worker died while idle: not this task's fault, hand it out again
                        pending.append(idx)
                        self._replace(i)
            busy = [w for w in self._workers if w.task is not None or not w.ready]
            deadlines = [w.task[1] for w in self._workers if w.task is not None]
            wait = min(deadlines) - now if deadlines else 1.0
            if not any(w.ready for w in self._workers) and all(
                now - w.t0 > self.start_timeout for w in self._workers
            ):
                self.close()
                raise VerifierError(f"math-verify workers did not start within {self.start_timeout:.0f} s")
            fds = [w.fd for w in busy]
            if fds and wait > 0:
                try:
                    select.select(fds, [], [], min(wait, 1.0))
                except (OSError, ValueError):
                    pass
            now = time.monotonic()
            for i, w in enumerate(list(self._workers)):
                msgs, eof = w.read_lines()
                for m in msgs:
                    if "ready" in m:
                        w.ready = True
                        self.jail_report = m.get("jail", {})
                    elif "error" in m:
                        self.close()
                        raise VerifierError(f"math-verify worker failed to start: {m['error']}")
                    elif w.task is not None and m.get("id") == w.task[0]:
                        results[w.task[0]] = m.get("r")
                        w.task = None
                        done += 1
                if w.task is not None and (eof or now >= w.task[1]):
                    results[w.task[0]] = timeout_value
                    w.task = None
                    done += 1
                    self.timeouts += 1
                    self._replace(i)
                elif eof:
                    if not w.ready:
                        rc = w.proc.poll()
                        if rc is None:
                            try:
                                rc = w.proc.wait(timeout=5)
                            except subprocess.TimeoutExpired:
                                rc = "still running"
                        self.close()
                        raise VerifierError(
                            f"math-verify worker exited during start-up (exit status {rc}) without reporting "
                            f"ready or an error; command: {sys.executable} -I {_WORKER}"
                        )
                    self._replace(i)
        return results


_POOL: VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def default_num_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def get_pool(num_workers: int | None = None, isolation: str = "auto") -> VerifierPool:
    """The process-wide pool (created on first use; re-created after fork, on a size or isolation
    change, or once closed). ``isolation="unsafe"``: workers run unconfined where confinement is
    impossible (module docstring of :mod:`r1jax.rewards._verify_worker`)."""
    global _POOL
    n = num_workers or (_POOL.num_workers if _POOL is not None else default_num_workers())
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid != os.getpid():
            _POOL = None  # inherited across fork: the pipes belong to the parent
        if _POOL is not None and not _POOL._workers:
            _POOL = None  # closed (e.g. after a start-up failure): try afresh
        if _POOL is not None and (_POOL.num_workers != n or _POOL.isolation != isolation):
            _POOL.close()
            _POOL = None
        if _POOL is None:
            _POOL = VerifierPool(n, isolation=isolation)
        return _POOL


def shutdown_pool() -> None:
    """Kill the process-wide pool's workers (also registered with ``atexit``)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL.pid == os.getpid():
            _POOL.close()
        _POOL = None


atexit.register(shutdown_pool)
