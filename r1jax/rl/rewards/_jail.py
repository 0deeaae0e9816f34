"""Process confinement primitives for untrusted work (stdlib + ctypes only; Linux).

Used by the code sandbox launcher (:mod:`r1jax.rl.rewards._sandbox_launcher`) and by the
math-verify workers. Everything degrades gracefully: each step that the OS refuses is skipped
and recorded in the returned report, so callers can tell what was enforced.

:func:`enter_jail` does, in this order, in the calling (single-threaded) process:

1. ``unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS [| CLONE_NEWPID])`` -
   a private mount table, a network namespace with only a downed loopback (no network at all,
   127.0.0.1 unreachable), private SysV IPC. With ``CLONE_NEWPID`` the *next forked child* is
   PID 1 of a new PID namespace (the caller forks); when it dies the kernel kills the rest.
2. (new mount namespace only) make every mount private, remount every mount except ``/proc``
   and ``/dev`` **read-only**, cover ``/dev/shm`` with an empty read-only tmpfs, cover the
   directories that hide the Python installation from unprivileged users (e.g. ``/root`` with
   mode 0700 when Python lives in ``/root/.pyenv``) with a tmpfs and bind the installation back
   read-only, and optionally (``workdir=True``) mount a fresh size-limited tmpfs at ``/tmp``
   holding the work directory ``/tmp/work`` (owned by the sandbox uid, mode 0700) - the only
   writable place.

Interpreters under ``/tmp`` (``python -m venv /tmp/venv``, a conda env or pyenv root there):
the fresh ``/tmp`` tmpfs would hide them, so before mounting it :func:`enter_jail` opens an
``O_PATH`` fd of each piece of the installation that lies under ``/tmp`` (see
:func:`interpreter_paths`: ``sys.executable`` and every link of its symlink chain, the venv
directory holding ``pyvenv.cfg``, the prefixes, stdlib, site-packages and the shared libraries
the interpreter has mapped), and after mounting it recreates their parent directories (root-owned, mode
0755: not writable by the sandbox uid) and bind-mounts each piece back at its old path,
read-only, ``nosuid``, ``nodev``; symlinks on the way (``bin/python -> python3``, a symlinked
directory) are recreated as symlinks. ``/tmp`` itself stays root-owned 0755, so ``/tmp/work``
is still the only writable place. An installation that *is* ``/tmp`` or lies inside
``/tmp/work`` cannot be confined this way: :class:`JailError` (nothing mounted over ``/tmp``).

Errors: a step the OS refuses is skipped and recorded (``mount_error``), except failures that
would leave the confined process unable to run its interpreter (the ``/tmp`` re-exposure
above), which raise :class:`JailError`.

:func:`drop_privileges` then sets rlimits, ``setgroups([])``, ``setgid``/``setuid`` to the
unprivileged ids, and ``PR_SET_PDEATHSIG(SIGKILL)`` (after the uid change, which clears it).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

_OPT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}

WORKDIR = "/tmp/work"
TMP = "/tmp"


class JailError(RuntimeError):
    """The jail cannot be set up so that the confined interpreter can still run (see module doc)."""

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _b(s):
    return None if s is None else os.fsencode(s)


def _mount(src, tgt, fstype, flags, data=None) -> None:
    if _lib().mount(_b(src), _b(tgt), _b(fstype), ctypes.c_ulong(flags), _b(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} -> {tgt}: {os.strerror(e)}")


def _unshare(flags: int) -> bool:
    try:
        return _lib().unshare(ctypes.c_int(flags)) == 0
    except (AttributeError, OSError):  # not Linux
        return False


def _mounts() -> list[tuple[str, int]]:
    """(mount point, preserved flags) from /proc/self/mountinfo, parents first."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].encode().decode("unicode_escape")  # \040 etc.
            flags = 0
            for o in parts[5].split(","):
                flags |= _OPT_FLAGS.get(o, 0)
            out.append((mp, flags))
    return out


def _others_can_traverse(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o001)
    except OSError:
        return True


def _python_paths() -> list[str]:
    paths = set(interpreter_paths())
    for p in sys.path:
        if p and os.path.isabs(p) and os.path.exists(p):
            paths.add(os.path.realpath(p))
    return sorted(paths)


def _symlink_chain(path: str) -> list[str]:
    """``path`` and every symlink it leads through (final component only), then its realpath."""
    out = []
    p = os.path.normpath(os.path.abspath(path))
    for _ in range(40):
        out.append(p)
        if not os.path.islink(p):
            break
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    out.append(os.path.realpath(path))
    return out


def _mapped_libraries() -> list[str]:
    """Shared libraries mapped into this process (``libpython`` found through an absolute RUNPATH,
    a conda env's ``lib/``): the interpreter cannot start without them."""
    out = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/") and ".so" in parts[5]:
                    p = parts[5].strip()
                    if not p.endswith(" (deleted)"):
                        out.add(p)
    except OSError:
        pass
    return sorted(out)


