"""Run an untrusted Python program in a sandboxed subprocess with time, memory and process limits.

:func:`run_sandboxed` starts ``python -I -S _sandbox_launcher.py`` (see that module for the three
processes and their order) in a new session with an empty environment, feeds it the program on
stdin and reads its report from a pipe the program never holds. The same confinement is built
whether the trainer runs as root or not (:mod:`r1jax.rewards._jail`):

* **identity** - as root, the program runs as a *per-run* unprivileged uid/gid (``UID_BASE +
  slot``; slots are claimed with ``flock`` so concurrent runs, even from other processes, never
  share a uid), no supplementary groups; as any other user, as uid 1000 of a user namespace of its
  own, with no capabilities (its files and processes count as the trainer's uid on the host). Either
  way it holds no privilege, sets no-new-privs, and can name no process outside its sandbox;
* **filesystem** - a minimal root (``pivot_root``; the host's root detached): the system
  directories and the Python installation bound read-only, nothing else of the host (no
  ``$HOME``, ``/root``, ``/home``, project or data folders, ``/run``); ``/tmp/work`` (a tmpfs of
  ``4 * max_file_mb`` MiB, mode 0700, owned by the sandbox uid) is the cwd and, with a private
  ``/dev/shm``, the only writable place; both vanish with the namespace;
* **network** - new network namespace: no interfaces up, ``connect`` to anything (127.0.0.1
  included) fails;
* **processes** - the sandbox's init (the judge, for a code reward) is PID 1 of a new PID
  namespace and the program PID 1 of another nested in it (it sees only its own processes; when
  the launcher kills the init at the wall-clock limit ``timeout``, every process of the sandbox
  dies); as root, a uid sweep (``kill(-1)`` as the sandbox uid) after each run; the parent's
  backstop kills the launcher's process group and sweeps the uid itself if the launcher hangs;
* **rlimits** - RLIMIT_CPU (``cpu_s``, default ``ceil(timeout) + 1``), RLIMIT_AS (``memory_mb``),
  RLIMIT_FSIZE (``max_file_mb``), RLIMIT_NPROC (``max_procs``; per user namespace when not root),
  RLIMIT_NOFILE 256, RLIMIT_CORE 0. Memory is bounded per process, so a sandbox can hold up to
  ``max_procs * memory_mb`` (plus its ``/tmp/work``); System V shared memory and message queues,
  which would outlive that bound, are refused, and every sandboxed process has ``oom_score_adj``
  1000 (under host memory pressure the kernel kills it before the trainer; the program can lower
  it again, so this is a default, not a guarantee). No cgroup is created (a memory cgroup would be
  the complete bound; not done);
* **system calls** - a seccomp filter refuses the kernel keyrings (``add_key``, ``request_key``,
  ``keyctl``: the trainer's session keys, the uid's key quota; ``/proc/keys`` is masked too),
  ``shmget``/``msgget``/``mq_open``/``memfd_create``, new namespaces (``unshare``, ``setns``,
  ``clone`` with ``CLONE_NEW*``: no user namespace of its own with capabilities in it), ``bpf``,
  ``perf_event_open``, ``userfaultfd``, ``io_uring``, module loading and x32 calls (x86_64 and
  aarch64). Threads, fork, subprocesses and multiprocessing (a private ``/dev/shm`` of
  ``max_file_mb``) work;
* **environment** - only PATH, HOME, TMPDIR, LANG; ``python -I`` ignores PYTHON* variables;
* **output** - stdout+stderr captured, at most ``max_output`` bytes kept.

**Fails closed.** Where the confinement cannot be built - not root and unprivileged user
namespaces disabled, a mount refused - the program does not run and :class:`SandboxError` says
why. ``isolation="unsafe"`` (GRPO config ``sandbox="unsafe"``) runs it anyway without any of the
above but the rlimits, the wall-clock kill and the cleared environment, and says so loudly once
per process. :func:`check_sandbox` fails a run at its start instead of at its first code reward.

**Interpreter location.** The program runs under the trainer's own interpreter
(``sys.executable``), wherever it lives: the system Python, pyenv under a mode-0700 ``$HOME``, a
venv or conda env anywhere (under ``/tmp`` too): its pieces (the venv directory with
``pyvenv.cfg``, ``bin/python`` and its symlink chain, stdlib, site-packages, mapped libraries) are
bound at the same paths, read-only, nosuid, nodev. An interpreter that is ``/tmp`` or lies
inside ``/tmp/work`` is refused with a :class:`SandboxError` saying so.

**Errors.** A program that runs and fails (exception, non-zero exit, timeout, killed by a
limit) is a normal result. A sandbox that cannot *start* the program - the jail cannot be set
up, the interpreter cannot be exec'd or its files are unreadable by the sandbox uid, the
launcher crashes or writes no report, or hangs past the backstop - raises
:class:`SandboxError` (with the launcher's ``setup_error`` message) and is never scored.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import time
import warnings

from r1jax.rewards._sandbox_launcher import pids_of_uid

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_launcher.py")
UID_BASE = 1_900_000_000  # far from any real account; one uid per concurrent sandbox slot
NUM_SLOTS = 1024
_SLOT_DIR = "/tmp/r1jax-sandbox-slots"


class SandboxError(RuntimeError):
    """The sandbox could not run the program at all (setup failure, launcher crash): not a score."""


@dataclasses.dataclass
class SandboxResult:
    output: str  # stdout + stderr of the program (truncated to max_output bytes)
    returncode: int | None  # exit code (negative: killed by that signal); None if unknown
    timed_out: bool
    report: dict  # what the launcher enforced (netns, mountns, pidns, readonly_fs, uid_dropped, ...)
    wall_s: float


class _Slot:
    """An exclusive sandbox uid, held by an flock on /tmp/r1jax-sandbox-slots/<uid>."""

    def __init__(self, disabled: bool = False):
        self.uid = None
        self._fd = None
        if disabled or os.geteuid() != 0:
            return
        os.makedirs(_SLOT_DIR, mode=0o700, exist_ok=True)
        start = (os.getpid() * 7919 + time.monotonic_ns()) % NUM_SLOTS
        for k in range(NUM_SLOTS):
            uid = UID_BASE + (start + k) % NUM_SLOTS
            fd = os.open(os.path.join(_SLOT_DIR, str(uid)), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise RuntimeError(f"no free sandbox slot among {NUM_SLOTS} (too many concurrent sandboxes)")

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None


def _sweep_uid(uid: int) -> None:
    """Kill every process of ``uid`` from a helper that becomes that uid (parent-side backstop)."""
    code = (
        "import os,signal\n"
        f"os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
        "try:\n os.kill(-1, signal.SIGKILL)\nexcept OSError:\n pass\n"
    )
    for _ in range(20):
        if not pids_of_uid(uid):
            return
        subprocess.run([sys.executable, "-I", "-S", "-c", code], env={}, timeout=30, check=False)
        time.sleep(0.02)


def run_sandboxed(
    program: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    cpu_s: int | None = None,
    max_procs: int = 32,
    max_file_mb: int = 16,
    max_output: int = 1 << 20,
    isolation: str = "auto",
    python: str | None = None,
    judge: dict | None = None,
    _pid_namespace: bool = True,
) -> SandboxResult:
    """Run ``program`` (Python source) under the limits above; never raises for program errors.

    ``isolation``: ``"auto"`` (the root jail as root, the user-namespace jail otherwise;
    :class:`SandboxError` where neither can be set up) or ``"unsafe"`` (no isolation at all: only
    the rlimits, the wall-clock kill and the cleared environment; warned about once per process).
    ``python``: the interpreter that runs the program inside the jail (default: this process's
    ``sys.executable``, whose installation the jail binds; another path must be visible inside the
    jail as it is). ``judge``: ``{"tests": [sources], "prompt": str | None, "entry_point": str |
    None}``: the program is a candidate server (:mod:`r1jax.rewards._candidate_server`) and the
    tests run against it from outside (:mod:`r1jax.rewards._judge`); the verdicts come back in
    ``report["verdicts"]`` (``{"<index>": bool}``, tests that finished before the limit).

    Raises :class:`SandboxError` when the program could not be started (module docstring).
    """
    if isolation not in ISOLATION:
        raise ValueError(f"run_sandboxed: isolation={isolation!r} must be one of {ISOLATION}")
    if isolation == "unsafe":
        _warn_unsafe()
    slot = _Slot() if isolation != "unsafe" else _Slot(disabled=True)
    report_r, report_w = os.pipe()
    cfg = {
        "timeout": float(timeout),
        "cpu_s": int(cpu_s if cpu_s is not None else math.ceil(timeout) + 1),
        "memory_mb": int(memory_mb),
        "max_procs": int(max_procs),
        "max_file_mb": int(max_file_mb),
        "uid": slot.uid,
        "gid": slot.uid,
        "isolation": isolation,
        "pidns": bool(_pid_namespace),  # tests turn it off (root only) to exercise the uid sweep
        "python": os.fspath(python) if python is not None else sys.executable,
        "report_fd": report_w,
        "judge": judge,
    }
    t0 = time.monotonic()
    head = bytearray()  # the first max_output bytes: the program's output
    rep = b""
    timed_out_parent = False
    try:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _LAUNCHER, json.dumps(cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=(report_w,),
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        except OSError as e:
            raise SandboxError(f"could not start the sandbox launcher ({sys.executable}): {e}") from e
        finally:
            os.close(report_w)
        try:
            proc.stdin.write(program.encode("utf-8", "surrogateescape"))
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        out_fd = proc.stdout.fileno()
        open_fds = [out_fd, report_r]
        deadline = t0 + timeout + 75.0  # backstop; the launcher enforces `timeout` (and 60 s of setup) itself
        while open_fds:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out_parent = True
                break
            r, _, _ = select.select(open_fds, [], [], left)
            for fd in r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.remove(fd)
                elif fd == report_r:
                    rep += chunk
                elif len(head) < max_output:
                    head += chunk[: max_output - len(head)]
            if report_r not in open_fds and out_fd in open_fds and proc.poll() is not None:
                # the launcher is done: output still open means a leftover holds it (unsafe mode)
                r, _, _ = select.select([out_fd], [], [], 0.5)
                if not r:
                    break
        if timed_out_parent:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        proc.stdout.close()
        if slot.uid is not None and (timed_out_parent or proc.returncode != 0):
            _sweep_uid(slot.uid)
    finally:
        os.close(report_r)
        slot.release()
    if timed_out_parent:
        raise SandboxError(
            f"sandbox launcher did not finish within {timeout + 75.0:.0f} s (timeout {timeout} s + 75 s backstop); "
            f"it was killed. Last output: {bytes(head[-500:])!r}"
        )
    try:
        report = json.loads(rep.decode("utf-8", "replace")) if rep else None
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise SandboxError(
            f"sandbox launcher exited with status {proc.returncode} without a report. "
            f"Last output: {bytes(head[-1500:]).decode('utf-8', 'replace')!r}"
        )
    if report.get("setup_error"):
        hint = ("; to run untrusted code without isolation anyway, set isolation='unsafe' "
                "(GRPO config: sandbox='unsafe')") if "cannot isolate" in str(report["setup_error"]) else ""
        raise SandboxError(f"sandbox setup failed, the program did not run: {report['setup_error']}{hint}")
    if isolation != "unsafe":
        missing = [k for k in PROTECTIONS if not report.get(k)]
        if missing and _pid_namespace:
            raise SandboxError(f"sandbox ran without {missing} (report: {report}): refusing its result")
    return SandboxResult(
        output=head.decode("utf-8", "replace"),
        returncode=report.get("rc"),
        timed_out=bool(report.get("timed_out")),
        report=report,
        wall_s=time.monotonic() - t0,
    )


_CAPS: dict = {}
_WARNED = False
ISOLATION = ("auto", "unsafe")
PROTECTIONS = ("uid_dropped", "netns", "mountns", "pidns", "readonly_fs", "minimal_root")


def _warn_unsafe() -> None:
    """Once per process, loudly: untrusted code is about to run without isolation."""
    global _WARNED
    if _WARNED:
        return
    _WARNED = True
    msg = ("UNSAFE: code sandbox isolation is OFF (isolation='unsafe'): untrusted programs run as this user, "
           "with its files, network and processes in reach; only rlimits, the wall-clock kill and a cleared "
           "environment apply")
    logging.getLogger("r1jax.sandbox").warning(msg)
    warnings.warn(msg, RuntimeWarning, stacklevel=3)


def sandbox_capabilities(isolation: str = "auto") -> dict:
    """What the sandbox enforces on this machine (runs one trivial program; cached per isolation).

    Keys: ``mode`` (root | userns | unsafe), ``root``, ``uid_dropped``, ``netns``, ``mountns``,
    ``pidns``, ``readonly_fs``, ``minimal_root``, ``private_proc``, ``workdir``, ``works``. Where the
    sandbox cannot start at all (e.g. neither root nor user namespaces): ``{"works": False,
    "setup_error": msg}`` (not cached).
    """
    if isolation not in _CAPS:
        try:
            res = run_sandboxed("print('ok')", timeout=30, isolation=isolation)
        except SandboxError as e:
            return {"works": False, "setup_error": str(e)}
        caps = dict(res.report)
        caps["works"] = res.output.strip().endswith("ok") and res.returncode == 0
        _CAPS[isolation] = caps
    return dict(_CAPS[isolation])


def check_sandbox(isolation: str = "auto") -> dict:
    """Fail early (before a run's first rollout) where the code sandbox cannot run: raises
    :class:`SandboxError` with the reason; returns :func:`sandbox_capabilities`."""
    caps = sandbox_capabilities(isolation)
    if not caps.get("works"):
        raise SandboxError(caps.get("setup_error") or f"the code sandbox does not run a trivial program: {caps}")
    return caps
