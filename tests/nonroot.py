"""Run a command as an unprivileged uid, as a user without root would (tests only; must start as root).

    python tests/nonroot.py UID [--no-userns] -- python script.py ...

Like ``setpriv --reuid UID --regid UID --clear-groups``, with one addition: the Python
installation and the repository stay reachable for that uid when they live under a directory
others cannot enter (pyenv under a mode-0700 /root): in a private mount namespace, each such
directory is covered by a tmpfs with the needed entries bound back (nothing is changed on the
host). The command then runs with no capabilities at all, as a cluster user would.

``--no-userns``: a seccomp filter makes ``unshare``/``clone`` with CLONE_NEWUSER fail with EPERM,
as on a machine whose administrator disabled unprivileged user namespaces (the sandbox must then
refuse to run untrusted code).
"""
import ctypes
import os
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND, MS_REC, MS_PRIVATE, MS_REMOUNT, MS_RDONLY = 4096, 16384, 1 << 18, 32, 1
LIBC = ctypes.CDLL(None, use_errno=True)


def _mount(src, tgt, fstype, flags, data=None):
    enc = (lambda s: None if s is None else os.fsencode(s))
    if LIBC.mount(enc(src), enc(tgt), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} -> {tgt}: {os.strerror(e)}")


def _traversable(p):
    try:
        return bool(os.stat(p).st_mode & 0o001)
    except OSError:
        return True


def expose(paths):
    """Cover each directory others cannot traverse on the way to ``paths``; bind the needed child back."""
    for _ in range(16):
        hidden = None
        for p in paths:
            parts = p.strip("/").split("/")
            for k in range(1, len(parts)):
                anc = "/" + "/".join(parts[:k])
                if not _traversable(anc):
                    hidden = anc
                    break
            if hidden:
                break
        if not hidden:
            return
        depth = hidden.count("/") + 1
        children = sorted({"/" + "/".join(p.strip("/").split("/")[:depth]) for p in paths if p.startswith(hidden + "/")})
        fds = [(c, os.open(c, os.O_PATH)) for c in children if os.path.exists(c)]
        _mount("tmpfs", hidden, "tmpfs", 0, "mode=755,size=64k")
        for c, fd in fds:
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.mkdir(c)
            else:
                open(c, "w").close()
            _mount(f"/proc/self/fd/{fd}", c, None, MS_BIND | MS_REC)
            os.close(fd)


def deny_user_namespaces():
    """seccomp: unshare(flags & CLONE_NEWUSER) and clone(flags & CLONE_NEWUSER) -> EPERM; clone3 -> ENOSYS."""
    import platform

    nrs = {"x86_64": (272, 56, 435), "aarch64": (97, 220, 435)}[platform.machine()]
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}[platform.machine()]
    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
    ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
    prog = [
        (LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, ALLOW),  # other arch: allow
        (LD, 0, 0, 0),
        (JEQ, 0, 1, nrs[2]), (RET, 0, 0, ENOSYS),  # clone3: glibc falls back to clone
        (JEQ, 1, 0, nrs[0]), (JEQ, 0, 3, nrs[1]),  # unshare or clone -> check args[0]
        (LD, 0, 0, 16), (JSET, 0, 1, CLONE_NEWUSER), (RET, 0, 0, EPERM),
        (RET, 0, 0, ALLOW),
    ]
    buf = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    filt = ctypes.create_string_buffer(buf)

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    p = Prog(len(prog), ctypes.addressof(filt))
    LIBC.prctl(38, 1, 0, 0, 0)  # no_new_privs (required for an unprivileged filter)
    if LIBC.prctl(22, 2, ctypes.byref(p), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp filter")


def main():
    args = sys.argv[1:]
    sep = args.index("--")
    opts, cmd = args[:sep], args[sep + 1:]
    uid = int(opts[0])
    if LIBC.unshare(CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "r1jax", "rewards"))
    import _jail  # noqa: E402  (the library's own list of what the interpreter needs)

    need = _jail.interpreter_paths() + [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    need += [os.path.realpath(c) for c in cmd if os.path.isabs(c) and os.path.exists(c)]
    expose(sorted(set(need)))
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if "--no-userns" in opts:
        deny_user_namespaces()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HOME="/tmp", USER="nobody")
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
