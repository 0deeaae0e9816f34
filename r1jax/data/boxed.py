"""The last ``\\boxed{..}`` of a LaTeX text: how MATH solutions give their answer (gold answers in
r1jax.data.prompts) and how completions may give theirs (r1jax.rewards.extract). Text only, no
parsing of the math."""
from __future__ import annotations

import re

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _match_brace(s: str, i: int) -> int | None:
    """Index just after the '}' closing the '{' at s[i], or None if unbalanced."""
    depth = 0
    j = i
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\":  # skip escaped char, e.g. \{ or \}
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{..}`` / ``\\fbox{..}`` / ``\\boxed x`` in text."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        j = m.end()
        # optional whitespace, then either a braced group or a bare token
        k = j
        while k < len(text) and text[k] in " \t":
            k += 1
        if k < len(text) and text[k] == "{":
            end = _match_brace(text, k)
            if end is None:
                continue
            return text[k + 1 : end - 1].strip()
        if k > j:  # "\boxed 5": token up to whitespace / $ / end
            tok = re.match(r"[^\s$]+", text[k:])
            if tok:
                return tok.group(0)
    return None
