"""Code reward: HumanEval canonical solutions, broken variants, and a hostile suite in the sandbox."""
import json
import os
import subprocess
import sys
import time
import warnings

import pytest

from r1jax.rewards import code_reward, code_rewards, extract_code, sandbox_capabilities
from r1jax.rewards._sandbox_launcher import pids_of_uid
from r1jax.rewards.code import run_tests
from r1jax.rewards.sandbox import NUM_SLOTS, UID_BASE, run_sandboxed

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sandbox_suite  # noqa: E402

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


def test_sandbox_uids_are_private_per_run():
    a = run_sandboxed("import os; print(os.getuid())", timeout=10)
    b = run_sandboxed("import os; print(os.getuid())", timeout=10)
    if not a.report.get("uid_dropped"):
        pytest.skip("not root: the program runs as the trainer's uid")
    ua, ub = int(a.output.strip()), int(b.output.strip())
    assert UID_BASE <= ua < UID_BASE + NUM_SLOTS and UID_BASE <= ub < UID_BASE + NUM_SLOTS
    assert ua == a.report["uid"] and ub == b.report["uid"]


def test_unsafe_mode_runs_unconfined_and_says_so():
    """isolation="unsafe": no namespaces; the run still happens, warned about, and the report says so."""
    import r1jax.rewards.sandbox as sb

    sb._WARNED = False
    with pytest.warns(RuntimeWarning, match="UNSAFE"):
        res = run_sandboxed("import os\nprint('hi', sorted(os.environ))", timeout=10, isolation="unsafe")
    assert res.output.startswith("hi") and res.returncode == 0
    assert res.report["mode"] == "unsafe" and not res.report.get("netns") and not res.report.get("minimal_root")
    assert "PATH" in res.output and "R1JAX" not in res.output
    with pytest.raises(ValueError, match="isolation"):
        run_sandboxed("print(1)", isolation="none")


# --------------------------------------------------------------------------------------------
# the hostile suite (tests/sandbox_suite.py) as root and as an unprivileged uid
# --------------------------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NONROOT = os.path.join(REPO, "tests", "nonroot.py")


def _check_suite(out: dict, mode: str):
    assert out["_caps"].get("mode") == mode, out["_caps"]
    assert all(out["_caps"].get(k) for k in ("uid_dropped", "netns", "mountns", "pidns", "minimal_root")), out
    failed = {k: v for k, v in out.items() if k != "_caps" and not v["ok"]}
    assert not failed, failed
    assert set(out) - {"_caps"} == set(sandbox_suite.CASES)


