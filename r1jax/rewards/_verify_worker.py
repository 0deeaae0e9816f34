"""Math-verify worker process (run as a script by :mod:`r1jax.rewards.pool`; not imported).

Protocol: one JSON object per line on stdin ``{"id": int, "gold": str, "pred": str | null}``,
one JSON line per task on the original stdout ``{"id": int, "r": 1.0 | 0.0 | null}``
(null = the gold answer does not parse). The first line written is ``{"ready": true, "jail": {..}}``,
or ``{"error": "..."}`` when the worker cannot work: the imports fail, the confinement below
raises, or the self-test run *after* confinement (``\\frac{3}{4}`` vs ``0.75`` must score 1.0)
fails - e.g. because the jail hid a module sympy imports lazily, which would otherwise make
every task score 0.0 silently. The pool raises on that line. The parent enforces a hard
wall-clock limit per task and SIGKILLs this process on overrun, so nothing here needs to be
interruptible.

Hardening (the input is untrusted model output; sympy's ``parse_expr`` uses ``eval``): after the
imports the worker enters new mount, network, IPC and UTS namespaces - as root directly, otherwise
through a user namespace (:func:`_jail.enter_namespaces`) - and ``pivot_root``\ s into the minimal
root of :func:`_jail.build_root` (the system directories and the Python installation read-only,
nothing else of the host, no writable place, no network); then it sets RLIMIT_AS (``--mem-mb``),
RLIMIT_FSIZE=0 (it writes no files), RLIMIT_CORE=0, drops to uid/gid 65534 (root) or gives up every
capability (user namespace), sets no-new-privs and asks for SIGKILL when the parent dies. Where
isolation is impossible (not root, no user namespaces) it reports an error and the pool raises
``VerifierError``, unless started with ``--isolation unsafe``. SIGINT is ignored (the parent stops
it; terminal Ctrl-C goes to the trainer only).
"""
import json
import os
import sys


def _load_jail():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_jail.py")
    spec = importlib.util.spec_from_file_location("_r1jax_jail", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _harden(mem_mb: int, isolation: str) -> dict:
    """Confine this process (module docstring); raises where isolation is impossible (unless unsafe)."""
    import resource

    jail = _load_jail()
    report = {"mode": "unsafe"}
    if isolation != "unsafe":
        report = jail.enter_namespaces(pid=False)
        mode = report["mode"]
        uid = gid = 65534 if mode == "root" else jail.SANDBOX_ID
        # the installation, plus every site directory math_verify and sympy were imported from (a
        # venv stacked on another environment through a path file): their lazy imports must resolve
        extra = [p for p in sys.path if os.path.isabs(p) and os.path.isdir(p)
                 and os.path.basename(p) in ("site-packages", "dist-packages")]
        report.update(jail.build_root(jail.interpreter_paths() + extra, uid=uid, gid=gid, proc=False, workdir=False,
                                      hide_from_others=(mode == "root")))
    jail.set_rlimits({resource.RLIMIT_AS: mem_mb * 1024 * 1024, resource.RLIMIT_FSIZE: 0, resource.RLIMIT_CORE: 0})
    if isolation != "unsafe":
        jail.drop_privileges(report["mode"], uid, gid)
        jail.no_new_privs()
        report["unprivileged"] = True
    jail.die_with_parent()
    return report


def main() -> None:
    mem_mb = 4096
    if "--mem-mb" in sys.argv:
        mem_mb = int(sys.argv[sys.argv.index("--mem-mb") + 1])
    isolation = sys.argv[sys.argv.index("--isolation") + 1] if "--isolation" in sys.argv else "auto"
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr  # library prints must not corrupt the protocol stream
    try:
        import logging
        from functools import lru_cache

        logging.disable(logging.CRITICAL)
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

        cfg = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]

        import re

        inline_math = re.compile(r"(?<!\\)\$|\\\(|\\\[")

        def _parse(s: str):
            if inline_math.search(s):  # prose with inline math: let math_verify find it
                return parse(s, cfg, parsing_timeout=None)
            return parse("\\boxed{" + s + "}", cfg, parsing_timeout=None)

        parse_gold = lru_cache(maxsize=4096)(_parse)

        def score(gold: str, pred):
            g = parse_gold(gold)
            if not any(not isinstance(x, str) for x in g):  # only a raw-string fallback: no math
                return None
            if pred is None:
                return 0.0
            p = _parse(pred)
            if not p:
                return 0.0
            return 1.0 if verify(g, p, timeout_seconds=None) else 0.0

        score("\\frac{1}{2}", "0.5")  # warm up sympy's lazy imports before reporting ready
        score("[1,2)", "\\{1,2\\}")
    except BaseException as e:  # noqa: BLE001
        out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        return
    try:
        report = _harden(mem_mb, isolation)
    except BaseException as e:  # noqa: BLE001
        out.write(json.dumps({"error": f"confinement failed: {type(e).__name__}: {e}"}) + "\n")
        return
    try:  # the confined worker must still score (lazy imports, reachable files, room to allocate
        bytearray(16 << 20)  # under its memory limit): never silent zeros
        ok = score("\\frac{3}{4}", "0.75")
    except BaseException as e:  # noqa: BLE001
        ok = f"{type(e).__name__}: {e}"
    if ok != 1.0:
        out.write(json.dumps({"error": f"self-test after confinement failed: got {ok!r} for 3/4 == 0.75 "
                                       f"(jail: {report})"}) + "\n")
        return
    out.write(json.dumps({"ready": True, "jail": report}) + "\n")
    for line in sys.stdin:
        try:
            task = json.loads(line)
        except ValueError:
            continue
        try:
            r = score(task["gold"], task.get("pred"))
        except BaseException:  # noqa: BLE001  (MemoryError, RecursionError, sympy bugs): wrong
            r = 0.0
        out.write(json.dumps({"id": task["id"], "r": r}) + "\n")


if __name__ == "__main__":
    main()
