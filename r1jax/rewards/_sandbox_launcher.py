"""Sandbox launcher: run as ``python -I -S _sandbox_launcher.py '<json config>'`` by
:func:`r1jax.rewards.sandbox.run_sandboxed`, with the untrusted program on stdin.

It is a fresh single-threaded process (so it may safely unshare, fork and mount - unlike a
``preexec_fn`` in a multi-threaded trainer). Three processes, each trusting only the one above:

* **L**, this launcher: reads the program; :func:`_jail.enter_namespaces` (as root, or through a
  user namespace when not; where neither is possible it refuses to run the program, unless the
  config says ``isolation="unsafe"``); forks T; enforces the wall-clock limit; collects T's events
  (the program's set-up, each test's verdict, its exit status) from a pipe only T holds; sweeps the
  sandbox uid (root mode); writes its report as one JSON object on ``report_fd``, a pipe of the
  caller that neither T nor C holds.
* **T**, PID 1 of the new PID namespace: builds the minimal root and ``pivot_root``\\ s into it
  (:func:`_jail.build_root`), writes ``main.py`` into the work dir, unshares another PID namespace
  and forks C; then drops its privileges, makes itself non-dumpable and either waits for C (a plain
  program) or, with a ``judge`` config, runs the tests against C (:mod:`_judge`) and sends each
  verdict to L.
* **C**, PID 1 of its own PID namespace, nested in T's (it can name no process outside it): mounts
  its own ``/proc``, sets RLIMIT_CPU / AS / FSIZE / NPROC / NOFILE / CORE, starts a new session,
  drops to the sandbox uid (root mode) or keeps the user namespace's unprivileged uid, sets
  no-new-privs and SIGKILL on T's death, checks that the interpreter's files are readable, closes
  every fd but 0-2 (stdin = /dev/null) and - with a judge - the two request/reply pipes (moved to
  fds 3 and 4), and ``execve``\\ s ``python -I -B -u main.py`` with a fresh environment (PATH,
  HOME/TMPDIR = the work dir, LANG).

When the limit passes, L SIGKILLs T: T is PID 1 of its namespace, so every process of the sandbox
dies with it. Setup failures are told apart from the program's own: C reports ``R <json>`` on a
close-on-exec status pipe just before ``execve`` and ``E <message>`` if anything up to and including
``execve`` fails; no ``R`` line, or an ``E`` line, means the program never ran: the report gets
``setup_error`` and :func:`run_sandboxed` raises ``SandboxError``.
"""
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time