def _as_nonroot(script: str, *opts: str, timeout: float = 300) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("starting a process as another uid needs root (the suite itself runs in-process here)")
    return subprocess.run([sys.executable, NONROOT, "65534", *opts, "--", sys.executable, script], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_hostile_suite_contained_in_process():
    """As the test process' own uid: root here (the root jail), any other uid (the user-namespace jail)."""
    _check_suite(sandbox_suite.run_suite(), "root" if os.geteuid() == 0 else "userns")


def test_hostile_suite_contained_as_an_unprivileged_uid():
    """uid 65534, no capabilities (as a cluster user): the user-namespace jail contains the same suite."""
    proc = _as_nonroot(os.path.join(REPO, "tests", "sandbox_suite.py"))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SUITE ")]
    assert lines, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    out = json.loads(lines[-1][6:])
    if not out["_caps"].get("works", True) and "user namespaces are not available" in str(out["_caps"]):
        pytest.skip(f"this machine disallows unprivileged user namespaces: {out['_caps']}")
    _check_suite(out, "userns")


_IMPOSSIBLE = """
import json, warnings
from r1jax.rewards import code_reward, run_sandboxed, SandboxError
from r1jax.rewards.sandbox import check_sandbox
out = {}
for name, fn in (("run", lambda: run_sandboxed("print(1)")), ("reward", lambda: code_reward("```python\\nx = 1\\n```", ["assert x == 1"])),
                 ("check", lambda: check_sandbox())):
    try:
        fn()
        out[name] = "ran"
    except SandboxError as e:
        out[name] = str(e)
from r1jax.rl.config import grpo_config, validate_config
from r1jax.rewards.registry import check_isolation
try:  # a GRPO run with the accuracy reward stops at its setup, before any rollout
    check_isolation(grpo_config(train_data="x.jsonl", init="ckpt"), ["accuracy", "format"])
    out["grpo"] = "ran"
except SandboxError as e:
    out["grpo"] = str(e)
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    out["unsafe"] = code_reward("```python\\nx = 1\\n```", ["assert x == 1"], isolation="unsafe")
    check_isolation(grpo_config(sandbox="unsafe"), ["code"])
    out["warned"] = [str(x.message) for x in w]
print("OUT " + json.dumps(out))
"""


def test_no_root_and_no_user_namespaces_fails_closed(tmp_path):
    """Isolation impossible (unprivileged user namespaces refused by a seccomp filter): SandboxError,
    never an unconfined run; isolation='unsafe' runs it, warning loudly."""
    script = tmp_path / "impossible.py"
    script.write_text(_IMPOSSIBLE)
    os.chmod(tmp_path, 0o755)
    os.chmod(script, 0o644)
    proc = _as_nonroot(str(script), "--no-userns")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OUT ")]
    assert lines, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    out = json.loads(lines[-1][4:])
    for k in ("run", "reward", "check", "grpo"):
        assert "cannot isolate untrusted code" in out[k] and "user namespaces are not available" in out[k], out
        assert "isolation='unsafe'" in out[k] or k in ("check", "grpo"), out
    assert out["unsafe"] == 1.0
    assert any("UNSAFE" in m for m in out["warned"]), out


# --------------------------------------------------------------------------------------------
# forgeries: the candidate never shares a process with the tests or the verdicts
# --------------------------------------------------------------------------------------------
FORGERIES = {
    "nonce_in_main": "import __main__, os, sys\nfor k, v in vars(__main__).items():\n"
                     "    if isinstance(v, str) and len(v) == 32:\n"
                     "        [sys.stdout.write('\\n%s %d 1\\n' % (v, i)) for i in range(9)]\nos._exit(0)\n",
    "nonce_by_gc": "import gc, os, re, sys\nfor o in gc.get_objects():\n    if isinstance(o, dict):\n"
                   "        for v in list(o.values()):\n"
                   "            if isinstance(v, str) and re.fullmatch(r'[0-9a-f]{32}', v):\n"
                   "                [sys.stdout.write('\\n%s %d 1\\n' % (v, i)) for i in range(9)]\n"
                   "sys.stdout.flush()\nos._exit(0)\n",
    "rebind_report": "import __main__\nfor k, v in list(vars(__main__).items()):\n"
                     "    if callable(v) and 'report' in k:\n"
                     "        setattr(__main__, k, lambda i, ok, _o=v: _o(i, True))\n",
    "wrap_exec": "import builtins\n_e = builtins.exec\ndef _x(c, g=None, l=None):\n    try:\n        return _e(c, g, l)\n"
                 "    except BaseException:\n        return None\nbuiltins.exec = _x\n",
    "wrap_compile": "import builtins\n_c = builtins.compile\nbuiltins.compile = lambda s, f, m, *a, **k: _c('pass', f, m)\n",
    "clear_tests": "import __main__\nfor k, v in vars(__main__).items():\n    if isinstance(v, list) and k.endswith('tests'):\n"
                   "        n = len(v); v.clear(); v.extend(['pass'] * n)\n",
    "exit0_at_import": "import os\nos._exit(0)\n",
    "sys_exit_at_import": "import sys\nsys.exit(0)\n",
    "exit_in_function": "import os\ndef add(a, b):\n    os._exit(0)\n",
    "sys_exit_in_function": "import sys\ndef add(a, b):\n    sys.exit(0)\n",
    "atexit_hook": "import atexit, sys\natexit.register(lambda: [sys.stdout.write('\\n%d 1\\n' % i) for i in range(9)])\n",
    "signals": "import os, signal\nfor s in (signal.SIGTERM, signal.SIGALRM):\n    signal.signal(s, signal.SIG_IGN)\n"
               "for pid in range(1, 300):\n    try:\n        os.kill(pid, signal.SIGSTOP) if pid != os.getpid() else None\n"
               "    except OSError:\n        pass\n",
    "fork_writes_fd1": "import os, time\nif os.fork() == 0:\n    time.sleep(0.2)\n"
                       "    [os.write(1, ('\\n%d 1\\n' % i).encode()) for i in range(9)]\n    os._exit(0)\n",
    "peek_caller_frame": "import sys, re\ndef add(a, b):\n    f = sys._getframe(1)\n    while f is not None:\n"
                         "        for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
                         "            m = isinstance(v, str) and re.search(r'add\\(%d, %d\\) == (\\d+)' % (a, b), v)\n"
                         "            if m:\n                return int(m.group(1))\n        f = f.f_back\n    return -1\n",
    "read_test_source": "import glob, re\nsrc = ''\nfor p in glob.glob('/tmp/**', recursive=True) + ['/proc/1/cmdline']:\n"
                        "    try:\n        src += open(p).read()\n    except Exception:\n        pass\n"
                        "_a = {(int(a), int(b)): int(c) for a, b, c in re.findall(r'add\\((\\d+), (\\d+)\\) == (\\d+)', src)}\n"
                        "def add(a, b):\n    return _a.get((a, b), -1)\n",
    "eq_always_true": "class _Y:\n    def __eq__(self, o):\n        return True\n    __hash__ = object.__hash__\n"
                      "def add(a, b):\n    return _Y()\n",
    "int_subclass_eq": "class _Y(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
                       "def add(a, b):\n    return _Y(-1)\n",
    "shadow_builtins": "def add(a, b):\n    return -1\ndef isinstance(*a):\n    return True\nclass AssertionError(Exception):\n    pass\n",
}
WRONG_ADD = "def add(a, b):\n    return a - b - 1\n"


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forgeries_score_zero(name):
    """Each of these forges a pass at the old in-process harness (where they apply); here 0.0."""
    code = FORGERIES[name]
    if "def add" not in code:
        code = WRONG_ADD + code
    assert code_reward(fence(code), ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 5) == 5"],
                       timeout=5) == 0.0


