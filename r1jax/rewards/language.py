"""Language-consistency reward (DeepSeek-R1 §2.3.2): share of CoT words in the target language.

    r_lang(completion, L) = #{w in words(CoT) : is_L(w)} / #words(CoT)        (0.0 if no words)

* CoT = the text between the first ``<think>`` (or the start of the completion, when the prompt
  opened the think block) and the first ``</think>`` (or the end, when the block never closes).
* words(text): every CJK ideograph is one word (Chinese has no spaces); every maximal run of
  other Unicode letters is one word. Digits, punctuation, math symbols and whitespace are not
  words, so equations neither help nor hurt.
* Built-in predicates: ``"en"`` - the word is Latin script (ASCII letters plus the Latin-1 and
  Latin Extended letters), ``"zh"`` - the word is a CJK ideograph.
* A CoT with no words scores 0.0: there is no evidence of the target language, and an empty
  reasoning should not earn the reward that a consistent one earns.

Custom languages: ``register_language("toy_a", lambda w: w in VOCAB_A)``; an optional
``tokenizer(text) -> list[str]`` replaces the default word splitter for that language.
"""
from __future__ import annotations

import re
from typing import Callable

_CJK = (
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0002a6df\U0002a700-\U0002ebef\U00030000-\U0003134f"
)
_WORD_RE = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])[^\W\d_])+")
_LATIN_RE = re.compile(r"[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]+")
_CJK_RE = re.compile(rf"[{_CJK}]+")


def words(text: str) -> list[str]:
    """Default word splitter: one word per CJK ideograph, one per run of other letters."""
    return _WORD_RE.findall(text)


_LANGUAGES: dict[str, tuple[Callable[[str], bool], Callable[[str], list[str]]]] = {
    "en": (lambda w: _LATIN_RE.fullmatch(w) is not None, words),
    "zh": (lambda w: _CJK_RE.fullmatch(w) is not None, words),
}


def register_language(
    name: str, predicate: Callable[[str], bool], tokenizer: Callable[[str], list[str]] | None = None
) -> None:
    """Register (or replace) language ``name``: ``predicate(word) -> bool`` says a word is in it."""
    if not callable(predicate):
        raise TypeError(f"register_language({name!r}): predicate must be callable")
    _LANGUAGES[name] = (predicate, tokenizer or words)


def languages() -> list[str]:
    return sorted(_LANGUAGES)


def chain_of_thought(completion: str) -> str:
    """The reasoning part of a completion (see module docstring)."""
    start = completion.find("<think>")
    start = 0 if start < 0 else start + len("<think>")
    end = completion.find("</think>", start)
    return completion[start:] if end < 0 else completion[start:end]


def language_consistency_reward(completion: str, language: str = "en") -> float:
    """Fraction of the chain-of-thought's words that are in ``language`` (0.0 with no words)."""
    try:
        predicate, tokenizer = _LANGUAGES[language]
    except KeyError:
        raise ValueError(
            f"language_consistency_reward: unknown language {language!r}; registered: {languages()}"
        ) from None
    ws = tokenizer(chain_of_thought(completion or ""))
    if not ws:
        return 0.0
    return sum(1 for w in ws if predicate(w)) / len(ws)
