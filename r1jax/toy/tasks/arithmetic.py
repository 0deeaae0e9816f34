"""Synthetic arithmetic reasoning tasks with exact integer answers and difficulty levels.

Two task families (registered in `r1jax.toy.tasks.TASKS`):

  add   a + b, both operands with `level` digits (level 1..6; the toy R1-Zero uses 2..5)
  mul1  a * d, a with `level` digits, d a single digit 2..9

Every number is written digit by digit with spaces ("4 5 6") so a word-level tokenizer sees
each digit as one token; the problem, the worked steps and the <answer> content all follow it.

Worked-step solutions go right to left, one column a step, each step local and easy:

  add   6 plus 6 plus 0 is 1 2 , write 2 carry 1 ; 5 plus 5 plus 1 is 1 1 , write 1 2 carry 1 ;
        4 plus 1 plus 1 is 6 , write 6 1 2 ;
  mul1  6 times 7 plus 0 is 4 2 , write 2 carry 4 ; ... ; 4 times 7 plus 3 is 3 1 , write 3 1 9 2 ;

`write` shows the result so far (the new digit in front of the previous `write`), so the last
step's `write` is the answer and nothing has to be reversed; the last step writes its whole
column sum (no `carry`). A step's words (plus / times / is / write / carry / wait / check) come
from a `Language` table, so another language is another table (see LANGUAGES).

Problems are split train / held-out by a hash of their canonical key (task, operands), not by
the sampling seed, so no held-out problem can ever appear in training data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Iterable, Sequence

# --------------------------------------------------------------------------------------------
# Languages: the words a reasoning chain uses. Digits, operators, punctuation and tags are
# neutral (they belong to no language).
# --------------------------------------------------------------------------------------------

LANGUAGE_KEYS = ("ask", "plus", "times", "equals", "write", "carry", "wait", "check", "so", "answer")

LANGUAGES: dict[str, dict[str, str]] = {
    # English.
    "en": {
        "ask": "what is",  # problem phrasing: "what is 4 5 6 + 1 5 6"
        "plus": "plus",
        "times": "times",
        "equals": "is",
        "write": "write",
        "carry": "carry",
        "wait": "wait",
        "check": "check",
        "so": "so",  # reserved (in the vocabulary, unused by the current writers)
        "answer": "answer",  # reserved
    },
    # French (no word in common with "en"; accents kept, the tokenizer handles them).
    "fr": {
        "ask": "combien font",
        "plus": "et",
        "times": "fois",
        "equals": "font",
        "write": "écris",
        "carry": "retenue",
        "wait": "attends",
        "check": "vérifions",
        "so": "donc",
        "answer": "réponse",
    },
}

NEUTRAL_TOKENS = tuple("0123456789") + ("+", "*", ",", ";", ":", "<think>", "</think>", "<answer>", "</answer>")


def get_language(name: str) -> dict[str, str]:
    """The word table of language `name` (KeyError naming the known languages)."""
    try:
        return LANGUAGES[name]
    except KeyError:
        raise KeyError(f"unknown language {name!r}; known: {sorted(LANGUAGES)}") from None


def words_of_language(name: str) -> frozenset[str]:
    """Every word (whitespace-separated) that language `name` can produce."""
    return frozenset(w for phrase in get_language(name).values() for w in phrase.split())


def all_language_words() -> list[str]:
    """Every word of every language, sorted (for the tokenizer's vocabulary)."""
    return sorted({w for name in LANGUAGES for w in words_of_language(name)})


def classify_word(word: str) -> str | None:
    """The language `word` belongs to, or None for neutral / unknown tokens."""
    for name in LANGUAGES:
        if word in words_of_language(name):
            return name
    return None


# --------------------------------------------------------------------------------------------
# Numbers as text.
# --------------------------------------------------------------------------------------------


def answer_text(answer: int) -> str:
    """612 -> "6 1 2"; -45 -> "- 4 5" (digits space-separated)."""
    answer = int(answer)
    digits = " ".join(str(abs(answer)))
    return f"- {digits}" if answer < 0 else digits


def parse_answer_text(text: str | None) -> int | None:
    """Inverse of answer_text, tolerant of spacing: "6 1 2", "612", " 6 12 " -> 612. None if the
    text (spaces removed) is not an optionally signed run of digits."""
    if text is None:
        return None
    s = "".join(str(text).split())
    if not s:
        return None
    sign = 1
    if s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if not s or not s.isascii() or not s.isdigit():
        return None
    return sign * int(s)


def digits_text(n: int) -> str:
    return answer_text(n)


# --------------------------------------------------------------------------------------------
# Tasks.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    """One column of a worked solution: x op y plus carry_in is value, then write/carry.

    `written` is the result so far after this step (digits, most significant first); `carry_out`
    is None on the last step, which writes its whole value.
    """

    x: int
    y: int
    carry_in: int
    value: int
    written: str  # digits without spaces, e.g. "12"
    carry_out: int | None
    operands: str = ""  # the operands' columns not yet done, e.g. "4 5 + 1 5" (rendered with restate=True)

    def render(self, op_word: str, lang: dict[str, str], restate: bool = False) -> str:
        lead = f"{self.operands} : " if restate and self.operands else ""
        head = (
            f"{lead}{self.x} {op_word} {self.y} {lang['plus']} {self.carry_in} {lang['equals']} "
            f"{digits_text(self.value)} , {lang['write']} {' '.join(self.written)}"
        )
        if self.carry_out is not None:
            head += f" {lang['carry']} {self.carry_out}"
        return head + " ;"


def _steps_columns(xs: Sequence[int], y_of, combine, operands_of=None) -> list[Step]:
    """Right-to-left column steps. xs: digits of the first operand (most significant first);
    y_of(i): the second operand's digit in column i (0 = units); combine(x, y, c) -> value;
    operands_of(i): the text of the operands' columns i.. (the restated problem before step i)."""
    n = len(xs)
    steps: list[Step] = []
    carry, written = 0, ""
    for i in range(n):
        x, y = xs[n - 1 - i], y_of(i)
        value = combine(x, y, carry)
        last = i == n - 1
        operands = operands_of(i) if operands_of else ""
        if last:
            written = str(value) + written
            steps.append(Step(x, y, carry, value, written, None, operands))
        else:
            written = str(value % 10) + written
            steps.append(Step(x, y, carry, value, written, value // 10, operands))
            carry = value // 10
    return steps


@dataclasses.dataclass(frozen=True)
class Task:
    """A task family. Subclasses define sampling, the answer, the problem text and the steps."""

    name: str
    symbol: str  # operator in the problem text
    op_key: str  # Language key of the step operator word
    min_level: int = 1
    max_level: int = 6

    # --- to override ---
    def sample_operands(self, level: int, rng: random.Random) -> tuple[int, int]:
        raise NotImplementedError

    def answer(self, a: int, b: int) -> int:
        raise NotImplementedError

    def steps(self, a: int, b: int) -> list[Step]:
        raise NotImplementedError

    def combine(self, x: int, y: int, carry: int) -> int:
        raise NotImplementedError

    # --- shared ---
    def check_level(self, level: int) -> int:
        level = int(level)
        if not self.min_level <= level <= self.max_level:
            raise ValueError(f"task {self.name!r}: level {level} outside {self.min_level}..{self.max_level}")
        return level

    def expression(self, a: int, b: int) -> str:
        return f"{digits_text(a)} {self.symbol} {digits_text(b)}"

    def problem_text(self, a: int, b: int, lang: str = "en") -> str:
        return f"{get_language(lang)['ask']} {self.expression(a, b)}"

    def key(self, a: int, b: int) -> str:
        """Canonical identity of a problem (language-independent): the train/held-out split and
        deduplication use it."""
        return f"{self.name}:{a}{self.symbol}{b}"

    def render_steps(self, steps: Sequence[Step], lang: str | Sequence[str] = "en", restate: bool = False) -> list[str]:
        """Render each step in `lang` (one language, or one language per step). restate=True puts the
        operands' remaining columns before each step ("4 5 + 1 5 : 5 plus 5 ..."), so the digits a
        step adds are always the ones just before `+` and `:` (a local copy, not a lookup by
        column position in the prompt)."""
        langs = [lang] * len(steps) if isinstance(lang, str) else list(lang)
        if len(langs) != len(steps):
            raise ValueError(f"{len(langs)} languages for {len(steps)} steps")
        out = []
        for st, ln in zip(steps, langs):
            table = get_language(ln)
            out.append(st.render(table[self.op_key], table, restate))
        return out


@dataclasses.dataclass(frozen=True)
class AddTask(Task):
    name: str = "add"
    symbol: str = "+"
    op_key: str = "plus"

    def sample_operands(self, level, rng):
        lo, hi = 10 ** (level - 1) if level > 1 else 0, 10**level - 1
        return rng.randint(lo, hi), rng.randint(lo, hi)

    def answer(self, a, b):
        return a + b

    def combine(self, x, y, carry):
        return x + y + carry

    def steps(self, a, b):
        xs = [int(c) for c in str(a)]
        ys = [int(c) for c in str(b).rjust(len(xs), "0")]
        if len(str(b)) > len(xs):
            raise ValueError(f"add steps need len(b) <= len(a): {a} + {b}")
        n = len(xs)
        return _steps_columns(xs, lambda i: ys[len(ys) - 1 - i], self.combine,
                              lambda i: f"{' '.join(map(str, xs[: n - i]))} + {' '.join(map(str, ys[: n - i]))}")


@dataclasses.dataclass(frozen=True)
class Mul1Task(Task):
    name: str = "mul1"
    symbol: str = "*"
    op_key: str = "times"

    def sample_operands(self, level, rng):
        lo, hi = 10 ** (level - 1) if level > 1 else 0, 10**level - 1
        return rng.randint(lo, hi), rng.randint(2, 9)

    def answer(self, a, b):
        return a * b

    def combine(self, x, y, carry):
        return x * y + carry

    def steps(self, a, b):
        if not 0 <= b <= 9:
            raise ValueError(f"mul1 needs a one-digit multiplier: {a} * {b}")
        xs = [int(c) for c in str(a)]
        n = len(xs)
        return _steps_columns(xs, lambda i: b, self.combine, lambda i: f"{' '.join(map(str, xs[: n - i]))} * {b}")


# --------------------------------------------------------------------------------------------
# Problems and splits.
# --------------------------------------------------------------------------------------------

HELDOUT_PERCENT = 10  # share of every task's problem space reserved for held-out evaluation


def split_of(key: str, heldout_percent: int = HELDOUT_PERCENT) -> str:
    """'heldout' or 'train', a pure function of the problem's canonical key."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return "heldout" if h % 100 < heldout_percent else "train"


def _levels_list(levels: int | Iterable[int]) -> list[int]:
    if isinstance(levels, int):
        return [levels]
    out = [int(x) for x in levels]
    if not out:
        raise ValueError("levels is empty")
    return out


def make_problems(
    task: str | Task,
    n: int,
    seed: int,
    levels: int | Iterable[int] = (2, 3, 4, 5),
    *,
    split: str | None = "train",
    language: str = "en",
    unique: bool = True,
    heldout_percent: int = HELDOUT_PERCENT,
) -> list[dict]:
    """n problems of `task` with levels drawn uniformly from `levels`.

    Returns dicts: problem (text, digits spaced), answer (int), task, level, id (canonical key),
    a, b (operands), language. `split` "train" / "heldout" keeps only problems whose key hashes
    to that split (None: both). `unique` drops repeats (raises if the problem space at these
    levels cannot supply n).
    """

    t = get_task(task) if isinstance(task, str) else task
    if split not in ("train", "heldout", None):
        raise ValueError(f"split must be 'train', 'heldout' or None, got {split!r}")
    get_language(language)  # validate early
    lv = [t.check_level(x) for x in _levels_list(levels)]
    rng = random.Random(f"{t.name}/{seed}/{split}")
    out: list[dict] = []
    seen: set[str] = set()
    attempts, max_attempts = 0, 200 * max(n, 1) + 1000
    while len(out) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"could only find {len(out)} {'unique ' if unique else ''}{split or ''} problems of task "
                f"{t.name!r} at levels {lv} (asked for {n})"
            )
        level = lv[rng.randrange(len(lv))]
        a, b = t.sample_operands(level, rng)
        key = t.key(a, b)
        if split is not None and split_of(key, heldout_percent) != split:
            continue
        if unique:
            if key in seen:
                continue
            seen.add(key)
        out.append(
            dict(
                problem=t.problem_text(a, b, language),
                answer=t.answer(a, b),
                task=t.name,
                level=level,
                id=key,
                a=a,
                b=b,
                language=language,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Solutions.
# --------------------------------------------------------------------------------------------


def worked_think(task: str | Task, a: int, b: int, lang: str | Sequence[str] = "en", restate: bool = False) -> str:
    """The worked steps (content of <think>), in one language or one language per step
    (restate: see Task.render_steps)."""

    t = get_task(task) if isinstance(task, str) else task
    return " ".join(t.render_steps(t.steps(a, b), lang, restate))


def format_completion(think: str, answer: int | str) -> str:
    """`<think> {think} </think> <answer> {answer digits} </answer>` (think may be empty)."""
    ans = answer_text(answer) if isinstance(answer, int) else str(answer)
    think = think.strip()
    mid = f" {think} " if think else " "
    return f"<think>{mid}</think> <answer> {ans} </answer>"


def slip_value(step: Step, task: Task, rng: random.Random) -> int:
    """A plausible wrong column value for `step`: forgetting the carry, or off by one or two."""
    true = step.value
    candidates = []
    if step.carry_in:
        candidates.append(true - step.carry_in)  # forgot the carry
    for d in (1, -1, 2, -2):
        candidates.append(true + d)
    candidates = [v for v in candidates if v >= 0 and v != true]
    if step.carry_in and rng.random() < 0.5:
        return candidates[0]
    return candidates[rng.randrange(len(candidates))]


def check_think(
    task: str | Task,
    a: int,
    b: int,
    rng: random.Random,
    lang: str | Sequence[str] = "en",
    *,
    slip: bool = True,
    step_index: int | None = None,
    restate: bool = False,
) -> tuple[str, dict]:
    """Worked steps with one check: at step j the writer slips (wrong column value, with the
    write/carry that follow from it), then says `wait , check :` and redoes step j correctly,
    and continues correctly. With slip=False the checked step was right and the check confirms
    it (same step repeated). Returns (think text, info dict: step, slip_value, true_value)."""

    t = get_task(task) if isinstance(task, str) else task
    steps = t.steps(a, b)
    langs = [lang] * len(steps) if isinstance(lang, str) else list(lang)
    j = rng.randrange(len(steps)) if step_index is None else int(step_index)
    good = steps[j]
    prev_written = steps[j - 1].written if j > 0 else ""
    if slip:
        v = slip_value(good, t, rng)
        if good.carry_out is None:
            bad = dataclasses.replace(good, value=v, written=str(v) + prev_written)
        else:
            bad = dataclasses.replace(good, value=v, written=str(v % 10) + prev_written, carry_out=v // 10)
    else:
        v, bad = good.value, good
    rendered = t.render_steps(steps, langs, restate)
    table = get_language(langs[j])
    bad_text = bad.render(table[t.op_key], table, restate)
    check = f"{table['wait']} , {table['check']} : {rendered[j]}"
    parts = rendered[:j] + [bad_text, check] + rendered[j + 1 :]
    return " ".join(parts), dict(step=j, slip_value=v, true_value=good.value, slipped=bool(slip))


def wrong_answer(answer: int, rng: random.Random) -> int:
    """A guess near `answer`: one digit changed (70%) or two (30%), same number of digits."""
    s = list(str(answer))
    k = 1 if (len(s) == 1 or rng.random() < 0.7) else 2
    positions = rng.sample(range(len(s)), k)
    for p in positions:
        choices = [c for c in "0123456789" if c != s[p] and not (p == 0 and c == "0" and len(s) > 1)]
        s[p] = rng.choice(choices)
    out = int("".join(s))
    return out if out != answer else answer + 1


# --------------------------------------------------------------------------------------------
# Verification (used by tests and by anyone auditing generated data).
# --------------------------------------------------------------------------------------------


def parse_steps(think: str) -> list[dict]:
    """Parse a worked chain (any language) back into steps: dicts with x, y, carry_in, value,
    written, carry_out (None if absent), checked (True for a `wait , check :` redo), operands (the
    restated operands before the step, "" when not restated)."""
    out = []
    for chunk in think.split(";"):
        toks = chunk.split()
        if not toks:
            continue
        checked = False
        if len(toks) >= 3 and toks[1] == "," and toks[2] in {get_language(n)["check"] for n in LANGUAGES}:
            checked = True
            toks = toks[4:]  # wait , check :
        operands = ""
        if ":" in toks and any(tk in ("+", "*") for tk in toks[: toks.index(":")]):  # restated operands
            operands = " ".join(toks[: toks.index(":")])
            toks = toks[toks.index(":") + 1 :]
        # x OP y PLUS c IS v... , WRITE w... [CARRY c]
        x, y, c = int(toks[0]), int(toks[2]), int(toks[4])
        comma = toks.index(",")
        value = int("".join(toks[6:comma]))
        rest = toks[comma + 2 :]
        carry_out = None
        if len(rest) >= 2 and not rest[-2].isdigit():
            carry_out = int(rest[-1])
            rest = rest[:-2]
        out.append(dict(x=x, y=y, carry_in=c, value=value, written="".join(rest), carry_out=carry_out, checked=checked,
                        operands=operands))
    return out


TASKS: dict[str, Task] = {
    "add": AddTask(),
    "mul1": Mul1Task(),
}


def get_task(name: str) -> Task:
    """The registered task `name` (KeyError naming the known tasks)."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None
