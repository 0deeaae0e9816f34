"""Sandbox launcher: run as ``python -I -S _sandbox_launcher.py '<json config>'`` by
:func:`r1jax.rl.rewards.sandbox.run_sandboxed`, with the untrusted program on stdin.

It is a fresh single-threaded process (so it may safely fork, unshare and mount - unlike a
``preexec_fn`` in a multi-threaded trainer). Steps:

1. read the program from stdin;
2. :func:`_jail.enter_jail` (new mount/net/ipc/uts/pid namespaces, read-only filesystem, fresh
   tmpfs ``/tmp`` with the work dir, the interpreter bound back read-only when it lives under
   ``/tmp``, e.g. a venv there), or - where namespaces are refused - a ``mkdtemp`` work dir
   chowned to the sandbox uid;
3. fork: the child (PID 1 of the new PID namespace) mounts a private ``/proc``, writes
   ``main.py`` into the work dir, sets RLIMIT_CPU / AS / FSIZE / NPROC / NOFILE / CORE, drops to
   the sandbox uid/gid with no groups, asks for SIGKILL on the launcher's death, checks *as the
   sandbox uid* that the interpreter's files are reachable (a venv's ``pyvenv.cfg``, the stdlib's
   ``os.py``), closes every fd but 0-2 (stdin = /dev/null) and the status pipe, and ``execve``s
   ``python -I -B -u main.py`` (``cfg["python"]``, default the launcher's own interpreter) with a
   fresh environment (PATH, HOME/TMPDIR = work dir, LANG) - nothing of the trainer's environment;
4. the launcher waits for it (``pidfd`` + ``poll``) up to the wall-clock limit, then SIGKILLs it
   (as PID 1 of its namespace its death takes every descendant with it), then sweeps: while any
   process of the sandbox uid is left, a forked helper that has become that uid calls
   ``kill(-1, SIGKILL)`` (reaches exactly that uid's processes, however they re-parented or
   re-grouped);
5. removes a fallback work dir and prints ``\\n@@R1JAX-SANDBOX@@ {json}`` as its last line.

Setup failures are told apart from the program's own failures: the status pipe is close-on-exec
(as in :mod:`subprocess`); the child writes ``R <child report>`` on it once its setup is done and
``E <message>`` if anything up to and including ``execve`` fails (then exits 125). A successful
``execve`` closes the pipe, so the program itself can never write to it. No ``R`` line, or an
``E`` line, means the program never started: the report gets ``setup_error`` (as it does when
step 2 fails) and :func:`run_sandboxed` raises ``SandboxError`` instead of scoring the run.
"""
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time

MARKER = "@@R1JAX-SANDBOX@@"


def _load_jail():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_jail.py")
    spec = importlib.util.spec_from_file_location("_r1jax_jail", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pids_of_uid(uid: int, include_zombies: bool = False) -> list[int]:
    """Pids (in this /proc) whose real uid is ``uid``; zombies only if asked."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                zombie = False
                for line in f:
                    if line.startswith("State:"):
                        zombie = line.split()[1] in ("Z", "X")
                    elif line.startswith("Uid:"):
                        if int(line.split()[1]) == uid and (include_zombies or not zombie):
                            out.append(int(name))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return out


def _reap() -> None:
    """Collect every exited child (we are a subreaper, so orphans of the sandbox land here)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep_uid(uid: int, gid: int, rounds: int = 50) -> int:
    """SIGKILL every process of ``uid`` (as that uid: kill(-1)); returns how many were seen."""
    seen = 0
    for _ in range(rounds):
        _reap()
        left = pids_of_uid(uid)
        if not left:
            return seen
        seen = max(seen, len(left))
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except BaseException:  # noqa: BLE001
                pass
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.005)
    return seen


def _preflight_paths(python: str) -> list[str]:
    """Files the interpreter needs to start (called before the jail: as they are on the host)."""
    if python != sys.executable:  # an interpreter given by the caller: only the exec itself is checked
        return []
    need = []
    os_py = getattr(os, "__file__", None)
    if os_py and os.path.isfile(os_py):  # the stdlib (absent on disk with a zipped stdlib)
        need.append(os_py)
    for exe in (sys.executable, os.path.realpath(sys.executable)):
        for d in (os.path.dirname(exe), os.path.dirname(os.path.dirname(exe))):
            cfg = os.path.join(d, "pyvenv.cfg")
            if os.path.isfile(cfg):  # a venv: without it the interpreter starts as the base one
                need.append(cfg)
                break
    return need


def _preflight(python: str, need: list[str]) -> None:
    """As the sandbox uid: can it read what the interpreter needs (exec is checked by execve)?"""
    for p in need:
        if not os.access(p, os.R_OK):
            raise RuntimeError(f"{p} (needed by the interpreter {python}) is not readable by the sandbox uid "
                               f"{os.getuid()} inside the jail (a directory on its path not o+x, or the file "
                               "not o+r?)")


