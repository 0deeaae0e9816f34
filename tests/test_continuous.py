"""Continuous batching (r1jax.generate(engine="continuous")): per request, the static engine's tokens
whatever the slot count; per-request budgets; refills without recompiles."""

import jax
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib
from r1jax.generation import programs
from r1jax.model import Transformer, init_params

from numerics import assert_close

jax.config.update("jax_default_matmul_precision", "highest")


def _model(preset):
    cfg = getattr(config_lib, preset)()
    return Transformer(cfg), init_params(cfg, jax.random.PRNGKey(0))


def _workload(n_req, seed=0, cap=48):
    """Prompts of 3-20 tokens and long-tail budgets (lognormal, median 10, in [1, cap])."""
    rs = np.random.RandomState(seed)
    prompts = [list(rs.randint(2, 97, rs.randint(3, 21))) for _ in range(n_req)]
    budgets = [int(x) for x in np.clip(np.round(rs.lognormal(np.log(10), 1.0, n_req)), 1, cap)]
    return prompts, budgets


@pytest.mark.parametrize("preset", ["tiny_moe", "tiny_qwen2"])  # latent (MLA) cache, GQA K/V cache
def test_64_longtail_requests_through_16_slots_equal_the_static_engine(preset):
    model, params = _model(preset)
    prompts, budgets = _workload(64)
    assert max(budgets) >= 4 * np.median(budgets)  # a long tail: refills happen
    kw = dict(max_new_tokens=budgets, eos_id=())
    static = r1jax.generate(model, params, prompts, temperature=0.0, **kw)
    cont = r1jax.generate(model, params, prompts, temperature=0.0, engine="continuous", slots=16, **kw)
    assert [len(t) for t in cont.tokens] == budgets  # each request's own budget
    assert cont.tokens == static.tokens
    assert_close(np.concatenate(cont.logprobs), np.concatenate(static.logprobs), rtol=1e-6)
    assert cont.finish_reason == ["length"] * 64 and cont.prompt_index == list(range(64))
    assert cont.stats["rows"] == 16 and cont.stats["refills"] > 4
    # rows are refilled: the 16 rows make most of their steps' tokens; the static engine's 64 rows idle
    # behind the longest request
    assert cont.stats["row_utilization"] > 0.6
    assert cont.stats["decode_steps"] < 0.6 * sum(budgets) / 16 + max(budgets)


