"""Reward functions written for TRL or verl, used unchanged: `rewards={"pkg.module:fn": 1.0}`.

Three forms, told apart by the signature (or declared by a `reward_form` attribute on the function):

  "r1jax"  fn(texts, records, *, config=None, step=None) -> list[float | None]      (batched; registry)
  "trl"    fn(completions, **kwargs) -> list[float | None]                          (TRL's GRPOTrainer)
           the first parameter is named `completions`. Called once per batch with `completions`
           (for a record whose prompt was chat messages, TRL's conversational form
           [[{"role": "assistant", "content": text}], ...], else the texts), `prompts` (the messages,
           else the problem text), `completion_ids` (in the trainer) and every dataset column as a keyword list (`solution`,
           `answer`, `reward_model`, ...; None where a record lacks it), e.g. trl.rewards.accuracy_reward.
  "verl"   compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float | dict
           (verl's default_compute_score form): a parameter named `solution_str`. Called per
           sample with the record's `data_source`, `reward_model.ground_truth` (else its `answer`) and
           `extra_info`; a dict result gives its "score" as the reward and its other numeric keys are
           logged (`reward/<name>/<key>`).

TRL and verl functions named by "module:function" / "file.py:function" run in a worker process
(`RewardWorker`: spawned once, the function imported there) with a time limit per call
(`reward_timeout_s` of the GRPO config): a call over time or that raises has its worker killed and
restarted and gives None for that batch (the samples are left out of their groups, as for a gold
answer that does not parse) with a warning; the trainer process never runs them. A callable passed
in directly (tests, notebooks) is called in the trainer process.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import math
import multiprocessing
import warnings
from typing import Callable

from r1jax.data.prompts import PROMPT_MESSAGES
from r1jax.plugins import load_callable

FORMS = ("r1jax", "trl", "verl")


def reward_form(fn: Callable) -> str:
    """"trl" | "verl" | "r1jax" (module doc); a `reward_form` attribute on fn wins."""
    declared = getattr(fn, "reward_form", None)
    if declared is not None:
        if declared not in FORMS:
            raise ValueError(f"reward {fn!r}: reward_form={declared!r} is not one of {FORMS}")
        return declared
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return "r1jax"
    if names and names[0] == "completions":
        return "trl"
    if "solution_str" in names:
        return "verl"
    return "r1jax"


def _columns(records: list[dict]) -> dict[str, list]:
    keys: list[str] = []
    for r in records:
        keys.extend(k for k in r if k not in keys)
    return {k: [r.get(k) for r in records] for k in keys}


def call_trl(fn: Callable, texts: list[str], records: list[dict], completion_ids=None) -> list:
    """fn(completions=..., prompts=..., completion_ids=..., **columns) as TRL's GRPOTrainer calls it
    (module doc)."""
    cols = _columns(records)
    if completion_ids is not None:
        cols["completion_ids"] = [list(map(int, t)) for t in completion_ids]

    conversational = [r.get(PROMPT_MESSAGES) is not None for r in records]
    completions = [[{"role": "assistant", "content": t}] if conv else t for t, conv in zip(texts, conversational)]
    prompts = [r.get(PROMPT_MESSAGES) or r.get("problem") for r in records]
    cols.pop(PROMPT_MESSAGES, None)
    cols.pop("completions", None)
    cols["prompts"] = prompts
    out = fn(completions=completions, **cols)
    return [None if s is None else float(s) for s in out]


def _ground_truth(rec: dict):
    rm = rec.get("reward_model")
    if isinstance(rm, dict) and "ground_truth" in rm:
        return rm["ground_truth"]
    return rec.get("answer")


def call_verl(fn: Callable, texts: list[str], records: list[dict]) -> tuple[list, dict[str, list]]:
    """compute_score per sample (module doc) -> (scores, extras {key: per-sample values})."""
    scores, extras = [], {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for i, (t, r) in enumerate(zip(texts, records)):
        kw = {"data_source": r.get("data_source", ""), "solution_str": t, "ground_truth": _ground_truth(r),
              "extra_info": r.get("extra_info")}
        # verl's per-dataset scorers take (solution_str, ground_truth, ...): only what the signature names
        res = fn(**{k: v for k, v in kw.items() if any_kw or k in params})
        if isinstance(res, dict):
            for k, v in res.items():
                if k != "score" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    extras.setdefault(k, [None] * len(texts))[i] = float(v)
            res = res.get("score")
        scores.append(None if res is None else float(res))
    return scores, extras


def call_form(fn: Callable, form: str, texts: list[str], records: list[dict], completion_ids=None) -> tuple[list, dict]:
    if form == "trl":
        return call_trl(fn, texts, records, completion_ids), {}
    if form == "verl":
        return call_verl(fn, texts, records)
    raise ValueError(f"call_form: form {form!r} is not trl or verl")


def _worker_call(spec: str, form: str, texts: list[str], records: list[dict], completion_ids=None):
    """In the worker process: import the function (cached by the plugins loader) and call it."""

    return call_form(load_callable(spec, "reward"), form, texts, records, completion_ids)


class RewardWorker:
    """One spawned process per reward spec that calls it with a time limit (module doc)."""

    def __init__(self, spec: str, form: str):
        self.spec, self.form, self._pool = spec, form, None

    def _start(self):
        self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1,
                                                            mp_context=multiprocessing.get_context("spawn"))

    def _kill(self):
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for p in list(getattr(pool, "_processes", {}).values()):
            p.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def __call__(self, texts: list[str], records: list[dict], timeout_s: float, completion_ids=None) -> tuple[list, dict]:
        if self._pool is None:
            self._start()
        ids = None if completion_ids is None else [list(map(int, t)) for t in completion_ids]
        fut = self._pool.submit(_worker_call, self.spec, self.form, list(texts), [dict(r) for r in records], ids)
        try:
            return fut.result(timeout=timeout_s if timeout_s and timeout_s > 0 else None)
        except concurrent.futures.TimeoutError:
            why = f"took longer than reward_timeout_s={timeout_s}"
        except Exception as e:  # noqa: BLE001 - the user's function raised (or its worker died)
            why = f"raised {type(e).__name__}: {e}"
        self._kill()
        warnings.warn(f"reward {self.spec!r} ({self.form} form) {why}: its {len(texts)} samples score None (left out "
                      "of their groups); the worker restarts", RuntimeWarning, stacklevel=3)
        return [None] * len(texts), {}

    def close(self):
        self._kill()


_WORKERS: dict[tuple[str, str], RewardWorker] = {}


def call_foreign(name, fn: Callable, form: str, texts: list[str], records: list[dict], timeout_s: float,
                 completion_ids=None):
    """A TRL / verl reward's scores and extras: in its worker when named by a spec string, else here."""
    if isinstance(name, str) and ":" in name:
        w = _WORKERS.get((name, form))
        if w is None:
            w = _WORKERS[(name, form)] = RewardWorker(name, form)
        return w(texts, records, timeout_s, completion_ids)
    return call_form(fn, form, texts, records, completion_ids)


def mean_extra(values: list) -> float:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else math.nan


__all__ = ["FORMS", "reward_form", "call_trl", "call_verl", "call_foreign", "RewardWorker"]
