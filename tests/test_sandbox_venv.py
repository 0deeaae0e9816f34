"""The code sandbox run from a venv (under /tmp and under $HOME), and sandbox / math-worker
start-up failures, which must raise instead of being scored 0.0."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from r1jax.rewards import code_reward, code_rewards
from r1jax.rewards import sandbox as sandbox_mod
from r1jax.rewards._jail import JailError, bind_plan
from r1jax.rewards.code import SandboxError as CodeSandboxError
from r1jax.rewards.pool import VerifierError, VerifierPool
from r1jax.rewards.sandbox import (NUM_SLOTS, PROTECTIONS, UID_BASE, SandboxError, run_sandboxed,
                                      sandbox_capabilities)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADD = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]


def fence(code: str) -> str:
    return f"```python\n{code}```"


def _make_venv(path: str) -> str:
    """A venv at ``path`` as a user makes one on top of the running environment: ``python -m venv``
    from the base interpreter, then a path file in its site-packages that adds this environment's
    site-packages (``site.addsitedir``, so their .pth files - an editable r1jax - apply too). Works
    whether the tests run from a system interpreter, a venv or a conda env (``--system-site-packages``
    would give the *base* interpreter's packages, not a venv's)."""
    import site
    import sysconfig

    base = getattr(sys, "_base_executable", None) or sys.executable
    try:
        out = subprocess.run([base, "-m", "venv", "--without-pip", path], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot create a venv with {base} -m venv: {e}")
    if out.returncode != 0:
        pytest.skip(f"cannot create a venv with {base} -m venv: {out.stderr.strip()[-500:]}")
    py = os.path.join(path, "bin", "python")
    if not os.path.exists(py):
        pytest.skip(f"venv at {path} has no bin/python")
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, timeout=60).stdout.strip()
    ours = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    with open(os.path.join(purelib, "_r1jax_test_parent.pth"), "w") as f:
        f.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in dict.fromkeys(ours)) + "\n")
    return py


# Runs inside the venv's interpreter: the code reward, a plain run, and write probes.
_IN_VENV = textwrap.dedent(
    """
    import json, os, sys
    from r1jax.rewards import code_reward, accuracy_reward
    from r1jax.rewards.sandbox import run_sandboxed
    add = "def add(a, b):\\n    return a + b\\n"
    sub = "def add(a, b):\\n    return a - b\\n"
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    out = {"executable": sys.executable, "prefix": sys.prefix}
    out["good"] = code_reward("```python\\n" + add + "```", tests)
    out["bad"] = code_reward("```python\\n" + sub + "```", tests)
    res = run_sandboxed("print(1)")
    out["plain"] = {"output": res.output, "rc": res.returncode, "report": res.report}
    probe = (
        "import json, os, sys\\n"
        "r = {'prefix': sys.prefix, 'executable': sys.executable, 'uid': os.getuid(),\\n"
        "     'venv_site': [p for p in sys.path if p.startswith(sys.prefix + '/') and os.path.isdir(p)]}\\n"
        "for p in [sys.prefix + '/pwned', sys.prefix + '/bin/pwned', '/tmp/pwned', '/tmp/work/ok.txt']:\\n"
        "    try:\\n"
        "        with open(p, 'w') as f:\\n"
        "            f.write('x')\\n"
        "        r[p] = 'written'\\n"
        "    except OSError as e:\\n"
        "        r[p] = e.errno\\n"
        "print('PROBE ' + json.dumps(r))\\n"
    )
    res = run_sandboxed(probe)
    line = [ln for ln in res.output.splitlines() if ln.startswith("PROBE ")]
    out["probe"] = json.loads(line[0][6:]) if line else res.output
    out["math"] = accuracy_reward("\\\\boxed{\\\\frac{1}{2}}", "0.5")
    print("RESULT " + json.dumps(out))
    """
)


def _run_in_venv(py: str) -> dict:
    proc = subprocess.run(
        [py, "-c", _IN_VENV], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _check_venv_run(out: dict, venv: str) -> None:
    assert out["executable"] == os.path.join(venv, "bin", "python") and out["prefix"] == venv, out
    assert out["good"] == 1.0 and out["bad"] == 0.0, out
    plain = out["plain"]
    assert plain["output"].strip() == "1" and plain["rc"] == 0, plain
    assert out["math"] == 1.0, out
    probe = out["probe"]
    assert isinstance(probe, dict), probe
    assert probe["prefix"] == venv, probe  # the sandboxed interpreter runs as the venv (pyvenv.cfg read)
    assert probe["venv_site"], probe  # ... with the venv's site-packages on its path
    assert probe["/tmp/work/ok.txt"] == "written", probe
    caps = sandbox_capabilities()  # the system interpreter's sandbox, for comparison
    report = plain["report"]
    for k in PROTECTIONS:
        assert bool(report.get(k)) == bool(caps.get(k)), (k, report, caps)
    if caps.get("readonly_fs"):  # confined: the venv is read-only, /tmp/work the only writable place
        assert report["uid_dropped"] is True, report
        assert UID_BASE <= probe["uid"] < UID_BASE + NUM_SLOTS, probe
        for p in (venv + "/pwned", venv + "/bin/pwned", "/tmp/pwned"):
            assert probe[p] != "written", probe
        assert not os.path.exists(venv + "/pwned") and not os.path.exists(venv + "/bin/pwned")


# 0700: the venv directory hides its contents from other uids (exposed like a hidden $HOME)
@pytest.mark.parametrize("mode", [0o755, 0o700], ids=["0755", "0700"])
def test_code_reward_from_a_venv_under_tmp(mode):
    venv = f"/tmp/r1jax-test-venv-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _make_venv(venv)
        os.chmod(venv, mode)
        out = _run_in_venv(os.path.join(venv, "bin", "python"))
        _check_venv_run(out, venv)
        report = out["plain"]["report"]
        binds = report.get("binds", [])
        if report.get("minimal_root"):  # the venv is bound (as root, a 0700 one by its entries)
            assert any(b == venv or b.startswith(venv + "/") for b in binds), report
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_code_reward_from_a_venv_under_home():
    home = os.path.expanduser("~")
    if not os.path.isdir(home) or not os.access(home, os.W_OK):
        pytest.skip(f"home directory {home!r} is not writable")
    venv = os.path.join(home, f".r1jax-test-venv-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _make_venv(venv)
        _check_venv_run(_run_in_venv(os.path.join(venv, "bin", "python")), venv)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# where the interpreter pieces under /tmp go (pure planning, no mounts)
# --------------------------------------------------------------------------------------------
def test_bind_plan_follows_symlinks_and_refuses_the_work_dir(tmp_path):
    base = f"/tmp/r1jax-plan-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.makedirs(f"{base}/real/venv/bin")
        open(f"{base}/real/venv/pyvenv.cfg", "w").close()
        os.symlink("/usr/bin/env", f"{base}/real/venv/bin/python3")
        os.symlink("python3", f"{base}/real/venv/bin/python")
        os.symlink(f"{base}/real", f"{base}/link")
        binds, links = bind_plan([f"{base}/link/venv/bin/python", f"{base}/link/venv", "/usr/bin/env"])
        assert f"{base}/real/venv" in binds  # one bind: everything else is inside it
        assert not any(b.startswith(f"{base}/real/venv/") for b in binds)
        assert links[f"{base}/link"] == f"{base}/real"  # the symlinked directory is recreated
        assert "/usr/bin/env" in binds or "/usr" in binds or any("/usr/bin/env".startswith(b + "/") for b in binds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for bad in ("/tmp/work/venv/bin/python", "/tmp/work", "/tmp"):
        with pytest.raises(JailError, match="sandbox"):
            bind_plan([bad])
    with pytest.raises(JailError, match="root directory"):
        bind_plan(["/"])


# --------------------------------------------------------------------------------------------
# start-up failures raise; program failures are scored
# --------------------------------------------------------------------------------------------
def test_sandbox_setup_failure_raises():
    assert CodeSandboxError is SandboxError and issubclass(SandboxError, RuntimeError)
    with pytest.raises(SandboxError, match="did not run.*No such file"):
        run_sandboxed("print(1)", python="/nonexistent/r1jax/bin/python")
    with pytest.raises(SandboxError, match="did not run"):  # exists, but execve fails
        run_sandboxed("print(1)", python="/")
    with pytest.raises(SandboxError):
        code_reward(fence(ADD), TESTS, python="/nonexistent/r1jax/bin/python")
    with pytest.raises(SandboxError):
        code_rewards([fence(ADD)] * 2, [TESTS] * 2, max_workers=2, python="/nonexistent/r1jax/bin/python")


def test_launcher_without_report_line_raises(tmp_path, monkeypatch):
    fake = tmp_path / "fake_launcher.py"
    fake.write_text("import sys\nprint('launcher crashed')\nsys.exit(3)\n")
    monkeypatch.setattr(sandbox_mod, "_LAUNCHER", str(fake))
    with pytest.raises(SandboxError, match="without a report"):
        run_sandboxed("print(1)")


def test_program_failures_are_results_not_errors():
    res = run_sandboxed("import os\nos._exit(125)")  # the exit code the old launcher used for setup failures
    assert res.returncode == 125 and not res.report.get("setup_error")
    fake = '\\n@@R1JAX-SANDBOX@@ {"setup_error": "fake"}'
    res = run_sandboxed(f"print('{fake}')\nraise SystemExit(2)")  # the report comes on its own pipe, not stdout
    assert res.returncode == 2 and not res.report.get("setup_error")
    assert code_reward(fence("def add(a, b):\n    raise ValueError\n"), TESTS) == 0.0


def test_math_worker_that_cannot_work_raises():
    """1 MB of address space: the worker's post-jail self-test fails -> VerifierError, not 0.0s."""
    pool = VerifierPool(num_workers=1, mem_mb=1)
    try:
        with pytest.raises(VerifierError, match="failed to start|exited during start-up"):
            pool.map([("x^2", "x*x"), ("1/2", "0.5")])
    finally:
        pool.close()
