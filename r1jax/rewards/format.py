"""Format reward (DeepSeek-R1 §2.2.2 "format rewards"): is the reasoning inside think tags?

``template="r1_zero"`` (the R1-Zero training template)::

    completion ~ ^\\s* <think> T </think> \\s* <answer> A </answer> \\s*$

``template="r1"`` (the R1 chat format: reasoning, then the user-facing answer)::

    completion ~ ^\\s* <think> T </think> A$      with A.strip() != ""

Both: 1.0 if the completion matches, else 0.0, where additionally

* each of ``<think>`` and ``</think>`` occurs exactly once (and, for r1_zero, each of
  ``<answer>`` and ``</answer>`` exactly once): repeated tag blocks score 0;
* T and A must contain non-whitespace text (an empty answer or an empty reasoning scores 0);
* ``think_in_prompt=True``: the prompt already ends with ``<think>\\n`` (R1's chat template), so
  the completion is scored as ``"<think>" + completion`` - it must *not* open another think block.
"""
from __future__ import annotations

import re

_R1_ZERO = re.compile(r"\s*<think>(.*)</think>\s*<answer>(.*)</answer>\s*", re.DOTALL)
_R1 = re.compile(r"\s*<think>(.*)</think>(.*)", re.DOTALL)
TEMPLATES = ("r1_zero", "r1")


def format_reward(completion: str, template: str = "r1_zero", *, think_in_prompt: bool = False) -> float:
    """1.0 if ``completion`` follows ``template`` (rules in the module docstring), else 0.0."""
    if template not in TEMPLATES:
        raise ValueError(f"format_reward: unknown template {template!r}; expected one of {TEMPLATES}")
    text = ("<think>" + completion) if think_in_prompt else completion
    if text.count("<think>") != 1 or text.count("</think>") != 1:
        return 0.0
    if template == "r1_zero":
        if text.count("<answer>") != 1 or text.count("</answer>") != 1:
            return 0.0
        m = _R1_ZERO.fullmatch(text)
    else:
        m = _R1.fullmatch(text)
    if m is None:
        return 0.0
    think, answer = m.group(1), m.group(2)
    return 1.0 if think.strip() and answer.strip() else 0.0
