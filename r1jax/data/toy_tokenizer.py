"""Tokenizers: the toy word-level tokenizer of the synthetic tasks, and loading any HF
tokenizer.json.

The toy tokenizer is a `tokenizers` WordLevel model over a closed vocabulary: special tokens,
the think/answer tags, digits 0-9 (numbers are split into single digits), operators and
punctuation, every word of every `Language` table, and the words of the R1-Zero template.
Pre-tokenization splits on whitespace, isolates every punctuation/symbol character and every
digit; decoding joins tokens with single spaces, so decode(encode(text)) equals text up to
whitespace (for corpus text, which is already space-separated, exactly).
"""
from __future__ import annotations

import json
import os
import pathlib
import re

from r1jax.data import templates as T
from r1jax.data.tasks.arithmetic import all_language_words

SPECIAL_TOKENS = (T.PAD, T.UNK, T.BOS, T.EOS, T.USER, T.ASSISTANT)  # ids 0..5 in this order
TAG_TOKENS = (T.THINK, T.END_THINK, T.ANSWER, T.END_ANSWER)
DIGITS = tuple("0123456789")
SYMBOLS = ("+", "-", "*", "=", ",", ";", ":", ".", "?", "!", "(", ")", "/")


def template_words() -> list[str]:
    """Words and symbols of the R1-Zero template (tags and the {problem} slot left out)."""
    text = T.R1_ZERO_TEMPLATE.replace("{problem}", " ")
    for tag in TAG_TOKENS:
        text = text.replace(tag, " ")
    return sorted(set(re.findall(r"\w+|[^\w\s]", text)))


def template_sentences() -> list[str]:
    """The fixed sentences of the R1-Zero template, each one token of the toy tokenizer.

    A subword tokenizer trained on a corpus where every document opens with this instruction
    would merge it into few pieces too; as one token a sentence the template costs 4 tokens
    instead of ~70, which is what lets the toy run on 2 CPU cores with the paper's template.
    The text is unchanged: decode(encode(prompt)) gives the template back word for word.
    """
    head = T.R1_ZERO_TEMPLATE.split(" User: {problem}")[0]
    return [s if s.endswith(".") else s + "." for s in re.split(r"(?<=\.) (?=[A-Z])", head)]


def toy_vocab() -> list[str]:
    """The closed vocabulary, in id order."""
    out: list[str] = []
    for tok in (*SPECIAL_TOKENS, *TAG_TOKENS, *DIGITS, *SYMBOLS, *template_words(), *all_language_words(),
                *template_sentences()):
        if tok not in out:
            out.append(tok)
    return out


def build_toy_tokenizer():
    """A `tokenizers.Tokenizer` (WordLevel) over `toy_vocab()`."""
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {tok: i for i, tok in enumerate(toy_vocab())}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=T.UNK))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    # No decoder: `tokenizers` joins decoded tokens with single spaces.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in template_sentences()])
    tok.enable_padding(pad_id=vocab[T.PAD], pad_token=T.PAD)
    tok.no_padding()  # padding is the caller's choice; pad id is recorded in the config file
    return tok


def tokenizer_config() -> dict:
    """tokenizer_config.json content that transformers' PreTrainedTokenizerFast understands."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": T.BOS,
        "eos_token": T.EOS,
        "pad_token": T.PAD,
        "unk_token": T.UNK,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "additional_special_tokens": [T.USER, T.ASSISTANT],
    }


def save_tokenizer(tok, directory: str | os.PathLike) -> pathlib.Path:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `directory`."""
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    cfg = tokenizer_config()
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens")}
    (d / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return d / "tokenizer.json"


def load_tokenizer(path_or_dir: str | os.PathLike):
    """A `tokenizers.Tokenizer` from a tokenizer.json file or a folder holding one. Errors name
    the file (missing, unreadable, not JSON, not a tokenizer)."""
    from tokenizers import Tokenizer

    p = pathlib.Path(path_or_dir)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"tokenizer file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read tokenizer file {p}: {e}") from e
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"tokenizer file {p} is not valid JSON: {e}") from e
    try:
        return Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception on schema errors
        raise ValueError(f"tokenizer file {p} is not a valid HF tokenizer.json: {e}") from e


def token_id(tok, token: str) -> int:
    """Id of `token`; KeyError if the tokenizer lacks it."""
    i = tok.token_to_id(token)
    if i is None:
        raise KeyError(f"token {token!r} not in the tokenizer's vocabulary")
    return i


def special_ids(tok) -> dict[str, int]:
    """Ids of bos/eos/pad/unk/user/assistant and the four tags."""
    names = dict(bos=T.BOS, eos=T.EOS, pad=T.PAD, unk=T.UNK, user=T.USER, assistant=T.ASSISTANT,
                 think=T.THINK, end_think=T.END_THINK, answer=T.ANSWER, end_answer=T.END_ANSWER)
    return {k: token_id(tok, v) for k, v in names.items()}