def _child(cfg, jail, report, workdir, program: bytes, status_fd: int, need: list[str]) -> None:
    """Set up and exec the program; never returns. ``status_fd`` is close-on-exec (module doc)."""
    import resource

    try:
        python = cfg.get("python") or sys.executable
        child_report = {"private_proc": False}
        if report.get("pidns") and report.get("mountns"):
            child_report["private_proc"] = jail.mount_proc()
        path = os.path.join(workdir, "main.py")
        with open(path, "wb") as f:
            f.write(program)
        os.chmod(path, 0o644)
        os.chdir(workdir)
        cpu = int(cfg["cpu_s"])
        jail.set_rlimits(
            {
                resource.RLIMIT_CPU: cpu,
                resource.RLIMIT_AS: int(cfg["memory_mb"]) * 1024 * 1024,
                resource.RLIMIT_FSIZE: int(cfg["max_file_mb"]) * 1024 * 1024,
                resource.RLIMIT_NOFILE: 256,
                resource.RLIMIT_CORE: 0,
            }
        )
        if cfg.get("uid") is not None and os.geteuid() == 0:
            if report.get("readonly_fs") or jail.python_reachable():
                jail.set_rlimits({resource.RLIMIT_NPROC: int(cfg["max_procs"])})
                child_report["uid_dropped"] = jail.drop_privileges(int(cfg["uid"]), int(cfg["gid"]))
            else:  # the interpreter is hidden from other uids and no mount namespace can expose it
                child_report["uid_drop_error"] = "python is not reachable by an unprivileged uid"
        jail.die_with_parent()
        _preflight(python, need)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3, status_fd)
        os.closerange(status_fd + 1, 65536)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": workdir,
            "TMPDIR": workdir,
            "LANG": "C.UTF-8",
        }
        os.write(status_fd, b"R " + json.dumps(child_report).encode() + b"\n")
        os.execve(python, [python, "-I", "-B", "-u", "main.py"], env)
    except BaseException as e:  # noqa: BLE001
        try:
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")
            os.write(status_fd, b"E " + msg.encode("utf-8", "replace")[:2000] + b"\n")
        finally:
            os._exit(125)


def _read_status(fd: int) -> tuple[dict | None, str | None]:
    """(child report or None if its setup never finished, setup error or None) from the status pipe."""
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    child_report, error = None, None
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("R "):
            try:
                child_report = json.loads(line[2:])
            except ValueError:
                error = f"unreadable child status line {line[:200]!r}"
        elif line.startswith("E "):
            error = line[2:]
    return child_report, error


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """(wait status, timed_out); SIGKILLs the child at the deadline."""
    deadline = time.monotonic() + timeout
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pass
    timed_out = False
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid == pid:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status = os.waitpid(pid, 0)
            break
        if pidfd is not None:
            p = select.poll()
            p.register(pidfd, select.POLLIN)
            p.poll(max(1, int(left * 1000)))
        else:
            time.sleep(min(left, 0.01))
    if pidfd is not None:
        os.close(pidfd)
    return status, timed_out


def _emit(report: dict) -> None:
    os.write(1, ("\n" + MARKER + " " + json.dumps(report) + "\n").encode())


def main() -> None:
    report = {"root": os.geteuid() == 0}
    try:
        cfg = json.loads(sys.argv[1])
        program = sys.stdin.buffer.read()
        jail = _load_jail()
    except BaseException as e:  # noqa: BLE001
        report["setup_error"] = f"launcher start-up: {type(e).__name__}: {e}"
        _emit(report)
        return
    uid, gid = cfg.get("uid"), cfg.get("gid")
    is_root = report["root"]
    fallback_dir = None
    try:
        need = _preflight_paths(cfg.get("python") or sys.executable)
        if is_root and cfg.get("isolate", True):
            report.update(jail.enter_jail(new_pid=cfg.get("pidns", True), new_net=cfg.get("netns", True), workdir=True,
                                          uid=uid if uid is not None else 65534,
                                          gid=gid if gid is not None else 65534,
                                          tmp_size_mb=int(cfg["max_file_mb"]) * 4))
        workdir = report.get("workdir")
        if not workdir:
            fallback_dir = tempfile.mkdtemp(prefix="r1jax-sandbox-")
            if is_root and uid is not None:
                os.chown(fallback_dir, uid, gid)
            os.chmod(fallback_dir, 0o700)
            workdir = fallback_dir
    except BaseException as e:  # noqa: BLE001  (JailError, a read-only /tmp for the fallback dir, ...)
        err = f"{type(e).__name__}: {e}"
        if report.get("mount_error"):
            err += f" (after mount error: {report['mount_error']})"
        report["setup_error"] = err
        if fallback_dir:
            shutil.rmtree(fallback_dir, ignore_errors=True)
        _emit(report)
        return
    t0 = time.monotonic()
    sys.stdout.flush()
    try:  # orphans of the sandbox re-parent to us (not to init), so we can reap them
        jail._lib().prctl(36, 1, 0, 0, 0)  # 36 = PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    rfd, wfd = os.pipe()  # both ends close-on-exec (PEP 446)
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _child(cfg, jail, report, workdir, program, wfd, need)
        os._exit(125)
    os.close(wfd)
    status, timed_out = _wait(pid, float(cfg["timeout"]))
    child_report, setup_error = _read_status(rfd)
    os.close(rfd)
    if child_report is not None:
        report.update(child_report)
    wall = time.monotonic() - t0
    leftovers = 0
    if is_root and uid is not None:
        leftovers = sweep_uid(uid, gid)
    _reap()
    if fallback_dir:
        shutil.rmtree(fallback_dir, ignore_errors=True)
    try:
        rc = os.waitstatus_to_exitcode(status)
    except ValueError:
        rc = None
    if setup_error is None and child_report is None:
        why = ", killed at the time limit" if timed_out else ""
        setup_error = f"the sandbox child exited during its setup (exit status {rc}{why})"
    if setup_error is not None:
        report["setup_error"] = setup_error
    report.update({"rc": rc, "timed_out": timed_out, "wall_s": round(wall, 4), "leftover_procs": leftovers,
                   "uid": uid})
    report.setdefault("uid_dropped", False)
    _emit(report)


if __name__ == "__main__":
    main()
