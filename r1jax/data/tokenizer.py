"""Hugging Face tokenizer folders (tokenizer.json + tokenizer_config.json + chat template) without transformers.

`load_tokenizer(path)` gives a `Tokenizer` whose `encode`, `decode` and `apply_chat_template` return what
transformers 5 returns for `AutoTokenizer.from_pretrained(path)` when that resolves to the generic
`TokenizersBackend` (alias `PreTrainedTokenizerFast`), which is the class transformers 5 picks for the
byte-level BPE checkpoints r1jax targets (Qwen2.5, DeepSeek-R1-Distill-Qwen/Llama, Llama 3.x, DeepSeek-V3).
How it matches (transformers/tokenization_utils_base.py `_from_pretrained` and
tokenization_utils_tokenizers.py `TokenizersBackend.__init__`, `_encode_plus`, `_decode`):

* The `tokenizers` pipeline of tokenizer.json is used as is. tokenizer_config.json's `add_bos_token` /
  `add_eos_token` are ignored, as transformers 5 drops them whenever tokenizer.json exists: BOS/EOS
  come only from tokenizer.json's post-processor (a TemplateProcessing adding BOS, as Llama 3 and
  DeepSeek ship). `encode(text, add_special_tokens=True)` is `tok.encode(text)`.
* Special tokens: the named tokens (bos/eos/unk/sep/pad/cls/mask), model-specific `*_token` keys and
  `extra_special_tokens` / `additional_special_tokens`, given as strings or AddedToken dicts. Without an
  `added_tokens_decoder` in tokenizer_config.json, special_tokens_map.json is merged in (its named
  tokens win), as transformers' legacy path does. Like transformers, every added token listed in
  tokenizer_config's `added_tokens_decoder` (else tokenizer.json's `added_tokens`) is re-added, and
  each special token that is in the vocabulary but not yet an added token becomes a special added
  token, so it is matched before pre-tokenization and dropped by `skip_special_tokens`.
  Unlike transformers, a special token missing from the vocabulary is an error (transformers would
  silently append a new token the model has no embedding for).
* `split_special_tokens` from the config is honoured; tokenizer.json's truncation/padding are
  switched off (transformers does that on every plain `encode`), and its padding token is the
  `pad_token` default, as in transformers.
* `decode` is `tokenizers`' decode (`skip_special_tokens` drops added tokens flagged special); the
  config's `clean_up_tokenization_spaces` applies only to non-BPE models (transformers 5 ignores it for
  BPE unless `clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output` is set).
* Chat templates (see `r1jax.data.chat_template`): chat_template.jinja plus additional_chat_templates/*.jinja
  override tokenizer_config.json's `chat_template` (a string, or a list of {"name", "template"} where
  "default" is used, "tool_use" when tools are given). chat_template.json ({"chat_template": ...}) is
  read last, only when neither of those has a template (transformers' AutoTokenizer never reads it).
  `apply_chat_template(..., tokenize=True)` encodes the rendered text with add_special_tokens=False.

Not matched: model-specific transformers 5 tokenizer classes that rebuild the pipeline from vocab/merges
(e.g. a SentencePiece `LlamaTokenizer` with a Metaspace tokenizer.json), added_tokens.json, Mistral's
regex patch, and `tokenizer_config.json` without tokenizer.json (slow vocab files).

`Tokenizer.save(directory)` copies the files it was loaded from byte for byte (plus chat_template.jinja
when the template came from chat_template.json, so transformers sees it); a tokenizer built with
`Tokenizer.from_parts` is written as transformers 5 writes one (tokenizer.json, tokenizer_config.json,
chat_template.jinja, generation_config.json).
"""
from __future__ import annotations

import copy
import json
import os
import pathlib
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as _Backend

from r1jax.data.chat_template import SPECIAL_TOKEN_NAMES, ChatTemplateError, render_chat_template