def interpreter_paths() -> list[str]:
    """What a fresh ``python -I`` of this installation needs to start (not resolved, no duplicates).

    ``sys.executable`` with its symlink chain (a venv's ``bin/python -> python3 -> /base/python3``),
    the venv directory holding ``pyvenv.cfg`` beside or above the executable (found the way
    Python's getpath finds it: under ``-S`` ``sys.prefix`` is the base installation's),
    ``sys.prefix``, ``exec_prefix``, ``base_prefix``,
    ``base_exec_prefix``, the stdlib directory, the site-packages directories, and the entries of
    ``sys.path`` that lie inside one of the prefixes (``lib-dynload``, the stdlib zip) - not the
    running script's own directory - and the shared libraries mapped into this process.
    """
    paths = []
    prefixes = [p for p in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix} if p]
    if sys.executable:
        chain = _symlink_chain(sys.executable)
        paths += chain
        for exe in chain:  # a venv: pyvenv.cfg beside or one above the executable (as getpath looks;
            for d in (os.path.dirname(exe), os.path.dirname(os.path.dirname(exe))):  # under -S,
                if os.path.isfile(os.path.join(d, "pyvenv.cfg")):  # sys.prefix is the base's)
                    prefixes.append(d)
                    paths.append(os.path.join(d, "pyvenv.cfg"))  # (for _expose of a mode-0700 venv)
                    break
    paths += prefixes
    if getattr(os, "__file__", None):
        paths.append(os.path.dirname(os.__file__))
    try:
        import site

        paths += list(site.getsitepackages(prefixes))  # with the venv's (not in sys.path under -S)
    except Exception:  # noqa: BLE001
        pass
    for p in sys.path:
        if p and os.path.isabs(p) and any(p == q or p.startswith(q.rstrip("/") + "/") for q in prefixes):
            paths.append(p)
    paths += _mapped_libraries()
    out, seen = [], set()
    for p in paths:
        p = os.path.normpath(p)
        if p not in seen and os.path.isabs(p) and os.path.lexists(p):
            seen.add(p)
            out.append(p)
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _tmp_plan(paths: list[str], root: str = TMP, workdir: str = WORKDIR) -> tuple[list[str], dict[str, str]]:
    """(real paths under ``root`` to bind back, {symlink path: link text} to recreate there).

    Each path under ``root`` is walked component by component; a symlink on the way is recorded
    and its target followed, so the binds are real, non-nested paths (a bind inside another is
    dropped: it comes with it). Raises :class:`JailError` for ``root`` itself or ``workdir``.
    """
    binds, links, seen = set(), {}, set()
    todo = [os.path.normpath(p) for p in paths if _under(os.path.normpath(p), root)]
    while todo:
        p = todo.pop()
        if p in seen or len(seen) > 1000:
            continue
        seen.add(p)
        if p == root or _under(p, workdir):
            raise JailError(_bad_location(p, root, workdir))
        rel = p[len(root.rstrip("/")) + 1 :].split("/")
        cur = root.rstrip("/")
        for i, part in enumerate(rel):
            cur = cur + "/" + part
            if os.path.islink(cur):
                text = os.readlink(cur)
                links[cur] = text
                target = os.path.normpath(os.path.join(os.path.dirname(cur), text, *rel[i + 1 :]))
                if _under(target, root):
                    todo.append(target)
                break
        else:
            if os.path.exists(p):
                binds.add(p)
    binds = sorted(b for b in binds if not any(o != b and _under(b, o) for o in binds))
    links = {k: v for k, v in links.items() if not any(_under(k, b) for b in binds)}
    for k in list(binds) + list(links):
        if k == root or _under(k, workdir):
            raise JailError(_bad_location(k, root, workdir))
    return binds, links


def _bad_location(p: str, root: str, workdir: str) -> str:
    where = f"is {root} itself" if p == root else f"lies inside the sandbox work dir {workdir}"
    return (
        f"the Python installation path {p} {where}, which the sandbox replaces with an empty private "
        f"directory, so the sandboxed interpreter could not start; install Python / create the venv "
        f"elsewhere (another directory under {root}, or $HOME)"
    )


