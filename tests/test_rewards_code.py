"""Code reward: HumanEval canonical solutions, broken variants, and a hostile suite in the sandbox."""
import json
import os
import socket
import threading
import time
import warnings

import pytest

from r1jax.rl.rewards import code_reward, code_rewards, extract_code, sandbox_capabilities
from r1jax.rl.rewards._sandbox_launcher import pids_of_uid
from r1jax.rl.rewards.code import run_tests
from r1jax.rl.rewards.sandbox import NUM_SLOTS, UID_BASE, run_sandboxed

FAST_SUBSET = [0, 2, 10, 13, 32, 38, 53, 64, 96, 101, 120, 145, 160, 163]
OFF_BY_ONE_FAST = [4, 12, 14, 16, 18, 23, 37, 47]  # canonical with the first len(x) -> len(x) - 1


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}```\nDone."


def _humaneval(shared_data):
    with open(shared_data / "humaneval.jsonl") as f:
        return [json.loads(line) for line in f]


def _tests(row):
    return {"test": row["test"], "entry_point": row["entry_point"]}


def _launchers_of_this_process():
    """Launcher processes still running as children of the test process."""
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if ppid == me and b"_sandbox_launcher.py" in cmd:
            out.append(int(name))
    return out


def assert_nothing_left(res):
    """No process of the run's sandbox uid (zombies included) and no launcher left behind."""
    uid = res.report.get("uid")
    deadline = time.time() + 5
    while time.time() < deadline:
        left = (pids_of_uid(uid, include_zombies=True) if uid is not None else []) + _launchers_of_this_process()
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes left behind: {left}")


@pytest.fixture(scope="module")
def caps():
    return sandbox_capabilities()


# --------------------------------------------------------------------------------------------
# HumanEval
# --------------------------------------------------------------------------------------------
def _canonical_scores(rows, idx):
    comps = [fence(rows[i]["canonical_solution"]) for i in idx]
    return code_rewards(comps, [_tests(rows[i]) for i in idx], prompts=[rows[i]["prompt"] for i in idx])


def test_humaneval_canonical_subset_passes(shared_data):
    rows = _humaneval(shared_data)
    assert _canonical_scores(rows, FAST_SUBSET) == [1.0] * len(FAST_SUBSET)


@pytest.mark.slow
def test_humaneval_all_canonical_solutions_pass(shared_data):
    rows = _humaneval(shared_data)
    assert len(rows) == 164
    t0 = time.perf_counter()
    scores = _canonical_scores(rows, range(164))
    print(f"\nHumanEval canonical: {sum(scores):.0f}/164 in {time.perf_counter() - t0:.1f} s")
    assert scores == [1.0] * 164, [rows[i]["task_id"] for i, s in enumerate(scores) if s != 1.0]


def test_humaneval_full_function_without_prompt(shared_data):
    rows = _humaneval(shared_data)
    idx = FAST_SUBSET[:4]
    comps = [fence(rows[i]["prompt"] + rows[i]["canonical_solution"]) for i in idx]
    assert code_rewards(comps, [_tests(rows[i]) for i in idx]) == [1.0] * len(idx)


def _broken(rows, idx, kind):
    if kind == "return_none":
        comps = [fence("    return None\n") for _ in idx]
    else:
        comps = [fence(rows[i]["canonical_solution"].replace("len(", "-1 + len(", 1)) for i in idx]
    return code_rewards(comps, [_tests(rows[i]) for i in idx], prompts=[rows[i]["prompt"] for i in idx])


def test_humaneval_broken_variants_fail(shared_data):
    rows = _humaneval(shared_data)
    assert all(s < 1.0 for s in _broken(rows, FAST_SUBSET, "return_none"))
    assert all(s < 1.0 for s in _broken(rows, OFF_BY_ONE_FAST, "off_by_one"))


@pytest.mark.slow
def test_humaneval_all_broken_variants(shared_data):
    rows = _humaneval(shared_data)
    assert all(s < 1.0 for s in _broken(rows, range(164), "return_none"))
    cands = [i for i, r in enumerate(rows) if "len(" in r["canonical_solution"]]
    fails = sum(s < 1.0 for s in _broken(rows, cands, "off_by_one"))
    assert fails >= 40, f"only {fails}/{len(cands)} off-by-one variants caught"


# --------------------------------------------------------------------------------------------
# MBPP-style asserts, extraction, parallel batch
# --------------------------------------------------------------------------------------------
ADD = "def add(a, b):\n    return a + b\n"


def test_assert_list_counts_each_assert():
    tests = ["assert add(1, 2) == 3", "assert add(1, 1) == 3", "assert add(0, 0) == 0", "assert add(2, 2) == 5"]
    assert code_reward(fence(ADD), tests) == 0.5
    assert code_reward(fence(ADD), tests[:1]) == 1.0
    assert code_reward(fence("def add(a, b):\n    raise ValueError\n"), tests) == 0.0
    assert code_reward(fence("def add(a, b) return a + b\n"), tests) == 0.0  # syntax error


def test_no_code_block_scores_zero():
    assert code_reward("def add(a, b): return a + b", ["assert add(1, 2) == 3"]) == 0.0
    assert code_reward("```bash\necho hi\n```", ["assert True"]) == 0.0


def test_extract_code_takes_last_block_and_keeps_indentation():
    c = "```python\nx = 1\n```\ntext\n```\n    return 2\n```"
    assert extract_code(c) == "    return 2\n"
    assert extract_code("```py\na = 1\n```") == "a = 1\n"
    assert extract_code("no code") is None


def test_asserts_finished_before_a_timeout_still_count():
    code = ADD + "def hang():\n    while True:\n        pass\n"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "hang()", "assert add(3, 3) == 6"]
    t0 = time.perf_counter()
    assert code_reward(fence(code), tests, timeout=2) == 0.5
    assert time.perf_counter() - t0 < 10


def test_fake_result_lines_are_ignored():
    code = (
        "import os, sys\n"
        "for i in range(4):\n"
        "    print(f'0123456789abcdef0123456789abcdef {i} 1')\n"
        "    print(f'{i} 1')\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    assert code_reward(fence(code), ["assert True"] * 4) == 0.0


def test_flood_of_output_does_not_hide_results():
    code = ADD + "print('x' * 3_000_000)\n"
    passed, res = run_tests(code, ["assert add(1, 2) == 3", "assert add(1, 1) == 3"], timeout=10)
    assert passed == [True, False]
    assert len(res.output) <= (1 << 20)


def test_code_rewards_parallel_batch():
    comps = [fence(ADD), fence("def add(a, b):\n    return a - b\n")] * 4
    tests = [["assert add(1, 2) == 3", "assert add(0, 0) == 0"]] * 8
    assert code_rewards(comps, tests, max_workers=4) == [1.0, 0.5] * 4
    with pytest.raises(ValueError, match="2 completions but 1 test suites"):
        code_rewards(comps[:2], tests[:1])


# --------------------------------------------------------------------------------------------
# hostile programs
# --------------------------------------------------------------------------------------------
def test_capabilities_reported(caps):
    assert caps["works"] is True
    assert "root" in caps and "uid_dropped" in caps and "private_proc" in caps, caps
    if os.geteuid() == 0:  # this box: everything must be on
        assert all(caps.get(k) for k in ("uid_dropped", "netns", "mountns", "pidns", "readonly_fs", "private_proc")), caps


def test_infinite_loop_is_killed():
    t0 = time.perf_counter()
    passed, res = run_tests("def f():\n    while True:\n        pass\n", ["f()"], timeout=2)
    assert passed == [False] and res.timed_out
    assert time.perf_counter() - t0 < 8
    assert_nothing_left(res)


def test_fork_bomb_is_contained():
    bomb = (
        "import os\n"
        "def f():\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    t0 = time.perf_counter()
    passed, res = run_tests(bomb, ["f()"], timeout=2)
    assert passed == [False]
    assert time.perf_counter() - t0 < 15
    assert_nothing_left(res)


def test_fork_bomb_contained_without_pid_namespace(caps):
    """Exercise the uid sweep: without a PID namespace, a daemonised grandchild must still die."""
    if not caps.get("uid_dropped"):
        pytest.skip("needs the per-run unprivileged uid (root)")
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        pass\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "runs without pidns": intended here
        res = run_sandboxed(code, timeout=2, _pid_namespace=False)
    assert res.timed_out and not res.report.get("pidns")
    assert_nothing_left(res)


def test_allocating_50_gb_fails():
    code = "def f():\n    x = bytearray(50 * 1024 ** 3)\n    return len(x)\n"
    passed, res = run_tests(code, ["assert f() == 50 * 1024 ** 3"], timeout=10, memory_mb=512)
    assert passed == [False]
    assert "MemoryError" in res.output, res.output
    assert_nothing_left(res)


def test_cannot_write_outside_its_temp_dir(tmp_path, caps):
    target_dir = tmp_path / "parent_owned"
    target_dir.mkdir()
    os.chmod(tmp_path, 0o777)  # make the parent's dir world-writable: only the sandbox may stop it
    os.chmod(target_dir, 0o777)
    (target_dir / "keep.txt").write_text("original")
    host_tmp = f"/tmp/r1jax-sandbox-escape-{os.getpid()}"
    before = sorted(os.listdir(target_dir))
    code = (
        "import os\n"
        "def escape():\n"
        "    wrote = []\n"
        f"    for p in [{str(target_dir / 'pwned')!r}, {str(target_dir / 'keep.txt')!r}, {host_tmp!r},\n"
        "              '/dev/shm/r1jax-pwned', os.path.expanduser('~/written_in_home')]:\n"
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
    passed, res = run_tests(code, ["w = escape(); assert w == [] or all(p.startswith('/tmp/work') for p in w), w"])
    if not caps.get("readonly_fs"):
        pytest.skip(f"no mount namespace: only file permissions protect the parent ({caps})")
    assert passed == [True], res.output
    assert sorted(os.listdir(target_dir)) == before
    assert (target_dir / "keep.txt").read_text() == "original"
    assert not os.path.exists(host_tmp)
    assert not os.path.exists("/dev/shm/r1jax-pwned")
    assert_nothing_left(res)


def test_no_network_to_localhost(caps):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)
                return
            except (socket.timeout, OSError):
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
    passed, res = run_tests(code, ["assert reach() is False"], timeout=5)
    time.sleep(0.3)
    stop.set()
    th.join()
    srv.close()
    if not caps.get("netns"):
        pytest.skip(f"no network namespace on this machine ({caps})")
    assert passed == [True], res.output
    assert accepted == []
    assert_nothing_left(res)


def test_parent_environment_is_invisible(monkeypatch):
    secret = "r1jax-secret-7f3c9a"
    monkeypatch.setenv("R1JAX_TEST_SECRET", secret)
    me = os.getpid()
    code = (
        "import os\n"
        "def leak():\n"
        "    found = any(v == " + repr(secret) + " for v in os.environ.values())\n"
        f"    for pid in (os.getppid(), {me}, 1):\n"
        "        try:\n"
        "            with open(f'/proc/{pid}/environ', 'rb') as f:\n"
        f"                found = found or {secret.encode()!r} in f.read()\n"
        "        except OSError:\n"
        "            pass\n"
        "    print(sorted(os.environ))\n"
        "    return found\n"
    )
    passed, res = run_tests(code, ["assert leak()"])
    assert passed == [False]
    assert secret not in res.output
    assert_nothing_left(res)


def test_cannot_kill_parent_or_trainer():
    me = os.getpid()
    code = (
        "import os, signal\n"
        "def kill_all():\n"
        "    hits = []\n"
        f"    for pid in (os.getppid(), {me}, 1):\n"
        "        if pid <= 1:\n"
        "            continue\n"
        "        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n"
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
    # we are still alive to check, and the kills were refused
    assert os.getpid() == me
    assert passed == [True], res.output
    assert_nothing_left(res)


def test_sandbox_uids_are_private_per_run():
    a = run_sandboxed("import os; print(os.getuid())", timeout=10)
    b = run_sandboxed("import os; print(os.getuid())", timeout=10)
    if not a.report.get("uid_dropped"):
        pytest.skip("not root: the program runs as the trainer's uid")
    ua, ub = int(a.output.strip()), int(b.output.strip())
    assert UID_BASE <= ua < UID_BASE + NUM_SLOTS and UID_BASE <= ub < UID_BASE + NUM_SLOTS
    assert ua == a.report["uid"] and ub == b.report["uid"]


def test_degraded_mode_still_runs_and_reports():
    """isolate=False: no namespaces; the run still happens and the report says what is missing."""
    res = run_sandboxed("import os\nprint('hi', sorted(os.environ))", timeout=10, isolate=False)
    assert res.output.startswith("hi") and res.returncode == 0
    assert not res.report.get("netns") and not res.report.get("readonly_fs")
    assert "PATH" in res.output and "R1JAX" not in res.output
    if os.geteuid() == 0 and not res.report.get("uid_dropped"):
        assert "uid_drop_error" in res.report  # e.g. python lives under /root (mode 0700)
