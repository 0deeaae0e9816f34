"""Synthetic arithmetic tasks, the toy corpus and JSONL io."""
import collections
import json
import random

import pytest

from r1jax.toy import corpus as C
from r1jax.data.jsonl import JsonlError, read_jsonl, write_jsonl
from r1jax.toy.tasks import LANGUAGES, TASKS, get_task, make_problems, words_of_language
from r1jax.toy.tasks.arithmetic import (
    answer_text,
    check_think,
    classify_word,
    parse_answer_text,
    parse_steps,
    split_of,
    worked_think,
)


def _think(completion):
    assert completion.startswith("<think>") and "</think>" in completion
    return completion[len("<think>"):completion.index("</think>")].strip()


def _answer(completion):
    return parse_answer_text(completion.split("<answer>")[1].split("</answer>")[0])


def _check_chain(task, a, b, steps):
    """Replay parsed steps: each non-slip step is right given the state so far; returns
    (final written, number of slips corrected)."""
    t = get_task(task)
    xs = [int(c) for c in str(a)]
    ys = [int(c) for c in str(b).rjust(len(xs), "0")] if task == "add" else None
    col, carry, written, slips = 0, 0, "", 0
    i = 0
    while i < len(steps):
        s = steps[i]
        nxt = steps[i + 1] if i + 1 < len(steps) else None
        x = xs[len(xs) - 1 - col]
        y = ys[len(ys) - 1 - col] if ys else b
        assert (s["x"], s["y"], s["carry_in"]) == (x, y, carry)
        true = t.combine(x, y, carry)
        last = col == len(xs) - 1
        if nxt is not None and nxt["checked"]:
            # The step before a check may be a slip; the check must be right.
            slips += s["value"] != true
            s = nxt
            i += 1
            assert (s["x"], s["y"], s["carry_in"]) == (x, y, carry)
        assert s["value"] == true, (s, true)
        if last:
            written = str(true) + written
            assert s["carry_out"] is None
        else:
            written = str(true % 10) + written
            carry = true // 10
            assert s["carry_out"] == carry
        assert s["written"] == written
        col += 1
        i += 1
    assert col == len(xs)
    return written, slips


