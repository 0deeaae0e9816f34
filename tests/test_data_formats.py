"""Data as the Hub, verl and TRL write it (r1jax.data.records), and reward functions in TRL's and verl's
forms (r1jax.rewards.forms)."""

import json
import re

import numpy as np
import pytest

from r1jax.data.jsonl import JsonlError
from r1jax.data.prompts import PromptFormat, prompt_of, read_prompt_records
from r1jax.data.records import open_records

INLINE = [  # GSM8K's format, for users without the benchmark folder
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "Tom has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A box holds 12 eggs. How many eggs are in 3 boxes?",
     "answer": "3 boxes hold 3 * 12 = <<3*12=36>>36 eggs.\n#### 36"},
    {"question": "Sara had 1,200 dollars and spent 200. How much is left?",
     "answer": "1,200 - 200 = 1,000 dollars are left.\n#### 1,000"},
]
VERL_SUFFIX = ' Let\'s think step by step and output the final answer after "####".'


def gsm8k_rows(shared=None, n=24):
    import pathlib

    p = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k_test.jsonl"
    if p.is_file():
        return [json.loads(x) for x in p.read_text().splitlines()[:n]]
    return INLINE


def verl_layout(rows, split="test"):
    """The records verl's examples/data_preprocess/gsm8k.py writes (its make_map_fn)."""
    out = []
    for i, r in enumerate(rows):
        sol = re.search("#### (\\-?[0-9\\.\\,]+)", r["answer"]).group(0).split("#### ")[1].replace(",", "")
        out.append({"data_source": "openai/gsm8k",
                    "prompt": [{"role": "user", "content": r["question"] + VERL_SUFFIX}],
                    "ability": "math", "reward_model": {"style": "rule", "ground_truth": sol},
                    "extra_info": {"split": split, "index": i, "answer": r["answer"], "question": r["question"]}})
    return out


def trl_layout(rows):
    """TRL's conversational prompt-only format: `prompt` messages, the gold in `solution`."""
    return [{"prompt": [{"role": "user", "content": r["question"]}],
             "solution": r["answer"].rsplit("####", 1)[1].strip().replace(",", "")} for r in rows]


def write_parquet(rows, path, shards=1):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if shards == 1:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
        return path
    path.mkdir()
    k = -(-len(rows) // shards)
    for s in range(shards):
        pq.write_table(pa.Table.from_pylist(rows[s * k:(s + 1) * k]), path / f"train-{s:05d}-of-{shards:05d}.parquet",
                       row_group_size=5)
    return path


def test_every_format_gives_the_same_prompts_and_answers(tmp_path):
    rows = gsm8k_rows()
    gold = [r["answer"].rsplit("####", 1)[1].strip().replace(",", "") for r in rows]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "g.json").write_text(json.dumps(rows))
    write_parquet(rows, tmp_path / "g.parquet")
    write_parquet(rows, tmp_path / "shards", shards=3)
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    kw = dict(problem_key="question", answer_format="gsm8k")
    for path in ("g.jsonl", "g.json", "g.parquet", "shards", "shards/*.parquet", "disk"):
        recs = read_prompt_records(str(tmp_path / path), **kw)
        assert len(recs) == len(rows), path
        assert [r["problem"] for r in recs] == [r["question"] for r in rows], path
        assert [r["answer"] for r in recs] == gold, path
        assert recs[len(rows) - 1]["solution"] == rows[-1]["answer"]
    # verl's preprocessed layout: chat-message prompts, the gold under reward_model.ground_truth
    write_parquet(verl_layout(rows), tmp_path / "verl.parquet")
    recs = read_prompt_records(str(tmp_path / "verl.parquet"), problem_key="prompt",
                               answer_key="reward_model.ground_truth")
    assert [r["answer"] for r in recs] == gold
    assert [r["problem"] for r in recs] == [r["question"] + VERL_SUFFIX for r in rows]
    assert recs[0]["prompt_messages"] == [{"role": "user", "content": rows[0]["question"] + VERL_SUFFIX}]
    assert recs[0]["data_source"] == "openai/gsm8k" and recs[0]["extra_info"]["index"] == 0
    # TRL's conversational format (JSONL here; the default problem key finds `prompt`)
    (tmp_path / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl_layout(rows)))
    recs = read_prompt_records(str(tmp_path / "trl.jsonl"), answer_key="solution")
    assert [r["problem"] for r in recs] == [r["question"] for r in rows]
    assert [r["answer"] for r in recs] == gold


