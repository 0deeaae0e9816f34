"""r1jax.eval.metrics (pass@k, pass@1 over k, cons@k) and r1jax.eval.benchmarks (JSONL readers)."""
import itertools
import json
import re

import numpy as np
import pytest

from r1jax.eval import benchmarks, metrics


def brute_pass_at_k(n, c, k):
    """Fraction of all k-subsets of n samples (first c correct) containing a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_vs_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert metrics.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edges():
    assert metrics.pass_at_k(200, 0, 10) == 0.0
    assert metrics.pass_at_k(200, 200, 1) == 1.0
    assert metrics.pass_at_k(200, 37, 1) == pytest.approx(37 / 200)
    assert 0.0 < metrics.pass_at_k(1000, 3, 100) < 1.0
    for bad in [(0, 0, 1), (5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)]:
        with pytest.raises(ValueError):
            metrics.pass_at_k(*bad)


def test_pass1_over_k():
    correct = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]], bool)
    assert metrics.pass1_over_k(correct) == pytest.approx((0.5 + 1 + 0) / 3)
    # equals the mean of the unbiased pass@1 estimator per problem
    assert metrics.pass1_over_k(correct) == pytest.approx(np.mean([metrics.pass_at_k(4, r.sum(), 1) for r in correct]))
    assert metrics.pass1_over_k([[True], [False, True]]) == pytest.approx(0.75)  # ragged rows
    with pytest.raises(ValueError):
        metrics.pass1_over_k([])
    with pytest.raises(ValueError, match="problem 1"):
        metrics.pass1_over_k([[True], []])


def test_majority_vote_and_cons_at_k():
    mv = metrics.majority_vote
    assert mv(["3", " 4", "4 ", None, "3", None, None]) == "3"  # tie 2-2: "3" occurs first
    assert mv([" 4", "3", "4 ", "3"]) == " 4"                   # tie: "4" group first; original text
    assert mv(["1", "2", "2"]) == "2"
    assert mv([None, None]) is None and mv([]) is None

    preds = [
        ["42", "41", "42", None],            # majority 42 -> correct
        ["7", "8", "8", "7"],                # tie, "7" first -> wrong (gold 8)
        [None, None, None, None],            # no answer -> wrong
        ["\\frac12", "0.5", "0.5", "1/2"],   # 0.5 -> correct under string compare
        [" x ", "x", "y", "y"],              # whitespace-normalised: x wins 2-2 by first occurrence
    ]
    gold = ["42", "8", "1", "0.5", "x"]
    assert metrics.cons_at_k(preds, gold) == pytest.approx(3 / 5)

    # a custom normalize merges spellings; the judge sees the first original answer of the group
    canon = {"\\frac12": "0.5", "1/2": "0.5", "0.5": "0.5"}
    seen = []

    def judge(pred, g):
        seen.append(pred)
        return canon.get(pred, pred) == canon.get(g, g)

    assert metrics.cons_at_k([["\\frac12", "0.5", "7", "1/2"]], ["1/2"], judge=judge,
                             normalize=lambda a: canon.get(a, a)) == 1.0
    assert seen == ["\\frac12"]
    with pytest.raises(ValueError):
        metrics.cons_at_k([["1"]], ["1", "2"])


# --------------------------------------------------------------------------------------------
# benchmarks
# --------------------------------------------------------------------------------------------


def test_load_real_math500(shared_data):
    recs = benchmarks.load_benchmark(shared_data / "math500_test.jsonl")
    assert len(recs) == 500
    first = json.loads((shared_data / "math500_test.jsonl").read_text().splitlines()[0])
    assert recs[0] == first  # MATH records come back unchanged
    assert list(recs[0])[:2] == ["problem", "answer"]
    assert all(isinstance(r["problem"], str) and isinstance(r["answer"], str) and r["answer"] for r in recs)
    assert len({r["unique_id"] for r in recs}) == 500


def test_load_real_gsm8k(shared_data):
    recs = benchmarks.load_benchmark(shared_data / "gsm8k_test.jsonl")
    assert len(recs) == 1319
    assert recs[0]["answer"] == "18" and recs[0]["problem"] == recs[0]["question"]
    assert recs[0]["solution"].endswith("#### 18")
    for r in recs:
        assert re.fullmatch(r"-?\d+(\.\d+)?", r["answer"]), r["answer"]
        float(r["answer"])
    assert any("," in r["solution"].rsplit("####", 1)[1] for r in recs)  # commas were stripped


def test_load_generic_and_gsm8k_temp(tmp_path):
    p = tmp_path / "gen.jsonl"
    p.write_text('{"problem": "1+1?", "answer": 2, "id": 7}\n\n{"problem": "x", "answer": "y"}\n')
    assert benchmarks.load_benchmark(p) == [{"problem": "1+1?", "answer": "2", "id": 7},
                                            {"problem": "x", "answer": "y"}]
    g = tmp_path / "g.jsonl"
    g.write_text(json.dumps({"question": "q", "answer": "a\nb #### 1,234,567"}) + "\n")
    assert benchmarks.load_benchmark(g) == [{"problem": "q", "answer": "1234567", "question": "q",
                                             "solution": "a\nb #### 1,234,567"}]


@pytest.mark.parametrize("lines,lineno,pattern", [
    (['{"problem": "a", "answer": "b"}', '{"problem": "c", "answer": '], 2, "invalid JSON"),
    (['{"problem": "a", "answer": "b"}', '', '{"problem": "c"}'], 3, "missing key 'answer'"),
    (['{"problem": "a", "answer": "b"}', '["a", "b"]'], 2, "JSON object"),
    (['{"question": "a", "answer": "b #### 3"}', '{"question": "c", "answer": "no marker"}'], 2, "####"),
    (['{"question": "a", "answer": "b #### 3"}', '{"answer": "#### 3"}'], 2, "missing key 'question'"),
    (['{"task_id": "x", "prompt": "y"}'], 1, "missing key 'answer'"),
    (['{"task_id": "x", "text": "y"}'], 1, "unrecognised"),
    (['{"problem": null, "answer": "b"}'], 1, "'problem' must be text"),
    (['{"question": "a", "answer": "b #### 3"}', '{"question": "c", "answer": "#### "}'], 2, "####"),
])
def test_malformed_files_name_file_and_line(tmp_path, lines, lineno, pattern):
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(benchmarks.BenchmarkFormatError) as ei:
        benchmarks.load_benchmark(p)
    msg = str(ei.value)
    assert f"{p}:{lineno}:" in msg, msg
    assert re.search(pattern, msg), msg
    assert isinstance(ei.value, ValueError)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("\n")
    with pytest.raises(benchmarks.BenchmarkFormatError, match="empty"):
        benchmarks.load_benchmark(p)


# Scripted samples (k = 3 per problem), with their figures worked out by hand:
#   problem  gold  samples (answer; * = reasons in <think>)       correct  majority
#   0 (en)   3     3*, 4, 3* (mixes in a French word, "wait")     2 / 3    3 -> right
#   1 (en)   7     7, 7, 7 (empty <think>: direct)                3 / 3    7 -> right
#   2 (en)   8     9, 9, 8                                        1 / 3    9 -> wrong
#   3 (fr)   5     none* (cut at max_new_tokens), 5, 6            1 / 3    5 (tie, first) -> right
SCRIPT = [
    ("what is 1 + 2", "3", "en", [("<think> 1 plus 2 is 3 </think> <answer> 3 </answer>", "stop"),
                                  ("<answer> 4 </answer>", "stop"),
                                  ("<think> 1 plus 2 fois 3 , wait </think> <answer> 3 </answer>", "stop")]),
    ("what is 3 + 4", "7", "en", [("<think> </think> <answer> 7 </answer>", "stop")] * 3),
    ("what is 4 + 4", "8", "en", [("<answer> 9 </answer>", "stop"), ("<answer> 9 </answer>", "stop"),
                                  ("<answer> 8 </answer>", "stop")]),
    ("combien font 2 + 3", "5", "fr", [("<think> 2 et 3 font 5 </think>", "length"), ("<answer> 5 </answer>", "stop"),
                                       ("<answer> 6 </answer>", "stop")]),
]
EXPECTED = {
    "pass@1": (2 / 3 + 1 + 1 / 3 + 1 / 3) / 4,  # 7/12
    "cons@k": 3 / 4,
    "format": 2 / 12,  # R1-Zero format: problem 0's two reasoned samples
    "reflection": 1 / 12,
    "truncated": 1 / 12,
    "reasoning_share": 3 / 12,
    "reasoning_accuracy": 2 / 3,
    "direct_accuracy": 5 / 9,
}


def _scripted_generate(tok, calls):
    """A stand-in for r1jax.generate that returns SCRIPT's samples: request r (= first_request + its
    place in the call) is sample r % k of problem r // k; a finished sample ends with EOS."""
    from types import SimpleNamespace

    eos = tok.eos_token_ids[0]

    def generate(model, params, prompts, *, n, first_request, eos_id, **kw):
        calls.append((len(prompts), n, first_request, kw.get("engine")))
        assert eos in eos_id
        tokens, index, finish = [], [], []
        for i in range(len(prompts)):
            for j in range(n):
                r = first_request + i * n + j
                text, why = SCRIPT[r // n][3][r % n]
                tokens.append(tok.encode(text) + ([eos] if why == "stop" else []))
                index.append(i)
                finish.append(why)
        return SimpleNamespace(tokens=tokens, prompt_index=np.array(index), finish_reason=finish)

    return generate


@pytest.mark.parametrize("batch_prompts,engine,n_calls", [(64, "static", 1), (2, "static", 2), (2, "continuous", 1)])
def test_evaluate_figures_on_samples_of_known_correctness(monkeypatch, batch_prompts, engine, n_calls):
    """evaluate() and evaluate_stage() on a controlled sampler: every figure equals the hand count
    of SCRIPT (no model runs)."""
    from types import SimpleNamespace

    from r1jax.toy.tokenizer import toy_tokenizer
    from r1jax.eval.runner import evaluate
    from r1jax.toy.stage_eval import evaluate_stage
    from r1jax.eval import runner

    tok = toy_tokenizer()
    calls = []
    monkeypatch.setattr(runner, "generate", _scripted_generate(tok, calls))  # where evaluate calls it
    model = SimpleNamespace(cfg=SimpleNamespace(dtype="float32", param_dtype="float32"))  # compute_copy: no-op
    recs = [{"problem": p, "answer": a, "language": lg} for p, a, lg, _ in SCRIPT]
    k = 3
    r = evaluate(model, {}, tok, recs, k=k, max_new_tokens=16, batch_prompts=batch_prompts, keep_texts=True,
                 engine=engine)
    assert len(calls) == n_calls and all(c[1] == k for c in calls)
    assert [c[2] for c in calls] == [i * batch_prompts * k for i in range(n_calls)] if engine == "static" else [0]
    assert r["texts"] == [t for _, _, _, samples in SCRIPT for t, _ in samples]  # EOS stripped
    assert r["accuracy"] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    for key, want in EXPECTED.items():
        assert r[key] == pytest.approx(want, abs=1e-12), key
    lengths = [len(tok.encode(t)) + (why == "stop") for _, _, _, samples in SCRIPT for t, why in samples]
    assert r["mean_length"] == pytest.approx(np.mean(lengths)) and r["problems"] == 4 and r["skipped_gold"] == 0

    calls.clear()
    s = evaluate_stage(model, {}, tok, recs, k=k, max_new_tokens=16, batch_prompts=batch_prompts)
    assert s["pass@1"] == pytest.approx(7 / 12) and s["cons@k"] == pytest.approx(3 / 4)
    assert s["pass@1/en"] == pytest.approx(6 / 9) and s["pass@1/fr"] == pytest.approx(1 / 3)
    assert s["language_mixing"] == pytest.approx(1 / 12)  # problem 0's third sample: English CoT with "fois"
    assert s["language_mixing_any"] == pytest.approx(1 / 12)
    assert s["format_r1_zero"] == pytest.approx(2 / 12) and s["format_r1"] == pytest.approx(2 / 12)
    assert s["summary"] == 0.0


def test_reasons_needs_a_non_empty_think_block():
    from r1jax.eval.runner import reasons

    assert reasons("<think> 1 plus 2 </think> <answer> 3 </answer>")
    assert not reasons("<think> </think> <answer> 3 </answer>")
