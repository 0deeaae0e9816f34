"""Rule-based accuracy reward for math (DeepSeek-R1 §2.2.2 "accuracy rewards").

    r_acc(completion, answer) = 1.0  if the completion's final answer is equivalent to answer
                                0.0  if it is not, if no answer can be extracted, or on timeout
                                None if the gold ``answer`` itself does not parse (skip the sample):
                                     math_verify yields no sympy expression for it (empty,
                                     unbalanced braces, bare operators)

The final answer is :func:`~r1jax.rewards.extract.extract_answer` (last ``<answer>`` block, or
the last ``\\boxed{..}``). Only for a *numeric gold* (below), a completion with no ``<answer>`` tag
and no ``\\boxed`` also gets a GSM8K-style fallback: the text after the last *lead-in*
(``####``, ``answer is``, ``answer:``; so "The final answer is $18$." or "#### 18") in the part
after the last ``</think>`` (none when a ``<think>`` is never closed), scored only when it is
*prose* with one number (step 1; an expression there scores 0.0). Otherwise: no answer, 0.0.

Equivalence (in this order):

1. Numeric path, in-process, when the gold is a plain number: ``-?\\d+(\\.\\d*)?`` or with
   thousands separators in groups of three (``1,000``, ``10,\\!080``), after dropping spaces,
   ``$`` and ``\\$``. GSM8K golds are all of this kind, most MATH golds too. The answer is
   normalised (markdown bold ``**``, ``\\text{..}``/``\\textbf``/``\\mathrm``/``\\mbox`` wrappers,
   ``$``/``\\$``, ``\\%``, LaTeX spacing ``\\, \\! ~``, ``{,}``, ``^\\circ``/``°`` and unit powers
   like ``cm^2``/``m²`` are removed), cut to the text after its last lead-in, if it has one, and
   then classified:

   * it still holds a LaTeX command, an operator (``^ * / = × ÷ √ ± ≈ ! < > { } |``, ``+``/``-``
     between operands as in ``17-19``) or a Unicode fraction, superscript or subscript (``½``,
     ``²`` not after a length unit): it is an *expression*, scored by math_verify
     (step 2) exactly as before this path existed (``\\frac{36}{2}``, ``x=18``);
   * otherwise it is *prose*, and it must hold **exactly one number** (an optional sign,
     digits with optional ``,ddd`` groups and an optional ``.ddd``): letters, units and currency
     words are allowed around it ("18 dollars", "$1,234.50", "18 eggs in total", "18.", "(18)").
     That number is compared with the gold as :class:`decimal.Decimal` (``18 == 18.0``, no
     tolerance). A number followed by ``%`` (or "percent") also matches a gold of a hundredth of
     it, as math_verify reads it (``25%`` matches ``25`` and ``0.25``).
   * Prose is 0.0 when it is longer than ``MAX_PROSE_CHARS`` characters (an essay or garbage
     around the number), holds two or more numbers ("18 or 19", "between 17 and 19",
     "17, 18, 19", "18 18") or a malformed thousands group ("1,0000", "17,18,19"); short prose
     with no digit at all ("eighteen") goes to math_verify.

   Why it cannot be gamed: a completion yields at most one number (the percent form: one number
   and its hundredth), so listing candidates never scores, and the answer that decides is fixed
   (the last block/box/lead-in) like everywhere else in this module: "The answer is 17. The
   answer is 18." is read as 18, "17 18 19. The answer is 18" as 18 - one guess, as if only the
   last were written. Matching is a numeric comparison of the whole number, never a substring
   test ("180", "1,800", "18.5", "118" are wrong for 18). Expressions keep math_verify's reading,
   which is single-valued too: a list, set or "17 or 18" is a set and never equals a number
   (it reads ``a = b`` and ``a \\lor b`` as ``b``). A plain numeric gold with no extracted
   answer is 0.0 at once.
2. Otherwise ``math_verify``: both sides are parsed with
   ``[LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]`` after wrapping in
   ``\\boxed{..}`` (or as prose when they hold ``$``/``\\(``), and compared with
   ``math_verify.verify(gold, pred)`` (symbolic equality, numeric tolerance, fractions vs
   decimals, intervals, sets, tuples, ``\\text{}``/unit stripping). Gold parses are cached.
   This runs in a worker process of :mod:`r1jax.rewards.pool` under a hard wall-clock limit
   (``timeout``, default 1.5 s, counted from when the task reaches a started worker): an
   expression that hangs or crashes sympy scores 0.0 and its worker is killed and replaced.
   Extracted answers longer than ``MAX_ANSWER_CHARS`` score 0.0 without parsing.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Sequence

from r1jax.rewards.extract import extract_answer
from r1jax.rewards.pool import get_pool

DEFAULT_TIMEOUT = 1.5
_MAX_FAST_LEN = 200
MAX_ANSWER_CHARS = 10_000  # a longer "final answer" is not an answer: 0.0 without parsing
MAX_PROSE_CHARS = 120  # a numeric answer in prose longer than this (after the lead-in) is not an answer

# ---- the gold: a plain number ------------------------------------------------------------------
_GOLD_RE = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)")


def _gold_number(s: str | None) -> Decimal | None:
    """The gold as a number when it is a plain one (module docstring, step 1), else None."""
    if s is None:
        return None
    t = s.replace("\\$", "").replace("\\!", "").replace("{,}", ",").replace("\u2212", "-")
    t = "".join(t.split()).strip("$")
    if len(t) > _MAX_FAST_LEN or not _GOLD_RE.fullmatch(t):
        return None
    try:
        return Decimal(t.replace(",", ""))
    except InvalidOperation:
        return None


# ---- the answer: normalisation, lead-in, classification ----------------------------------------
_LEAD_RE = re.compile(r"####|\banswer\b\s*(?:is\b|:|=)", re.IGNORECASE)
_WRAP_RE = re.compile(r"\\(?:text(?:bf|it|rm|normal|sf|tt)?|math(?:rm|bf|it|sf|tt)|mbox|operatorname)\s*\{([^{}]*)\}")
_UNIT = r"(?:[mck]?m|in(?:ch(?:es)?)?|ft|feet|foot|yd|yards?|mi(?:les?)?|met(?:er|re)s?|units?)"
_UNIT_POWER_RE = re.compile(r"(?<![A-Za-z])(" + _UNIT + r")\s*(?:\^\s*\{?\s*[23]\s*\}?|[²³])")
_SUBS = (  # (pattern, replacement), in order
    (re.compile(r"\*\*|__"), ""),  # markdown bold
    (re.compile(r"[\u2212\u2013\u2014]"), "-"),  # unicode minus / dashes
    (re.compile(r"[\u00a0\u2009\u202f]"), " "),  # non-breaking / thin spaces
    (re.compile(r"\\!\s*"), ""),  # LaTeX negative thin space: "32,\!348"
    (re.compile(r"(?<=\d)\\,(?=\d)"), ""),  # LaTeX thin space as thousands separator: "1\,000"
    (re.compile(r"\{,\}"), ","),  # "1{,}000"
    (re.compile(r"\\\$|\$"), ""),  # currency and math delimiters
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b"), ""),  # degrees
    (re.compile(r"\\[,;: ]|\\q?quad\b|\\(?:left|right)\b|~"), " "),  # LaTeX spacing and sizing
    (re.compile(r"(?<=[A-Za-z])/(?=[A-Za-z])"), " per "),  # "km/h", "$/hour"
)
# what makes an answer an expression for math_verify: a LaTeX command, an operator, a binary +/-
_EXPR_RE = re.compile(
    r"[\\^*/=×÷√±∓≈≠<>≤≥{}|!π\u00b2\u00b3\u00b9\u00bc-\u00be\u2044\u2070-\u2089\u2150-\u215f]"  # ² ½ ⁄ ⁴ ₂ ⅓
    r"|(?<=[^\s(\[])\+|\+(?![\d.])"  # '+' that is not a leading sign
    r"|(?<=[\w).])-(?=[\d(.])|(?<=[\w).])\s+-\s+(?=[\d(.])"  # binary '-': "17-19", "x - 2"; not "18-year", "of -3"
)
_NUM_RE = re.compile(
    r"(?P<sign>(?<![^\s(\[])[-+])?(?P<num>\d+(?:,\d+)*(?:\.\d+)?|\.\d+)(?P<pct>\s*(?:%|(?i:percent)\b))?"
)
_GROUPED_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACED_DIGITS_RE = re.compile(r"(?:[+-] ?)?\d(?: \d)+(?:\.(?: ?\d)+)?")


def _normalise(s: str) -> str:
    for _ in range(4):  # nested wrappers: \textbf{\text{18}}
        t = _WRAP_RE.sub(r" \1 ", s)
        if t == s:
            break
        s = t
    s = _UNIT_POWER_RE.sub(r"\1", s)
    for pat, rep in _SUBS:
        s = pat.sub(rep, s)
    return s


def _after_lead_in(s: str) -> str:
    """The text after the last lead-in ("####", "answer is", "answer:"), or all of s if none."""
    last = None
    for last in _LEAD_RE.finditer(s):
        pass
    return s[last.end():] if last is not None else s


def _read_number(pred: str) -> tuple[str, Decimal | None, bool]:
    """Classify an answer for a numeric gold (module docstring, step 1).

    ("one", value, is_percent), ("reject", None, False) - several numbers, a malformed thousands
    group, too long -, ("expr", None, False) - for math_verify - or ("none", None, False) - no digit.
    """
    s = _after_lead_in(_normalise(pred)).strip()
    if _SPACED_DIGITS_RE.fullmatch(s):  # digits written one token at a time ("6 2", the toy tokenizer's
        return "one", Decimal(s.replace(" ", "")), False  # output): one number, as before ("18 18" is 1818)
    if _EXPR_RE.search(s):
        return "expr", None, False
    if len(s) > MAX_PROSE_CHARS:
        return "reject", None, False
    nums = list(_NUM_RE.finditer(s))
    if not nums:
        return "none", None, False
    if len(nums) > 1:
        return "reject", None, False
    m = nums[0]
    num = m.group("num")
    if "," in num and not _GROUPED_RE.fullmatch(num):
        return "reject", None, False
    try:
        v = Decimal((m.group("sign") or "") + num.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern only admits valid decimals
        return "reject", None, False
    return "one", v, m.group("pct") is not None


def _hundredth(v: Decimal) -> Decimal:
    sign, digits, exp = v.as_tuple()
    return Decimal((sign, digits, exp - 2))  # exact, unlike v / 100 under a finite context


def _lead_in_fallback(completion: str) -> str | None:
    """For a numeric gold and a completion with no <answer> tag and no box: the text after its last
    lead-in, outside the reasoning (after the last </think>; none while a <think> is open)."""
    if "<answer>" in completion:
        return None
    if "</think>" in completion:
        completion = completion.rsplit("</think>", 1)[1]
    elif "<think>" in completion:
        return None
    text = completion.replace("**", "").replace("__", "")
    last = None
    for last in _LEAD_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():].strip()
    return rest or None


def _gold_string(answer: str) -> str:
    """The gold answer as given; a gold that is itself a boxed solution is reduced to the box."""
    if "\\boxed" in answer or "\\fbox" in answer or "<answer>" in answer:
        return extract_answer(answer) or ""
    return answer.strip()


def accuracy_rewards(
    completions: Sequence[str],
    answers: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    num_workers: int | None = None,
    isolation: str = "auto",
) -> list[float | None]:
    """Batched :func:`accuracy_reward`: one entry per (completion, answer) pair.

    Pairs not settled by the fast path are spread over a persistent pool of ``num_workers``
    worker processes (default ``min(4, cpu_count)``; created on first use, killed at exit), each
    confined as the code sandbox is (``isolation="unsafe"``: not confined where that is impossible;
    otherwise :class:`~r1jax.rewards.pool.VerifierError` there).
    """
    if len(completions) != len(answers):
        raise ValueError(f"accuracy_rewards: {len(completions)} completions but {len(answers)} answers")
    out: list = [None] * len(completions)
    slow_idx, slow_pairs = [], []
    for i, (c, a) in enumerate(zip(completions, answers)):
        gold = _gold_string(a if a is not None else "")
        if not gold:
            out[i] = None
            continue
        g = _gold_number(gold)
        pred = extract_answer(c or "")
        fallback = pred is None and g is not None
        if fallback:
            pred = _lead_in_fallback(c or "")
        if pred is not None and len(pred) > MAX_ANSWER_CHARS:
            pred = None
        if g is not None:  # numeric path (module docstring, step 1)
            if pred is None:
                out[i] = 0.0
                continue
            kind, v, pct = _read_number(pred)
            if kind == "one":
                out[i] = 1.0 if v == g or (pct and _hundredth(v) == g) else 0.0
                continue
            if kind == "reject" or fallback:  # the fallback takes a plain number only
                out[i] = 0.0
                continue
        slow_idx.append(i)
        slow_pairs.append((gold, pred))
    if slow_pairs:
        for i, r in zip(slow_idx, get_pool(num_workers, isolation).map(slow_pairs, timeout=timeout)):
            out[i] = r
    return out


def accuracy_reward(completion: str, answer: str, *, timeout: float = DEFAULT_TIMEOUT) -> float | None:
    """1.0 if the completion's final answer equals ``answer``, 0.0 if not, None if the gold does not parse."""
    return accuracy_rewards([completion], [answer], timeout=timeout)[0]
