"""Confinement of untrusted work in a minimal root, as root or as any user (Linux; stdlib + ctypes only).

Loaded from its file (not imported as part of r1jax) by the code-sandbox launcher
(:mod:`r1jax.rewards._sandbox_launcher`) and the math-verify workers
(:mod:`r1jax.rewards._verify_worker`), which run as ``python -I [-S]``.

Two ways in, one result:

* **root** - :func:`enter_namespaces` unshares mount, network, IPC, UTS (and optionally PID)
  namespaces directly; the confined processes later drop to an unprivileged uid
  (:func:`drop_privileges`: ``setgroups([])``, ``setgid``, ``setuid``).
* **not root** - :func:`enter_namespaces` first unshares a *user* namespace that maps one inside
  id, :data:`SANDBOX_ID` (1000), to the caller's uid/gid (``setgroups`` denied), which gives the
  caller the capabilities to create the other namespaces and mounts inside it, and nothing on the
  host. The confined program then runs as uid 1000 with no capabilities: ``execve`` of a non-root
  uid drops them, and a process that does not exec calls :func:`drop_privileges` (``capset`` to
  empty sets). Its files and processes count as the caller's uid on the host; it cannot name any
  host process (PID namespace) and sees none of the host's files but those bound read-only below.

Where neither works (not root and unprivileged user namespaces disabled: ``sysctl
user.max_user_namespaces=0``, an AppArmor or seccomp policy), :func:`enter_namespaces` raises
:class:`JailError`: the caller refuses to run the untrusted work (fails closed).

:func:`build_root` (in the new mount namespace, before the untrusted code runs) then makes a
**minimal root** on a tmpfs and ``pivot_root``\\ s into it; the host's root is detached:

* read-only binds (``nosuid``, ``nodev``, the source mount's locked flags kept) of the system
  directories (``/usr``, ``/bin``, ``/sbin``, ``/lib*``, the dynamic loader's files of ``/etc``)
  and of the Python installation (:func:`interpreter_paths`: the executable's symlink chain, a
  venv with its ``pyvenv.cfg``, prefixes, stdlib, site-packages, mapped shared libraries), each
  at its own path, symlinks on the way recreated (:func:`bind_plan`); as root, a bound directory
  that other users cannot traverse (a 0700 venv or ``$HOME``) is replaced by its entries in a
  fresh 0755 directory;
* nothing else of the host: no ``$HOME``, ``/root``, ``/home``, ``/work``, ``/run`` sockets, ``/etc``
  files beyond the loader's;
* ``/dev`` with null, zero, full, random, urandom (bound) and the ``fd``/``std*`` links, and
  ``/dev/shm`` a tmpfs of ``shm_size_mb`` MiB (read-only and empty when 0);
* ``/proc`` of the caller's PID namespace when it is PID 1 of a new one (``proc=True``), else an
  empty directory;
* ``/tmp`` an empty read-only tmpfs holding ``/tmp/work`` (``workdir=True``): a tmpfs of
  ``tmp_size_mb`` MiB, mode 0700, owned by the confined uid - **the only writable place**;
* finally ``/`` (a tmpfs), ``/tmp`` and ``/dev`` are made read-only.

Each step that fails raises :class:`JailError`; nothing degrades silently. An installation that
*is* ``/tmp`` or lies inside ``/tmp/work`` cannot be bound (the fresh ``/tmp`` replaces it):
:class:`JailError` saying so.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
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
MNT_DETACH = 2

# statvfs f_flag bit -> mount flag: a bind in a user namespace must keep the source's locked flags
_ST_TO_MS = ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME),
             (4096, MS_RELATIME))
_PIVOT_ROOT_NR = {"x86_64": 155, "aarch64": 217, "arm64": 217, "ppc64le": 203, "ppc64": 203, "s390x": 217,
                  "riscv64": 41, "loongarch64": 41, "i686": 217, "i386": 217, "armv7l": 218, "armv8l": 218}

SANDBOX_ID = 1000  # the confined uid/gid inside a user namespace (mapped to the caller's ids)
WORKDIR = "/tmp/work"
TMP = "/tmp"
NEWROOT = "/tmp"  # where the minimal root is assembled (in the private mount namespace) before pivot_root
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ld.so.cache",
                "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
DEV_LINKS = {"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1",
             "/dev/stderr": "/proc/self/fd/2"}


class JailError(RuntimeError):
    """The confinement could not be set up (module docstring): the untrusted work must not run."""


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
        raise OSError(e, f"mount {src} -> {tgt} ({fstype or 'bind/remount'}): {os.strerror(e)}")


def _unshare(flags: int) -> int:
    """0 on success, else the errno."""
    try:
        if _lib().unshare(ctypes.c_int(flags)) == 0:
            return 0
        return ctypes.get_errno()
    except (AttributeError, OSError):  # not Linux
        return 38  # ENOSYS


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# namespaces
# --------------------------------------------------------------------------------------------
def enter_namespaces(*, pid: bool, net: bool = True) -> dict:
    """New mount/net/IPC/UTS (+ PID: for the next forked child) namespaces, via a user namespace
    when not root (module docstring); mounts made private. Call single-threaded. Raises JailError."""
    report = {"mode": "root" if os.geteuid() == 0 else "userns"}
    if report["mode"] == "userns":
        uid, gid = os.geteuid(), os.getegid()
        err = _unshare(CLONE_NEWUSER)
        if err:
            raise JailError(
                f"cannot isolate untrusted code: not root (uid {uid}) and unprivileged user namespaces are not "
                f"available (unshare(CLONE_NEWUSER): {os.strerror(err)}; see sysctl user.max_user_namespaces, "
                "kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns)")
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{SANDBOX_ID} {uid} 1\n")
            _write("/proc/self/gid_map", f"{SANDBOX_ID} {gid} 1\n")
        except OSError as e:
            raise JailError(f"user namespace: cannot write the uid/gid map: {e}") from e
        report["userns"] = True
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWNET if net else 0) | (CLONE_NEWPID if pid else 0)
    err = _unshare(flags)
    if err:
        raise JailError(f"cannot create the sandbox namespaces (mount, network, ipc, uts{', pid' if pid else ''}): "
                        f"unshare: {os.strerror(err)}")
    report.update(mountns=True, netns=bool(net), pidns=bool(pid))
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
    except OSError as e:
        raise JailError(f"cannot make the mounts private: {e}") from e
    return report


# --------------------------------------------------------------------------------------------
# what the confined interpreter needs
# --------------------------------------------------------------------------------------------
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
    ``sys.prefix``, ``exec_prefix``, ``base_prefix``, ``base_exec_prefix``, the stdlib directory,
    the site-packages directories, the entries of ``sys.path`` inside one of the prefixes
    (``lib-dynload``, the stdlib zip) - not the running script's own directory - and the shared
    libraries mapped into this process.
    """
    paths = []
    prefixes, cfg = _prefixes()
    if sys.executable:
        paths += _symlink_chain(sys.executable)
    if cfg:
        paths.append(cfg)  # (a mode-0700 venv is bound by its entries: the file itself must be there)
    paths += prefixes
    if getattr(os, "__file__", None):
        paths.append(os.path.dirname(os.__file__))
    paths += site_packages(prefixes)
    for p in sys.path:
        if p and os.path.isabs(p) and any(_under(p, q) for q in prefixes):
            paths.append(p)
    paths += _mapped_libraries()
    out, seen = [], set()
    for p in paths:
        p = os.path.normpath(p)
        if p not in seen and os.path.isabs(p) and os.path.lexists(p):
            seen.add(p)
            out.append(p)
    return out


