"""Language mixing in chains of thought: the toy languages for the language reward, and the metric.

DeepSeek-R1-Zero's chains of thought mix languages; R1 adds a language-consistency reward
(share of CoT words in the target language) to stop it. The toy task family has two
"languages" (r1jax.toy.tasks.arithmetic.LANGUAGES: "en" and "fr", no word in common); this
module makes them usable by the reward and measures mixing:

    names = register_toy_languages()          # {"en": "toy_en", "fr": "toy_fr"} (idempotent)
    language_consistency_reward(text, "toy_fr")        # share of CoT words that are French words
    language_mixing_rate(texts)                        # share of CoTs with words of > 1 language
    language_mixing_rate(texts, ["en", "fr", ...])     # ... or with any word of another language
                                                       # than the prompt's (one language per text)

Toy words: the CoT (r1jax.rewards.language.chain_of_thought) is split on whitespace and every
token without a letter (digits, "+", ",", ";", ":") or that is a tag ("<think>", "<answer>",
...) is dropped: digits and tags are neutral, they belong to no language and do not count in
the reward's denominator. A remaining token is in language L iff it is one of
`words_of_language(L)`; a token of no toy language (a stray template word) counts in the
denominator only, so it lowers the reward.

The toy languages are registered as "toy_en" / "toy_fr" (not "en"): the built-in "en" of the
language reward (any Latin-script word) is used on real data and stays as it is. Pipelines turn
a record's language into the reward's name with `toy_language_name`.
"""
from __future__ import annotations

from typing import Sequence

from r1jax.rewards.language import chain_of_thought, register_language
from r1jax.toy.tasks.arithmetic import LANGUAGES, words_of_language

TOY_PREFIX = "toy_"


def toy_language_name(language: str) -> str:
    """'en' -> 'toy_en' (the name registered with the language reward); 'toy_en' stays."""
    if language.startswith(TOY_PREFIX):
        return language
    if language not in LANGUAGES:
        raise KeyError(f"unknown toy language {language!r}; known: {sorted(LANGUAGES)}")
    return TOY_PREFIX + language


def _base_name(language: str) -> str:
    return language[len(TOY_PREFIX):] if language.startswith(TOY_PREFIX) else language


def toy_words(text: str) -> list[str]:
    """Whitespace tokens with at least one letter, tags (<think>, </answer>, ...) left out."""
    out = []
    for w in text.split():
        if w.startswith("<") and w.endswith(">"):
            continue
        if any(ch.isalpha() for ch in w):
            out.append(w)
    return out


def register_toy_languages() -> dict[str, str]:
    """Registers every toy language with the language-consistency reward as toy_<name>.
    Returns {toy language: registered name}. Safe to call many times."""
    names = {}
    for lang in LANGUAGES:
        vocab = words_of_language(lang)
        register_language(TOY_PREFIX + lang, lambda w, _v=vocab: w in _v, toy_words)
        names[lang] = TOY_PREFIX + lang
    return names


def cot_languages(text: str) -> set[str]:
    """The toy languages whose words occur in the chain of thought of `text`."""
    found = set()
    for w in toy_words(chain_of_thought(text or "")):
        for lang in LANGUAGES:
            if w in words_of_language(lang):
                found.add(lang)
    return found


def is_mixed(text: str, language: str | None = None) -> bool:
    """True if the CoT uses words of more than one toy language, or (with the prompt's
    `language`) any word of a toy language other than it."""
    langs = cot_languages(text)
    if len(langs) > 1:
        return True
    return language is not None and bool(langs - {_base_name(language)})


def language_mixing_rate(texts: Sequence[str], language: str | Sequence[str | None] | None = None) -> float:
    """Share of completions whose chain of thought mixes languages (see `is_mixed`).

    language: None (mixing = words of more than one language), one language for all texts, or
    one per text (the prompt's language; "en" and "toy_en" are the same). nan for no texts."""
    texts = list(texts)
    if not texts:
        return float("nan")
    if language is None or isinstance(language, str):
        langs = [language] * len(texts)
    else:
        langs = list(language)
        if len(langs) != len(texts):
            raise ValueError(f"language_mixing_rate: {len(langs)} languages for {len(texts)} texts")
    return sum(is_mixed(t, lg) for t, lg in zip(texts, langs)) / len(texts)
