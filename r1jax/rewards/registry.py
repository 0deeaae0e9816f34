"""The one registry of rewards a GRPO config names (`rewards={"accuracy": 1.0, ...}`).

A reward is a batched function of the step's completions and their prompt records (or a function
written for TRL or verl, used as it is: r1jax.rewards.forms)::

    fn(texts: list[str], records: list[dict], *, config, step, scorers) -> list[float | None]

`config` is the GRPO config (its `format_template`, `language`, `preference_model`, ...), `step`
the 0-based step index (None outside the loop) and `scorers` a dict the caller owns and keeps
across calls (a GRPO run: one for the run), where a reward keeps what it loads (the "preference"
reward its reward models); None: nothing is kept between calls. A reward whose signature names
none of them (e.g. `fn(texts, records)`) is called without them. A score of None marks the sample
invalid (e.g. its gold answer does not parse): it is left out of its group and of the loss.

Built-in names: accuracy (records' "answer"), format (config.format_template), language (a
record's "language", else config.language), code (records' "tests" / "code_prompt"), preference
(config.preference_model, gated by config.preference_start_frac). Add one with
``register_reward("name", fn)`` or ``@register_reward("name")`` (names without dots: config keys
cannot hold them), or name "module:function" / "file.py:function" in the config, resolved as
custom losses are (r1jax.plugins). :func:`compute_rewards` scores every named reward and the
weighted total (:func:`r1jax.rewards.combine.combine_rewards`).
"""
from __future__ import annotations

import inspect
from typing import Callable

from r1jax.plugins import is_spec, load_callable
from r1jax.rewards.accuracy import accuracy_rewards
from r1jax.rewards.code import code_rewards
from r1jax.rewards.combine import combine_rewards
from r1jax.rewards.format import format_reward
from r1jax.rewards.forms import call_foreign, reward_form
from r1jax.rewards.language import language_consistency_reward
from r1jax.rewards.preference import preference_scores
from r1jax.rewards.sandbox import check_sandbox

REWARDS: dict[str, Callable] = {}  # name -> fn(texts, records, *, config, step, scorers) -> list


def register_reward(name: str, fn: Callable | None = None):
    """Adds a batched reward under `name` (usable in a config's `rewards`); works as a decorator.
    A name with a dot fails (config keys cannot hold one), as does a name taken by another function."""
    if fn is None:
        return lambda f: register_reward(name, f)
    if "." in name:
        raise ValueError(f"register_reward: {name!r} has a dot (config keys cannot)")
    if name in REWARDS and REWARDS[name] is not fn:
        raise ValueError(f"a reward named {name!r} is already registered ({REWARDS[name]!r})")
    REWARDS[name] = fn
    return fn


def get_reward(name_or_callable) -> Callable:
    """A callable (as is), a registered name, or "module:function" / "file.py:function" (imported)."""
    if callable(name_or_callable):
        return name_or_callable
    if name_or_callable in REWARDS:
        return REWARDS[name_or_callable]
    if is_spec(name_or_callable):
        return load_callable(name_or_callable, "reward")
    raise KeyError(f"grpo config: unknown reward {name_or_callable!r}: registered rewards are {sorted(REWARDS)}; "
                   "or give 'module:function' / 'file.py:function' (fn(texts, records) -> list)")


def call_reward(fn: Callable, texts: list[str], records: list[dict], *, config=None, step: int | None = None,
                scorers: dict | None = None) -> list:
    """fn's scores as a list, passing `config` / `step` / `scorers` where its signature takes them."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: the plain form
        params = {}
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    ctx = {k: v for k, v in (("config", config), ("step", step), ("scorers", scorers)) if var_kw or k in params}
    return list(fn(texts, records, **ctx))


def reward_specs(c) -> dict:
    """{reward name: "module:function"} of a GRPO config's reward_functions (empty when it has none)."""
    rf = c.get("reward_functions") if hasattr(c, "get") else None
    if not rf:
        return {}
    return rf.to_dict() if hasattr(rf, "to_dict") else dict(rf)


def compute_rewards(c, texts: list[str], records: list[dict], step: int | None = None,
                    completion_ids=None, *, scorers: dict | None = None) -> tuple[dict[str, list], list]:
    """Per-reward scores for every completion (records aligned with texts) and the weighted total
    (None where a weighted reward is None). `step` (0-based) gates the "preference" reward. Rewards in
    TRL's or verl's form (r1jax.rewards.forms) run in their worker with `reward_timeout_s`; the other
    numbers of a verl dict result come back as "name/key" entries (logged, not weighted). completion_ids:
    the sampled token ids (TRL's `completion_ids` keyword). scorers: the caller's dict, kept across its
    calls, where rewards keep what they load (the reward models); None: loaded again at each call."""
    weights = dict(c.rewards.to_dict() if hasattr(c.rewards, "to_dict") else c.rewards)
    specs = reward_specs(c)
    scores = {}
    for name in weights:
        spec = specs.get(name, name)  # a name bound to "module:function" by reward_functions
        fn = get_reward(spec)
        form = reward_form(fn)
        if form == "r1jax":
            scores[name] = call_reward(fn, texts, records, config=c, step=step, scorers=scorers)
            continue
        timeout = c.get("reward_timeout_s", 300.0) if hasattr(c, "get") else 300.0
        scores[name], extras = call_foreign(spec, fn, form, texts, records, timeout, completion_ids=completion_ids)
        scores.update({f"{name}/{k}": v for k, v in extras.items()})
    totals, _ = combine_rewards({k: scores[k] for k in weights}, weights)
    return scores, totals


# ----------------------------------------------------------------------------------- built-in
UNTRUSTED = ("accuracy", "code")  # built-in rewards that run model output in a confined process


def _isolation(config) -> str:
    return getattr(config, "sandbox", "auto") if config is not None else "auto"


def check_isolation(c, names) -> None:
    """Before a run's first rollout: where a reward of `names` runs model output in a confined
    process, the confinement must work on this machine (SandboxError saying why, else), or the
    config says sandbox="unsafe" (then a loud warning)."""

    if any(n in UNTRUSTED for n in names):
        check_sandbox(_isolation(c))



@register_reward("accuracy")
def accuracy_scores(texts, records, *, config=None, step=None) -> list:
    """1.0 / 0.0 against each record's "answer" (None where the gold answer does not parse)."""
    return accuracy_rewards(texts, [str(r["answer"]) for r in records], isolation=_isolation(config))


@register_reward("format")
def format_scores(texts, records, *, config, step=None) -> list:
    """1.0 / 0.0: the response follows config.format_template."""
    return [format_reward(t, template=config.format_template) for t in texts]


@register_reward("language")
def language_scores(texts, records, *, config, step=None) -> list:
    """Share of the chain of thought in the record's "language" (else config.language)."""
    return [language_consistency_reward(t, r.get("language", config.language)) for t, r in zip(texts, records)]


@register_reward("code")
def code_scores(texts, records, *, config=None, step=None) -> list:
    """Fraction of each record's "tests" passed in the sandbox (its "code_prompt" prepended)."""
    return code_rewards(texts, [r["tests"] for r in records], prompts=[r.get("code_prompt") for r in records],
                        isolation=_isolation(config))


register_reward("preference", preference_scores)  # learned reward model (R1's general-data reward)