__all__ = ["Tokenizer", "TokenizerFilesError", "load_tokenizer", "check_fits_model"]

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
CHAT_TEMPLATE_JSON = "chat_template.json"
GENERATION_CONFIG_FILE = "generation_config.json"

_ADDED_TOKEN_FIELDS = {"content", "single_word", "lstrip", "rstrip", "normalized", "special"}
# transformers' apply_chat_template arguments that r1jax does not implement: refused, not passed to the template.
_UNSUPPORTED_CHAT_ARGS = ("chat_template", "continue_final_message", "sanitize_control_tokens", "padding",
                          "truncation", "max_length", "return_tensors", "return_dict",
                          "return_assistant_tokens_mask", "tokenizer_kwargs")


class TokenizerFilesError(ValueError):
    """A tokenizer folder, file or part is missing or malformed; the message names the file and key."""


# ---------------------------------------------------------------- file reading


def _read_text(path: pathlib.Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerFilesError(f"cannot read {path}: {e}") from e


def _read_json(path: pathlib.Path, want: type | None = dict) -> Any:
    text = _read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerFilesError(f"{path} is not valid JSON: {e}") from e
    if want is not None and not isinstance(value, want):
        raise TokenizerFilesError(f"{path} must hold a JSON {want.__name__}, got {type(value).__name__}")
    return value


def _templates_from_value(value: Any, origin: str) -> dict[str, tuple[str, str]]:
    """A `chat_template` value (string, or list of {"name", "template"}) as {name: (source, origin)}."""
    if isinstance(value, str):
        return {"default": (value, origin)}
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                    and isinstance(item.get("template"), str)):
                raise TokenizerFilesError(f"{origin}[{i}] must be a {{'name': str, 'template': str}} dict")
            out[item["name"]] = (item["template"], f"{origin}[{item['name']!r}]")
        return out
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return {k: (v, f"{origin}[{k!r}]") for k, v in value.items()}
    raise TokenizerFilesError(f"{origin} must be a string or a list of {{'name', 'template'}} dicts, "
                              f"got {type(value).__name__}")


# ---------------------------------------------------------------- special tokens


def _added_token(value: Any, where: str, special: bool | None = None):
    """An `tokenizers.AddedToken` from an AddedToken dict ({"content": ..., "__type": "AddedToken", ...})."""

    if not isinstance(value, dict):
        raise TokenizerFilesError(f"{where} must be a string or an AddedToken dict, got {type(value).__name__}")
    fields = {k: v for k, v in value.items() if k != "__type"}
    if special is not None:
        fields["special"] = special
    unknown = sorted(set(fields) - _ADDED_TOKEN_FIELDS)
    if unknown:
        raise TokenizerFilesError(f"{where}: unknown AddedToken fields {unknown}")
    if not isinstance(fields.get("content"), str):
        raise TokenizerFilesError(f"{where}: an AddedToken dict needs a string 'content'")
    return AddedToken(**fields)


def _is_typed_added_token(value: Any) -> bool:
    return isinstance(value, dict) and value.get("__type") == "AddedToken"


def _token_value(value: Any, where: str):
    """A special-token value as transformers holds it: str or AddedToken (dicts converted)."""

    if value is None or isinstance(value, (str, AddedToken)):
        return value
    return _added_token(value, where)


class _Origins:
    """How error messages name the parts (a file path, or "config" for `from_parts`)."""

    def __init__(self, tokenizer: str, config: str, special_map: str, generation: str):
        self.tokenizer, self.config, self.special_map, self.generation = tokenizer, config, special_map, generation


