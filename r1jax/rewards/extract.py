"""Pull the final answer (math) or the final code block (code) out of a completion.

Rules, in order, for :func:`extract_answer`:

1. If the completion has ``<answer>...</answer>`` blocks, the *last* block wins. Inside it, the
   last ``\\boxed{...}`` (if any) is the answer; otherwise the whole block, stripped of one pair of
   math delimiters (``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]``).
2. Otherwise the last ``\\boxed{...}`` / ``\\fbox{...}`` in the completion (braces are matched, so
   ``\\boxed{\\frac{a}{b}}`` yields ``\\frac{a}{b}``), or the brace-less form ``\\boxed 5`` (the
   argument runs to the next whitespace, ``$`` or end).
3. Otherwise ``None`` (no answer: accuracy 0).

:func:`extract_code` returns the body of the last fenced block (```` ```python ```` / ```` ```py ````
/ bare ```` ``` ````), unchanged (indentation kept, so a function body completing a prompt works).
"""
from __future__ import annotations

import re

from r1jax.data.boxed import last_boxed

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def strip_math_delimiters(s: str) -> str:
    """Remove one enclosing pair of ``$..$``, ``$$..$$``, ``\\(..\\)`` or ``\\[..\\]``."""
    s = s.strip()
    for lo, hi in _DELIMS:
        if len(s) >= len(lo) + len(hi) and s.startswith(lo) and s.endswith(hi):
            inner = s[len(lo) : len(s) - len(hi)]
            if lo == "$" and "$" in inner:  # "$a$ and $b$" is not one math span
                continue
            return inner.strip()
    return s


def extract_answer(completion: str) -> str | None:
    """The final answer string of a completion (see module docstring), or None."""
    if not completion:
        return None
    blocks = _ANSWER_RE.findall(completion)
    if blocks:
        block = blocks[-1]
        boxed = last_boxed(block)
        if boxed is not None:
            return boxed
        s = strip_math_delimiters(block)
        return s if s else None
    return last_boxed(completion)


def extract_code(completion: str) -> str | None:
    """Body of the last fenced code block (python/py/bare), or None if there is none."""
    if not completion:
        return None
    blocks = _FENCE_RE.findall(completion)
    if not blocks:
        return None
    return blocks[-1]