@pytest.mark.parametrize("preset", [pytest.param("tiny_moe", marks=pytest.mark.slow), "tiny_qwen2"])
def test_sampled_requests_are_the_same_with_8_or_16_slots(preset):
    """At T = 1 a request's tokens come from (seed, request index): 8 slots, 16 slots and the static
    engine give the same samples; n = 2 samples per prompt share a prefill and differ."""
    model, params = _model(preset)
    prompts, budgets = _workload(32, seed=1)
    kw = dict(max_new_tokens=budgets, eos_id=(), temperature=1.0, top_p=0.9, seed=7, n=2)
    outs = {s: r1jax.generate(model, params, prompts, engine="continuous", slots=s, **kw) for s in (8, 16)}
    static = r1jax.generate(model, params, prompts, **kw)
    assert outs[8].tokens == outs[16].tokens == static.tokens
    assert_close(np.concatenate(outs[8].logprobs), np.concatenate(static.logprobs), rtol=1e-6)
    assert outs[8].prompt_index == [j // 2 for j in range(64)]
    long = [j for j in range(64) if budgets[j // 2] >= 8]
    assert sum(outs[8].tokens[j] != outs[8].tokens[j ^ 1] for j in long) >= len(long) // 2  # copies differ
    other = r1jax.generate(model, params, prompts, engine="continuous", slots=8, **{**kw, "seed": 8})
    assert other.tokens != outs[8].tokens


def test_requests_stop_at_eos_and_rows_are_refilled():
    model, params = _model("tiny_qwen2")
    prompts, _ = _workload(24, seed=2)
    greedy = r1jax.generate(model, params, prompts, max_new_tokens=30, temperature=0.0, eos_id=())
    # an EOS that ends some requests early: the most frequent greedy token after the first
    counts = np.bincount(np.concatenate([t[1:] for t in greedy.tokens]))
    eos = int(np.argmax(counts))
    kw = dict(max_new_tokens=30, temperature=0.0, eos_id=[eos, 10_000])
    static = r1jax.generate(model, params, prompts, **kw)
    cont = r1jax.generate(model, params, prompts, engine="continuous", slots=4, **kw)
    assert cont.tokens == static.tokens and cont.finish_reason == static.finish_reason
    assert 0 < cont.finish_reason.count("eos") < 24
    for t, r in zip(cont.tokens, cont.finish_reason):
        assert (r == "eos") == (t[-1] == eos) and (eos not in t[:-1])


def test_refills_do_not_recompile_across_calls_of_the_same_buckets():
    model, params = _model("tiny_qwen2")
    p1, b1 = _workload(20, seed=3, cap=40)
    p2, b2 = _workload(20, seed=4, cap=40)
    b1[0] = b2[0] = 40  # the same cache bucket
    r1jax.generate(model, params, p1, max_new_tokens=b1, temperature=0.0, eos_id=(), engine="continuous", slots=8)
    before = programs.compile_count()
    out = r1jax.generate(model, params, p2, max_new_tokens=b2, temperature=0.0, eos_id=(), engine="continuous",
                         slots=8)
    after = programs.compile_count()
    assert out.stats["refills"] > 2
    # a refill of a new (rows, prompt length) bucket may compile once; the decode segment never again
    assert after["segment"] == before["segment"]
    assert after["refill"] - before["refill"] <= 2


def test_auto_engine_and_bad_arguments():
    model, params = _model("tiny_qwen2")
    prompts, budgets = _workload(6, seed=5)
    out = r1jax.generate(model, params, prompts, max_new_tokens=budgets, temperature=0.0, eos_id=(), engine="auto",
                         slots=2)
    assert out.stats["engine"] == "continuous" and [len(t) for t in out.tokens] == budgets
    assert r1jax.generate(model, params, prompts, max_new_tokens=4, temperature=0.0, engine="auto",
                          slots=8).stats["engine"] == "static"
    with pytest.raises(ValueError, match="engine="):
        r1jax.generate(model, params, prompts, max_new_tokens=4, engine="paged")
    with pytest.raises(ValueError, match="slots=0"):
        r1jax.generate(model, params, prompts, max_new_tokens=4, engine="continuous", slots=0)
    with pytest.raises(ValueError, match="5 entries for 6 prompts"):
        r1jax.generate(model, params, prompts, max_new_tokens=budgets[:5])
    with pytest.raises(ValueError, match="prompt 2 is 0"):
        r1jax.generate(model, params, prompts, max_new_tokens=[3, 3, 0, 3, 3, 3])


def test_recorded_expert_choices_are_the_training_forwards():
    """return_routes: each completion token's experts, recorded when it is fed back, in both engines;
    the same as a training forward over prompt + completion chooses (f32), the last token -1."""
    from r1jax.rl.rollout_correction import expert_mismatch

    model, params = _model("tiny_moe")
    prompts, budgets = _workload(12, seed=6, cap=20)
    kw = dict(max_new_tokens=budgets, temperature=1.0, eos_id=(), seed=2, return_routes=True)
    static = r1jax.generate(model, params, prompts, **kw)
    cont = r1jax.generate(model, params, prompts, engine="continuous", slots=4, **kw)
    assert cont.tokens == static.tokens
    for a, b, t in zip(static.routes, cont.routes, static.tokens):
        np.testing.assert_array_equal(a, b)
        assert a.shape == (len(t), 2, model.cfg.num_experts_per_tok) and (a[-1] == -1).all()
    seqs = [p + t for p, t in zip(prompts, static.tokens)]
    ids = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
    for i, q in enumerate(seqs):
        ids[i, :len(q)] = q  # right padding: causal, so it changes no earlier position
    aux = jax.jit(lambda x: model.apply({"params": params}, x, output=True).aux)(ids)
    route = np.moveaxis(np.asarray(aux["route"]), 0, 2)  # [b, s, n_moe, k]
    trained = [route[i, len(p):len(p) + len(t) - 1] for i, (p, t) in enumerate(zip(prompts, static.tokens))]
    recorded = [r[:-1] for r in static.routes]
    trained, recorded = np.concatenate(trained), np.concatenate(recorded)
    assert len(recorded) > 50 and (recorded >= 0).all()
    assert float(expert_mismatch(trained, recorded)) == 0.0
    assert float(expert_mismatch(np.roll(trained, 1, axis=0), recorded)) > 0.2  # misaligned choices differ
    assert r1jax.generate(model, params, prompts, max_new_tokens=4).routes is None


def test_evaluate_gives_the_same_samples_with_either_engine():
    """evaluate() streams all records through batch_prompts x k rows (continuous) or goes a chunk at
    a time (static): sample j of record i is request i * k + j of one seed in both."""
    from r1jax.toy.tokenizer import toy_tokenizer
    from r1jax.eval.runner import evaluate

    tok = toy_tokenizer()
    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size)
    model, params = Transformer(cfg), init_params(cfg, jax.random.PRNGKey(1))
    recs = [{"problem": f"{a} + {b}", "answer": str(a + b)} for a in range(1, 4) for b in range(1, 4)]
    kw = dict(k=2, temperature=1.0, top_p=1.0, max_new_tokens=12, prompt_style="short", batch_prompts=4,
              keep_texts=True, seed=3)
    a = evaluate(model, params, tok, recs, engine="static", **kw)
    b = evaluate(model, params, tok, recs, engine="continuous", **kw)
    assert a["texts"] == b["texts"] and len(a["texts"]) == 18
    assert len(set(a["texts"])) > 9  # sampled, not one text
