"""Toy data of the full R1 recipe: two-language problems, cold-start traces, general prompts,
preference pairs.

R1's output format (the cold-start format, kept by every later stage) is reasoning, then a
summary for the reader. In the toy, a completion is

    <think> {worked steps in one language} </think> {summary} <answer> {answer digits} </answer>

with the summary `{so} {answer}` in the prompt's language, e.g. "so 6 1 2" / "donc 6 1 2"
(summary_text says why not the restated problem). It is scored by the "r1"
format template (`<think> T </think> A`, T and A non-empty); the accuracy reward reads the
<answer> block, so R1-Zero-style completions (no summary) are judged by the same eval.

Record kinds:
  reasoning  the arithmetic problems (r1jax.toy.tasks), prompt in "en" or "fr";
  general    the toy's "general prompts", which need no reasoning:
             echo     "write 4 5 6" / "écris 4 5 6" -> `<think> </think> so 4 5 6 <answer> 4 5 6 </answer>`
             simple   one-digit sums "what is 3 + 4" -> `<think> </think> so 7 <answer> 7 </answer>`
             They answer without a chain of thought, as R1 does for simple queries; they are the
             non-reasoning part of the rejection-sampling SFT set and the prompts judged by the
             reward model in alignment RL.

Preference pairs (reward-model training, `make_preference_pairs`): the same prompt with a
helpful response (the readable summary in the prompt's language, consistent with the <answer>
block) and a degenerate one, one of DEGENERATE_KINDS:
  no_summary      the bare <answer> block (nothing for the reader)
  other_language  the summary in the other language
  mixed           the summary's words drawn from both languages
  repetition      a word of the summary looped 4-8 times
  no_answer       the summary without the <answer> block
  truncated       cut in the middle of the reasoning (no </think>)
  inconsistent    the summary states another number than the <answer> block
The reward model sees the prompt and the final part of a response (`final_part`: what follows
</think>, as R1's helpfulness model judges only the summary), so pairs are short.
"""
from __future__ import annotations

import random
from typing import Iterable, Sequence

from r1jax.toy.corpus import solution
from r1jax.data.templates import final_part, think_of  # noqa: F401 (generic R1-format helpers, re-exported)
from r1jax.toy.tasks import get_task
from r1jax.toy.tasks.arithmetic import (
    LANGUAGES,
    answer_text,
    get_language,
    make_problems,
    wrong_answer,
)
from r1jax.data.templates import prompt_for

DEGENERATE_KINDS = ("no_summary", "other_language", "mixed", "repetition", "no_answer", "truncated",
                    "inconsistent")
DEFAULT_LEVELS = (2, 3, 4, 5)


# ------------------------------------------------------------------------------- problems


def make_problems_multi(task: str, n: int, seed: int, *, levels=DEFAULT_LEVELS, split: str = "train",
                        languages: Sequence[str] = ("en", "fr")) -> list[dict]:
    """n unique problems of `task` (make_problems dicts), the i-th posed in languages[i % len]."""
    probs = make_problems(task, n, seed=seed, levels=tuple(levels), split=split)
    t = get_task(task)
    out = []
    for i, p in enumerate(probs):
        lang = languages[i % len(languages)]
        q = dict(p)
        q["problem"] = t.problem_text(q["a"], q["b"], lang)
        q["language"] = lang
        q["kind"] = "reasoning"
        out.append(q)
    return out


# ------------------------------------------------------------------------------- R1 format


def summary_text(problem: dict, lang: str | None = None, answer: int | None = None) -> str:
    """`{so} {answer}` in `lang` (default: the problem's language), e.g. "so 6 1 2" / "donc 6 1 2".

    Not `{so} {a} + {b} {is} {answer}`: restating the problem after </think> makes the toy model
    copy both operands from the prompt (a long-range lookup it does badly) right before the
    answer, and measured, the answer then follows the garbled restatement: after cold-start SFT on
    that format the chains were right but held-out pass@1 was 0.05 (the summary's operands and sum
    were wrong). `{so} {answer}` copies the chain's last `write` (a few tokens back)."""
    table = get_language(lang or problem.get("language", "en"))
    ans = problem["answer"] if answer is None else answer
    return f"{table['so']} {answer_text(int(ans))}"