def test_chat_message_prompts_render_through_the_template(tmp_path):
    from r1jax.toy.tokenizer import toy_tokenizer

    tok = toy_tokenizer()
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2 + 3"}]
    rec = {"problem": "what is 2 + 3", "prompt_messages": msgs}
    fmt = PromptFormat("chat", system_prompt="another system prompt")
    with pytest.warns(UserWarning, match="the data's system message is used"):
        text = fmt.text(tok, prompt_of(rec))
    assert text == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    # a plain style takes the last user message as the problem
    assert PromptFormat("short").text(tok, prompt_of(rec)) == "User: what is 2 + 3. Assistant:"


def test_what_a_folder_holds_is_read_as_meant(tmp_path):
    """A dataset's own `messages` column (NuminaMath: the solution inside) is never the prompt; a
    save_to_disk folder reads the files its state.json lists (not a later map()'s cache-*.arrow); a Hub
    snapshot folder with train and test shards refuses to mix them."""
    import datasets

    rows = [{"problem": "what is 2 + 3", "answer": "5",
             "messages": [{"role": "user", "content": "what is 2 + 3"}, {"role": "assistant", "content": "5"}]}]
    (tmp_path / "n.jsonl").write_text(json.dumps(rows[0]) + "\n")
    rec = read_prompt_records(str(tmp_path / "n.jsonl"))[0]
    assert prompt_of(rec) == "what is 2 + 3"
    ds = datasets.Dataset.from_list(INLINE)
    ds.save_to_disk(str(tmp_path / "disk"))
    # what a later load_from_disk(...).map() leaves beside the data: a cache-*.arrow of the same rows
    (tmp_path / "disk" / "cache-deadbeef.arrow").write_bytes((tmp_path / "disk" / next(
        f.name for f in (tmp_path / "disk").glob("data-*.arrow"))).read_bytes())
    assert len(open_records(tmp_path / "disk")) == len(INLINE)
    hub = tmp_path / "gsm8k" / "main"
    hub.mkdir(parents=True)
    write_parquet(INLINE, hub / "train-00000-of-00001.parquet")
    write_parquet(INLINE[:1], hub / "test-00000-of-00001.parquet")
    with pytest.raises(JsonlError, match="several splits \\(test, train\\)"):
        open_records(tmp_path / "gsm8k")
    assert len(open_records(str(hub / "test-*.parquet"))) == 1


