"""The toy's prompt templates: the R1-Zero training template and DeepSeek-R1's chat template as
Python functions of strings (the toy tokenizer folder carries the same chat template as jinja,
r1jax.toy.tokenizer.CHAT_TEMPLATE). A user's checkpoint brings its own template:
r1jax.data.prompts renders prompts through it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
PAD = "<pad>"
UNK = "<unk>"
THINK, END_THINK = "<think>", "</think>"
ANSWER, END_ANSWER = "<answer>", "</answer>"

# DeepSeek-R1 paper, Table 1 ("Template for DeepSeek-R1-Zero"); {problem} is the question.
from r1jax.data.prompts import R1_ZERO_SHORT_TEMPLATE, R1_ZERO_TEMPLATE  # noqa: E402


def r1_zero_prompt(problem: str) -> str:
    """The R1-Zero template around `problem` (the completion starts right after 'Assistant:')."""
    return R1_ZERO_TEMPLATE.format(problem=str(problem).strip())



def r1_zero_short_prompt(problem: str) -> str:
    """Only the tail of the R1-Zero template ('User: {problem}. Assistant:'): 9 tokens of
    boilerplate instead of ~80, for CPU-budget toy runs (same completion format)."""
    return R1_ZERO_SHORT_TEMPLATE.format(problem=str(problem).strip())


PROMPT_STYLES = {"r1_zero": r1_zero_prompt, "short": r1_zero_short_prompt}


def prompt_for(problem: str, style: str = "r1_zero") -> str:
    """The prompt of `problem` in `style` ('r1_zero' or 'short')."""
    try:
        return PROMPT_STYLES[style](problem)
    except KeyError:
        raise ValueError(f"prompt style must be one of {sorted(PROMPT_STYLES)}, got {style!r}") from None


def _strip_think(content: str) -> str:
    # R1's template: previous assistant turns keep only what follows the last </think>.
    return content.split(END_THINK)[-1] if END_THINK in content else content


def r1_chat_prompt(
    messages_or_problem: str | Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    *,
    bos_token: str = BOS,
) -> str:
    """DeepSeek-R1's chat template (tokenizer_config.json of deepseek-ai/DeepSeek-R1, tool calls
    left out): `{bos}{system}<｜User｜>{q}<｜Assistant｜>{a}<｜end▁of▁sentence｜>...` and, with
    add_generation_prompt, a final `<｜Assistant｜><think>\\n` (the forced think opening).

    System messages are concatenated (joined by a blank line) right after BOS; assistant turns
    drop everything up to their last </think>. A plain string is one user message.
    """
    if isinstance(messages_or_problem, str):
        messages: Sequence[Mapping[str, Any]] = [{"role": "user", "content": messages_or_problem}]
    else:
        messages = messages_or_problem
    system = "\n\n".join(str(m["content"]) for m in messages if m.get("role") == "system")
    out = [bos_token, system]
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: role must be system/user/assistant, got {role!r}")
        content = m.get("content")
        if content is None:
            raise ValueError(f"message {i} ({role}) has no 'content'")
        if role == "user":
            out.append(USER + str(content))
        elif role == "assistant":
            out.append(ASSISTANT + _strip_think(str(content)) + EOS)
    if add_generation_prompt:
        out.append(ASSISTANT + THINK + "\n")
    return "".join(out)


def encode_prompt(tokenizer, text: str, *, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text` with an `r1jax.data.tokenizer.Tokenizer`, a `tokenizers.Tokenizer` or a
    transformers tokenizer. Special tokens written in the text (BOS, <｜User｜>, ...) are matched as
    such; no extra BOS/EOS is added unless add_special_tokens."""
    out = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    return list(out.ids) if hasattr(out, "ids") else list(out)


def encode_prompts(tokenizer, texts: Sequence[str], **kw) -> list[list[int]]:
    return [encode_prompt(tokenizer, t, **kw) for t in texts]


def think_of(completion: str) -> str:
    """The text between <think> and </think> of a completion ("" when there is no closed block)."""
    a = completion.find(THINK)
    b = completion.find(END_THINK)
    return completion[a + len(THINK):b].strip() if a >= 0 and b > a else ""


def final_part(completion: str, tail_words: int = 24) -> str:
    """What a reward model for helpfulness judges: the text after the last </think> (R1 judges
    the summary only), or, when the reasoning never closed, its last `tail_words` words."""
    i = completion.rfind(END_THINK)
    if i >= 0:
        return completion[i + len(END_THINK):].strip()
    return " ".join(completion.split()[-tail_words:])
