"""Run an untrusted Python program in a sandboxed subprocess with time, memory and process limits.

:func:`run_sandboxed` starts ``python -I -S _sandbox_launcher.py`` (see that module for the
exact sequence) in a new session with an empty environment and feeds it the program on stdin.
What is enforced, when the trainer runs as root on Linux (as here):

* **identity** - the program runs as a *per-run* unprivileged uid/gid (``UID_BASE + slot``; slots
  are claimed with ``flock`` so concurrent runs, even from other processes, never share a uid),
  no supplementary groups. It therefore cannot signal the trainer or any other process, cannot
  read ``/proc/<pid>/environ`` of others, and RLIMIT_NPROC (a per-uid count) caps its own forks;
* **filesystem** - new mount namespace: every mount read-only, a fresh tmpfs ``/tmp`` (size
  ``4 * max_file_mb``) whose ``/tmp/work`` (mode 0700, owned by the sandbox uid) is the cwd and
  the only writable place; it vanishes with the namespace;
* **network** - new network namespace: no interfaces up, ``connect`` to anything (127.0.0.1
  included) fails;
* **processes** - new PID namespace with the program as PID 1 (it sees only its own processes; its
  death kills all it forked), ``start_new_session``, a wall-clock limit (``timeout``) after which
  the launcher SIGKILLs it, then a uid sweep (``kill(-1)`` as the sandbox uid); the parent's
  backstop kills the launcher's process group and sweeps the uid itself if the launcher hangs;
* **rlimits** - RLIMIT_CPU (``cpu_s``, default ``ceil(timeout) + 1``), RLIMIT_AS (``memory_mb``),
  RLIMIT_FSIZE (``max_file_mb``), RLIMIT_NPROC (``max_procs``), RLIMIT_NOFILE 256, RLIMIT_CORE 0;
* **environment** - only PATH, HOME, TMPDIR, LANG; ``python -I`` ignores PYTHON* variables;
* **output** - stdout+stderr captured, at most ``max_output`` bytes kept.

Where the OS refuses a step (not root, no namespaces), the run still happens with what is left
and :attr:`SandboxResult.report` / :func:`sandbox_capabilities` say what was enforced.

**Interpreter location.** The program runs under the trainer's own interpreter
(``sys.executable``), wherever it lives: the system Python, pyenv under a mode-0700 ``$HOME``
(the hiding directory is covered by a tmpfs and the installation bound back read-only), or a
venv / conda env under ``/tmp``, which the fresh ``/tmp`` would hide: its pieces (the venv
directory with ``pyvenv.cfg``, ``bin/python`` and its symlink chain, stdlib, site-packages) are
bind-mounted back at the same paths, read-only, nosuid, nodev, in root-owned 0755 directories,
so ``/tmp/work`` stays the only writable place (:mod:`r1jax.rl.rewards._jail`). An interpreter
inside ``/tmp/work`` itself is refused with a :class:`SandboxError` saying so.

**Errors.** A program that runs and fails (exception, non-zero exit, timeout, killed by a
limit) is a normal result. A sandbox that cannot *start* the program - the jail cannot be set
up, the interpreter cannot be exec'd or its files are unreadable by the sandbox uid, the
launcher crashes or prints no report line, or hangs past the backstop - raises
:class:`SandboxError` (with the launcher's ``setup_error`` message) and is never scored.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
import warnings

from r1jax.rl.rewards._sandbox_launcher import MARKER, pids_of_uid

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
    marked_lines: list = dataclasses.field(default_factory=list)  # lines holding `keep_lines_with`


class _Slot:
    """An exclusive sandbox uid, held by an flock on /tmp/r1jax-sandbox-slots/<uid>."""

    def __init__(self):
        self.uid = None
        self._fd = None
        if os.geteuid() != 0:
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
    isolate: bool = True,
    keep_lines_with: str | None = None,
    python: str | None = None,
    _pid_namespace: bool = True,
) -> SandboxResult:
    """Run ``program`` (Python source) under the limits above; never raises for program errors.

    ``keep_lines_with``: every output line containing this string is kept in
    ``SandboxResult.marked_lines`` even past ``max_output`` (how the code reward reads results).
    ``python``: the interpreter that runs the program inside the jail (default: this process's
    ``sys.executable``, whose installation the jail keeps reachable; another path must be visible
    inside the jail as it is). Tests use a nonexistent path to exercise the setup-failure path.

    Raises :class:`SandboxError` when the program could not be started (module docstring).
    """
    marker_b = keep_lines_with.encode() if keep_lines_with else None
    marked: list[str] = []
    carry = b""
    slot = _Slot()
    cfg = {
        "timeout": float(timeout),
        "cpu_s": int(cpu_s if cpu_s is not None else math.ceil(timeout) + 1),
        "memory_mb": int(memory_mb),
        "max_procs": int(max_procs),
        "max_file_mb": int(max_file_mb),
        "uid": slot.uid,
        "gid": slot.uid,
        "isolate": bool(isolate),
        "pidns": bool(_pid_namespace),  # tests turn it off to exercise the uid sweep
        "python": os.fspath(python) if python is not None else sys.executable,
    }
    t0 = time.monotonic()
    head = bytearray()  # the first max_output bytes: the program's output
    tail = b""  # the last 8 KiB: where the launcher's report line is
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
                env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        except OSError as e:
            raise SandboxError(f"could not start the sandbox launcher ({sys.executable}): {e}") from e
        try:
            proc.stdin.write(program.encode("utf-8", "surrogateescape"))
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        fd = proc.stdout.fileno()
        deadline = t0 + timeout + 15.0  # backstop; the launcher enforces `timeout` itself
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out_parent = True
                break
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            if len(head) < max_output:
                head += chunk[: max_output - len(head)]
            tail = (tail + chunk)[-8192:]
            if marker_b is not None and len(marked) < 100_000:
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()[-4096:]
                marked.extend(ln.decode("utf-8", "replace") for ln in lines if marker_b in ln)
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
        slot.release()
    tail_text = tail.decode("utf-8", "replace")
    if timed_out_parent:
        raise SandboxError(
            f"sandbox launcher did not finish within {timeout + 15.0:.0f} s (timeout {timeout} s + 15 s backstop); "
            f"it was killed. Last output: {tail_text[-500:]!r}"
        )
    report = None
    pos = tail_text.rfind("\n" + MARKER + " ")
    if pos >= 0:
        try:
            report = json.loads(tail_text[pos + len(MARKER) + 2 :].strip().splitlines()[0])
        except (ValueError, IndexError):
            report = None
    if not isinstance(report, dict):
        raise SandboxError(
            f"sandbox launcher exited with status {proc.returncode} without a report line. "
            f"Last output: {tail_text[-1500:]!r}"
        )
    if report.get("setup_error"):
        raise SandboxError(f"sandbox setup failed, the program did not run: {report['setup_error']}")
    text = head.decode("utf-8", "replace")
    pos = text.rfind("\n" + MARKER + " ")
    if pos >= 0:
        text = text[:pos]
    if isolate:
        _warn_if_degraded(report)
    timed_out = timed_out_parent or bool(report.get("timed_out"))
    return SandboxResult(
        output=text,
        returncode=report.get("rc"),
        timed_out=timed_out,
        report=report,
        wall_s=time.monotonic() - t0,
        marked_lines=marked,
    )


_CAPS: dict | None = None
_WARNED = False
PROTECTIONS = ("uid_dropped", "netns", "mountns", "pidns", "readonly_fs", "private_proc")


def _warn_if_degraded(report: dict) -> None:
    """Warn once per process when the OS refused some of the protections."""
    global _WARNED
    if _WARNED:
        return
    missing = [k for k in PROTECTIONS if not report.get(k)]
    if missing:
        _WARNED = True
        warnings.warn(
            f"code sandbox runs without {missing} on this machine (needs root on Linux with namespaces); "
            f"enforced: rlimits, wall-clock kill, cleared environment. Report: {report}",
            RuntimeWarning,
            stacklevel=3,
        )


def sandbox_capabilities() -> dict:
    """What the sandbox enforces on this machine (runs one trivial program; cached).

    Keys: ``root``, ``uid_dropped``, ``netns``, ``mountns``, ``pidns``, ``readonly_fs``,
    ``private_proc``, ``workdir``, ``works``; a missing or False key means that protection is
    not in force. Where the sandbox cannot start at all: ``{"works": False, "setup_error": msg}``
    (not cached).
    """
    global _CAPS
    if _CAPS is None:
        try:
            res = run_sandboxed("print('ok')", timeout=30)
        except SandboxError as e:
            return {"works": False, "setup_error": str(e)}
        caps = dict(res.report)
        caps["works"] = res.output.strip().endswith("ok") and res.returncode == 0
        _CAPS = caps
    return dict(_CAPS)
