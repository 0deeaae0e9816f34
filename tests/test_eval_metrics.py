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


def test_evaluate_scores_its_own_samples():
    """evaluate()'s figures recomputed from the completions it returns (random tiny model), and
    evaluate_stage() reporting the same samples' figures plus its own."""
    import jax

    from r1jax import config as C
    from r1jax.data.toy_tokenizer import toy_tokenizer
    from r1jax.eval.runner import evaluate, reasons
    from r1jax.eval.stage_eval import evaluate_stage
    from r1jax.model import Transformer, init_params
    from r1jax.rl.rewards import accuracy_reward

    tok = toy_tokenizer()
    cfg = C.tiny_moe(vocab_size=tok.vocab_size)
    model, params = Transformer(cfg), init_params(cfg, jax.random.PRNGKey(0))
    recs = [{"problem": f"what is {a} + {b}", "answer": str(a + b), "language": "en"} for a, b in ((1, 2), (3, 4), (5, 6))]
    k = 3
    r = evaluate(model, params, tok, recs, k=k, max_new_tokens=10, seed=1, keep_texts=True)
    texts = r["texts"]
    assert len(texts) == k * len(recs) and r["accuracy"] == [accuracy_reward(t, x["answer"]) for t, x in
                                                             zip(texts, [x for x in recs for _ in range(k)])]
    assert r["pass@1"] == np.mean([a == 1.0 for a in r["accuracy"]])
    assert r["reasoning_share"] == np.mean([reasons(t) for t in texts])
    assert reasons("<think> 1 plus 2 </think> <answer> 3 </answer>") and not reasons("<think> </think> <answer> 3 </answer>")
    s = evaluate_stage(model, params, tok, recs, k=k, max_new_tokens=10, seed=1)
    assert s["pass@1"] == r["pass@1"] and s["mean_length"] == r["mean_length"]  # same samples
    assert s["pass@1/en"] == r["pass@1"] and 0.0 <= s["language_mixing"] <= 1.0