def _load(name):
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("_r1jax" + name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pids_of_uid(uid: int, include_zombies: bool = False, proc: str = "/proc") -> list[int]:
    """Pids (in this /proc) whose real uid is ``uid``; zombies only if asked."""
    out = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/status") as f:
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


def _preflight_paths(python: str, jail) -> list[str]:
    """Files the interpreter needs to start (checked as the sandbox uid inside the jail): the
    stdlib's os.py (absent with a zipped stdlib) and a venv's pyvenv.cfg (without it the
    interpreter starts as the base one)."""
    if python != sys.executable:  # an interpreter given by the caller: only the exec itself is checked
        return []
    os_py = getattr(os, "__file__", None)
    return [p for p in (os_py if os_py and os.path.isfile(os_py) else None, jail.venv_config()) if p]


def _send(fd: int, msg: dict) -> None:
    data = (json.dumps(msg) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


# --------------------------------------------------------------------------------------------
# C: the program
# --------------------------------------------------------------------------------------------
def _child(cfg, jail, mode, workdir, status_fd, rpc, need) -> None:
    """Set up and exec the program; never returns. ``status_fd`` is close-on-exec."""
    import resource

    try:
        python = cfg.get("python") or sys.executable
        report = {"private_proc": False}
        if mode != "unsafe" and cfg.get("pidns", True):
            err = jail._unshare(jail.CLONE_NEWNS)
            if err:
                raise OSError(err, "unshare(CLONE_NEWNS) for the program's /proc")
            report["private_proc"] = jail.mount_proc()
        os.chdir(workdir)
        jail.set_rlimits({
            resource.RLIMIT_CPU: int(cfg["cpu_s"]),
            resource.RLIMIT_AS: int(cfg["memory_mb"]) * 1024 * 1024,
            resource.RLIMIT_FSIZE: int(cfg["max_file_mb"]) * 1024 * 1024,
            resource.RLIMIT_NOFILE: 256,
            resource.RLIMIT_CORE: 0,
            resource.RLIMIT_NPROC: int(cfg["max_procs"]),
        })
        os.setsid()
        jail.oom_first()  # (while /proc/self is still ours to write)
        if mode != "unsafe":
            jail.drop_privileges(mode, int(cfg["uid"]), int(cfg["gid"]))
            report["uid_dropped"] = True
        jail.no_new_privs()
        report["seccomp"] = jail.deny_syscalls()
        jail.die_with_parent()
        for p in need:
            if not os.access(p, os.R_OK):
                raise RuntimeError(f"{p} (needed by the interpreter {python}) is not readable by the sandbox uid "
                                   f"{os.getuid()} inside the jail (a directory on its path not o+x, or the file "
                                   "not o+r?)")
        import fcntl

        status_fd = fcntl.fcntl(status_fd, fcntl.F_DUPFD_CLOEXEC, 100)  # clear of 0-4
        if rpc is not None:  # the request / reply pipes at fds 3 and 4
            hi = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in rpc]
            os.dup2(hi[0], 3)
            os.dup2(hi[1], 4)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.closerange(3 if rpc is None else 5, status_fd)
        os.closerange(status_fd + 1, 65536)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        os.write(status_fd, b"R " + json.dumps(report).encode() + b"\n")
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


# --------------------------------------------------------------------------------------------
# T: the sandbox's init, and the judge
# --------------------------------------------------------------------------------------------
def _t_main(cfg, jail, judge_mod, mode, program: bytes, ev: int, need, site) -> None:
    """Never returns. Events to L on ``ev``: setup / setup_error, v (verdicts), exit."""
    try:
        os.closerange(3, ev)  # nothing of L's but the event pipe
        os.closerange(ev + 1, 65536)
        jail.die_with_parent()
        uid, gid = int(cfg["uid"]), int(cfg["gid"])
        treport = {}
        if mode == "unsafe":
            workdir = tempfile.mkdtemp(prefix="r1jax-sandbox-")
            treport["workdir"] = workdir
        else:
            err = jail._unshare(jail.CLONE_NEWNS)  # a mount namespace of T's own: L keeps the host's view
            if err:
                raise OSError(err, "unshare(CLONE_NEWNS) for the sandbox's root")
            treport = jail.build_root(jail.interpreter_paths(), uid=uid, gid=gid, proc=cfg.get("pidns", True),
                                      workdir=True, tmp_size_mb=int(cfg["max_file_mb"]) * 4,
                                      shm_size_mb=int(cfg["max_file_mb"]),
                                      hide_from_others=(mode == "root"))
            workdir = treport["workdir"]
        path = os.path.join(workdir, "main.py")
        with open(path, "wb") as f:
            f.write(program)
        os.chmod(path, 0o644)
        status_r, status_w = os.pipe()  # close-on-exec
        rpc_child = rpc_mine = None
        if cfg.get("judge") is not None:
            req_r, req_w = os.pipe()
            rep_r, rep_w = os.pipe()
            rpc_child, rpc_mine = (req_r, rep_w), (req_w, rep_r)
        if mode != "unsafe" and cfg.get("pidns", True):
            err = jail._unshare(jail.CLONE_NEWPID)
            if err:
                raise OSError(err, "unshare(CLONE_NEWPID) for the program")
        pid = os.fork()
        if pid == 0:
            os.close(status_r)
            if rpc_mine is not None:
                os.close(rpc_mine[0])
                os.close(rpc_mine[1])
            _child(cfg, jail, mode, workdir, status_w, rpc_child, need)
            os._exit(125)
        os.close(status_w)
        if rpc_child is not None:
            os.close(rpc_child[0])
            os.close(rpc_child[1])
        child_report, setup_error = _read_status(status_r)
        os.close(status_r)
        if setup_error is None and child_report is None:
            setup_error = "the sandbox child exited during its setup"
        if setup_error is not None:
            _send(ev, {"setup_error": setup_error})
            os._exit(0)
        treport.update(child_report)
        treport["pid"] = pid
        _send(ev, {"setup": treport})
        if mode != "unsafe":
            jail.drop_privileges(mode, uid, gid)
        jail.not_dumpable()
        import resource

        jail.set_rlimits({resource.RLIMIT_AS: int(cfg["memory_mb"]) * 1024 * 1024, resource.RLIMIT_CORE: 0})
        if rpc_mine is not None:
            sys.path.extend(p for p in site if p not in sys.path)  # tests may import installed packages
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            try:  # from here on the program ran: a failure of the judge fails the remaining tests, it is no setup error
                judge_mod.judge(cfg["judge"], rpc_mine[0], rpc_mine[1], lambda i, ok: _send(ev, {"v": [i, bool(ok)]}))
            except BaseException as e:  # noqa: BLE001
                _send(ev, {"judge_error": f"{type(e).__name__}: {e}"[:2000]})
            try:
                sys.stdout.flush()
            except (OSError, ValueError):  # the output pipe is gone: the verdicts are already sent
                pass
            os.close(rpc_mine[0])  # EOF for the candidate's server: it returns
            deadline = time.monotonic() + 0.5
            done = (0, 0)
            while time.monotonic() < deadline:
                done = os.waitpid(pid, os.WNOHANG)
                if done[0] == pid:
                    break
                time.sleep(0.002)
            if done[0] != pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                done = os.waitpid(pid, 0)
            status = done[1]
        else:
            _, status = os.waitpid(pid, 0)
        _send(ev, {"exit": status})
        if mode == "unsafe":
            shutil.rmtree(workdir, ignore_errors=True)
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        try:
            _send(ev, {"setup_error": f"{type(e).__name__}: {e}"})
        finally:
            os._exit(125)


# --------------------------------------------------------------------------------------------
# L
# --------------------------------------------------------------------------------------------
def main() -> None:
    report = {"root": os.geteuid() == 0}
    try:
        cfg = json.loads(sys.argv[1])
        out_fd = int(cfg["report_fd"])
    except BaseException as e:  # noqa: BLE001
        print(f"sandbox launcher: bad config: {e}", file=sys.stderr)
        sys.exit(2)

    def emit(rep):
        try:
            os.write(out_fd, json.dumps(rep).encode())
        finally:
            os.close(out_fd)

    try:
        program = sys.stdin.buffer.read()
        jail = _load("_jail")
        judge_mod = _load("_judge") if cfg.get("judge") is not None else None
        jail.die_with_parent()
    except BaseException as e:  # noqa: BLE001
        report["setup_error"] = f"launcher start-up: {type(e).__name__}: {e}"
        emit(report)
        return
    isolation = cfg.get("isolation", "auto")
    mode = "unsafe" if isolation == "unsafe" else ("root" if report["root"] else "userns")
    report["mode"] = mode
    uid, gid = cfg.get("uid"), cfg.get("gid")
    if mode == "userns":
        uid = gid = jail.SANDBOX_ID
    elif mode == "unsafe":
        uid, gid = os.getuid(), os.getgid()
    cfg["uid"], cfg["gid"] = uid, gid
    if mode == "userns" and not cfg.get("pidns", True):
        report["setup_error"] = "a sandbox without root needs its PID namespace (pidns=False is for root only)"
        emit(report)
        return
    try:
        need = _preflight_paths(cfg.get("python") or sys.executable, jail)
        site = jail.site_packages()
        if mode != "unsafe":
            report.update(jail.enter_namespaces(pid=cfg.get("pidns", True)))
    except BaseException as e:  # noqa: BLE001  (JailError: isolation impossible -> the program does not run)
        report["setup_error"] = f"{type(e).__name__}: {e}"
        emit(report)
        return
    sys.stdout.flush()
    try:  # orphans of the sandbox re-parent to us (not to init), so we can reap them
        jail._lib().prctl(36, 1, 0, 0, 0)  # 36 = PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    ev_r, ev_w = os.pipe()
    t0 = time.monotonic()
    tpid = os.fork()
    if tpid == 0:
        os.close(ev_r)
        _t_main(cfg, jail, judge_mod, mode, program, ev_w, need, site)
        os._exit(125)
    os.close(ev_w)
    verdicts, status, setup, setup_error, timed_out = {}, None, None, None, False
    setup_deadline = t0 + 60.0
    deadline = None
    buf = b""
    eof = False
    while not eof:
        now = time.monotonic()
        limit = deadline if deadline is not None else setup_deadline
        if now >= limit:
            timed_out = deadline is not None
            if deadline is None:
                setup_error = "the sandbox did not finish its setup within 60 s"
            break
        r, _, _ = select.select([ev_r], [], [], limit - now)
        if not r:
            continue
        chunk = os.read(ev_r, 65536)
        if not chunk:
            eof = True
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "setup" in msg:
                setup = msg["setup"]
                deadline = time.monotonic() + float(cfg["timeout"])
                t_run = time.monotonic()
            elif "setup_error" in msg:
                setup_error = msg["setup_error"]
            elif "v" in msg:
                i, ok = msg["v"]
                verdicts.setdefault(str(int(i)), bool(ok))
            elif "exit" in msg:
                status = msg["exit"]
            elif "judge_error" in msg:
                report["judge_error"] = str(msg["judge_error"])
    for pid in (tpid, (setup or {}).get("pid") if mode == "unsafe" else None):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    os.waitpid(tpid, 0)
    os.close(ev_r)
    leftovers = 0
    if mode == "root" and uid is not None and not cfg.get("pidns", True):
        # with a PID namespace there is nothing to sweep: its init (T) is reaped only after every
        # process of the namespace has exited (and L can fork no more into the dead namespace)
        leftovers = sweep_uid(uid, gid)
    _reap()
    if setup is not None:
        report.update({k: v for k, v in setup.items() if k != "pid"})
    elif setup_error is None:
        setup_error = "the sandbox exited during its setup"
    if setup_error is not None:
        report["setup_error"] = setup_error
    rc = None
    if status is not None:
        try:
            rc = os.waitstatus_to_exitcode(status)
        except ValueError:
            rc = None
    elif timed_out:
        rc = -signal.SIGKILL
    report.update({"rc": rc, "timed_out": timed_out, "leftover_procs": leftovers, "uid": uid,
                   "wall_s": round(time.monotonic() - (t_run if setup is not None else t0), 4)})
    if cfg.get("judge") is not None:
        report["verdicts"] = verdicts
    report.setdefault("uid_dropped", False)
    emit(report)


if __name__ == "__main__":
    main()
