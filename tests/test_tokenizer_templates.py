"""The toy word-level tokenizer and the R1 / R1-Zero templates."""
import json

import pytest

from r1jax.data import templates as T
from r1jax.toy.corpus import make_pretrain_corpus, make_sft_records
from r1jax.toy.tokenizer import (
    build_toy_tokenizer,
    save_tokenizer,
    special_ids,
    toy_vocab,
)


@pytest.fixture(scope="module")
def tok():
    return build_toy_tokenizer()


def _norm(s):
    return " ".join(s.split())


def test_vocab_small_and_closed(tok):
    v = toy_vocab()
    assert len(v) == len(set(v)) == tok.get_vocab_size() < 200
    assert v[:6] == [T.PAD, T.UNK, T.BOS, T.EOS, T.USER, T.ASSISTANT]
    ids = special_ids(tok)
    assert ids["pad"] == 0 and ids["unk"] == 1
    for d in "0123456789":
        assert tok.token_to_id(d) is not None


def test_corpus_roundtrip_no_unk(tok):
    docs = make_pretrain_corpus(300, seed=0, languages=("en", "fr"), p_mix=0.5, tasks=("add", "mul1"),
                                p_direct=0.3)
    docs += make_pretrain_corpus(50, seed=1, prompt_style="short")
    unk = tok.token_to_id(T.UNK)
    for d in docs:
        enc = tok.encode(d["text"])
        assert unk not in enc.ids, [t for t, i in zip(enc.tokens, enc.ids) if i == unk]
        # Completions are space-separated already: decode is exact.
        c = tok.encode(d["completion"])
        assert tok.decode(c.ids) == d["completion"]
        assert len(c.tokens) == len(d["completion"].split())  # one token per word / digit
        # Prompts ("User: x. Assistant:") come back with spaces around punctuation only.
        assert "".join(tok.decode(enc.ids).split()) == "".join(d["text"].split())
        assert _norm(tok.decode(tok.encode(tok.decode(enc.ids)).ids)) == _norm(tok.decode(enc.ids))


def test_digits_split_and_tags_atomic(tok):
    enc = tok.encode("<think> 12+345=357 </think><answer>612</answer>")
    assert enc.tokens == ["<think>", "1", "2", "+", "3", "4", "5", "=", "3", "5", "7", "</think>",
                          "<answer>", "6", "1", "2", "</answer>"]
    assert tok.encode("zebra").ids == [tok.token_to_id(T.UNK)]


def test_special_tokens_and_chat_prompt(tok):
    text = T.r1_chat_prompt("what is 1 2 + 3")
    assert text == f"{T.BOS}{T.USER}what is 1 2 + 3{T.ASSISTANT}<think>\n"
    enc = tok.encode(text)
    assert enc.tokens[0] == T.BOS and enc.tokens[1] == T.USER and enc.tokens[-2:] == [T.ASSISTANT, "<think>"]
    # Special tokens vanish when skipped, tags stay.
    assert tok.decode(enc.ids, skip_special_tokens=True) == "what is 1 2 + 3 <think>"
    assert T.encode_prompt(tok, text) == enc.ids


def test_r1_chat_template_multi_turn():
    msgs = [
        {"role": "system", "content": "S1"},
        {"role": "system", "content": "S2"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>\nlong thoughts\n</think>\n\nA1"},
        {"role": "user", "content": "q2"},
    ]
    out = T.r1_chat_prompt(msgs)
    assert out == (f"{T.BOS}S1\n\nS2{T.USER}q1{T.ASSISTANT}\n\nA1{T.EOS}{T.USER}q2{T.ASSISTANT}<think>\n")
    assert T.r1_chat_prompt(msgs[:4], add_generation_prompt=False).endswith(f"A1{T.EOS}")
    with pytest.raises(ValueError, match="role"):
        T.r1_chat_prompt([{"role": "tool", "content": "x"}])


def test_r1_zero_template_text():
    p = T.r1_zero_prompt("what is 4 5 6 + 1 5 6")
    assert p.startswith("A conversation between User and Assistant. The user asks a question, and the "
                        "Assistant solves it. The assistant first thinks about the reasoning process in "
                        "the mind and then provides the user with the answer. The reasoning process and "
                        "answer are enclosed within <think> </think> and <answer> </answer> tags, "
                        "respectively, i.e., <think> reasoning process here </think> <answer> answer "
                        "here </answer>.")
    assert p.endswith(" User: what is 4 5 6 + 1 5 6. Assistant:")
    assert T.prompt_for("q", "short") == "User: q. Assistant:"


def test_save_load_and_transformers(tmp_path, tok):
    """The toy tokenizer is a checkpoint folder like any other: its own chat template (R1's format),
    special tokens and EOS, read back by r1jax.load_tokenizer and by transformers alike."""
    from r1jax.data.tokenizer import load_tokenizer
    from r1jax.toy.tokenizer import toy_tokenizer

    path = save_tokenizer(toy_tokenizer(), tmp_path / "tk")
    assert path.name == "tokenizer.json"
    cfg = json.loads((tmp_path / "tk" / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["bos_token"] == T.BOS and cfg["eos_token"] == T.EOS and cfg["pad_token"] == T.PAD
    msgs = [[{"role": "user", "content": "what is 1 2 + 3"}],
            [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"},
             {"role": "assistant", "content": "<think> x </think> so 4 <answer> 4 </answer>"},
             {"role": "user", "content": "q2"}]]
    for src in (tmp_path / "tk", path):
        t2 = load_tokenizer(src)
        assert t2.eos_token_ids == (tok.token_to_id(T.EOS),) and t2.pad_token_id == 0
        s = make_sft_records(3, seed=0, prompt_style="chat")[0]
        assert t2.encode(s["prompt"] + s["completion"]) == tok.encode(s["prompt"] + s["completion"]).ids
        for m in msgs:  # the folder's jinja template renders R1's format, as r1_chat_prompt writes it
            for gen in (True, False):
                assert t2.apply_chat_template(m, add_generation_prompt=gen, tokenize=False) == \
                    T.r1_chat_prompt(m, add_generation_prompt=gen)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tk"))
    assert hf.bos_token == T.BOS and hf.eos_token_id == tok.token_to_id(T.EOS) and hf.pad_token_id == 0
    text = "<think> 6 plus 6 plus 0 is 1 2 , write 2 carry 1 ; </think> <answer> 1 2 </answer>"
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text).ids
    assert hf.decode(hf.encode(text, add_special_tokens=False)) == text
    assert T.encode_prompt(hf, T.r1_chat_prompt("q")) == tok.encode(T.r1_chat_prompt("q")).ids
    for m in msgs:
        assert hf.apply_chat_template(m, add_generation_prompt=True, tokenize=False) == T.r1_chat_prompt(m)


def test_load_errors(tmp_path):
    from r1jax.data.tokenizer import load_tokenizer

    with pytest.raises(ValueError, match=f"{tmp_path} has no tokenizer.json"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    bad.write_text('{"model": 3}', encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(bad)
