"""Chat templates rendered exactly as Hugging Face transformers renders them, without transformers.

What matches transformers (5.x, `transformers/utils/chat_template_utils.py` and
`PreTrainedTokenizerBase.apply_chat_template`):

* Environment: jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with
  the `loopcontrols` extension and a `{% generation %}...{% endgeneration %}` block tag, which
  renders its body unchanged (transformers uses it only to track assistant-token masks).
* Filters and globals: `tojson` replaced by `json.dumps(x, ensure_ascii=False, indent=None,
  separators=None, sort_keys=False)` (no HTML escaping), `raise_exception(msg)` raising a
  `jinja2.TemplateError`, `strftime_now(fmt)`, a `dict` global (callable and `.fromkeys` only) and
  a `namespace` that refuses underscore-prefixed attribute names.
* Inputs: messages are copied into plain JSON data (dataclasses and pydantic models become dicts,
  keys whose value is None are dropped, other objects become the "<TypeName>" placeholder), the
  reasoning aliases are filled (a message with `reasoning_content`, `thinking` or `reasoning` gets
  both `thinking` and `reasoning_content`), and the template sees `messages`, `tools`, `documents`
  (None unless given), `add_generation_prompt`, the tokenizer's named special tokens as strings
  (`bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token`,
  only those that are set) and every extra keyword, extra keywords overriding special tokens.
* Compiled templates are cached by source text (transformers caches the same way).

Not supported (transformers-only features): `continue_final_message`, assistant-token masks,
control-token sanitization, batches of conversations, tools given as Python callables.

Errors: a template that does not compile or fails while rendering raises `ChatTemplateError`
(a `ValueError` and a `jinja2.TemplateError`) whose message names where the template came from
(`origin`, e.g. "/ckpt/chat_template.jinja" or "/ckpt/tokenizer_config.json['chat_template']")
and the template line when jinja knows it.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.nodes
import jinja2.utils
import numpy as np
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ChatTemplateError", "compile_template", "prepare_messages", "render_chat_template",
           "SPECIAL_TOKEN_NAMES"]

# The named special tokens transformers passes to every template (PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# Names a message's reasoning may be given under; transformers copies it to the first two.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

_MIN_JINJA = (3, 1, 6)  # transformers refuses older jinja2 (known sandbox escapes)


class ChatTemplateError(jinja2.exceptions.TemplateError, ValueError):
    """A chat template failed to compile or render; the message names the template's origin."""


# ---------------------------------------------------------------- environment


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: renders its body unchanged, as transformers' AssistantTracker
    does when no assistant-mask tracking is active."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):  # noqa: A002 - same name as transformers' argument
    return datetime.now().strftime(format)


class _TemplateDict:
    """The `dict` global: building dicts only, no attribute access to the dict type."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja2's namespace, refusing underscore-prefixed attribute names (as transformers does)."""

    def __init__(*args, **kwargs):  # same signature trick as jinja2.utils.Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute."
            )


def _jinja_version() -> tuple[int, ...]:
    parts = []
    for p in jinja2.__version__.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@functools.lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    if _jinja_version() < _MIN_JINJA:
        raise ImportError(f"chat templates need jinja2>=3.1.6 (as transformers requires); found {jinja2.__version__}")
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


@functools.lru_cache(maxsize=64)
def _compile_cached(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def _where(err: BaseException) -> str:
    """' (template line N)' when known: syntax errors carry it; for runtime errors it is in the traceback,
    which jinja rewrites to point at "<template>" lines."""
    lineno = getattr(err, "lineno", None)
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return f" (template line {lineno})" if lineno else ""


def compile_template(source: str, origin: str = "<chat template>") -> jinja2.Template:
    """Compile (cached by `source`) a chat template; `ChatTemplateError` naming `origin` when it does not parse."""
    if not isinstance(source, str):
        raise ChatTemplateError(f"chat template from {origin} must be a string, got {type(source).__name__}")
    try:
        return _compile_cached(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template from {origin} does not compile{_where(e)}: {e.message}") from e


# ---------------------------------------------------------------- inputs


def _plain(value: Any) -> Any:
    """Rebuild `value` out of plain JSON types (transformers' `_plain_template_data`, dict/None handling included)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, np.generic):  # numpy scalars; np.bool_(False) must not become a truthy placeholder
        return _plain(value.item())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _objects_to_dicts(value: Any) -> Any:
    """Message objects (dataclasses, pydantic models) to dicts, recursively (`_message_objects_to_dicts`)."""
    if isinstance(value, Mapping):
        return {k: _objects_to_dicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_objects_to_dicts(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_objects_to_dicts(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _objects_to_dicts(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _objects_to_dicts(value.model_dump())
    return value


def prepare_messages(messages: Any) -> list[dict]:
    """The `messages` a template sees: list[dict] of plain data, None-valued keys dropped, reasoning aliased.

    `messages`: a list of dicts (or dataclasses / pydantic models), or an object with `.messages`.
    Raises ValueError on an empty conversation and TypeError on a message that is not a dict.
    """
    messages = _objects_to_dicts(getattr(messages, "messages", messages))
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages should be a list of dicts, got {type(messages).__name__}")
    if len(messages) == 0:
        raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {m!r}.")
        m = _plain({k: v for k, v in m.items() if v is not None})
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


# ---------------------------------------------------------------- rendering


def render_chat_template(
    source: str,
    messages: Any,
    *,
    origin: str = "<chat template>",
    add_generation_prompt: bool = False,
    special_tokens: Mapping[str, str] | None = None,
    tools: list[dict] | None = None,
    documents: list[dict] | None = None,
    **kwargs: Any,
) -> str:
    """Render `source` over one conversation exactly as transformers' `apply_chat_template(..., tokenize=False)`.

    source: the jinja text. messages: see `prepare_messages`. special_tokens: {name: token string} for the
    named special tokens that are set (see SPECIAL_TOKEN_NAMES); `kwargs` override them. tools: JSON-schema
    dicts (callables are not converted here). documents: dicts. Returns the rendered text.
    """
    template = compile_template(source, origin)
    chat = prepare_messages(messages)
    if tools is not None:
        for tool in tools:
            if not isinstance(tool, dict):
                raise ValueError("Tools should be JSON schema dicts (Python callables are not converted by r1jax).")
    if documents is not None:
        for doc in documents:
            if not isinstance(doc, dict):
                raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
    variables = _plain({**dict(special_tokens or {}), **kwargs})
    try:
        return template.render(
            messages=chat,
            tools=_plain(tools),
            documents=_plain(documents),
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except Exception as e:  # raise_exception(), undefined names, Python errors inside the template
        kind = "" if isinstance(e, jinja2.exceptions.TemplateError) else f"{type(e).__name__}: "
        raise ChatTemplateError(f"chat template from {origin} failed to render{_where(e)}: {kind}{e}") from e
