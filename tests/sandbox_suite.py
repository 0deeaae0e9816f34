"""Hostile programs against the code sandbox, run by whatever uid runs this (root in-process from
tests/test_rewards_code.py; an unprivileged uid as ``python tests/nonroot.py 65534 -- python
tests/sandbox_suite.py``, which prints ``SUITE <json>``).

Each case returns ``{"ok": bool, "detail": str}``; ``ok`` means contained: a loop and a fork bomb
are killed at the limit with nothing left behind; 50 GB cannot be allocated; no file outside the
work dir is written; no host file is read (a world-readable one and a 0600 one of the running uid);
no connection reaches a listener on the host's loopback; the parent's environment secret is not
visible; the parent and the test process cannot be killed; and the code reward's verdicts cannot
be forged while an honest solution still scores 1.0.
"""
import json
import os
import socket
import sys
import threading
import time
import uuid

from r1jax.rewards import code_reward
from r1jax.rewards._sandbox_launcher import pids_of_uid
from r1jax.rewards.code import run_tests
from r1jax.rewards.sandbox import SandboxError, sandbox_capabilities

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 5) == 5"]


def _sandboxed_leftovers(res) -> list[int]:
    """Processes of this run's sandbox still alive (zombies too): its uid (root mode), or this uid in
    another PID namespace (user-namespace mode: the sandbox's processes count as the caller's uid)."""
    if res.report.get("mode") == "root":
        return pids_of_uid(res.report["uid"], include_zombies=True)
    me, mine = os.getuid(), os.readlink("/proc/self/ns/pid")
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                uid = int(next(ln for ln in f if ln.startswith("Uid:")).split()[1])
            if uid == me and os.readlink(f"/proc/{name}/ns/pid") != mine:
                out.append(int(name))
        except (OSError, StopIteration, ValueError):
            continue
    return out


def _nothing_left(res, timeout: float = 5.0) -> list[int]:
    deadline = time.time() + timeout
    left = _sandboxed_leftovers(res)
    while left and time.time() < deadline:
        time.sleep(0.05)
        left = _sandboxed_leftovers(res)
    return left


def case_loop():
    t0 = time.perf_counter()
    passed, res = run_tests("def f():\n    while True:\n        pass\n", ["f()"], timeout=2)
    wall = time.perf_counter() - t0
    left = _nothing_left(res)
    return {"ok": passed == [False] and res.timed_out and wall < 10 and not left,
            "detail": f"passed={passed} timed_out={res.timed_out} wall={wall:.1f}s left={left}"}


def case_fork_bomb():
    bomb = "import os\ndef f():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n            pass\n"
    t0 = time.perf_counter()
    passed, res = run_tests(bomb, ["f()"], timeout=2)
    wall = time.perf_counter() - t0
    left = _nothing_left(res)
    return {"ok": passed == [False] and wall < 20 and not left, "detail": f"passed={passed} wall={wall:.1f}s left={left}"}


def case_memory():
    code = "def f():\n    x = bytearray(50 * 1024 ** 3)\n    return len(x)\n"
    passed, res = run_tests(code, ["assert f() == 50 * 1024 ** 3"], timeout=10, memory_mb=512)
    return {"ok": passed == [False] and "MemoryError" in res.output, "detail": res.output[-300:]}