def _prefixes() -> tuple[list[str], str | None]:
    """(the installation's prefixes, with a venv's directory; that venv's ``pyvenv.cfg`` or None).
    The venv is found the way Python's getpath finds it, beside or one above the executable or a
    link of its symlink chain (under ``-S``, ``sys.prefix`` is the base installation's)."""
    prefixes = [p for p in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix} if p]
    for exe in _symlink_chain(sys.executable) if sys.executable else []:
        for d in (os.path.dirname(exe), os.path.dirname(os.path.dirname(exe))):
            cfg = os.path.join(d, "pyvenv.cfg")
            if os.path.isfile(cfg):
                return prefixes + [d], cfg
    return prefixes, None


def venv_config() -> str | None:
    """This interpreter's venv ``pyvenv.cfg`` (without it the interpreter starts as the base one), or None."""
    return _prefixes()[1]


def site_packages(prefixes=None) -> list[str]:
    """The installation's site-packages directories (with a venv's, found from ``pyvenv.cfg``)."""
    if prefixes is None:
        prefixes = _prefixes()[0]
    try:
        import site

        return [p for p in site.getsitepackages(list(prefixes)) if os.path.isdir(p)]
    except Exception:  # noqa: BLE001
        return []


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _bad_location(p: str) -> str:
    where = f"is {TMP} itself" if p == TMP else f"lies inside the sandbox work dir {WORKDIR}"
    return (f"the Python installation path {p} {where}, which the sandbox replaces with an empty private "
            f"directory, so the sandboxed interpreter could not start; install Python / create the venv "
            f"elsewhere (another directory under {TMP}, or $HOME)")


