"""The toy's tokenizer: a word-level tokenizer of the synthetic tasks, saved as an HF tokenizer folder
with its own chat template (DeepSeek-R1's format), so the rest of r1jax reads it like any checkpoint's
(`r1jax.data.tokenizer.load_tokenizer`).

The toy tokenizer is a `tokenizers` WordLevel model over a closed vocabulary: special tokens,
the think/answer tags, digits 0-9 (numbers are split into single digits), operators and
punctuation, every word of every `Language` table, and the words of the R1-Zero template.
Pre-tokenization splits on whitespace, isolates every punctuation/symbol character and every
digit; decoding joins tokens with single spaces, so decode(encode(text)) equals text up to
whitespace (for corpus text, which is already space-separated, exactly).
"""
from __future__ import annotations

import os
import pathlib
import re

from tokenizers.models import WordLevel

from r1jax.data import templates as T
from r1jax.data.tokenizer import Tokenizer
from r1jax.toy.tasks.arithmetic import all_language_words

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


def build_toy_tokenizer(vocab_size: int = 0):
    """A `tokenizers.Tokenizer` (WordLevel) over `toy_vocab()`. vocab_size > 0: filled up to that
    many ids with unused words "<extra_N>" (a benchmark's random-weight model of a real vocabulary
    size decodes every id it samples)."""
    # here, not at the top: its Tokenizer (the Rust one) is not this module's r1jax.data.tokenizer.Tokenizer
    from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers

    words = toy_vocab()
    extra = vocab_size - len(words) if vocab_size else 0
    if vocab_size and extra < 0:
        raise ValueError(f"toy tokenizer: vocab_size {vocab_size} < the toy's own vocabulary")
    words = words + [f"<extra_{i}>" for i in range(max(extra, 0))]
    vocab = {tok: i for i, tok in enumerate(words)}
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


# DeepSeek-R1's chat template (tokenizer_config.json of deepseek-ai/DeepSeek-R1, tool calls left out),
# as jinja: the same text as r1jax.data.templates.r1_chat_prompt.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'system' -%}"
    "{%- if ns.system -%}{%- set ns.system = ns.system + '\\n\\n' + m['content'] -%}"
    "{%- else -%}{%- set ns.system = m['content'] -%}{%- endif -%}"
    "{%- endif -%}{%- endfor -%}"
    "{{ bos_token }}{{ ns.system }}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}{{ '<｜User｜>' + m['content'] }}"
    "{%- elif m['role'] == 'assistant' -%}{%- set c = m['content'] -%}"
    "{%- if '</think>' in c -%}{%- set c = c.split('</think>')[-1] -%}{%- endif -%}"
    "{{ '<｜Assistant｜>' + c + '<｜end▁of▁sentence｜>' }}"
    "{%- elif m['role'] != 'system' -%}{{ raise_exception('message role must be system/user/assistant') }}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<｜Assistant｜><think>\\n' }}{%- endif -%}"
)


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


def toy_tokenizer(vocab_size: int = 0):
    """The toy tokenizer as an `r1jax.data.tokenizer.Tokenizer` (vocabulary, special tokens, R1 chat
    template); vocab_size: see build_toy_tokenizer."""

    return Tokenizer.from_parts(build_toy_tokenizer(vocab_size), tokenizer_config(), chat_template=CHAT_TEMPLATE)


def save_tokenizer(tok, directory: str | os.PathLike) -> pathlib.Path:
    """Write the toy tokenizer folder (tokenizer.json, tokenizer_config.json, chat_template.jinja) into
    `directory`. `tok`: the `toy_tokenizer()` (a raw `tokenizers.Tokenizer` of the toy vocabulary is
    wrapped first)."""

    if not isinstance(tok, Tokenizer):
        tok = Tokenizer.from_parts(tok, tokenizer_config(), chat_template=CHAT_TEMPLATE)
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tok.save(d)
    return d / "tokenizer.json"


def model_token_ids(tok) -> dict:
    """bos/eos/pad ids for a model config of this tokenizer (so a saved checkpoint's config.json
    names them, and r1jax.generate stops at EOS by default)."""
    return dict(bos_token_id=tok.bos_token_id, eos_token_id=tuple(tok.eos_token_ids),
                pad_token_id=-1 if tok.pad_token_id is None else tok.pad_token_id)


def special_ids(tok) -> dict[str, int]:
    """Ids of the toy's bos/eos/pad/unk/user/assistant tokens and the four tags."""
    names = dict(bos=T.BOS, eos=T.EOS, pad=T.PAD, unk=T.UNK, user=T.USER, assistant=T.ASSISTANT,
                 think=T.THINK, end_think=T.END_THINK, answer=T.ANSWER, end_answer=T.END_ANSWER)
    out = {}
    for k, v in names.items():
        i = tok.token_to_id(v)
        if i is None:
            raise KeyError(f"token {v!r} not in the tokenizer's vocabulary")
        out[k] = i
    return out