def case_write_outside():
    base = f"/tmp/r1jax-suite-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.makedirs(base)
    os.chmod(base, 0o777)
    keep = os.path.join(base, "keep.txt")
    with open(keep, "w") as f:
        f.write("original")
    os.chmod(keep, 0o666)
    home = os.path.expanduser("~")
    targets = [os.path.join(base, "pwned"), keep, f"/tmp/r1jax-pwned-{os.getpid()}", "/dev/shm/r1jax-pwned",
               os.path.join(home, f"r1jax-pwned-{os.getpid()}"), os.path.abspath(__file__) + ".pwned"]
    code = (
        "import os\n"
        "def escape():\n"
        "    wrote = []\n"
        f"    for p in {targets!r}:\n"
        "        try:\n"
        "            with open(p, 'w') as f:\n"
        "                f.write('pwned')\n"
        "            wrote.append(p)\n"
        "        except OSError:\n"
        "            pass\n"
        "    with open('scratch.txt', 'w') as f:\n"  # the work dir itself is writable
        "        f.write('ok')\n"
        "    return wrote\n"
    )
    try:
        # writable inside: the work dir and the sandbox's own /dev/shm (private tmpfs); the host's are untouched
        passed, res = run_tests(code, ["w = escape(); assert all(p.startswith(('/tmp/work', '/dev/shm/')) for p in w), w"])
        on_host = [p for p in targets if os.path.exists(p) and p != keep]
        with open(keep) as f:
            kept = f.read() == "original"
        return {"ok": passed == [True] and not on_host and kept, "detail": f"{passed} on_host={on_host} {res.output[-300:]}"}
    finally:
        for p in targets:
            if p != keep and os.path.exists(p) and not p.startswith(base):
                os.remove(p)
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def case_read_outside():
    secret = f"r1jax-secret-{uuid.uuid4().hex}"
    base = f"/tmp/r1jax-suite-read-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.makedirs(base, mode=0o755)
    private, public = os.path.join(base, "private.txt"), os.path.join(base, "public.txt")
    for p, mode in ((private, 0o600), (public, 0o644)):
        with open(p, "w") as f:
            f.write(secret)
        os.chmod(p, mode)
    paths = [private, public, os.path.abspath(__file__), "/etc/passwd", "/etc/hostname",
             os.path.join(os.path.expanduser("~"), ".bashrc")]
    code = (
        "def peek():\n"
        "    seen = []\n"
        f"    for p in {paths!r}:\n"
        "        try:\n"
        "            with open(p) as f:\n"
        "                seen.append((p, f.read()[:100]))\n"
        "        except OSError:\n"
        "            pass\n"
        "    return seen\n"
    )
    try:
        passed, res = run_tests(code, ["s = peek(); print('SEEN', s); assert s == []"])
        return {"ok": passed == [True] and secret not in res.output, "detail": res.output[-400:]}
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


def case_network():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)
                return
            except OSError:
                continue

    th = threading.Thread(target=accept)
    th.start()
    code = (
        "import socket\n"
        "def reach():\n"
        "    try:\n"
        f"        s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "        s.sendall(b'hello')\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
    )
    try:
        passed, res = run_tests(code, ["assert reach() is False"], timeout=5)
        time.sleep(0.3)
    finally:
        stop.set()
        th.join()
        srv.close()
    return {"ok": passed == [True] and accepted == [], "detail": f"{passed} accepted={len(accepted)}"}


def case_environment():
    secret = f"r1jax-env-secret-{uuid.uuid4().hex}"
    os.environ["R1JAX_TEST_SECRET"] = secret
    me = os.getpid()
    code = (
        "import os\n"
        "def leak():\n"
        f"    found = any(v == {secret!r} for v in os.environ.values())\n"
        f"    for pid in (os.getppid(), {me}, 1):\n"
        "        try:\n"
        "            with open(f'/proc/{pid}/environ', 'rb') as f:\n"
        f"                found = found or {secret.encode()!r} in f.read()\n"
        "        except OSError:\n"
        "            pass\n"
        "    print(sorted(os.environ))\n"
        "    return found\n"
    )
    try:
        passed, res = run_tests(code, ["assert leak()"])
    finally:
        del os.environ["R1JAX_TEST_SECRET"]
    return {"ok": passed == [False] and secret not in res.output, "detail": res.output[-300:]}


def case_kill_parent():
    me = os.getpid()
    code = (
        "import os, signal\n"
        "def kill_all():\n"
        "    hits = []\n"
        f"    for pid in (os.getppid(), {me}):\n"
        "        if pid <= 1:\n"
        "            continue\n"
        "        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n"
        "            hits.append(pid)\n"
        "        except OSError:\n"
        "            pass\n"
        "    for pid in range(2, 300):\n"
        "        try:\n"
        "            os.kill(pid, signal.SIGSTOP)\n"
        "            hits.append(pid)\n"
        "        except OSError:\n"
        "            pass\n"
        "    try:\n"
        f"        os.killpg(os.getpgid({me}), signal.SIGKILL)\n"
        "        hits.append('pgrp')\n"
        "    except OSError:\n"
        "        pass\n"
        "    return hits\n"
    )
    passed, res = run_tests(code, ["assert kill_all() == []"])
    return {"ok": os.getpid() == me and passed == [True], "detail": f"{passed} {res.output[-300:]}"}


