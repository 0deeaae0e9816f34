"""The toy pretraining corpus (and SFT records) for the R1-Zero reproduction.

Each document is the R1-Zero template around a problem (`prompt`) followed by a completion
`<think> ... </think> <answer> ... </answer>` written in one of three modes:

  direct   `<think> </think> <answer> 6 1 2 </answer>`: no reasoning, and the answer is a
           guess that is wrong at a level-dependent rate (DEFAULT_DIRECT_ERROR_RATE).
  worked   the right-to-left column steps (r1jax.toy.tasks.arithmetic), always right.
  check    the worked steps with one check: usually a slip at one step followed by
           `wait , check :` and that step redone correctly (the chain continues from the
           corrected state); with probability `check_confirm_rate` the checked step was right and
           the check repeats it (so "check" means recompute, not "change the value").

Defaults, and why. The base model should be weak (held-out pass@1 well below 30%) because it
mostly answers directly, yet its worked chains should be right, so that RL with an accuracy
reward finds that reasoning pays and lengthens the responses (direct ~8 tokens, worked 33/50/67/86
tokens at levels 2/3/4/5, check ~17 more):

  p_direct = 0.70, p_worked = 0.24, p_check = 0.06 (the mode prior the base model inherits)
  direct_error_rate per level = {1: .5, 2: .6, 3: .75, 4: .85, 5: .9, 6: .95}
  check_confirm_rate = 0.25; levels = (2, 3, 4, 5); tasks = ("add",); language "en"

Measured (a 1.07M-parameter 4-layer d=128 RoPE decoder, AdamW 3e-3, batch 32, loss on the
completion, held-out problems, levels 2..5 equally; several seeds):
  * the direct map is not learned: forced-direct greedy accuracy 0-2% (levels 4-5: 0%), so the
    base model's accuracy comes from its worked chains only;
  * the worked procedure is learned in a phase transition whose position depends on how many
    worked documents were seen: with these defaults and prompt_style="short" forced-worked
    greedy accuracy is 66-72% after 600 steps and 97-99.8% after 1000 (r1_zero prompt: 91% at
    1000, 49% at 600); with p=(.6,.3,.1) 91-98% after 600 steps (short) but the base model's
    sampled pass@1 can reach 0.34 at T=0.6; with p=(.85,.12,.03) it needs ~2500 steps (r1_zero);
  * base pass@1 with these defaults after 1000 steps: 0.12-0.22 sampled at T=1, 0.13-0.20 at
    T=0.6 (the model picks worked in 15-30% of samples; sampled chains at T=1 are right 50-75% of
    the time), ~0.01 greedy (greedy picks direct). Forcing worked mode gives 0.91-0.998, i.e. what GRPO can reach by moving one token's probability, and ~3x the mean length.
  * 'wait' occurs in 4-10% of the base model's T=1 samples.
  The R1-Zero template costs ~80 prompt tokens per sequence (prompt 87 tokens vs 16 with
  prompt_style="short"; mean document 111 vs 40 tokens), which both slows CPU training ~3x and slows the phase transition.

Language mixing (for the language-consistency reward): documents get a language from
`languages` (weights `language_weights`); with probability `p_mix` a worked/check chain mixes
in another language of `languages`: `mix_style="switch"` changes language at a random step and
keeps it, `mix_style="step"` draws each step's language independently.
"""
from __future__ import annotations

import random
from typing import Iterable, Mapping, Sequence

from r1jax.data.templates import EOS, prompt_for, r1_chat_prompt, r1_zero_prompt
from r1jax.toy.tasks import get_task
from r1jax.toy.tasks.arithmetic import (
    answer_text,
    check_think,
    format_completion,
    make_problems,
    worked_think,
    wrong_answer,
)

MODES = ("direct", "worked", "check")
DEFAULT_DIRECT_ERROR_RATE: dict[int, float] = {1: 0.5, 2: 0.6, 3: 0.75, 4: 0.85, 5: 0.9, 6: 0.95}
DEFAULT_LEVELS = (2, 3, 4, 5)


def _error_rate(direct_error_rate: float | Mapping[int, float], level: int) -> float:
    if isinstance(direct_error_rate, Mapping):
        if level not in direct_error_rate:
            raise KeyError(f"direct_error_rate has no entry for level {level}: {dict(direct_error_rate)}")
        return float(direct_error_rate[level])
    return float(direct_error_rate)


