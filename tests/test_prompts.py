"""Prompt records from JSONL as the files come (field mapping, gold-answer extraction, errors naming
file:line) and prompts rendered through a checkpoint's own chat template (r1jax.data.prompts)."""

import json

import pytest

from r1jax.data.jsonl import JsonlError
from r1jax.data.prompts import PromptFormat, decode_completion, opens_think, read_prompt_records
from r1jax.eval.benchmarks import load_benchmark

from tokenizer_folders import make_folder


def test_gsm8k_as_the_file_carries_it(shared_data):
    path = shared_data / "gsm8k_test.jsonl"
    recs = read_prompt_records(path, problem_key="question", answer_key="answer", answer_format="gsm8k")
    raw = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == len(raw) == 1319
    for r, o in zip(recs, raw):
        assert r["problem"] == o["question"] and r["solution"] == o["answer"]
        assert r["answer"] == o["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        float(r["answer"])
    assert recs[0]["answer"] == "18"
    assert recs == load_benchmark(path)  # the benchmark reader detects the same mapping


def test_math500_raw_and_boxed_from_the_solution(shared_data):
    path = shared_data / "math500_test.jsonl"
    raw = read_prompt_records(path)  # problem / answer as they are
    assert len(raw) == 500 and raw[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    boxed = read_prompt_records(path, answer_key="solution", answer_format="boxed")
    same = sum(a["answer"] == b["answer"] for a, b in zip(raw, boxed))
    assert same >= 450, same  # the answer field is the solution's last \boxed{} for nearly every record


@pytest.mark.parametrize("lines,kw,lineno,pattern", [
    (['{"question": "a", "answer": "x #### 3"}', '{"question": "b", "answer": "no marker"}'],
     dict(problem_key="question", answer_format="gsm8k"), 2, "no '#### <final answer>'"),
    (['{"problem": "a", "solution": "so \\\\boxed{4}"}', '{"problem": "b", "solution": "4"}'],
     dict(answer_key="solution", answer_format="boxed"), 2, "has no \\boxed{...}"),
    (['{"problem": "a", "answer": "1"}', '{"problem": "b"}'], {}, 2, "missing key 'answer'"),
    (['{"problem": "a", "answer": "1"}', '{"problem": "b", "answer": '], {}, 2, "invalid JSON"),
    (['{"problem": "a", "answer": "1"}', '[1, 2]'], {}, 2, "JSON object"),
    (['{"problem": ["a"], "answer": "1"}'], {}, 1, "'problem' must be text"),
    (['{"q": "a", "answer": "1"}'], dict(problem_key="question"), 1, "missing key 'question'"),
])
def test_bad_records_name_file_and_line(tmp_path, lines, kw, lineno, pattern):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(JsonlError) as ei:
        read_prompt_records(p, **kw)
    assert f"{p}:{lineno}:" in str(ei.value) and pattern in str(ei.value), str(ei.value)


@pytest.mark.parametrize("family", ["chatml", "llama3", "r1"])
def test_chat_prompts_are_the_checkpoints_template(tmp_path, family):
    transformers = pytest.importorskip("transformers")
    from r1jax.data.tokenizer import load_tokenizer

    make_folder(family, tmp_path)
    tok, hf = load_tokenizer(tmp_path), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    fmt = PromptFormat("chat", system_prompt="Think first.", user_template="{problem}\nPut the answer in \\boxed{}.")
    ids, text = fmt.render(tok, "What is 3 + 4?")
    msgs = [{"role": "system", "content": "Think first."},
            {"role": "user", "content": "What is 3 + 4?\nPut the answer in \\boxed{}."}]
    assert text == hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert ids == hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)["input_ids"]
    assert opens_think(text) == (family == "r1")  # R1's generation prompt opens the think block
    # plain-text styles are encoded as transformers' tokenizer(text) encodes them (Llama 3 adds its BOS)
    ids0, text0 = PromptFormat("r1_zero").render(tok, "What is 3 + 4?")
    assert text0.endswith("User: What is 3 + 4?. Assistant:") and ids0 == hf(text0)["input_ids"]
    # a sampled completion ends at any id of the EOS set, which decoding drops
    eos = tok.eos_token_ids[-1]
    body = tok.encode("The answer is 7.", add_special_tokens=False)
    assert decode_completion(tok, body + [eos]) == "The answer is 7."


def test_prompt_format_errors():
    with pytest.raises(ValueError, match="prompt style"):
        PromptFormat("chatml")
    with pytest.raises(ValueError, match="problem"):
        PromptFormat("chat", user_template="no slot")
