"""Prompt records from JSONL as the files come, and prompts rendered with the checkpoint's tokenizer.

Records
-------
    recs = read_prompt_records("gsm8k_test.jsonl", problem_key="question", answer_key="answer",
                               answer_format="gsm8k")
    recs[0]["problem"], recs[0]["answer"]     # "Janet's ducks lay ...", "18"

Every record keeps its original fields and gains `problem` (the text of `problem_key`) and
`answer` (the gold answer taken from `answer_key` by `answer_format`):
  "raw"    the field as it is (MATH-500's `answer`, a toy `answer`); numbers become strings;
  "gsm8k"  the text after the last "####", thousands commas removed ("1,600" -> "1600");
  "boxed"  the content of the last \\boxed{...} (a MATH `solution`);
  "auto"   "gsm8k" when the field holds "####", "boxed" when it holds \\boxed, else "raw".
When `answer_key` is not "answer" or the format is not "raw", the original text of the answer
field stays available under "solution" (unless the record has one). `problem_key=""` takes
"problem" if the first record has it, else "question" (GSM8K), else "prompt". A record that is not
a JSON object, lacks a key, holds a non-text value or an answer the format cannot find fails with
`JsonlError("FILE:LINE: ...")`.

Prompts
-------
    fmt = PromptFormat(style="chat", system_prompt=R1_ZERO_SYSTEM, user_template="{problem}")
    ids, text = fmt.render(tokenizer, record["problem"])

styles:
  "chat"     the checkpoint's own chat template (`tokenizer.apply_chat_template`): an optional system
             message, then the user message (`user_template` with "{problem}" replaced), with the generation
             prompt (an R1-Distill template ends it with "<think>\\n");
  "r1_zero"  the R1-Zero paper's template as plain text (Table 1), for base models;
  "short"    only its tail "User: {problem}. Assistant:" (the CPU toy);
  "raw"      the user message (`user_template` with "{problem}" replaced) as plain text.
Plain-text styles are encoded as transformers' `tokenizer(text)` encodes them (the tokenizer adds
its BOS if it has that post-processor); a chat template writes its own BOS.
`opens_think(text)`: the prompt ends inside an opened <think> block, so a completion is scored as
"<think>" + completion (`whole_response(prompt_text, completion_text)`, what the rewards read).
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import Sequence

from r1jax.data.boxed import last_boxed
from r1jax.data.jsonl import JsonlError
from r1jax.data.records import ListSource, field, open_records

ANSWER_FORMATS = ("raw", "gsm8k", "boxed", "auto")
PROMPT_MESSAGES = "prompt_messages"  # a record's prompt as chat messages (prompt_record sets it, prompt_of reads it)
PROMPT_STYLES = ("chat", "r1_zero", "short", "raw")

# The R1-Zero instruction (DeepSeek-R1 Table 1) as a system prompt, as open-r1 / TRL recipes use it
# with an instruct model's chat template.
R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)


def gsm8k_answer(text: str) -> str | None:
    """The final answer of a GSM8K solution: the text after the last '####', commas stripped."""
    if "####" not in text:
        return None
    out = text.rsplit("####", 1)[1].strip().replace(",", "")
    return out or None


def boxed_answer(text: str) -> str | None:
    return last_boxed(text)


def extract_gold(text: str, answer_format: str) -> str | None:
    """The gold answer in `text` by `answer_format` (see the module doc); None if it is not there."""
    if answer_format == "raw":
        return text
    if answer_format == "gsm8k":
        return gsm8k_answer(text)
    if answer_format == "boxed":
        return boxed_answer(text)
    if answer_format == "auto":
        if "####" in text:
            return gsm8k_answer(text)
        if "\\boxed" in text or "\\fbox" in text:
            return boxed_answer(text)
        return text
    raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")


def _text(rec: dict, key: str, where: str) -> str:
    v = field(rec, key, where)
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise JsonlError(f"{where}: key {key!r} must be text, got {type(v).__name__}: {v!r:.80}")
    return v if isinstance(v, str) else str(v)


def chat_messages(v, key: str, where: str) -> list[dict] | None:
    """A prompt field holding chat messages ([{"role": ..., "content": ...}, ...], TRL's conversational
    format, verl's `prompt`) as a list of {"role", "content"} dicts; None for text. The last message
    with role "user" is the problem."""
    if isinstance(v, tuple):
        v = list(v)
    if not isinstance(v, list) or not v or not all(isinstance(m, dict) for m in v):
        return None  # text, or not messages (the caller's text check names it)
    msgs = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise JsonlError(f"{where}: key {key!r} item {i}: a chat message is {{'role': str, 'content': str}}, "
                             f"got {m!r:.80}")
        msgs.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "user" for m in msgs):
        raise JsonlError(f"{where}: key {key!r}: the chat messages hold no 'user' message")
    return msgs


def _default_problem_key(rec: dict) -> str:
    for k in ("problem", "question", "prompt"):
        if k in rec:
            return k
    return "problem"


def prompt_record(rec: dict, *, problem_key: str = "", answer_key: str = "answer", answer_format: str = "raw",
                  where: str = "<record>") -> dict:
    """One record with `problem` and `answer` set as `read_prompt_records` does (errors name `where`).
    Keys may be dotted paths ("reward_model.ground_truth"). A prompt field holding chat messages sets
    `prompt_messages` (rendered through the checkpoint's chat template) and `problem` = its last user
    message."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if not isinstance(rec, dict):
        raise JsonlError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    pk = problem_key or _default_problem_key(rec)
    msgs = chat_messages(field(rec, pk, where), pk, where)
    if msgs is not None:
        problem = [m["content"] for m in msgs if m["role"] == "user"][-1]
    else:
        problem = _text(rec, pk, where)
    raw = _text(rec, answer_key, where)
    gold = extract_gold(raw, answer_format)
    if gold is None or not gold.strip():
        how = {"gsm8k": "no '#### <final answer>'", "boxed": "no \\boxed{...}"}.get(answer_format, "no answer")
        raise JsonlError(f"{where}: key {answer_key!r} has {how} (answer_format={answer_format!r}): {raw!r:.120}")
    out = {"problem": problem, "answer": gold.strip() if answer_format != "raw" else gold}
    if msgs is not None:
        out[PROMPT_MESSAGES] = msgs
    out.update((k, v) for k, v in rec.items() if k not in out)
    if (answer_key != "answer" or gold != raw) and "solution" not in rec:
        out["solution"] = raw
    return out


class PromptRecords:
    """A dataset's prompt records, each made by prompt_record when it is read (Parquet / Arrow sources
    stay on disk; r1jax.data.records). A Sequence: len, [i], [a:b], iteration."""

    def __init__(self, src, **kw):
        self.src, self.kw = src, kw

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        return prompt_record(self.src[i], where=self.src.where(i), **self.kw)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def read_prompt_records(path: str | os.PathLike, *, problem_key: str = "", answer_key: str = "answer",
                        answer_format: str = "raw"):
    """The records of a dataset file or folder (JSONL, JSON, Parquet, save_to_disk: r1jax.data.records)
    with `problem` and `answer` (see the module doc). JSONL / JSON: a list; Parquet and Arrow: a
    PromptRecords sequence read as it is indexed, every row checked once here, streamed."""
    src = open_records(path)
    if len(src) == 0:
        raise JsonlError(f"{path}: no records (empty file)")
    first = src[0]
    if not problem_key and isinstance(first, dict):
        if not any(k in first for k in ("problem", "question", "prompt")):
            raise JsonlError(f"{src.where(0)}: unrecognised prompt format: need a 'problem', 'question' (GSM8K) or "
                             f"'prompt' field, or set problem_key; fields: {sorted(first)}")
        problem_key = _default_problem_key(first)
    kw = dict(problem_key=problem_key, answer_key=answer_key, answer_format=answer_format)
    if isinstance(src, ListSource):
        return [prompt_record(r, where=src.where(i), **kw) for i, r in enumerate(src)]
    for i, r in enumerate(src):  # streamed: a bad row fails now, naming its file and row
        try:
            prompt_record(r, **kw)
        except JsonlError:
            prompt_record(r, where=src.where(i), **kw)
    return PromptRecords(src, **kw)


def prompt_of(record: dict):
    """What PromptFormat renders for a record: the chat messages of its prompt field when the data gave
    them (PROMPT_MESSAGES; a dataset's own "messages" column, e.g. NuminaMath's with the solution, is
    never read as the prompt), else its `problem` text."""
    return record.get(PROMPT_MESSAGES) or record["problem"]


# ------------------------------------------------------------------------------------- prompts


R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {problem}. Assistant:"
)
R1_ZERO_SHORT_TEMPLATE = "User: {problem}. Assistant:"
_THINK_OPEN = re.compile(r"<think>\s*$")


_WARNED: set = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


def opens_think(prompt_text: str) -> bool:
    """True when the prompt ends with an opened "<think>" (e.g. R1-Distill's generation prompt)."""
    return bool(_THINK_OPEN.search(prompt_text))


def whole_response(prompt_text: str, completion_text: str) -> str:
    """The response as the rewards read it: "<think>" + completion when the prompt opened the think
    block (opens_think), else the completion.

    >>> whole_response("2+2?<|Assistant|><think>", "steps</think> 4"), whole_response("2+2?", "4")
    ('<think>steps</think> 4', '4')
    """
    return ("<think>" if opens_think(prompt_text) else "") + completion_text


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    """How a problem becomes a prompt (see the module doc)."""

    style: str = "r1_zero"
    system_prompt: str = ""
    user_template: str = "{problem}"

    def __post_init__(self):
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {self.style!r}")
        if "{problem}" not in self.user_template:
            raise ValueError(f"user_template {self.user_template!r} has no {{problem}} slot")

    def text(self, tokenizer, problem) -> str:
        """The prompt text (for "chat", the template rendered with the generation prompt). `problem`:
        text, or chat messages from the data (prompt_of(record)): "chat" renders them as they are (a
        system message in the data wins over system_prompt; a warning says so once), the plain styles
        take their last user message as the problem."""
        if isinstance(problem, (list, tuple)):
            msgs = [dict(m) for m in problem]
            if self.style == "chat":
                if any(m["role"] == "system" for m in msgs):
                    if self.system_prompt:
                        _warn_once("prompt_style='chat': the data's system message is used, not system_prompt")
                elif self.system_prompt:
                    msgs = [{"role": "system", "content": self.system_prompt}] + msgs
                return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            problem = [m["content"] for m in msgs if m["role"] == "user"][-1]
        problem = str(problem)
        if self.style == "chat":
            msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            msgs.append({"role": "user", "content": self.user_message(problem)})
            return tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        if self.style == "r1_zero":
            return R1_ZERO_TEMPLATE.format(problem=problem.strip())
        if self.style == "short":
            return R1_ZERO_SHORT_TEMPLATE.format(problem=problem.strip())
        return self.user_message(problem)

    def user_message(self, problem: str) -> str:
        """`user_template` with {problem} replaced (a plain replacement: other braces, e.g. LaTeX's
        \\boxed{}, stay as written)."""
        return self.user_template.replace("{problem}", str(problem))

    def render(self, tokenizer, problem) -> tuple[list[int], str]:
        """(token ids, text) of the prompt of `problem`."""
        text = self.text(tokenizer, problem)
        if self.style == "chat":  # as transformers' apply_chat_template(tokenize=True): no extra specials
            return list(tokenizer.encode(text, add_special_tokens=False)), text
        return list(tokenizer.encode(text, add_special_tokens=True)), text

    def render_all(self, tokenizer, problems: Sequence) -> tuple[list[list[int]], list[str]]:
        pairs = [self.render(tokenizer, p) for p in problems]
        return [p[0] for p in pairs], [p[1] for p in pairs]


def decode_completion(tokenizer, tokens: Sequence[int], eos_ids: Sequence[int] = ()) -> str:
    """The text of a sampled completion, without the EOS token that ended it."""
    toks = list(tokens)
    stop = set(eos_ids if eos_ids else getattr(tokenizer, "eos_token_ids", ()))
    if toks and toks[-1] in stop:
        toks = toks[:-1]
    return tokenizer.decode(toks, skip_special_tokens=False)