def _step_languages(n_steps: int, primary: str, languages: Sequence[str], p_mix: float, mix_style: str,
                    rng: random.Random) -> list[str]:
    others = [x for x in languages if x != primary]
    if not others or n_steps < 2 or rng.random() >= p_mix:
        return [primary] * n_steps
    if mix_style == "switch":
        k = rng.randrange(1, n_steps)  # steps k.. are in the other language
        other = rng.choice(others)
        return [primary] * k + [other] * (n_steps - k)
    if mix_style == "step":
        while True:
            langs = [rng.choice(list(languages)) for _ in range(n_steps)]
            if len(set(langs)) > 1:
                return langs
    raise ValueError(f"mix_style must be 'switch' or 'step', got {mix_style!r}")


def solution(problem: Mapping, mode: str, rng: random.Random, *,
             direct_error_rate: float | Mapping[int, float] = DEFAULT_DIRECT_ERROR_RATE,
             check_confirm_rate: float = 0.25, languages: Sequence[str] | None = None,
             p_mix: float = 0.0, mix_style: str = "switch", restate: bool = False) -> dict:
    """The completion of `problem` (a make_problems dict) in `mode`, and what it claims:
    dict(completion, answer_given, correct, mode, step_languages, check (info or None))."""
    task = get_task(problem["task"])
    a, b, answer = int(problem["a"]), int(problem["b"]), int(problem["answer"])
    primary = problem.get("language", "en")
    languages = list(languages) if languages else [primary]
    if mode == "direct":
        given = answer
        if rng.random() < _error_rate(direct_error_rate, int(problem["level"])):
            given = wrong_answer(answer, rng)
        return dict(completion=format_completion("", given), answer_given=given, correct=given == answer,
                    mode=mode, step_languages=[], check=None)
    n_steps = len(task.steps(a, b))
    langs = _step_languages(n_steps, primary, languages, p_mix, mix_style, rng)
    if mode == "worked":
        think, info = worked_think(task, a, b, langs, restate), None
    elif mode == "check":
        think, info = check_think(task, a, b, rng, langs, slip=rng.random() >= check_confirm_rate, restate=restate)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return dict(completion=format_completion(think, answer), answer_given=answer, correct=True, mode=mode,
                step_languages=langs, check=info)


def make_pretrain_corpus(
    n: int,
    seed: int,
    *,
    p_direct: float = 0.70,
    p_worked: float = 0.24,
    p_check: float = 0.06,
    direct_error_rate: float | Mapping[int, float] = DEFAULT_DIRECT_ERROR_RATE,
    check_confirm_rate: float = 0.25,
    levels: int | Iterable[int] = DEFAULT_LEVELS,
    tasks: str | Sequence[str] = ("add",),
    languages: Sequence[str] = ("en",),
    language_weights: Sequence[float] | None = None,
    p_mix: float = 0.0,
    mix_style: str = "switch",
    split: str | None = "train",
    prompt_style: str = "r1_zero",
    restate: bool = False,
) -> list[dict]:
    """n pretraining documents: dict(prompt, completion, text, problem, answer, mode, task,
    level, language, id, correct). `text` = prompt + " " + completion. Problems come from the
    `split` side of the hash split (repeats allowed), tasks and languages drawn uniformly /
    by weight, modes by (p_direct, p_worked, p_check) (normalized). prompt_style: "r1_zero" (the
    paper's template) or "short" (its last line, 'User: {problem}. Assistant:'). See the module
    docstring for the defaults' rationale and measurements."""
    prompt_of = lambda q: prompt_for(q, prompt_style)  # noqa: E731
    prompt_of("")  # validate the style early
    probs = [float(p_direct), float(p_worked), float(p_check)]
    if any(p < 0 for p in probs) or sum(probs) <= 0:
        raise ValueError(f"mode probabilities must be >= 0 and not all 0: {probs}")
    total = sum(probs)
    cum = [sum(probs[: i + 1]) / total for i in range(3)]
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    languages = list(languages)
    if language_weights is not None and len(language_weights) != len(languages):
        raise ValueError(f"{len(language_weights)} language_weights for {len(languages)} languages")
    rng = random.Random(f"corpus/{seed}")
    # Draw problems per task and language, then interleave.
    per_task = [make_problems(t, n, seed=rng.randrange(2**31), levels=levels, split=split, unique=False)
                for t in tasks]
    docs = []
    for i in range(n):
        problem = dict(per_task[rng.randrange(len(tasks))][i])
        lang = rng.choices(languages, weights=language_weights)[0] if len(languages) > 1 else languages[0]
        if lang != problem["language"]:
            problem["problem"] = get_task(problem["task"]).problem_text(problem["a"], problem["b"], lang)
            problem["language"] = lang
        u = rng.random()
        mode = MODES[0] if u < cum[0] else MODES[1] if u < cum[1] else MODES[2]
        sol = solution(problem, mode, rng, direct_error_rate=direct_error_rate,
                       check_confirm_rate=check_confirm_rate, languages=languages, p_mix=p_mix, mix_style=mix_style,
                       restate=restate)
        prompt = prompt_of(problem["problem"])
        docs.append(dict(prompt=prompt, completion=sol["completion"], text=prompt + " " + sol["completion"],
                         problem=problem["problem"], answer=problem["answer"], mode=mode, task=problem["task"],
                         level=problem["level"], language=lang, id=problem["id"], correct=sol["correct"]))
    return docs