def r1_completion(think: str, summary: str, answer) -> str:
    """`<think> {think} </think> {summary} <answer> {answer} </answer>` (think may be empty)."""
    ans = answer_text(int(answer)) if not isinstance(answer, str) else answer
    think = think.strip()
    mid = f" {think} " if think else " "
    return f"<think>{mid}</think> {summary} <answer> {ans} </answer>"


def make_cold_start_records(n: int, seed: int, *, levels=DEFAULT_LEVELS, tasks=("add",),
                            languages: Sequence[str] = ("en", "fr"), p_check: float = 0.3,
                            prompt_style: str = "r1_zero", split: str = "train", restate: bool = False) -> list[dict]:
    """R1's cold-start set: n readable single-language long-CoT traces with a summary at the end.

    Each record: prompt, completion (R1 format above), problem, answer, language, task, level,
    id, kind="reasoning", mode ("worked", or "check" with probability p_check: a slip caught by
    `wait , check :`, the reflection R1 wants in its cold-start data). All correct; the chain
    and the summary are in the prompt's language. restate: the chain format of the pretraining
    corpus (each step restates the operands' remaining columns, r1jax.toy.corpus.solution)."""
    rng = random.Random(f"cold_start/{seed}")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    problems = []
    for i, t in enumerate(tasks):
        m = n // len(tasks) + (1 if i < n % len(tasks) else 0)
        problems += make_problems_multi(t, m, rng.randrange(2**31), levels=levels, split=split, languages=languages)
    rng.shuffle(problems)
    out = []
    for p in problems:
        mode = "check" if rng.random() < p_check else "worked"
        sol = solution(p, mode, rng, check_confirm_rate=0.25, languages=[p["language"]], p_mix=0.0, restate=restate)
        completion = r1_completion(think_of(sol["completion"]), summary_text(p), p["answer"])
        out.append(dict(prompt=prompt_for(p["problem"], prompt_style), completion=completion, problem=p["problem"],
                        answer=str(p["answer"]), language=p["language"], task=p["task"], level=p["level"], id=p["id"],
                        a=p["a"], b=p["b"], kind="reasoning", mode=mode))
    return out


# -------------------------------------------------------------------------- general prompts


def _digits(rng: random.Random, lo: int = 1, hi: int = 5) -> int:
    k = rng.randint(lo, hi)
    return rng.randint(10 ** (k - 1) if k > 1 else 0, 10**k - 1)


def make_general_records(n: int, seed: int, *, languages: Sequence[str] = ("en", "fr"), p_echo: float = 0.6,
                         prompt_style: str = "r1_zero") -> list[dict]:
    """n general (non-reasoning) records: echo requests and one-digit sums, answered without a
    chain of thought (module docstring). Fields as make_cold_start_records plus `kind="general"`
    and `general` ("echo" | "simple"); `answer` is exact so the rule rewards can audit them."""
    rng = random.Random(f"general/{seed}")
    out = []
    for i in range(n):
        lang = languages[i % len(languages)]
        table = get_language(lang)
        if rng.random() < p_echo:
            x = _digits(rng)
            problem = f"{table['write']} {answer_text(x)}"
            completion = r1_completion("", f"{table['so']} {answer_text(x)}", x)
            rec = dict(problem=problem, answer=str(x), general="echo", a=x, b=None, task="echo", level=0,
                       id=f"echo:{x}:{lang}")
        else:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            t = get_task("add")
            p = dict(task="add", a=a, b=b, answer=a + b, language=lang)
            problem = t.problem_text(a, b, lang)
            completion = r1_completion("", summary_text(p), a + b)
            rec = dict(problem=problem, answer=str(a + b), general="simple", a=a, b=b, task="add", level=1,
                       id=f"add:{a}+{b}:{lang}")
        rec.update(prompt=prompt_for(rec["problem"], prompt_style), completion=completion, language=lang,
                   kind="general", mode="direct")
        out.append(rec)
    return out


