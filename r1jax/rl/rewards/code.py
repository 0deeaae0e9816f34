"""Code reward: run the completion's last fenced Python block against tests in the sandbox.

    r_code(completion, tests) = (#tests passed) / (#tests)         (0.0 when there is no code block)

* ``tests`` as a list of assert strings (MBPP style): each string is executed separately after
  the candidate code; it passes if it raises nothing. Results are streamed, so asserts that
  finished before a timeout still count.
* ``tests`` as a dict ``{"test": src defining check(candidate), "entry_point": name}`` (HumanEval
  style): one test - ``check(<entry_point>)`` raises nothing -> 1.0, else 0.0.
* ``prompt`` (optional) is prepended to the extracted code: with HumanEval, the prompt holds the
  signature and docstring, so a completion that is only the function body (like
  ``canonical_solution``) is completed into a program; a completion that repeats the whole
  function simply redefines it.

The candidate and the tests run in their own globals (``__name__ == "__candidate__"``, so
``if __name__ == "__main__":`` demo blocks do not run). The harness writes one line per test,
``<nonce> <index> <0|1>``, with a random nonce, so a candidate that prints fake result lines
gets nothing. Limitation (as in the official HumanEval harness): candidate and tests share one
interpreter, so a deliberately adversarial program could tamper with the harness in memory; the
sandbox (:mod:`r1jax.rl.rewards.sandbox`) bounds what that can achieve to its own reward.

Errors: a sandbox that cannot run the program at all (its setup fails - e.g. the interpreter is
unreachable inside the jail - or the launcher crashes) raises
:class:`~r1jax.rl.rewards.sandbox.SandboxError` from :func:`code_reward`, :func:`code_rewards`
and :func:`run_tests`; such a run is never scored 0.0, so an RL run cannot silently train on
zeros. Only programs that ran are scored.
"""
from __future__ import annotations

import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence, Union

from r1jax.rl.rewards.extract import extract_code
from r1jax.rl.rewards.sandbox import SandboxError, run_sandboxed

__all__ = ["SandboxError", "build_program", "code_reward", "code_rewards", "run_tests"]

Tests = Union[Sequence[str], dict]

_HARNESS = """\
import sys as _r1_sys
_r1_out = _r1_sys.stdout
_r1_nonce = {nonce!r}
_r1_tests = {tests!r}
def _r1_report(i, ok, _w=_r1_out.write, _f=_r1_out.flush, _n=_r1_nonce):
    _w("\\n%s %d %d\\n" % (_n, i, 1 if ok else 0))
    _f()
_r1_g = {{"__name__": "__candidate__", "__builtins__": __builtins__}}
try:
    exec(compile({code!r}, "<candidate>", "exec"), _r1_g)
    _r1_ok = True
except BaseException:
    import traceback as _r1_tb
    _r1_tb.print_exc()
    _r1_ok = False
for _r1_i, _r1_t in enumerate(_r1_tests):
    if not _r1_ok:
        _r1_report(_r1_i, False)
        continue
    try:
        exec(compile(_r1_t, "<test %d>" % _r1_i, "exec"), _r1_g)
        _r1_report(_r1_i, True)
    except BaseException:
        import traceback as _r1_tb
        _r1_tb.print_exc()
        _r1_report(_r1_i, False)
"""


def _test_sources(tests: Tests) -> list[str]:
    if isinstance(tests, dict):
        missing = [k for k in ("test", "entry_point") if k not in tests]
        if missing:
            raise ValueError(f"code_reward: HumanEval-style tests dict lacks key(s) {missing}")
        return [tests["test"] + f"\n\ncheck({tests['entry_point']})\n"]
    if isinstance(tests, str):
        raise TypeError("code_reward: tests must be a list of assert strings or a {'test', 'entry_point'} dict")
    return [str(t) for t in tests]


def build_program(code: str, tests: Tests, nonce: str) -> str:
    """The harness program run in the sandbox (exposed for debugging)."""
    return _HARNESS.format(nonce=nonce, tests=_test_sources(tests), code=code)


def run_tests(code: str, tests: Tests, **sandbox_kwargs) -> tuple[list[bool], "object"]:
    """Run ``code`` against ``tests``; returns (per-test pass flags, SandboxResult).

    Raises :class:`SandboxError` when the sandbox could not start the program.
    """
    srcs = _test_sources(tests)
    nonce = secrets.token_hex(16)
    res = run_sandboxed(build_program(code, tests, nonce), keep_lines_with=nonce, **sandbox_kwargs)
    passed = [None] * len(srcs)
    pat = re.compile(rf"{nonce} (\d+) ([01])")
    for line in res.marked_lines:
        m = pat.fullmatch(line.strip())
        if m is None:
            continue
        i = int(m.group(1))
        if 0 <= i < len(srcs) and passed[i] is None:
            passed[i] = m.group(2) == "1"
    return [bool(p) for p in passed], res


def code_reward(
    completion: str,
    tests: Tests,
    *,
    prompt: str | None = None,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    **sandbox_kwargs,
) -> float:
    """Fraction of ``tests`` passed by the last fenced code block of ``completion`` (module docstring).

    Raises :class:`SandboxError` (never returns 0.0) when the sandbox could not run the program.
    """
    code = extract_code(completion or "")
    n = len(_test_sources(tests))
    if code is None or n == 0:
        return 0.0
    if prompt:
        code = prompt + code
    passed, _ = run_tests(code, tests, timeout=timeout, memory_mb=memory_mb, **sandbox_kwargs)
    return sum(passed) / n


def code_rewards(
    completions: Sequence[str],
    tests_list: Sequence[Tests],
    *,
    prompts: Sequence[str | None] | None = None,
    max_workers: int | None = None,
    **kwargs,
) -> list[float]:
    """:func:`code_reward` over a batch, ``max_workers`` sandboxes at a time (default: cpu count).

    A :class:`SandboxError` from any item propagates (the batch is not scored).
    """
    if len(completions) != len(tests_list):
        raise ValueError(f"code_rewards: {len(completions)} completions but {len(tests_list)} test suites")
    if prompts is not None and len(prompts) != len(completions):
        raise ValueError(f"code_rewards: {len(prompts)} prompts for {len(completions)} completions")
    prompts = prompts if prompts is not None else [None] * len(completions)
    workers = max(1, max_workers or os.cpu_count() or 1)
    if workers == 1 or len(completions) <= 1:
        return [code_reward(c, t, prompt=p, **kwargs) for c, t, p in zip(completions, tests_list, prompts)]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futs = [ex.submit(code_reward, c, t, prompt=p, **kwargs) for c, t, p in zip(completions, tests_list, prompts)]
        return [f.result() for f in futs]