def bind_plan(paths) -> tuple[list[str], dict[str, str]]:
    """(real paths to bind, {symlink path: link text} to recreate) so that every one of ``paths``
    resolves in the minimal root as on the host.

    Each path is walked component by component from ``/``; a symlink on the way is recorded and its
    target followed, so the binds are real, non-nested paths (a bind inside another is dropped: it
    comes with it). Raises :class:`JailError` for ``/`` (binding the host root would undo the jail),
    ``/tmp`` itself and paths inside the work dir.
    """
    binds, links, seen = set(), {}, set()
    todo = [os.path.normpath(os.path.abspath(p)) for p in paths]
    while todo:
        p = todo.pop()
        if p in seen or len(seen) > 10000:
            continue
        seen.add(p)
        if p == "/":
            raise JailError("refusing to bind the host's root directory into the sandbox")
        if p == TMP or _under(p, WORKDIR):
            raise JailError(_bad_location(p))
        rel = p.strip("/").split("/")
        cur = ""
        for i, part in enumerate(rel):
            cur = cur + "/" + part
            if os.path.islink(cur):
                text = os.readlink(cur)
                links[cur] = text
                todo.append(os.path.normpath(os.path.join(os.path.dirname(cur), text, *rel[i + 1:])))
                break
        else:
            if os.path.exists(p):
                binds.add(p)
    binds = sorted(b for b in binds if not any(o != b and _under(b, o) for o in binds))
    links = {k: v for k, v in links.items() if not any(_under(k, b) for b in binds)}
    for k in list(binds) + list(links):
        if k == TMP or _under(k, WORKDIR):
            raise JailError(_bad_location(k))
    return binds, links


def _others_can_traverse(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o001)
    except OSError:
        return True


def _split_hidden(binds: list[str], links: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Replace each bound directory that other users cannot traverse (mode 0700) by its entries, so
    that it appears as a fresh 0755 directory to the unprivileged uid (root mode only)."""
    out, todo = [], list(binds)
    for _ in range(10000):
        if not todo:
            break
        b = todo.pop()
        if os.path.isdir(b) and not os.path.islink(b) and not _others_can_traverse(b):
            for e in sorted(os.listdir(b)):
                c = os.path.join(b, e)
                if os.path.islink(c):
                    links[c] = os.readlink(c)
                else:
                    todo.append(c)
        else:
            out.append(b)
    return sorted(out), links


# --------------------------------------------------------------------------------------------
# the minimal root
# --------------------------------------------------------------------------------------------
def _makedirs(path: str) -> None:
    """mkdir -p with mode 0755 (whatever the umask)."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, 0o755)


def _locked_flags(path: str) -> int:
    """The mount flags of the mount at ``path`` that a remount must keep (atime, nosuid, nodev, noexec)."""
    st = os.statvfs(path).f_flag
    return sum(ms for s, ms in _ST_TO_MS if st & s)


def _bind(fd: int, target: str, *, readonly: bool = True) -> None:
    is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
    _makedirs(os.path.dirname(target))
    if not os.path.lexists(target):
        if is_dir:
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    if readonly:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | _locked_flags(target))