def _resolve_special_tokens(backend, config: dict, special_map: dict | None, origins: _Origins):
    """Mirror transformers 5's special/added-token set-up on `backend` (mutated). Returns (named, extra, init):
    named: {attribute name: AddedToken|str} for the named and model-specific tokens that are set; extra: the
    extra special tokens; init: the remaining config keys (split_special_tokens, clean_up_tokenization_spaces...)."""

    provenance: dict[str, str] = {}  # key -> the file/key it was last set from, for error messages
    cfg_where = lambda key: provenance.get(key, f"{origins.config}[{key!r}]")  # noqa: E731
    init = dict(config)
    for key in ("tokenizer_class", "init_inputs", "add_bos_token", "add_eos_token", "chat_template"):
        init.pop(key, None)
    if "additional_special_tokens" in init and not init.get("extra_special_tokens"):
        init["extra_special_tokens"] = init.pop("additional_special_tokens")

    # model-specific named tokens (e.g. "image_token"): string values now, AddedToken dicts below
    explicit_ms = {k: init.pop(k) for k in list(init)
                   if k not in SPECIAL_TOKEN_NAMES and k.endswith("_token") and isinstance(init[k], str)}
    if isinstance(init.get("extra_special_tokens"), dict):
        explicit_ms.update(init.pop("extra_special_tokens"))

    added_decoder = {}
    added_map = {}
    if "added_tokens_decoder" in init:
        table = init.pop("added_tokens_decoder")
        if not isinstance(table, dict):
            raise TokenizerFilesError(f"{cfg_where('added_tokens_decoder')} must be a dict of id -> AddedToken dict")
        for idx, tok in table.items():
            where = f"{cfg_where('added_tokens_decoder')}[{idx!r}]"
            try:
                idx = int(idx)
            except ValueError:
                raise TokenizerFilesError(f"{where}: the key must be an integer token id") from None
            tok = _added_token(tok, where)
            added_decoder[idx] = tok
            added_map[str(tok)] = tok
    else:
        if special_map is not None:  # legacy special_tokens_map.json: its values win over tokenizer_config's
            for key, value in special_map.items():
                where = f"{origins.special_map}[{key!r}]"
                if isinstance(value, dict) and key != "extra_special_tokens":
                    value = _added_token({k: v for k, v in value.items() if k != "special"}, where, special=True)
                elif key == "extra_special_tokens" and isinstance(value, list):
                    existing = list(init.get("extra_special_tokens") or [])
                    for tok in value:
                        tok = _added_token(tok, where, special=True) if isinstance(tok, dict) else tok
                        if tok not in existing:
                            existing.append(tok)
                    value = existing
                init[key] = value
                provenance[key] = where
            if isinstance(init.get("extra_special_tokens"), dict):
                explicit_ms.update(init.pop("extra_special_tokens"))
        for item in json.loads(backend.to_str()).get("added_tokens", []):
            item = dict(item)
            idx = item.pop("id")
            tok = AddedToken(**{k: v for k, v in item.items() if k in _ADDED_TOKEN_FIELDS})
            added_decoder[idx] = tok
            added_map[str(tok)] = tok
    if "additional_special_tokens" in init and "extra_special_tokens" not in init:
        init["extra_special_tokens"] = init.pop("additional_special_tokens")

    # tokenizer.json padding gives the pad_token default (TokenizersBackend.__init__)
    if backend.padding is not None and "pad_token" not in init:
        init["pad_token"] = backend.padding["pad_token"]
        provenance["pad_token"] = f"{origins.tokenizer}['padding']"

    named: dict[str, Any] = {}
    for key in SPECIAL_TOKEN_NAMES:
        value = _token_value(init.get(key), cfg_where(key))
        if value is not None:
            named[key] = added_map.get(str(value), value) if added_map else value
    auto_ms = {k: _token_value(v, cfg_where(k)) for k, v in init.items()
               if k not in SPECIAL_TOKEN_NAMES and k.endswith("_token")
               and (isinstance(v, (str, AddedToken)) or _is_typed_added_token(v))}
    for key, value in {**auto_ms, **explicit_ms}.items():
        named[key] = _token_value(value, cfg_where(key))
    extra_value = init.get("extra_special_tokens") or []
    if not isinstance(extra_value, (list, tuple)):
        raise TokenizerFilesError(f"{cfg_where('extra_special_tokens')} must be a list of tokens")
    extra = [_token_value(t, f"{cfg_where('extra_special_tokens')}[{i}]") for i, t in enumerate(extra_value)]

    # every special token must already be in the vocabulary (transformers would append it as a new token)
    for key, value in [*named.items(), *((f"extra_special_tokens[{i}]", t) for i, t in enumerate(extra))]:
        if not isinstance(value, (str, AddedToken)):
            raise TokenizerFilesError(f"{cfg_where(key)} must be a string or an AddedToken dict")
        if backend.token_to_id(str(value)) is None and str(value) not in added_map:
            raise TokenizerFilesError(
                f"{cfg_where(key)} = {str(value)!r} is not in the vocabulary of {origins.tokenizer}")

    # the tokens transformers (re-)adds, in its order, with its flags
    tokens_to_add = [tok for _, tok in sorted(added_decoder.items(), key=lambda kv: kv[0])]
    encoder = [t.content for _, t in sorted(backend.get_added_tokens_decoder().items())]
    encoder += [str(t) for t in tokens_to_add]
    for value in [*named.values(), *extra]:
        if str(value) not in encoder and value not in tokens_to_add:
            tokens_to_add.append(value)
    named_strings = [str(t) for t in named.values()]
    tokens = []
    for tok in tokens_to_add:
        if isinstance(tok, str):
            tok = AddedToken(tok, special=True)
        elif not tok.special and str(tok) in named_strings:
            tok.special = True
        tokens.append(tok)
    if tokens:
        backend.add_tokens(tokens)
    listed_in = (f"{cfg_where('added_tokens_decoder')}" if "added_tokens_decoder" in config
                 else f"{origins.tokenizer}['added_tokens']")
    for idx, tok in added_decoder.items():
        if backend.token_to_id(tok.content) != idx:
            raise TokenizerFilesError(
                f"{listed_in}: added token {tok.content!r} is listed with id {idx} but the vocabulary of "
                f"{origins.tokenizer} gives it id {backend.token_to_id(tok.content)}")
    return named, extra, init