def test_honest_solution_with_the_same_tricks_still_scores():
    """The harness fails the forgery, not the program: a right add that also exits, forks and prints scores 1."""
    code = ("import os, sys\ndef add(a, b):\n    return a + b\nprint('\\n0 1\\n')\n"
            "if os.fork() == 0:\n    os._exit(0)\n")
    assert code_reward(fence(code), ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]) == 1.0


def test_prompt_helpers_cannot_be_redefined(shared_data):
    """HumanEval/38: the test encodes with the prompt's encode_cyclic; a candidate that redefines it as
    the identity (and decode_cyclic too) passed the old harness; the judge uses the prompt's."""
    rows = _humaneval(shared_data)
    row = rows[38]
    cheat = ("def encode_cyclic(s: str):\n    return s\n\n\ndef decode_cyclic(s: str):\n    return s\n")
    assert code_reward(fence(cheat), _tests(row), prompt=row["prompt"]) == 0.0
    assert code_reward(fence(row["canonical_solution"]), _tests(row), prompt=row["prompt"]) == 1.0
    fake_math = "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef area(r):\n    return 0\n"
    assert code_reward(fence(fake_math), ["assert math.isclose(area(2), 12.566, rel_tol=1e-3)"]) == 0.0
    real = "import math\ndef area(r):\n    return math.pi * r * r\n"
    assert code_reward(fence(real), ["assert math.isclose(area(2), 12.566, rel_tol=1e-3)"]) == 1.0


def test_judge_semantics_for_honest_programs():
    """What crosses the process boundary: exceptions by type, generators, the candidate's own classes
    as arguments and results, namedtuples and subclasses as plain values, big ints, sets, Fractions."""
    code = (
        "import collections, fractions\n"
        "class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n"
        "def longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
        "def make(a, b):\n    return Pair(a, b)\n"
        "def gen(n):\n    yield from range(n)\n"
        "def check_positive(x):\n    if x <= 0:\n        raise ValueError('not positive')\n    return True\n"
        "P = collections.namedtuple('P', 'x y')\n"
        "def point():\n    return P(1, 2)\n"
        "def counts(s):\n    return collections.Counter(s)\n"
        "def big():\n    return 3 ** 5000\n"
        "def half():\n    return fractions.Fraction(1, 2)\n"
        "def uniq(xs):\n    return set(xs)\n"
    )
    tests = [
        "assert longest([Pair(1, 5), Pair(2, 3)]) == 4",
        "assert make(1, 2).b == 2",
        "assert list(gen(3)) == [0, 1, 2] and sum(gen(4)) == 6",
        "try:\n    check_positive(-1)\n    assert False\nexcept ValueError as e:\n    assert 'positive' in str(e)",
        "assert point() == (1, 2)",
        "assert counts('aab') == {'a': 2, 'b': 1}",
        "assert big() == 3 ** 5000",
        "assert half() == 0.5",
        "assert uniq([1, 1, 2]) == {1, 2} and 2 in uniq([2])",
        "assert make(1, 2) != make(1, 2)",  # candidate objects compare by identity only
    ]
    passed, res = run_tests(code, tests)
    assert passed == [True] * len(tests), res.output[-3000:]