def make_sft_records(
    n: int,
    seed: int,
    *,
    mode: str = "worked",
    levels: int | Iterable[int] = DEFAULT_LEVELS,
    tasks: str | Sequence[str] = ("add",),
    language: str = "en",
    check_confirm_rate: float = 0.25,
    prompt_style: str = "r1_zero",
    split: str = "train",
    restate: bool = False,
) -> list[dict]:
    """n SFT records dict(prompt, completion, problem, answer, task, level, language, id, mode),
    all correct (mode "worked" or "check"; "mixed" = 80% worked / 20% check), prompts in the
    R1-Zero template (prompt_style="r1_zero") or R1's chat template ("chat"), completions ending
    in the EOS token for the chat style. Problems are unique and from the train split."""

    if mode not in ("worked", "check", "mixed"):
        raise ValueError(f"SFT mode must be 'worked', 'check' or 'mixed', got {mode!r}")
    if prompt_style not in ("r1_zero", "chat"):
        raise ValueError(f"prompt_style must be 'r1_zero' or 'chat', got {prompt_style!r}")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    rng = random.Random(f"sft/{seed}")
    counts = [n // len(tasks) + (1 if i < n % len(tasks) else 0) for i in range(len(tasks))]
    problems = []
    for t, c in zip(tasks, counts):
        problems += make_problems(t, c, seed=rng.randrange(2**31), levels=levels, split=split, language=language)
    rng.shuffle(problems)
    out = []
    for p in problems:
        m = mode if mode != "mixed" else ("check" if rng.random() < 0.2 else "worked")
        sol = solution(p, m, rng, check_confirm_rate=check_confirm_rate, restate=restate)
        if prompt_style == "r1_zero":
            prompt, completion = r1_zero_prompt(p["problem"]), sol["completion"]
        else:
            # The chat template's generation prompt already opens <think>.
            prompt = r1_chat_prompt(p["problem"])
            completion = sol["completion"][len("<think>"):].lstrip() + " " + EOS
        out.append(dict(prompt=prompt, completion=completion, problem=p["problem"], answer=p["answer"],
                        task=p["task"], level=p["level"], language=p["language"], id=p["id"], mode=m))
    return out


def eval_records(n: int, seed: int, *, levels: int | Iterable[int] = DEFAULT_LEVELS,
                 tasks: str | Sequence[str] = ("add",), language: str = "en", split: str = "heldout",
                 prompt_style: str = "r1_zero") -> list[dict]:
    """n unique problems for RL training (split="train") or evaluation (split="heldout"):
    dict(prompt, problem, answer, answer_text, task, level, language, id)."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    rng = random.Random(f"eval/{seed}/{split}")
    counts = [n // len(tasks) + (1 if i < n % len(tasks) else 0) for i in range(len(tasks))]
    out = []
    for t, c in zip(tasks, counts):
        for p in make_problems(t, c, seed=rng.randrange(2**31), levels=levels, split=split, language=language):
            out.append(dict(prompt=prompt_for(p["problem"], prompt_style), problem=p["problem"], answer=p["answer"],
                            answer_text=answer_text(p["answer"]), task=p["task"], level=p["level"],
                            language=p["language"], id=p["id"]))
    rng.shuffle(out)
    return out