# -------------------------------------------------------------------------- preference pairs


def _other(lang: str, languages: Sequence[str]) -> str:
    others = [x for x in languages if x != lang] or [x for x in LANGUAGES if x != lang]
    return others[0]


def degenerate_completion(rec: dict, kind: str, rng: random.Random, languages: Sequence[str] = ("en", "fr")) -> str:
    """A degenerate response of `kind` (DEGENERATE_KINDS) to the prompt of `rec` (a cold-start
    or general record: needs problem fields and `completion`)."""
    lang = rec["language"]
    other = _other(lang, languages)
    ans = int(rec["answer"])
    is_echo = rec.get("general") == "echo"
    think = think_of(rec["completion"])

    def summ(lg, answer=None):
        if is_echo:
            return f"{get_language(lg)['so']} {answer_text(ans if answer is None else answer)}"
        return summary_text(rec, lg, answer)

    good = summ(lang)
    if kind == "no_summary":
        return r1_completion(think, "", ans).replace("</think>  <answer>", "</think> <answer>")
    if kind == "other_language":
        return r1_completion(think, summ(other), ans)
    if kind == "mixed":
        words = good.split()
        alt = summ(other).split()
        if len(alt) != len(words):
            alt = words
        mixed = [w2 if (not w1.isdigit() and rng.random() < 0.5) else w1 for w1, w2 in zip(words, alt)]
        if mixed == words:  # make sure a word switched
            mixed[0] = alt[0]
        return r1_completion(think, " ".join(mixed), ans)
    if kind == "repetition":
        words = good.split()
        j = rng.randrange(len(words))
        loop = [words[j]] * rng.randint(4, 8)
        return r1_completion(think, " ".join(words[: j + 1] + loop + words[j + 1:]), ans)
    if kind == "no_answer":
        th = f" {think} " if think else " "
        return f"<think>{th}</think> {good}"
    if kind == "truncated":
        words = ("<think> " + think).split() if think else ["<think>"] + good.split()
        cut = rng.randint(max(1, len(words) // 3), max(1, len(words) - 1))
        return " ".join(words[:cut])
    if kind == "inconsistent":
        return r1_completion(think, summ(lang, wrong_answer(ans, rng)), ans)
    raise ValueError(f"unknown degenerate kind {kind!r}; known: {DEGENERATE_KINDS}")


def make_preference_pairs(n: int, seed: int, *, languages: Sequence[str] = ("en", "fr"), levels=DEFAULT_LEVELS,
                          p_general: float = 0.3, kinds: Iterable[str] = DEGENERATE_KINDS, split: str = "train",
                          prompt_style: str = "r1_zero", restate: bool = False) -> list[dict]:
    """n preference pairs dict(prompt, chosen, rejected, kind, language, problem): chosen is the
    helpful R1-format response, rejected a degenerate one (kinds cycled in order, so every kind
    has n / len(kinds) pairs). Prompts: reasoning problems of `split` and general prompts."""
    kinds = list(kinds)
    rng = random.Random(f"prefs/{seed}/{split}")
    n_gen = int(round(n * p_general))
    recs = make_cold_start_records(n - n_gen, rng.randrange(2**31), levels=levels, languages=languages,
                                   prompt_style=prompt_style, split=split, restate=restate)
    recs += make_general_records(n_gen, rng.randrange(2**31) + (0 if split == "train" else 7919),
                                 languages=languages, prompt_style=prompt_style)
    rng.shuffle(recs)
    out = []
    for i, r in enumerate(recs):
        kind = kinds[i % len(kinds)]
        out.append(dict(prompt=r["prompt"], chosen=r["completion"], rejected=degenerate_completion(r, kind, rng, languages),
                        kind=kind, language=r["language"], problem=r["problem"], record_kind=r["kind"]))
    return out
