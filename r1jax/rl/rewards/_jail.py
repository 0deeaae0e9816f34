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
   read-only, and optionally mount a fresh size-limited tmpfs at ``/tmp`` holding the work
   directory ``/tmp/work`` (owned by the sandbox uid, mode 0700) - the only writable place.

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
    paths = {os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, sys.exec_prefix}
    try:
        import site

        extra = list(site.getsitepackages()) + [site.getusersitepackages()]
    except Exception:  # noqa: BLE001
        extra = []
    for p in list(sys.path) + extra:
        if p and os.path.isabs(p) and os.path.exists(p):
            paths.add(os.path.realpath(p))
    return sorted(paths)


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
    """Namespaces + read-only filesystem (see module docstring). Returns a report dict."""
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
            _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=755,size={int(tmp_size_mb)}m")
            os.mkdir(WORKDIR, 0o700)
            os.chown(WORKDIR, uid, gid)
            report["workdir"] = WORKDIR
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