def _makedirs_root(path: str) -> None:
    """mkdir -p with mode 0755 (whatever the umask) for directories created here."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, 0o755)


def _mount_tmp(paths: list[str], uid: int, gid: int, size_mb: int, report: dict) -> None:
    """Fresh tmpfs on /tmp with the work dir; bind the interpreter pieces under /tmp back read-only."""
    binds, links = _tmp_plan(paths)
    fds = []
    try:
        for b in binds:
            fds.append((b, os.open(b, os.O_PATH)))
        _mount("tmpfs", TMP, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=755,size={int(size_mb)}m")
        os.mkdir(WORKDIR, 0o700)
        os.chown(WORKDIR, uid, gid)
        report["workdir"] = WORKDIR
        try:
            for b, fd in fds:
                _makedirs_root(os.path.dirname(b))
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(b)
                else:
                    os.close(os.open(b, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                _mount(f"/proc/self/fd/{fd}", b, None, MS_BIND | MS_REC)
                _mount(None, b, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            for k, text in sorted(links.items()):
                _makedirs_root(os.path.dirname(k))
                if not os.path.lexists(k):
                    os.symlink(text, k)
        except OSError as e:
            raise JailError(f"could not bind the Python installation under {TMP} back into the sandbox: {e}") from e
        if binds or links:
            report["tmp_binds"] = binds
            if links:
                report["tmp_links"] = sorted(links)
    finally:
        for _, fd in fds:
            os.close(fd)


def _expose(paths: list[str], report: dict) -> None:
    """Cover each non-traversable ancestor of ``paths`` with a tmpfs; bind the needed child back."""
    exposed = []
    for _ in range(8):  # nested hidden directories: repeat until all paths are reachable
        hidden = None
        for p in paths:
            parts = p.strip("/").split("/")
            for k in range(1, len(parts)):
                anc = "/" + "/".join(parts[:k])
                if not _others_can_traverse(anc):
                    hidden = (anc, "/" + "/".join(parts[: k + 1]))
                    break
            if hidden:
                break
        if not hidden:
            break
        anc = hidden[0]
        children = sorted(
            {
                "/" + "/".join(p.strip("/").split("/")[: anc.count("/") + 1])
                for p in paths
                if p.startswith(anc + "/")
            }
        )
        fds = [(c, os.open(c, os.O_PATH)) for c in children if os.path.exists(c)]
        _mount("tmpfs", anc, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for c, fd in fds:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.mkdir(c)
            else:
                open(c, "w").close()
            _mount(f"/proc/self/fd/{fd}", c, None, MS_BIND | MS_REC)
            _mount(None, c, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
            os.close(fd)
            exposed.append(c)
        _mount(None, anc, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    report["exposed"] = exposed


def python_reachable() -> bool:
    """Can a process of another uid exec this interpreter and read its stdlib (o+x on every dir)?"""
    for p in _python_paths():
        parts = p.strip("/").split("/")
        for k in range(1, len(parts)):
            if not _others_can_traverse("/" + "/".join(parts[:k])):
                return False
    return True


def enter_jail(*, new_pid: bool = False, new_net: bool = True, workdir: bool = True, uid: int = 65534,
               gid: int = 65534, tmp_size_mb: int = 64) -> dict:
    """Namespaces + read-only filesystem (see module docstring). Returns a report dict.

    Raises :class:`JailError` when the interpreter under ``/tmp`` cannot be kept reachable.
    """
    report = {"netns": False, "mountns": False, "pidns": False, "readonly_fs": False, "workdir": None}
    want = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    want |= (CLONE_NEWPID if new_pid else 0) | (CLONE_NEWNET if new_net else 0)
    if _unshare(want):
        got = want
    else:  # try what the OS permits, one namespace at a time
        got = 0
        for fl in (CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWPID):
            if fl & want and _unshare(fl):
                got |= fl
    report["netns"] = bool(got & CLONE_NEWNET)
    report["mountns"] = bool(got & CLONE_NEWNS)
    report["pidns"] = bool(got & CLONE_NEWPID)
    if not report["mountns"]:
        return report
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        skip = ("/proc", "/dev")
        for mp, flags in _mounts():
            if any(mp == s or mp.startswith(s + "/") for s in skip):
                continue
            try:
                _mount(None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
            except OSError:
                pass
        if os.path.isdir("/dev/shm"):
            _mount("tmpfs", "/dev/shm", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")
        _expose(_python_paths(), report)
        report["readonly_fs"] = True
        if workdir:
            _mount_tmp(interpreter_paths(), uid, gid, tmp_size_mb, report)
    except OSError as e:
        report["mount_error"] = str(e)
    return report


def mount_proc() -> bool:
    """Mount a fresh /proc (call in the new PID + mount namespace): shows only the sandbox's pids."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        return True
    except OSError:
        return False


def set_rlimits(limits: dict[int, int]) -> None:
    import resource

    for lim, val in limits.items():
        try:
            resource.setrlimit(lim, (val, val))
        except (ValueError, OSError):
            pass


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG(SIGKILL); exits at once if the parent is already gone."""
    ppid = os.getppid()
    try:
        _lib().prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != ppid:
        os._exit(0)


def drop_privileges(uid: int, gid: int) -> bool:
    """setgroups([]) + setgid + setuid when root; True if the process is now unprivileged."""
    if os.geteuid() != 0:
        return False
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    return True