def test_bad_inputs_name_the_file_and_row(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(JsonlError, match=r"unknown format '\.csv'.*\.parquet"):
        open_records(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(JsonlError, match="no \\*.parquet shards and no save_to_disk"):
        open_records(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_records(tmp_path / "missing.parquet")
    write_parquet(INLINE, tmp_path / "p.jsonl")  # Parquet bytes under a .jsonl name
    with pytest.raises(JsonlError, match="not UTF-8 text: the file is Parquet data"):
        read_prompt_records(tmp_path / "p.jsonl")
    rows = INLINE * 5
    rows[11] = {"question": "no final answer", "answer": "it is 5"}
    shards = write_parquet(rows, tmp_path / "bad", shards=2)
    with pytest.raises(JsonlError, match=r"train-00001-of-00002\.parquet: row 3: key 'answer' has no '####"):
        read_prompt_records(str(shards), problem_key="question", answer_format="gsm8k")
    with pytest.raises(JsonlError, match=r"missing key 'reward_model\.ground_truth'"):
        read_prompt_records(str(write_parquet(INLINE, tmp_path / "q.parquet")),
                            answer_key="reward_model.ground_truth")


def test_parquet_rows_are_read_a_row_group_at_a_time(tmp_path):
    """A Parquet source decodes the row group a row lives in (a few cached), not the file."""
    from r1jax.data import records as rec_lib

    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(200)]
    write_parquet(rows, tmp_path / "big.parquet")  # row groups of 7
    recs = read_prompt_records(str(tmp_path / "big.parquet"), problem_key="question", answer_format="gsm8k")
    assert not isinstance(recs, list)
    assert recs[150]["answer"] == "150" and recs[-1]["problem"] == "q199" and len(recs[10:13]) == 3
    assert len(recs.src._cache) <= rec_lib.ROW_GROUP_CACHE
    from r1jax.data.pipeline import PromptPipeline

    batch = next(PromptPipeline(recs, batch_size=4, seed=0))
    assert len(batch) == 4 and all(r["answer"] == r["problem"][1:] for r in batch)


# ------------------------------------------------------------------------------------ rewards


def verl_gsm8k_score(data_source, solution_str, ground_truth, extra_info=None):
    """A verl-style scorer (the shape of verl.utils.reward_score.gsm8k.compute_score, returning a dict)."""
    m = re.findall(r"#### (\-?[0-9\.\,]+)", solution_str)
    pred = m[-1].replace(",", "") if m else None
    return {"score": 1.0 if pred == ground_truth else 0.0, "parsed": 0.0 if pred is None else 1.0}


def test_trl_and_verl_rewards_equal_direct_calls(tmp_path):
    from trl.rewards import accuracy_reward

    from r1jax.rl.config import grpo_config, validate_config
    from r1jax.rewards.forms import reward_form
    from r1jax.rewards.registry import compute_rewards

    assert reward_form(accuracy_reward) == "trl" and reward_form(verl_gsm8k_score) == "verl"
    rows = gsm8k_rows()[:4]
    (tmp_path / "trl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl_layout(rows)))
    recs = read_prompt_records(str(tmp_path / "trl.jsonl"), answer_key="solution")
    texts = [f"the answer is \\boxed{{{r['answer']}}} #### {r['answer']}" if i % 2 else "I do not know #### 12345"
             for i, r in enumerate(recs)]
    c = grpo_config(rewards={"trl_acc": 1.0, "test_data_formats:verl_gsm8k_score": 0.5},
                    reward_functions={"trl_acc": "trl.rewards:accuracy_reward"})
    validate_config(c)
    scores, totals = compute_rewards(c, texts, recs)
    direct = accuracy_reward([[{"role": "assistant", "content": t}] for t in texts], [r["solution"] for r in recs])
    assert scores["trl_acc"] == direct == [float(i % 2) for i in range(len(recs))]
    v = [verl_gsm8k_score("openai/gsm8k", t, r["answer"]) for t, r in zip(texts, recs)]
    assert scores["test_data_formats:verl_gsm8k_score"] == [x["score"] for x in v]
    assert scores["test_data_formats:verl_gsm8k_score/parsed"] == [x["parsed"] for x in v]
    from r1jax.rewards.forms import call_verl

    assert call_verl(verl_dataset_scorer, texts, recs)[0] == [x["score"] for x in v]
    with pytest.raises(ValueError, match="reward_functions.nope: cannot load 'no_such_pkg.mod:f'"):
        validate_config(grpo_config(rewards={"nope": 1.0}, reward_functions={"nope": "no_such_pkg.mod:f"}))
    np.testing.assert_allclose(totals, [a + 0.5 * b["score"] for a, b in zip(direct, v)])


def verl_dataset_scorer(solution_str, ground_truth, method="strict", format_score=0.0, score=1.0):
    """The signature of verl.utils.reward_score.gsm8k.compute_score (no data_source / extra_info)."""
    m = re.findall(r"#### (\-?[0-9\.\,]+)", solution_str)
    return score if m and m[-1].replace(",", "") == ground_truth else format_score


def trl_length_reward(completions, completion_ids, **kwargs):
    """A TRL-form reward that reads the token ids TRL passes (`completion_ids`)."""
    return [float(len(ids)) for ids in completion_ids]


def slow_reward(completions, **kwargs):
    import time

    time.sleep(30)
    return [1.0] * len(completions)


def test_a_reward_over_its_time_limit_scores_none(tmp_path):
    from r1jax.rl.config import grpo_config
    from r1jax.rewards.registry import compute_rewards

    c = grpo_config(rewards={"test_data_formats:slow_reward": 1.0}, reward_timeout_s=3.0)
    recs = [{"problem": "p", "answer": "1"}] * 2
    with pytest.warns(RuntimeWarning, match="longer than reward_timeout_s=3.0"):
        scores, totals = compute_rewards(c, ["a", "b"], recs)
    assert scores["test_data_formats:slow_reward"] == [None, None] and totals == [None, None]


def test_grpo_runs_on_verl_parquet_with_trl_and_verl_rewards(tmp_path):
    """A GRPO run on the tiny model, verl's Parquet layout, trl's own accuracy_reward and a verl scorer."""
    import jax

    from r1jax import config as config_lib
    from r1jax.model import Transformer, init_params
    from r1jax.rl.config import grpo_config
    from r1jax.rl.trainer import run_grpo
    from r1jax.toy.tokenizer import toy_tokenizer

    rows = gsm8k_rows()[:8]
    path = write_parquet(verl_layout(rows), tmp_path / "train.parquet")
    tok = toy_tokenizer()
    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size, max_position_embeddings=512)
    c = grpo_config(run_dir=str(tmp_path / "run"), train_data=str(path), problem_key="prompt",
                    answer_key="reward_model.ground_truth", prompt_style="chat",
                    rewards={"trl_acc": 1.0, "test_data_formats:verl_gsm8k_score": 1.0,
                             "test_data_formats:trl_length_reward": 0.0},
                    reward_functions={"trl_acc": "trl.rewards:accuracy_reward"},
                    group_size=2, prompts_per_step=2, max_new_tokens=4, steps=2, eval_every=0, save_every=0,
                    save_hf=False, progress=False)
    run_grpo(c, model=Transformer(cfg), params=init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tok)
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 2
    for m in logged:
        assert "reward/trl_acc" in m and "reward/test_data_formats:verl_gsm8k_score/parsed" in m
        assert m["reward/test_data_formats:trl_length_reward"] == m["rollout/response_length"]


def test_sft_reads_parquet_and_chat_messages(tmp_path):
    """SFT records from Parquet with TRL's conversational prompt/completion columns."""
    from r1jax.sft.trainer import iter_tokenized, read_sft_records
    from r1jax.toy.tokenizer import toy_tokenizer

    rows = [{"prompt": [{"role": "user", "content": "what is 2 + 3"}],
             "completion": [{"role": "assistant", "content": "5"}]},
            {"prompt": [{"role": "user", "content": "what is 1 + 1"}], "completion": [{"role": "assistant", "content": "2"}]}]
    recs = read_sft_records(str(write_parquet(rows, tmp_path / "sft.parquet")))
    assert recs[0] == {"prompt": [{"role": "user", "content": "what is 2 + 3"}], "completion": "5"}
    tok = toy_tokenizer()
    (p, c), _ = list(iter_tokenized(recs, tok, tok.eos_token_ids[0]))
    assert p == tok.apply_chat_template(rows[0]["prompt"], add_generation_prompt=True)
    assert c == tok.encode("5", add_special_tokens=False) + [tok.eos_token_ids[0]]