def _pivot_root(new: str, old: str) -> None:
    nr = _PIVOT_ROOT_NR.get(os.uname().machine)
    if nr is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    if _lib().syscall(ctypes.c_long(nr), _b(new), _b(old)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"pivot_root({new}, {old}): {os.strerror(e)}")


def build_root(paths, *, uid: int, gid: int, proc: bool, workdir: bool, tmp_size_mb: int = 64,
               shm_size_mb: int = 0, hide_from_others: bool = False) -> dict:
    """Assemble the minimal root (module docstring) with ``paths`` (and the system paths) bound
    read-only, ``pivot_root`` into it and detach the host's. ``uid``/``gid`` own the work dir;
    ``hide_from_others``: split directories the unprivileged uid cannot traverse (root mode).
    Call in a private mount namespace (:func:`enter_namespaces`). Returns a report; raises JailError."""
    report = {}
    binds, links = bind_plan(list(paths) + [p for p in SYSTEM_PATHS if os.path.lexists(p)])
    if hide_from_others:
        binds, links = _split_hidden(binds, links)
    devices = [d for d in DEVICES if os.path.exists(d)]
    fds = {}
    try:
        try:
            for p in binds + devices:
                fds[p] = os.open(p, os.O_PATH | os.O_CLOEXEC)
            R = NEWROOT.rstrip("/")
            _mount("tmpfs", NEWROOT, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=4m")
            _makedirs(R + TMP)
            _mount("tmpfs", R + TMP, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
            if workdir:
                os.mkdir(R + WORKDIR, 0o700)
                _mount("tmpfs", R + WORKDIR, "tmpfs", MS_NOSUID | MS_NODEV,
                       f"mode=700,uid={uid},gid={gid},size={int(tmp_size_mb)}m")
                report["workdir"] = WORKDIR
            for p in binds:
                _bind(fds[p], R + p)
            for k, text in sorted(links.items()):
                _makedirs(os.path.dirname(R + k))
                if not os.path.lexists(R + k):
                    os.symlink(text, R + k)
            _makedirs(R + "/dev")
            _mount("tmpfs", R + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
            for d in devices:
                _bind(fds[d], R + d, readonly=False)
            for k, text in DEV_LINKS.items():
                os.symlink(text, R + k)
            os.mkdir(R + "/dev/shm", 0o755)
            if shm_size_mb:  # POSIX shared memory and semaphores (multiprocessing), within its size
                _mount("tmpfs", R + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                       f"mode=1777,size={int(shm_size_mb)}m")
            else:
                _mount("tmpfs", R + "/dev/shm", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")
            _makedirs(R + "/proc")
            report["private_proc"] = False
            if proc:
                try:
                    _mount("proc", R + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                    report["private_proc"] = True
                except OSError as e:  # e.g. a container that masks parts of the host's /proc
                    report["proc_error"] = str(e)
            os.mkdir(R + "/.oldroot", 0o700)
        finally:
            for fd in fds.values():
                os.close(fd)
        _pivot_root(NEWROOT, NEWROOT.rstrip("/") + "/.oldroot")
        os.chdir("/")
        if _lib().umount2(b"/.oldroot", ctypes.c_int(MNT_DETACH)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"umount /.oldroot: {os.strerror(e)}")
        os.rmdir("/.oldroot")
        for m in ("/dev", TMP, "/"):
            _mount(None, m, None, MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(m))
    except OSError as e:
        raise JailError(f"cannot build the sandbox's root: {e}") from e
    report.update(readonly_fs=True, minimal_root=True, binds=binds)
    return report


# --------------------------------------------------------------------------------------------
# the confined process itself
# --------------------------------------------------------------------------------------------
PROC_MASKED = ("/proc/keys", "/proc/key-users", "/proc/sysrq-trigger", "/proc/kcore", "/proc/timer_list")


def mount_proc() -> bool:
    """Mount a fresh /proc over the current one (in a new PID + mount namespace: only its pids), with
    :data:`PROC_MASKED` (e.g. the key names other processes of the uid hold) covered by /dev/null."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        return False
    for p in PROC_MASKED:
        if os.path.exists(p):
            try:
                _mount("/dev/null", p, None, MS_BIND)
                _mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except OSError:
                return False
    return True


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


def no_new_privs() -> None:
    """PR_SET_NO_NEW_PRIVS: execve can never grant privileges (setuid files, file capabilities)."""
    _lib().prctl(38, 1, 0, 0, 0)


def not_dumpable() -> None:
    """PR_SET_DUMPABLE 0: processes of the same uid cannot ptrace this one or read its /proc/<pid>/mem."""
    _lib().prctl(4, 0, 0, 0, 0)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> None:
    """Empty effective/permitted/inheritable capability sets (a process that will not exec)."""
    hdr = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if _lib().capset(ctypes.byref(hdr), data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")


def drop_privileges(mode: str, uid: int, gid: int) -> None:
    """Root mode: ``setgroups([])``, ``setgid``, ``setuid`` to the unprivileged ids. User-namespace
    mode: the uid is already :data:`SANDBOX_ID`; drop every capability. Raises OSError."""
    if mode == "root":
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    elif mode == "userns":
        drop_capabilities()


# --------------------------------------------------------------------------------------------
# seccomp: syscalls the program never needs
# --------------------------------------------------------------------------------------------
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "arm64": 0xC00000B7}
_DENIED = {  # add_key, request_key, keyctl (the trainer's keyrings, the uid's key quota); shmget,
    # msgget, mq_open, memfd_create, memfd_secret (kernel memory outside RLIMIT_AS); unshare, setns
    # (no namespaces of its own: a user namespace would give it capabilities and tmpfs mounts); bpf,
    # perf_event_open, userfaultfd, io_uring_*, kexec_load, (f)init_module, delete_module
    "x86_64": (248, 249, 250, 29, 68, 240, 319, 447, 272, 308, 321, 298, 323, 425, 426, 427, 246, 175, 313, 176),
    "aarch64": (217, 218, 219, 194, 186, 180, 279, 447, 97, 268, 280, 241, 282, 425, 426, 427, 104, 105, 273, 106),
}
_DENIED["arm64"] = _DENIED["aarch64"]
_CLONE = {"x86_64": 56, "aarch64": 220, "arm64": 220}
_CLONE3 = 435
_CLONE_NAMESPACES = 0x7E020080  # CLONE_NEWTIME | NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET


def deny_syscalls() -> bool:
    """A seccomp filter (after no_new_privs): the kernel keyring calls, System V shared memory and
    message queues, POSIX message queues, memfds, new namespaces (unshare, setns, clone with a
    CLONE_NEW* flag; clone3 answers ENOSYS so libc uses clone) and other attack surface the program
    never needs fail with EPERM; x32 syscalls too. False where the architecture is unknown (x86_64 and
    aarch64 are known)."""
    import struct

    machine = os.uname().machine
    if machine not in _DENIED:
        return False
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, _AUDIT_ARCH[machine]), (ret, 0, 0, eperm), (ld, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]
    for nr in _DENIED[machine]:
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    enosys = 0x00050000 | 38
    prog += [(jeq, 0, 1, _CLONE3), (ret, 0, 0, enosys),  # clone3's flags are behind a pointer: glibc falls back
             (jeq, 1, 0, _CLONE[machine]), (ret, 0, 0, allow),  # to clone, whose flags are checked here
             (ld, 0, 0, 16), (jset, 0, 1, _CLONE_NAMESPACES), (ret, 0, 0, eperm), (ret, 0, 0, allow)]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))

    class _Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    p = _Prog(len(prog), ctypes.addressof(buf))
    if _lib().prctl(22, 2, ctypes.byref(p), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        e = ctypes.get_errno()
        raise OSError(e, f"seccomp filter: {os.strerror(e)}")
    return True


def oom_first() -> None:
    """oom_score_adj 1000: under memory pressure the kernel kills this process before the trainer."""
    try:
        _write("/proc/self/oom_score_adj", "1000\n")
    except OSError:
        pass