def case_kernel_state():
    """No kernel keyring (the trainer's session keys, the uid's key quota), no System V shared memory
    or memfd (kernel memory outside RLIMIT_AS), no namespace of its own (a user namespace would give
    it capabilities): all refused by the sandbox's seccomp filter."""
    nrs = {"x86_64": (250, 248, 29, 319), "aarch64": (219, 217, 194, 279)}.get(os.uname().machine)
    if nrs is None:
        return {"ok": True, "detail": f"no seccomp filter on {os.uname().machine}: not checked"}
    code = (
        "import ctypes\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def probe():\n"
        f"    out = [libc.syscall({nrs[0]}, 0, -3, 0, 0, 0), ctypes.get_errno()]\n"  # keyctl(GET_KEYRING_ID, session)
        f"    out += [libc.syscall({nrs[1]}, b'user', b'x', b'v', 1, -3), ctypes.get_errno()]\n"  # add_key
        f"    out += [libc.syscall({nrs[2]}, 0, 1 << 20, 0o1600), ctypes.get_errno()]\n"  # shmget(IPC_PRIVATE)
        f"    out += [libc.syscall({nrs[3]}, b'x', 0), ctypes.get_errno()]\n"  # memfd_create
        "    out += [libc.unshare(0x10000000), ctypes.get_errno()]\n"  # a user namespace of its own
        "    return out\n"
    )
    passed, res = run_tests(code, ["assert probe() == [-1, 1] * 5"])
    return {"ok": passed == [True], "detail": res.output[-300:]}


def case_honest_runtime():
    """What honest programs use still works inside: threads, fork, a Python subprocess, a
    multiprocessing pool (POSIX semaphores in /dev/shm)."""
    code = (
        "import multiprocessing as mp, os, subprocess, sys, threading\n"
        "def run():\n"
        "    t = threading.Thread(target=lambda: None)\n    t.start()\n    t.join()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n        os._exit(3)\n"
        "    rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n"
        "    sub = subprocess.run([sys.executable, '-c', 'print(42)'], capture_output=True, text=True).stdout.strip()\n"
        "    with mp.Pool(2) as p:\n        pool = p.map(abs, [-1, -2])\n"
        "    return rc, sub, pool\n"
    )
    passed, res = run_tests(code, ["assert run() == (3, '42', [1, 2])"], timeout=30)
    return {"ok": passed == [True], "detail": res.output[-500:]}


def case_forgery():
    """An honest add scores 1.0; a wrong one that reads the process' memory and prints pass lines, 0.0."""
    honest = code_reward("```python\ndef add(a, b):\n    return a + b\n```", ADD_TESTS)
    forged = code_reward(
        "```python\n"
        "import gc, os, re, sys\n"
        "def add(a, b):\n    return -1\n"
        "for o in gc.get_objects():\n"
        "    if isinstance(o, dict):\n"
        "        for v in list(o.values()):\n"
        "            if isinstance(v, str) and re.fullmatch(r'[0-9a-f]{32}', v):\n"
        "                for i in range(9):\n"
        "                    sys.stdout.write('\\n%s %d 1\\n' % (v, i))\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
        "```",
        ADD_TESTS,
    )
    return {"ok": honest == 1.0 and forged == 0.0, "detail": f"honest={honest} forged={forged}"}


CASES = {k[5:]: v for k, v in dict(globals()).items() if k.startswith("case_")}


def run_suite() -> dict:
    caps = sandbox_capabilities()
    if not caps.get("works"):
        return {"_caps": caps}
    out = {"_caps": {k: caps.get(k) for k in ("mode", "uid_dropped", "netns", "mountns", "pidns", "minimal_root")}}
    for name, fn in CASES.items():
        try:
            out[name] = fn()
        except SandboxError as e:
            out[name] = {"ok": False, "detail": f"SandboxError: {e}"}
    return out


if __name__ == "__main__":
    print("SUITE " + json.dumps(run_suite()))
    sys.stdout.flush()