# ---------------------------------------------------------------- the tokenizer


class Tokenizer:
    """A Hugging Face tokenizer (tokenizers backend + tokenizer_config + chat template + generation_config).

    Build with `load_tokenizer(path)` / `Tokenizer.load(path)` or `Tokenizer.from_parts(...)`.
    Token ids are Python ints; sequences are list[int].
    """

    def __init__(self, *, tokenizer_json: str, config: dict, special_tokens_map: dict | None,
                 templates: dict[str, tuple[str, str]], generation_config: dict | None, origins: _Origins,
                 source_files: dict[str, pathlib.Path] | None = None, templates_need_writing: bool = False):
        """Internal: use `load_tokenizer` / `Tokenizer.load` / `Tokenizer.from_parts`. `templates` maps a name to
        (jinja text, origin for error messages); `source_files` maps a relative path to the file `save` copies."""

        try:
            backend = _Backend.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception on schema errors
            raise TokenizerFilesError(f"{origins.tokenizer} is not a valid tokenizers tokenizer.json: {e}") from e
        self._tokenizer_json = tokenizer_json  # as given: what `save` writes for a from_parts tokenizer
        self._config = copy.deepcopy(config)
        self._templates = dict(templates)
        self._generation_config = copy.deepcopy(generation_config)
        self._origins = origins
        self._source_files = source_files
        self._templates_need_writing = templates_need_writing

        named, extra, init = _resolve_special_tokens(backend, config, special_tokens_map, origins)
        split = init.get("split_special_tokens", False)
        if not isinstance(split, bool):
            raise TokenizerFilesError(f"{origins.config}['split_special_tokens'] must be true or false")
        backend.encode_special_tokens = split
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self._named = {k: str(v) for k, v in named.items()}
        self._extra = [str(t) for t in extra]
        self._clean_up = bool(init.get("clean_up_tokenization_spaces", False)) and (
            type(backend.model).__name__ != "BPE"
            or bool(init.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)))
        self._gen_eos, self._gen_pad = self._check_generation_config()

    # ------------------------------------------------------------ construction

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a checkpoint folder, or a tokenizer.json file whose folder holds the other files."""
        p = pathlib.Path(path)
        if p.is_dir():
            folder, tok_file = p, p / TOKENIZER_FILE
        elif p.is_file():
            folder, tok_file = p.parent, p
        else:
            raise TokenizerFilesError(f"tokenizer path {p} does not exist")
        if not tok_file.is_file():
            raise TokenizerFilesError(f"{folder} has no {TOKENIZER_FILE} (r1jax reads the tokenizers-library format "
                                      f"only; re-save the tokenizer with a transformers fast tokenizer)")
        files: dict[str, pathlib.Path] = {TOKENIZER_FILE: tok_file}
        tokenizer_json = _read_text(tok_file)
        try:
            json.loads(tokenizer_json)
        except json.JSONDecodeError as e:
            raise TokenizerFilesError(f"{tok_file} is not valid JSON: {e}") from e

        config: dict = {}
        cfg_file = folder / CONFIG_FILE
        if cfg_file.is_file():
            config = _read_json(cfg_file)
            files[CONFIG_FILE] = cfg_file
        special_map = None
        sm_file = folder / SPECIAL_TOKENS_MAP_FILE
        if sm_file.is_file():
            special_map = _read_json(sm_file)
            files[SPECIAL_TOKENS_MAP_FILE] = sm_file
        generation = None
        gen_file = folder / GENERATION_CONFIG_FILE
        if gen_file.is_file():
            generation = _read_json(gen_file)
            files[GENERATION_CONFIG_FILE] = gen_file

        # chat templates: jinja files > tokenizer_config['chat_template'] > chat_template.json
        templates: dict[str, tuple[str, str]] = {}
        need_writing = False
        if (folder / CHAT_TEMPLATE_FILE).is_file():
            files[CHAT_TEMPLATE_FILE] = folder / CHAT_TEMPLATE_FILE
            templates["default"] = (_read_text(folder / CHAT_TEMPLATE_FILE), str(folder / CHAT_TEMPLATE_FILE))
        if (folder / CHAT_TEMPLATE_DIR).is_dir():
            for f in sorted((folder / CHAT_TEMPLATE_DIR).glob("*.jinja")):
                files[f"{CHAT_TEMPLATE_DIR}/{f.name}"] = f
                templates[f.name.removesuffix(".jinja")] = (_read_text(f), str(f))
        if not templates and config.get("chat_template") is not None:
            templates = _templates_from_value(config["chat_template"], f"{cfg_file}['chat_template']")
        if not templates and (folder / CHAT_TEMPLATE_JSON).is_file():
            ct_file = folder / CHAT_TEMPLATE_JSON
            files[CHAT_TEMPLATE_JSON] = ct_file
            value = _read_json(ct_file).get("chat_template")
            if value is None:
                raise TokenizerFilesError(f"{ct_file} has no 'chat_template' key")
            templates = _templates_from_value(value, f"{ct_file}['chat_template']")
            need_writing = True
        origins = _Origins(str(tok_file), str(cfg_file), str(sm_file), str(gen_file))
        return cls(tokenizer_json=tokenizer_json, config=config, special_tokens_map=special_map,
                   templates=templates, generation_config=generation, origins=origins, source_files=files,
                   templates_need_writing=need_writing)

    @classmethod
    def from_parts(cls, tokenizers_obj, config: Mapping[str, Any], chat_template: str | Mapping[str, str] | None = None,
                   generation_config: Mapping[str, Any] | None = None) -> Tokenizer:
        """A tokenizer built in code: a `tokenizers.Tokenizer`, the tokenizer_config dict (JSON data: special
        tokens as strings or AddedToken dicts), a chat template (jinja text, or {name: text} with a "default")
        and an optional generation_config dict. Behaves exactly as the folder `save()` writes would load.

        `add_bos_token` / `add_eos_token` set to true in `config` are refused: transformers 5 ignores them when a
        tokenizer.json exists, so put a TemplateProcessing post-processor on `tokenizers_obj` instead.
        """
        if not callable(getattr(tokenizers_obj, "to_str", None)):
            raise TypeError(f"tokenizers_obj must be a tokenizers.Tokenizer, got {type(tokenizers_obj).__name__}")
        config = dict(config)
        for key in ("add_bos_token", "add_eos_token"):
            if config.get(key):
                raise TokenizerFilesError(
                    f"config[{key!r}] is true, but transformers 5 ignores it when tokenizer.json exists; give the "
                    "tokenizers object a TemplateProcessing post-processor that adds the token instead")
        if chat_template is not None and config.get("chat_template") is not None:
            raise TokenizerFilesError("chat template given twice: as chat_template and as config['chat_template']")
        for name, value in (("config", config), ("generation_config", generation_config)):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as e:
                raise TokenizerFilesError(f"{name} must be JSON data: {e}") from e
        if chat_template is None:
            chat_template = config.pop("chat_template", None)
        else:
            config.pop("chat_template", None)
        if chat_template is None:
            templates = {}
        elif isinstance(chat_template, Mapping):
            templates = _templates_from_value(dict(chat_template), "chat_template")
        else:
            templates = _templates_from_value(chat_template, "chat_template")
        origins = _Origins("tokenizers_obj", "config", "special_tokens_map", "generation_config")
        return cls(tokenizer_json=tokenizers_obj.to_str(), config=config, special_tokens_map=None,
                   templates=templates,
                   generation_config=None if generation_config is None else dict(generation_config),
                   origins=origins)

    def _check_generation_config(self) -> tuple[tuple[int, ...], int | None]:
        g = self._generation_config
        if g is None:
            return (), None
        where = lambda key: f"{self._origins.generation}[{key!r}]"  # noqa: E731

        def check_id(value, key):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TokenizerFilesError(f"{where(key)} must be an integer token id (or a list of them), "
                                          f"got {value!r}")
            if not 0 <= value < self.vocab_size:
                raise TokenizerFilesError(f"{where(key)} = {value} is outside the vocabulary (size {self.vocab_size})")
            return value

        eos = g.get("eos_token_id")
        eos_ids = tuple(check_id(v, "eos_token_id") for v in (eos if isinstance(eos, list) else
                                                              [] if eos is None else [eos]))
        pad = g.get("pad_token_id")
        return eos_ids, None if pad is None else check_id(pad, "pad_token_id")

    # ------------------------------------------------------------ special tokens

    @property
    def backend(self):
        """The underlying `tokenizers.Tokenizer` (special tokens already set up; do not mutate)."""
        return self._backend

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """{attribute: token} for the set named (and model-specific) special tokens; what templates receive."""
        return dict(self._named)

    @property
    def extra_special_tokens(self) -> list[str]:
        return list(self._extra)

    def _named_id(self, name: str) -> int | None:
        tok = self._named.get(name)
        return None if tok is None else self._backend.token_to_id(tok)

    bos_token = property(lambda self: self._named.get("bos_token"), doc="BOS string or None.")
    eos_token = property(lambda self: self._named.get("eos_token"), doc="EOS string (tokenizer_config) or None.")
    pad_token = property(lambda self: self._named.get("pad_token"), doc="PAD string (tokenizer_config) or None.")
    unk_token = property(lambda self: self._named.get("unk_token"), doc="UNK string or None.")
    bos_token_id = property(lambda self: self._named_id("bos_token"), doc="BOS id or None.")
    eos_token_id = property(lambda self: self._named_id("eos_token"), doc="tokenizer_config's EOS id or None.")

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """Ids that end generation: tokenizer_config's eos first, then generation_config's, deduplicated."""
        out: list[int] = []
        for i in ((self.eos_token_id,) if self.eos_token_id is not None else ()) + self._gen_eos:
            if i not in out:
                out.append(i)
        return tuple(out)

    @property
    def pad_token_id(self) -> int | None:
        """tokenizer_config's pad token id, else generation_config's pad_token_id, else None."""
        pad = self._named_id("pad_token")
        return pad if pad is not None else self._gen_pad

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included (transformers' `len(tokenizer)`)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def max_token_id(self) -> int:
        """The largest id the tokenizer can produce (added and special tokens included): a model's
        embedding table needs more rows than this (ids need not be dense, so it may exceed len - 1)."""
        ids = self._backend.get_vocab(with_added_tokens=True).values()
        return max(ids) if ids else -1

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self._backend.id_to_token(int(idx))

    @property
    def generation_config(self) -> dict | None:
        return copy.deepcopy(self._generation_config)

    # ------------------------------------------------------------ text <-> ids

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """str -> list[int], as transformers' `tok.encode(text, add_special_tokens=...)`. The default True applies
        tokenizer.json's post-processor (e.g. prepends BOS for Llama 3 / DeepSeek), as transformers does."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [e.ids for e in self._backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str:
        """ids (int, list, or 1-D array) -> str, as transformers' `tok.decode(ids, skip_special_tokens=...)`."""
        ids = [int(ids)] if isinstance(ids, int) or getattr(ids, "ndim", None) == 0 else [int(i) for i in ids]
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        if self._clean_up:
            text = (text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",")
                    .replace(" ' ", "'").replace(" n't", "n't").replace(" 'm", "'m").replace(" 's", "'s")
                    .replace(" 've", "'ve").replace(" 're", "'re"))
        return text

    # ------------------------------------------------------------ chat templates

    @property
    def chat_template(self) -> str | None:
        """The default chat template's jinja text, or None."""
        entry = self._templates.get("default")
        return None if entry is None else entry[0]

    @property
    def chat_templates(self) -> dict[str, str]:
        """All named templates, {name: jinja text} ("default" is the one used)."""
        return {k: v[0] for k, v in self._templates.items()}

    @property
    def has_chat_template(self) -> bool:
        return bool(self._templates)

    def _select_template(self, tools) -> tuple[str, str]:
        if not self._templates:
            where = (f"{pathlib.Path(self._origins.tokenizer).parent}" if self._source_files else "this tokenizer")
            raise ChatTemplateError(
                f"{where} has no chat template (looked for {CHAT_TEMPLATE_FILE}, {CONFIG_FILE}['chat_template'] "
                f"and {CHAT_TEMPLATE_JSON})")
        if tools is not None and "tool_use" in self._templates and len(self._templates) > 1:
            return self._templates["tool_use"]
        if "default" in self._templates:
            return self._templates["default"]
        raise ChatTemplateError(f"this tokenizer has several chat templates and none is named 'default': "
                                f"{sorted(self._templates)}")

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = True, **template_kwargs: Any) -> list[int] | str:
        """Render one conversation (list of {"role", "content", ...} dicts) with the chat template.

        Returns the token ids (tokenize=True; the text encoded with add_special_tokens=False, exactly as
        transformers does, so BOS appears once, from the template) or the text (tokenize=False). Extra keywords
        (`tools`, `documents`, `enable_thinking`, ...) are template variables; they override special tokens.
        """
        bad = [k for k in _UNSUPPORTED_CHAT_ARGS if k in template_kwargs]
        if bad:
            raise TypeError(f"apply_chat_template: {bad} not supported by r1jax's tokenizer")
        source, origin = self._select_template(template_kwargs.get("tools"))
        text = render_chat_template(source, messages, origin=origin, add_generation_prompt=add_generation_prompt,
                                    special_tokens=self._named, **template_kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # ------------------------------------------------------------ saving

    def save(self, directory: str | os.PathLike) -> list[pathlib.Path]:
        """Write a folder that both `load_tokenizer` and transformers' AutoTokenizer load to this tokenizer.

        Loaded from a folder: its files are copied byte for byte (tokenizer.json, tokenizer_config.json,
        special_tokens_map.json, chat templates, generation_config.json), plus chat_template.jinja when the
        template came from chat_template.json. Built with `from_parts`: tokenizer.json, tokenizer_config.json
        (without the template), chat_template.jinja (+ additional_chat_templates/NAME.jinja) and
        generation_config.json when given, as transformers 5's save_pretrained lays them out.
        Returns the written paths.
        """
        out = pathlib.Path(directory)
        if out.exists() and not out.is_dir():
            raise TokenizerFilesError(f"cannot save tokenizer: {out} is a file, not a folder")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if self._source_files is not None:
            for rel, src in self._source_files.items():
                dst = out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not (dst.exists() and os.path.samefile(src, dst)):
                    shutil.copyfile(src, dst)
                written.append(dst)
            if self._templates_need_writing:
                written += self._write_templates(out)
            return written
        (out / TOKENIZER_FILE).write_text(self._tokenizer_json, encoding="utf-8")
        config = dict(self._config)
        config.pop("chat_template", None)
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written += [out / TOKENIZER_FILE, out / CONFIG_FILE]
        written += self._write_templates(out)
        if self._generation_config is not None:
            (out / GENERATION_CONFIG_FILE).write_text(
                json.dumps(self._generation_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(out / GENERATION_CONFIG_FILE)
        return written

    def _write_templates(self, out: pathlib.Path) -> list[pathlib.Path]:
        written = []
        for name, (source, _) in self._templates.items():
            if name == "default":
                path = out / CHAT_TEMPLATE_FILE
            else:
                if not name or "/" in name or "\\" in name or name.startswith("."):
                    raise TokenizerFilesError(f"invalid chat template name {name!r}")
                path = out / CHAT_TEMPLATE_DIR / f"{name}.jinja"
                path.parent.mkdir(exist_ok=True)
            path.write_text(source, encoding="utf-8")
            written.append(path)
        return written

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, special_tokens={self._named}, "
                f"eos_token_ids={self.eos_token_ids}, chat_template={'yes' if self._templates else 'no'})")


def check_fits_model(tokenizer, vocab_size: int, *, tokenizer_where: str = "the tokenizer",
                     model_where: str = "the model", what: str = "") -> None:
    """ValueError unless every id `tokenizer` can produce (its vocabulary with the added / special
    tokens, its EOS and pad ids) is below the model's `vocab_size` (rows of its embedding table):
    an id past the table reads garbage (NaN logits for the whole row). A model with more rows than
    the tokenizer has ids (a padded embedding, as most released checkpoints) is fine. The error
    names both folders (`tokenizer_where`, `model_where`) and both sizes."""
    vocab_size = int(vocab_size)
    n = len(tokenizer)
    top = getattr(tokenizer, "max_token_id", n - 1)
    pre = f"{what}: " if what else ""
    if top >= vocab_size:
        raise ValueError(f"{pre}the tokenizer {tokenizer_where} has {n} tokens (ids up to {top}, added and special "
                         f"tokens included) but the model {model_where} has vocab_size={vocab_size} embedding rows: "
                         f"ids >= {vocab_size} would read past the embedding table (NaN logits). Use the tokenizer "
                         f"the model was trained with (a model needs vocab_size >= {top + 1} for this one)")
    named = [("eos", i) for i in getattr(tokenizer, "eos_token_ids", ())]
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        named.append(("pad", pad))
    for name, i in named:
        if not 0 <= int(i) < vocab_size:
            raise ValueError(f"{pre}the tokenizer {tokenizer_where}'s {name} id {i} is outside the model {model_where}'s "
                             f"embedding table (vocab_size={vocab_size})")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """`Tokenizer.load(path)`: a checkpoint folder or its tokenizer.json."""
    return Tokenizer.load(path)
