"""Code reward: run the completion's last fenced Python block against tests in the sandbox.

    r_code(completion, tests) = (#tests passed) / (#tests)         (0.0 when there is no code block)

* ``tests`` as a list of assert strings (MBPP style): each string is executed separately; it passes
  if it raises nothing. Verdicts are streamed, so tests that finished before a timeout still count.
* ``tests`` as a dict ``{"test": src defining check(candidate), "entry_point": name}`` (HumanEval
  style): one test - ``check(<entry_point>)`` raises nothing -> 1.0, else 0.0.
* ``prompt`` (optional, trusted: from the data set) is prepended to the extracted code: with
  HumanEval, the prompt holds the signature and docstring, so a completion that is only the
  function body (like ``canonical_solution``) is completed into a program; a completion that
  repeats the whole function simply redefines it.

**The candidate never shares a process with the tests or the verdicts.** The sandboxed program is
a small server (:mod:`r1jax.rewards._candidate_server`) that loads the candidate module
(``__name__ == "__candidate__"``, so ``if __name__ == "__main__":`` demo blocks do not run) and
answers calls; the tests run in the judge (:mod:`r1jax.rewards._judge`), another process of
the sandbox, in an outer PID namespace the candidate cannot see, which calls the candidate's
functions over a pipe and reports each verdict to the launcher over a pipe the candidate never
holds. The candidate cannot read the tests (they are not in its process or files), and nothing it
prints, exits with, registers at exit, rewrites in memory (nonces, report functions, ``exec`` /
``compile``, the test list), signals or forks is a verdict: forging a pass means returning
values that make the test's own comparisons, run in the judge, succeed. A test's reference to a
name the trusted ``prompt`` defines (HumanEval's helpers such as ``encode_cyclic``) uses the
prompt's definition, not one the candidate redefines; builtins and stdlib modules in a test are
always the real ones.

What is still possible, and why:

* *A value that compares equal to anything.* Results come back as plain data: an ``int`` / ``str``
  / ``list`` / ``tuple`` / ``dict`` / ``set`` subclass arrives as the base type (its ``__eq__``
  is gone), and a comparison of any other candidate object (a handle) with a value is identity,
  never forwarded to the candidate, so ``candidate(x) == expected`` cannot be forged this way.
  The price: a test that compares an instance of the candidate's own class by value fails (no
  HumanEval test does).
* *A function that peeks at its caller.* Its caller is the server loop in its own process, which
  holds only the call's arguments; the test's frame and expected values are in the judge.
* *Special-casing visible inputs.* The arguments of each call reach the candidate, so a function
  can memorise them, not the expected outputs; a test suite whose expected values follow from
  its inputs by a trivial rule stays as weak as it is anywhere.
* *Tests that pass callables (lambdas, T-side functions) to the candidate* fail: arguments travel
  by value. Mutation of an argument inside the candidate is not seen by the test (copies).
* *A function that raises StopIteration* fails the test (Python would end a ``map`` over it early).
* *What the judge receives is still the candidate's*: what it announces as its names (only public
  identifiers are taken; never ``__builtins__``, dunders or builtin names; modules are the judge's
  own imports of stdlib names, and a stdlib name the test uses as a module, ``math.isclose``, is
  always the real module), and any reply (read by a whitelist unpickler, at most 64 MiB). A judge
  that cannot make sense of it fails the candidate's remaining tests; it is never a SandboxError.

Errors: a sandbox that cannot run the program at all (its setup fails - e.g. the interpreter is
unreachable inside the jail, or isolation is impossible on this machine - or the launcher
crashes) raises :class:`~r1jax.rewards.sandbox.SandboxError` from :func:`code_reward`,
:func:`code_rewards` and :func:`run_tests`; such a run is never scored 0.0, so an RL run cannot
silently train on zeros. Only programs that ran are scored.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence, Union

from r1jax.rewards.extract import extract_code
from r1jax.rewards.sandbox import SandboxError, run_sandboxed

__all__ = ["SandboxError", "build_program", "code_reward", "code_rewards", "run_tests"]

Tests = Union[Sequence[str], dict]

_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_candidate_server.py")
_SERVER_SRC: str | None = None


def _test_sources(tests: Tests) -> list[str]:
    if isinstance(tests, dict):
        missing = [k for k in ("test", "entry_point") if k not in tests]
        if missing:
            raise ValueError(f"code_reward: HumanEval-style tests dict lacks key(s) {missing}")
        return [tests["test"] + f"\n\ncheck({tests['entry_point']})\n"]
    if isinstance(tests, str):
        raise TypeError("code_reward: tests must be a list of assert strings or a {'test', 'entry_point'} dict")
    return [str(t) for t in tests]


def build_program(code: str) -> str:
    """The sandboxed program: the candidate server with ``code`` to load (exposed for debugging)."""
    global _SERVER_SRC
    if _SERVER_SRC is None:
        with open(_SERVER, encoding="utf-8") as f:
            _SERVER_SRC = f.read()
    return _SERVER_SRC + f"\n\n_r1_serve({code!r})\n"


def run_tests(code: str, tests: Tests, *, prompt: str | None = None, **sandbox_kwargs) -> tuple[list[bool], "object"]:
    """Run ``code`` (the candidate's whole program: ``prompt`` + completion) against ``tests``;
    returns (per-test pass flags, SandboxResult). ``prompt`` is the trusted part of ``code``
    (module docstring). Raises :class:`SandboxError` when the sandbox could not start the program.
    """
    srcs = _test_sources(tests)
    entry = tests.get("entry_point") if isinstance(tests, dict) else None
    res = run_sandboxed(build_program(code), judge={"tests": srcs, "prompt": prompt, "entry_point": entry},
                        **sandbox_kwargs)
    verdicts = res.report.get("verdicts") or {}
    return [verdicts.get(str(i)) is True for i in range(len(srcs))], res


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
    passed, _ = run_tests(code, tests, prompt=prompt, timeout=timeout, memory_mb=memory_mb, **sandbox_kwargs)
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