def test_judge_takes_only_public_names_from_the_candidate():
    """What the candidate announces cannot replace the test's builtins, dunders or builtin names, and
    a module is the judge's own import of a top-level stdlib name (red-team findings)."""
    from r1jax.rewards import _judge

    names = {"__builtins__": ("value", {"abs": 0}), "__import__": ("value", 1), "len": ("value", 3),
             "f": ("value", 2), 3: ("value", 1), "bad": "x", "m": ("module", "unittest.__main__"),
             "mm": ("module", "math"), "os_path": ("module", "os.path"), "t": ("module", "this")}
    g = _judge._candidate_globals(names)
    import math

    assert g == {"f": 2, "mm": math}
    assert _judge._candidate_globals(names, {"len"})["len"] == 3  # a builtin name the tests exist to check
    assert _judge.subjects(["assert abs(area(2) - 12.56) < 0.01", "assert area(0) == 0"]) == {"area"}
    assert _judge.subjects(["assert sum(10, 15) == 6", "assert sum(4, 6) == 3"]) == {"sum"}
    assert _judge.subjects(["assert abs(1) == 1"], entry_point="f") == {"f"}
    # builtin helpers never become subjects: several, wrapping calls, on both sides (red-team round 2)
    assert _judge.subjects(["assert abs(pow(2, 0.5) - 1.41421356) < 1e-6"] * 2) == set()
    assert _judge.subjects(["assert sorted(S.two_sum([2, 7], 9)) == sorted([0, 1])"] * 2) == set()
    assert _judge.subjects(["assert set(S.f(1)) == {1}"] * 2) == set()
    with pytest.raises(TypeError):
        _judge._candidate_globals([("f", ("value", 1))])
    assert _judge.module_uses("assert math.isclose(f(1), 2) and copy(x) == heapq and np.allclose(1, 1)") == {
        "math": {"isclose"}, "np": {"allclose"}}


def test_stop_iteration_from_a_call_ends_no_map():
    """A function that raises StopIteration must not make the test's map()/all() stop early (Python
    would; the judge makes it a failure)."""
    code = "def is_prime(n):\n    raise StopIteration\n"
    tests = ["assert all(map(is_prime, [2, 3, 5]))", "assert not any(map(is_prime, [4, 6]))",
             "assert list(filter(is_prime, [2, 3])) == [2, 3]"]
    assert code_reward(fence(code), tests) == 0.0
    gen = "def evens(n):\n    yield from range(0, n, 2)\n"
    assert code_reward(fence(gen), ["assert list(evens(5)) == [0, 2, 4]"]) == 1.0


def test_a_hostile_module_name_is_no_sandbox_error():
    """A candidate whose namespace makes the judge choke fails its tests; the batch is still scored."""
    hostile = "import types\nm = types.ModuleType('unittest.__main__')\nn = types.ModuleType('this')\n" + WRONG_ADD
    honest = "def add(a, b):\n    return a + b\n"
    assert code_rewards([fence(honest), fence(hostile)], [["assert add(1, 2) == 3"]] * 2, max_workers=1) == [1.0, 0.0]


def test_mbpp_shapes_builtin_named_task_and_objects_built_by_the_test():
    """MBPP/126 asks for a function named `sum`; MBPP/367 builds the candidate's tree in its setup
    code (`root.left = Node(2)`): both pass, while a helper builtin the test only uses stays real."""
    sum_code = "def sum(a, b):\n    s = 0\n    for i in range(1, min(a, b)):\n        if a % i == 0 and b % i == 0:\n" \
               "            s += i\n    return s\n"
    assert code_reward(fence(sum_code), ["assert sum(10, 15) == 6", "assert sum(100, 150) == 93"]) == 1.0
    tree = ("class Node:\n    def __init__(self, data):\n        self.data = data\n        self.left = None\n"
            "        self.right = None\n"
            "def height(n):\n    return 0 if n is None else 1 + max(height(n.left), height(n.right))\n")
    setup = "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n"
    assert code_reward(fence(tree), [setup + "assert height(root) == 3", setup + "assert root.left.data == 2"]) == 1.0
    cheat = "def area(r):\n    return 0\ndef abs(x):\n    return 0\n"
    assert code_reward(fence(cheat), ["assert abs(area(2) - 12.56) < 0.01", "assert abs(area(1) - 3.14) < 0.01"]) == 0.0


def test_module_names_in_tests_are_real_modules_unless_the_object_is_the_candidates():
    fake = "class math:\n    isclose = staticmethod(lambda *a, **k: True)\ndef area(r):\n    return 0\n"
    assert code_reward(fence(fake), ["assert math.isclose(area(2), 12.566, rel_tol=1e-3)"]) == 0.0
    queue = ("class Queue:\n    def __init__(self):\n        self.items = []\n"
             "    def enqueue(self, x):\n        self.items.append(x)\n        return len(self.items)\n"
             "queue = Queue()\n")
    assert code_reward(fence(queue), ["assert queue.enqueue(1) == 1 and queue.enqueue(5) == 2"]) == 1.0
    shapes = ("class Box:\n    def __init__(self):\n        self.d = {'a': 1}\n        self.x = 1\n"
              "    def __delitem__(self, k):\n        del self.d[k]\n    def __len__(self):\n        return len(self.d)\n"
              "    def _call(self):\n        return 7\n"
              "def make():\n    return Box()\n")
    tests = ["b = make(); del b['a']; assert len(b) == 0", "b = make(); del b.x; assert not hasattr(b, 'x')",
             "assert isinstance(make(), Box) and not isinstance(3, Box)", "assert make()._call() == 7"]
    passed, res = run_tests(shapes, tests)
    assert passed == [True] * 4, res.output[-2000:]