@pytest.mark.parametrize("task", sorted(TASKS))
def test_worked_solutions_exact(task):
    probs = make_problems(task, 300, seed=0, levels=(1, 2, 3, 4, 5, 6))
    for p in probs:
        t = get_task(task)
        assert p["answer"] == (p["a"] + p["b"] if task == "add" else p["a"] * p["b"])
        assert len(str(p["a"])) == p["level"] or p["level"] == 1
        steps = parse_steps(worked_think(task, p["a"], p["b"]))
        written, slips = _check_chain(task, p["a"], p["b"], steps)
        assert int(written) == p["answer"] and slips == 0
        assert t.problem_text(p["a"], p["b"]) == p["problem"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_check_mode_slip_is_corrected(task):
    rng = random.Random(0)
    n_slip = 0
    for p in make_problems(task, 300, seed=1, levels=(2, 3, 4, 5)):
        slip = rng.random() < 0.7
        think, info = check_think(task, p["a"], p["b"], rng, slip=slip)
        assert think.count("wait , check :") == 1
        steps = parse_steps(think)
        assert sum(s["checked"] for s in steps) == 1
        written, slips = _check_chain(task, p["a"], p["b"], steps)
        assert int(written) == p["answer"]
        assert slips == int(slip) and info["slipped"] == slip
        n_slip += slips
    assert n_slip > 100


@pytest.mark.parametrize("task", sorted(TASKS))
def test_restated_steps_carry_the_remaining_operands(task):
    """restate=True: each step starts with the columns not yet done, so its digits are the ones
    just before the operator and the colon; the chain is otherwise the plain worked chain."""
    rng = random.Random(3)
    for p in make_problems(task, 200, seed=2, levels=(1, 2, 3, 4, 5)):
        a, b = p["a"], p["b"]
        plain = parse_steps(worked_think(task, a, b))
        steps = parse_steps(worked_think(task, a, b, restate=True))
        assert [{k: v for k, v in s.items() if k != "operands"} for s in steps] == \
            [{k: v for k, v in s.items() if k != "operands"} for s in plain]
        n = len(str(a))
        sym = get_task(task).symbol
        for i, s in enumerate(steps):
            lhs, rhs = s["operands"].split(f" {sym} ")
            assert lhs.replace(" ", "") == str(a)[: n - i]
            if task == "add":
                assert rhs.replace(" ", "") == str(b).rjust(n, "0")[: n - i]
            else:
                assert rhs == str(b)
            assert int(lhs.split()[-1]) == s["x"] and int(rhs.split()[-1]) == s["y"]
        assert steps[0]["operands"] == get_task(task).expression(a, b)
        think, info = check_think(task, a, b, rng, restate=True)
        chk = parse_steps(think)
        written, slips = _check_chain(task, a, b, chk)
        assert int(written) == p["answer"] and slips == int(info["slipped"])
        redo = [s for s in chk if s["checked"]][0]
        assert redo["operands"] == steps[info["step"]]["operands"]


def test_corpus_modes_and_answers():
    docs = C.make_pretrain_corpus(3000, seed=0)
    modes = collections.Counter(d["mode"] for d in docs)
    assert abs(modes["direct"] / 3000 - 0.70) < 0.04 and abs(modes["check"] / 3000 - 0.06) < 0.02
    wrong_direct = 0
    for d in docs:
        assert d["text"] == d["prompt"] + " " + d["completion"]
        assert d["prompt"].startswith("A conversation between User and Assistant.")
        assert d["prompt"].endswith(f"User: {d['problem']}. Assistant:")
        assert d["completion"].endswith(f"<answer> {answer_text(_answer(d['completion']))} </answer>")
        given = _answer(d["completion"])
        if d["mode"] == "direct":
            assert _think(d["completion"]) == ""
            assert d["correct"] == (given == d["answer"])
            wrong_direct += given != d["answer"]
            assert len(str(given)) == len(str(d["answer"]))
        else:
            assert given == d["answer"] and d["correct"]
            written, slips = _check_chain(d["task"], *map(int, d["id"].split(":")[1].split("+")),
                                          parse_steps(_think(d["completion"])))
            assert int(written) == d["answer"]
            assert ("wait , check :" in d["completion"]) == (d["mode"] == "check")
    # Level-dependent guess error rates average ~0.78 over levels 2..5.
    assert 0.7 < wrong_direct / modes["direct"] < 0.86


def test_corpus_is_reproducible_and_short():
    a = C.make_pretrain_corpus(200, seed=5, prompt_style="short")
    b = C.make_pretrain_corpus(200, seed=5, prompt_style="short")
    assert a == b
    assert a[0]["prompt"] == f"User: {a[0]['problem']}. Assistant:"
    assert max(len(d["completion"].split()) for d in a) <= 110
    with pytest.raises(ValueError, match="prompt style"):
        C.make_pretrain_corpus(2, seed=0, prompt_style="nope")


def test_sft_and_eval_records():
    recs = C.make_sft_records(100, seed=0, mode="mixed", tasks=("add", "mul1"))
    assert len({r["id"] for r in recs}) == 100
    assert {r["task"] for r in recs} == {"add", "mul1"}
    for r in recs:
        assert _answer(r["completion"]) == r["answer"]
        assert all(split_of(r["id"]) == "train" for r in recs)
    chat = C.make_sft_records(5, seed=0, prompt_style="chat")
    for r in chat:
        assert r["prompt"].endswith("<｜Assistant｜><think>\n")
        assert r["completion"].endswith("</answer> <｜end▁of▁sentence｜>")
        assert not r["completion"].startswith("<think>")
    ev = C.eval_records(50, seed=0)
    assert all(split_of(r["id"]) == "heldout" for r in ev)
    assert all(r["answer_text"] == answer_text(r["answer"]) for r in ev)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_disjoint(task):
    train = make_problems(task, 3000, seed=0, levels=(2, 3), split="train")
    held = make_problems(task, 200, seed=0, levels=(2, 3), split="heldout")
    held_same_seed_as_train = make_problems(task, 200, seed=0, levels=(2, 3), split="heldout")
    assert held == held_same_seed_as_train  # deterministic
    train_ids, held_ids = {p["id"] for p in train}, {p["id"] for p in held}
    assert len(train_ids) == 3000 and len(held_ids) == 200  # unique
    assert not train_ids & held_ids
    assert all(split_of(i) == "heldout" for i in held_ids)
    # Corpus problems come from the train side only, whatever the seed.
    for d in C.make_pretrain_corpus(500, seed=3, tasks=(task,), levels=(2, 3)):
        assert split_of(d["id"]) == "train"
    # Held-out share of the problem space is about HELDOUT_PERCENT.
    every = [f"add:{a}+{b}" for a in range(10, 100) for b in range(10, 100)]
    share = sum(split_of(k) == "heldout" for k in every) / len(every)
    assert 0.08 < share < 0.12


def test_make_problems_errors():
    with pytest.raises(ValueError, match="could only find"):
        make_problems("mul1", 1000, seed=0, levels=1)  # only 8*10 problems exist
    with pytest.raises(ValueError, match="level"):
        make_problems("add", 1, seed=0, levels=9)
    with pytest.raises(KeyError, match="unknown task"):
        make_problems("nope", 1, seed=0)
    with pytest.raises(KeyError, match="unknown language"):
        make_problems("add", 1, seed=0, language="xx")


def test_answer_text_roundtrip():
    for n in (0, 7, 612, 100000, -45):
        assert parse_answer_text(answer_text(n)) == n
    assert answer_text(612) == "6 1 2"
    assert parse_answer_text(" 6 12 ") == 612
    for bad in ("", "  ", "6 a 2", None, "1.5", "--3", "٣"):
        assert parse_answer_text(bad) is None


def test_languages_disjoint_and_mixing():
    names = sorted(LANGUAGES)
    assert len(names) >= 2
    for i, a in enumerate(names):
        assert set(LANGUAGES[a]) == set(LANGUAGES[names[0]])  # same keys
        for b in names[i + 1:]:
            assert not words_of_language(a) & words_of_language(b), (a, b)
        assert not words_of_language(a) & set("0123456789+*,;:")
    fr = make_problems("add", 3, seed=0, language="fr")
    assert all(p["problem"].startswith("combien font ") for p in fr)
    # A mixed corpus: every chain word belongs to one of the two languages, and p_mix=1 chains
    # contain both; same problems, same steps whatever the language.
    docs = C.make_pretrain_corpus(200, seed=0, languages=("en", "fr"), p_mix=1.0, p_direct=0.0)
    mixed = 0
    for d in docs:
        langs = {classify_word(w) for w in _think(d["completion"]).split()} - {None}
        assert langs <= {"en", "fr"}
        mixed += langs == {"en", "fr"}
        assert _answer(d["completion"]) == d["answer"]
    assert mixed == len(docs)
    steps_en = parse_steps(worked_think("add", 456, 789, "en"))
    steps_fr = parse_steps(worked_think("add", 456, 789, "fr"))
    assert steps_en == steps_fr
    per_step = C.make_pretrain_corpus(50, seed=1, languages=("en", "fr"), p_mix=1.0, mix_style="step", p_direct=0)
    assert all(_answer(d["completion"]) == d["answer"] for d in per_step)


def test_jsonl_roundtrip_and_errors(tmp_path):
    recs = [{"problem": "what is 1 + 2", "answer": 3, "note": "é"}, {"problem": "x", "answer": 1}]
    p = tmp_path / "sub" / "a.jsonl"
    assert write_jsonl(p, recs) == 2
    assert read_jsonl(p) == recs
    assert not (tmp_path / "sub" / "a.jsonl.tmp").exists()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(recs[0]) + "\n\n" + json.dumps({"problem": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(JsonlError) as e:
        read_jsonl(bad)
    assert f"{bad}:3:" in str(e.value) and "'answer'" in str(e.value)
    assert read_jsonl(bad, required=("problem",))[1] == {"problem": "q"}

    bad.write_text(json.dumps(recs[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"{bad}:2: invalid JSON"):
        read_jsonl(bad)
    bad.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"{bad}:1: expected a JSON object"):
        read_jsonl(bad)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_make_toy_data_tool(tmp_path):
    import importlib.util
    import pathlib

    spec = importlib.util.spec_from_file_location(
        "make_toy_data", pathlib.Path(__file__).resolve().parents[1] / "tools" / "make_toy_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "toy"
    assert mod.main(["--out", str(out), "--n-pretrain", "60", "--n-train", "20", "--n-heldout", "10",
                     "--n-sft", "5", "--languages", "en,fr", "--p-mix", "0.5"]) == 0
    train, held = read_jsonl(out / "train.jsonl"), read_jsonl(out / "heldout.jsonl")
    assert not {r["id"] for r in train} & {r["id"] for r in held}
    assert len(read_jsonl(out / "pretrain.jsonl", required=("prompt", "completion", "mode"))) == 60
    assert (out / "tokenizer" / "tokenizer.json").is_file() and "--- worked" in (out / "README.txt").read_text()
