"""The full-recipe toy pieces: language mixing, rejection-sampling filters, reward model,
preference-reward gating, toy R1 data; smoke runs of each pipeline (slow)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config as config_lib
from r1jax.toy.r1_toy import (DEGENERATE_KINDS, final_part, make_cold_start_records, make_general_records,
                               make_preference_pairs)
from r1jax.toy.tokenizer import save_tokenizer, toy_tokenizer
from r1jax.toy.language_mixing import (cot_languages, is_mixed, language_mixing_rate, register_toy_languages,
                                        toy_language_name)
from r1jax.toy.pipelines.rejection_sample import filter_samples, has_repetition, select
from r1jax.rewards import format_reward, language_consistency_reward

EN = "<think> 6 plus 6 plus 0 is 1 2 , write 2 carry 1 ; 4 plus 1 plus 1 is 6 , write 6 2 ; </think> so 4 6 + 1 6 is 6 2 <answer> 6 2 </answer>"
FR = "<think> 6 et 6 et 0 font 1 2 , écris 2 retenue 1 ; 4 et 1 et 1 font 6 , écris 6 2 ; </think> donc 4 6 + 1 6 font 6 2 <answer> 6 2 </answer>"
MIX = "<think> 6 plus 6 plus 0 is 1 2 , write 2 carry 1 ; 4 et 1 et 1 font 6 , écris 6 2 ; </think> so 4 6 + 1 6 is 6 2 <answer> 6 2 </answer>"
REC_EN = {"problem": "what is 4 6 + 1 6", "answer": "62", "language": "en"}
REC_FR = {"problem": "combien font 4 6 + 1 6", "answer": "62", "language": "fr"}


# ------------------------------------------------------------------------------ language


def test_toy_language_reward_and_mixing_metric():
    names = register_toy_languages()
    assert names == {"en": "toy_en", "fr": "toy_fr"}
    assert language_consistency_reward(EN, "toy_en") == 1.0
    assert language_consistency_reward(FR, "toy_fr") == 1.0
    assert language_consistency_reward(FR, "toy_en") == 0.0
    # MIX: CoT words plus plus is write carry (5 en) + et et font écris (4 fr); digits/punctuation neutral
    assert language_consistency_reward(MIX, "toy_en") == pytest.approx(5 / 9)
    # the summary is outside the CoT; tags never count
    assert cot_languages(EN) == {"en"} and cot_languages(MIX) == {"en", "fr"}
    assert cot_languages("<think> 1 2 ; </think> <answer> 3 </answer>") == set()
    # the built-in "en" (Latin script) still accepts French words: it is untouched
    assert language_consistency_reward(FR, "en") == 1.0
    assert not is_mixed(EN) and is_mixed(MIX) and not is_mixed(FR)
    assert is_mixed(FR, "en") and not is_mixed(FR, "fr") and not is_mixed(FR, "toy_fr")
    texts = [EN, FR, MIX, EN]
    assert language_mixing_rate(texts) == 0.25
    assert language_mixing_rate(texts, ["en", "en", "en", "fr"]) == 0.75
    assert language_mixing_rate(texts, "en") == 0.5
    assert np.isnan(language_mixing_rate([]))
    with pytest.raises(ValueError):
        language_mixing_rate(texts, ["en"])
    assert toy_language_name("fr") == "toy_fr" and toy_language_name("toy_fr") == "toy_fr"


# ------------------------------------------------------------------------------ toy data


def test_cold_start_and_general_records_are_readable_and_correct():
    from r1jax.rewards import accuracy_rewards

    register_toy_languages()
    cs = make_cold_start_records(40, 0)
    assert {r["language"] for r in cs} == {"en", "fr"}
    assert any(r["mode"] == "check" for r in cs)
    texts = [r["completion"] for r in cs]
    assert all(format_reward(t, template="r1") == 1.0 for t in texts)
    assert accuracy_rewards(texts, [r["answer"] for r in cs]) == [1.0] * len(cs)
    assert all(language_consistency_reward(t, toy_language_name(r["language"])) == 1.0 for t, r in zip(texts, cs))
    assert language_mixing_rate(texts, [r["language"] for r in cs]) == 0.0
    # summary at the end: "so/donc <expression> is/font <answer>" between </think> and <answer>
    r = cs[0]
    summary = r["completion"].split("</think>")[1].split("<answer>")[0].split()
    assert summary[0] in ("so", "donc") and " ".join(summary[-len(str(r["answer"])):]) == " ".join(str(r["answer"]))
    gen = make_general_records(20, 0)
    assert {g["general"] for g in gen} == {"echo", "simple"}
    assert accuracy_rewards([g["completion"] for g in gen], [g["answer"] for g in gen]) == [1.0] * 20
    assert all(g["completion"].startswith("<think> </think>") for g in gen)


def test_r1_traces_in_the_main_jobs_chain_format_fit_the_budget_and_pass_the_filters():
    """experiments/r1_toy.py uses the main job's restated chains (data.restate): cold-start traces
    restate the operands before each step, fit max_new_tokens with the check step and summary,
    and gold traces survive the rejection filters (the n-gram filter sees restated problems)."""
    from r1jax.cli import load_config
    from r1jax.toy.tasks import get_task
    from r1jax.toy.tasks.arithmetic import parse_steps

    register_toy_languages()
    c = load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "r1_toy.py"))
    assert c.data.restate
    tok = toy_tokenizer()
    cs = make_cold_start_records(240, 0, levels=tuple(c.data.levels), p_check=0.5, restate=True)
    expr = lambda r: get_task(r["task"]).expression(r["a"], r["b"])  # noqa: E731
    assert all(r["completion"].startswith(f"<think> {expr(r)} : ") for r in cs)
    assert all(st["operands"] for r in cs for st in parse_steps(r["completion"].split("</think>")[0][8:]))
    longest = max(len(tok.encode(" " + r["completion"])) for r in cs)
    assert longest <= c.eval.max_new_tokens and longest <= c.rejection.max_new_tokens, longest
    reasons, counts = filter_samples([r["completion"] for r in cs], cs, ngram=c.rejection.ngram,
                                     max_repeats=c.rejection.max_repeats)
    assert counts["passed_all"] == len(cs), counts
    pairs = make_preference_pairs(14, 0, levels=tuple(c.data.levels), restate=True)
    assert any(" : " in p["chosen"].split("</think>")[0] for p in pairs)


def test_preference_pairs_cover_every_degenerate_kind():
    pairs = make_preference_pairs(70, 0)
    assert sorted({p["kind"] for p in pairs}) == sorted(DEGENERATE_KINDS)
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    assert all(final_part(p["chosen"]) != final_part(p["rejected"]) for p in pairs)
    assert final_part("<think> a b </think> so 1 <answer> 1 </answer>") == "so 1 <answer> 1 </answer>"


# ------------------------------------------------------------------------------ rejection sampling


def test_has_repetition():
    assert not has_repetition(EN)
    loop = "<think> " + " ".join(["1 plus 1 plus 0 is 2 , write 2 ;"] * 3) + " </think>"
    assert has_repetition(loop)  # the same 8-gram 3 times
    assert not has_repetition(" ".join(["1 plus 1 plus 0 is 2 , write 2 ;"] * 2))
    assert has_repetition("a a a a", ngram=2, max_repeats=3) and not has_repetition("a a a", ngram=2, max_repeats=3)


def test_rejection_filters_count_each_reason():
    loop_steps = " ".join(["6 plus 6 plus 0 is 1 2 , write 2 carry 1 ;"] * 3)
    rep = f"<think> {loop_steps} 4 plus 1 plus 1 is 6 , write 6 2 ; </think> so 4 6 + 1 6 is 6 2 <answer> 6 2 </answer>"
    wrong = EN.replace("<answer> 6 2 </answer>", "<answer> 6 3 </answer>")
    no_think = "so 4 6 + 1 6 is 6 2 <answer> 6 2 </answer>"
    texts = [EN, FR, MIX, rep, wrong, no_think, FR, EN]
    recs = [REC_EN, REC_FR, REC_EN, REC_EN, REC_EN, REC_EN, REC_EN, REC_EN]
    reasons, counts = filter_samples(texts, recs)
    # FR answering an English prompt is not single-language w.r.t. the prompt
    assert reasons == [None, None, "single_language", "non_repetitive", "correct", "format", "single_language", None]
    assert counts == {"samples": 8, "rejected_format": 1, "passed_format": 7, "rejected_correct": 1,
                      "passed_correct": 6, "rejected_single_language": 2, "passed_single_language": 4,
                      "rejected_non_repetitive": 1, "passed_non_repetitive": 3, "passed_all": 3}
    # R1-Zero format: no summary allowed
    _, c0 = filter_samples([EN], [REC_EN], template="r1_zero")
    assert c0["rejected_format"] == 1
    # per-prompt selection: duplicates dropped, then the cap
    kept, sel = select(["a", "a", "b", "c", "d", "e"], [0, 0, 0, 0, 1, 1], [None, None, None, None, "format", None],
                       max_per_prompt=2)
    assert kept == [0, 2, 5] and sel == {"duplicates": 1, "over_cap": 1, "prompts_with_kept": 2}


def _tiny_model(tok, seed=0):
    from r1jax.model import Transformer, init_params

    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size, max_position_embeddings=512)
    return Transformer(cfg), init_params(cfg, jax.random.PRNGKey(seed))


def test_rejection_sample_with_a_model_counts_add_up(tmp_path):
    from r1jax.toy.pipelines.rejection_sample import rejection_sample

    tok = toy_tokenizer()
    model, params = _tiny_model(tok)
    recs = [dict(REC_EN, id="a"), dict(REC_FR, id="b")]
    out, counts = rejection_sample(model, params, tok, recs, n_samples=3, max_new_tokens=6, non_reasoning_frac=0.5,
                                   non_reasoning_min=4, progress=False)
    assert counts["samples"] == 6 and counts["prompts"] == 2
    assert sum(counts[f"rejected_{f}"] for f in ("format", "correct", "single_language", "non_repetitive")) \
        + counts["passed_all"] == 6
    assert counts["total"] == counts["reasoning_kept"] + counts["non_reasoning"] == len(out)
    assert counts["non_reasoning"] >= 4
    assert all({"prompt", "completion", "problem", "answer", "language", "kind"} <= set(r) for r in out)


# ------------------------------------------------------------------------------ reward model


def test_bt_loss_values():
    from r1jax.rewards.reward_model import bt_loss

    loss, acc = bt_loss(jnp.array([0.0, 2.0]), jnp.array([0.0, 0.0]))
    assert float(loss) == pytest.approx((np.log(2) + np.log1p(np.exp(-2.0))) / 2, rel=1e-5)
    assert float(acc) == 0.5
    g = jax.grad(lambda c: bt_loss(c, jnp.zeros(2))[0])(jnp.zeros(2))
    assert np.all(np.asarray(g) < 0)  # raising the chosen score lowers the loss


def _separable_pairs(n, seed):
    # chosen: a readable summary; rejected: the summary's first word looped (repetition) or no summary
    return make_preference_pairs(n, seed, kinds=("repetition", "no_summary"), p_general=0.5)


def test_reward_model_learns_a_separable_preference_set():
    from r1jax.rewards.reward_model import RewardModel, pairwise_accuracy, train_reward_model

    tok = toy_tokenizer()
    model, params = _tiny_model(tok)
    rm = RewardModel(model)
    p = rm.init_params(params)
    train, held = _separable_pairs(128, 0), _separable_pairs(64, 1)
    before = pairwise_accuracy(rm, p, tok, held)["pair_acc"]
    p, hist = train_reward_model(rm, p, tok, train, steps=40, batch_pairs=16, learning_rate=3e-3)
    res = pairwise_accuracy(rm, p, tok, held)
    assert hist[-1]["rm/bt_loss"] < hist[0]["rm/bt_loss"]
    assert res["pair_acc"] >= 0.9, (before, res)
    assert set(res["per_kind"]) == {"repetition", "no_summary"}


def _saved_rm(tmp_path, tok):
    from r1jax.rewards.reward_model import RewardModel, save_reward_model

    tok_dir = tmp_path / "tok"
    save_tokenizer(tok, tok_dir)
    model, params = _tiny_model(tok)
    rm = RewardModel(model)
    p = rm.init_params(params, seed=3)
    return save_reward_model(str(tmp_path / "rm"), rm, p, str(tok_dir), meta={"mid": 0.0, "scale": 1.0})


def test_reward_model_save_load_and_preference_reward(tmp_path):
    from r1jax.rewards.reward_model import RewardScorer, load_reward_model, preference_reward_fn, rm_text, score_texts

    tok = toy_tokenizer()
    path = _saved_rm(tmp_path, tok)
    rm, p, meta = load_reward_model(path)
    assert meta["kind"] == "r1jax_reward_model"
    fn = preference_reward_fn(path)
    s = fn([EN, FR], [REC_EN, REC_FR])
    assert len(s) == 2 and all(0.0 < x < 1.0 for x in s)
    from r1jax.data.prompts import PromptFormat

    raw = score_texts(rm, p, tok, [rm_text(PromptFormat("r1_zero").text(None, REC_EN["problem"]), EN)])
    assert s[0] == pytest.approx(1 / (1 + np.exp(-raw[0])), rel=1e-5)
    # a RewardScorer owns its compiled function: the same scores, call after call
    scorer = RewardScorer(rm, p, tok)
    rm_texts = [rm_text(PromptFormat("r1_zero").text(None, r["problem"]), t) for t, r in ((EN, REC_EN), (FR, REC_FR))]
    got = scorer(rm_texts)
    np.testing.assert_allclose(scorer(rm_texts[:1]), raw, rtol=1e-5)
    np.testing.assert_allclose(scorer(rm_texts, p), got)
    with pytest.raises(FileNotFoundError, match="reward_head"):
        load_reward_model(str(tmp_path / "tok"))


def test_preference_reward_gated_by_step_fraction(tmp_path):
    from r1jax.rewards.registry import compute_rewards
    from r1jax.rl.config import grpo_config
    from r1jax.rewards.preference import preference_active

    tok = toy_tokenizer()
    path = _saved_rm(tmp_path, tok)
    c = grpo_config(rewards={"accuracy": 1.0, "preference": 1.0}, preference_model=path, preference_start_frac=0.6,
                    steps=10)
    assert [preference_active(c, s) for s in range(10)] == [False] * 6 + [True] * 4
    texts, recs = [EN, FR], [REC_EN, REC_FR]
    scores, totals = compute_rewards(c, texts, recs, step=5)
    assert scores["preference"] == [0.0, 0.0] and totals == [1.0, 1.0]
    scores, totals = compute_rewards(c, texts, recs, step=6)
    assert all(0.0 < x < 1.0 for x in scores["preference"])
    assert totals == pytest.approx([1.0 + x for x in scores["preference"]])
    # without a step (outside the loop) the reward is on; a missing model is an error naming the key
    assert compute_rewards(c, texts, recs)[0]["preference"] == scores["preference"]
    # the caller's scorers dict keeps the loaded reward model: filled by the first call, reused after
    scorers = {}
    assert compute_rewards(c, texts, recs, step=5, scorers=scorers)[0]["preference"] == [0.0, 0.0]
    assert scorers == {}  # before the gate nothing is loaded
    assert compute_rewards(c, texts, recs, step=6, scorers=scorers)[0]["preference"] == scores["preference"]
    (key, fn), = scorers.items()
    assert key[1:] == (os.path.abspath(path), c.prompt_style)
    assert compute_rewards(c, texts, recs, step=7, scorers=scorers)[0]["preference"] == scores["preference"]
    assert list(scorers.items()) == [(key, fn)]  # the same scorer, not loaded again
    bad = grpo_config(rewards={"preference": 1.0})
    with pytest.raises(ValueError, match="preference_model"):
        compute_rewards(bad, texts, recs, step=0)


def test_stage5_rule_rewards_skip_general_prompts():
    from r1jax.rewards.registry import REWARDS, compute_rewards
    from r1jax.rl.config import grpo_config, validate_config
    from r1jax.toy.pipelines.r1 import (STAGE5_FUNCTIONS, STAGE5_RULES, reasoning_accuracy, reasoning_format,
                                        reasoning_language)

    register_toy_languages()
    gen = make_general_records(2, 0)
    texts = [EN, gen[0]["completion"]]
    recs = [dict(REC_EN, kind="reasoning"), gen[0]]
    assert reasoning_accuracy(texts, recs) == [1.0, 0.0]
    assert reasoning_format(texts, recs) == [1.0, 0.0]
    assert reasoning_language([FR, FR], [REC_EN, REC_FR]) == [0.0, 1.0]
    # passed in with the config (reward_functions binds the dotless names to "module:function"):
    # the global registry is left as it is
    before = dict(REWARDS)
    c = grpo_config(rewards=dict(STAGE5_RULES), reward_functions=dict(STAGE5_FUNCTIONS))
    validate_config(c)
    scores, totals = compute_rewards(c, texts, recs)
    assert totals == [2.0, 0.0] and scores["reasoning_language"] == [1.0, 0.0]
    assert REWARDS == before and not set(STAGE5_RULES) & set(REWARDS)


def test_distill_compute_accounting():
    from r1jax.toy.pipelines.distill import grpo_step_compute, sft_compute

    assert sft_compute(10, 16, 256) == 3 * 10 * 16 * 256
    # 16 x 8 rows, prompt 18 + 160 new -> generation 128 * 178, training 3 * 128 * 192
    assert grpo_step_compute(16, 8, 18, 160) == 128 * 178 + 3 * 128 * 192


# ------------------------------------------------------------------------------ pipeline smoke runs


def _tiny_r1_config(tmp_path):
    from r1jax.cli import load_config

    c = load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "r1_toy.py"))
    c.run_dir = str(tmp_path / "r1")
    c.cache_dir = str(tmp_path / "cache")
    c.data.n_train_problems, c.data.n_heldout_problems, c.data.n_corpus = 16, 4, 64
    c.data.levels = (2,)
    c.model = {"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48, "moe_intermediate_size": 16}
    c.pretrain.batch_size, c.pretrain.seq_len, c.pretrain.log_every = 8, 64, 2
    c.eval.problems, c.eval.k, c.eval.max_new_tokens = 2, 1, 8
    tiny_rl = dict(group_size=2, prompts_per_step=2, max_new_tokens=8, steps=2, save_every=0, progress=False)
    for k in ("r1_zero", "reasoning_rl", "alignment_rl"):
        for kk, v in tiny_rl.items():
            c[k][kk] = v
    c.cold_start.n = 8
    c.cold_start.sft.update(dict(seq_len=128, batch_size=2, epochs=1.0, log_every=1, progress=False))
    c.rejection.update(dict(n_prompts=2, n_samples=2, max_new_tokens=8, non_reasoning_min=8))
    c.sft.update(dict(seq_len=64, batch_size=2, epochs=1.0, log_every=1, progress=False))
    c.rm.update(dict(n_train=16, n_heldout=8, steps=2, batch_pairs=4, eval_every=0, progress=False))
    c.pretrain.progress = False
    return c


def test_experiment_configs_build_every_stage_config():
    """experiments/r1_toy.py and distill_toy.py: every stage's block is a valid stage config."""
    from r1jax.cli import load_config
    from r1jax.toy.pipelines.r1 import MODEL_STAGES
    from r1jax.toy.pipelines.rejection_sample import rejection_sample_config
    from r1jax.toy.pipelines.train_rm import train_rm_config
    from r1jax.rl.config import grpo_config
    from r1jax.sft.trainer import sft_config

    here = os.path.join(os.path.dirname(__file__), "..", "experiments")
    c = load_config(os.path.join(here, "r1_toy.py"))
    assert set(c.stages) == set(MODEL_STAGES[1:]) | {"rejection", "rm"}
    assert tuple(c.data.languages) == ("en", "fr") and c.data.p_mix > 0
    for k in ("r1_zero", "reasoning_rl"):
        grpo_config(**c[k].to_dict())
    a = {k: v for k, v in c.alignment_rl.to_dict().items() if k not in ("general_frac", "preference_weight")}
    assert 0 < grpo_config(**a).preference_start_frac < 1
    for k in ("pretrain",):
        sft_config(**c[k].to_dict())
    sft_config(**c.cold_start.sft.to_dict())
    sft_config(**c.sft.to_dict())
    train_rm_config(**c.rm.to_dict())
    r = {k: v for k, v in c.rejection.to_dict().items() if k != "prompt_offset"}
    rejection_sample_config(**r)
    d = load_config(os.path.join(here, "distill_toy.py"))
    sft_config(**d.student_pretrain.to_dict())
    sft_config(**d.distill_sft.to_dict())
    rejection_sample_config(**{k: v for k, v in d.teacher_traces.to_dict().items() if k != "prompt_offset"})
    assert d.teacher_traces.prompt_offset >= c.rejection.prompt_offset + c.rejection.n_prompts  # new problems
    grpo_config(**d.rl.to_dict())
    assert d.r1_run_dir == c.run_dir and d.eval.to_dict() == c.eval.to_dict()
    for f in ("rejection_sample_toy.py", "train_rm_toy.py"):
        load_config(os.path.join(here, f))


@pytest.mark.slow
def test_r1_pipeline_smoke(tmp_path):
    from r1jax.toy.pipelines import r1

    c = _tiny_r1_config(tmp_path)
    res = r1.run(c)
    assert list(res["stages"]) == ["base", "r1_zero", "cold_start", "reasoning_rl", "sft", "alignment_rl"]
    # with k = 1 sample per problem, results.json keeps every sample of every stage: the figures are
    # recomputed from them, correctness judged anew against the held-out answers
    from r1jax.rewards import accuracy_reward

    saved = json.load(open(os.path.join(c.run_dir, "results.json")))
    gold = {r["problem"]: r["answer"] for r in map(json.loads, open(os.path.join(c.run_dir, "data", "heldout.jsonl")))}
    for name, s in res["stages"].items():
        samples = saved["samples"][name]
        assert len(samples) == c.eval.problems * c.eval.k == 2
        correct = [accuracy_reward(x["completion"], gold[x["problem"]]) for x in samples]
        assert correct == [x["correct"] for x in samples], name
        assert s["pass@1"] == np.mean([v == 1.0 for v in correct]), name
        assert s["language_mixing"] == np.mean([is_mixed(x["completion"], x["language"]) for x in samples]), name
    for d in ("r1_zero", "cold_start", "reasoning_rl", "sft", "alignment_rl"):
        assert os.path.exists(os.path.join(c.run_dir, d, "final", "model.safetensors")), d
    assert os.path.exists(os.path.join(c.run_dir, "rejection", "sft.jsonl.counts.json"))
    assert os.path.exists(os.path.join(c.run_dir, "rm", "final", "reward_head.safetensors"))
    assert os.path.exists(os.path.join(c.run_dir, "r1_toy.png"))
    rows = [json.loads(x) for x in open(os.path.join(c.run_dir, "alignment_rl", "metrics.jsonl"))]
    assert [r["reward/preference_active"] for r in rows] == [0.0, 1.0]  # start_frac 0.5 of 2 steps
    # a rerun skips every finished stage and gives the same table
    again = r1.run(c)
    assert again["stages"] == res["stages"]

    # distillation from that teacher run
    from r1jax.cli import load_config
    from r1jax.toy.pipelines import distill

    d = load_config(os.path.join(os.path.dirname(__file__), "..", "experiments", "distill_toy.py"))
    d.run_dir, d.cache_dir, d.r1_run_dir = str(tmp_path / "distill"), c.cache_dir, c.run_dir
    d.student = {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 48, "head_dim": 8}
    d.student_pretrain.update(dict(batch_size=8, seq_len=64, log_every=2, progress=False))
    d.eval.update(dict(problems=2, k=1, max_new_tokens=8))
    d.distill_sft.update(dict(seq_len=64, batch_size=2, epochs=1.0, log_every=1, progress=False))
    d.rl.update(dict(group_size=2, prompts_per_step=2, max_new_tokens=8, save_every=0, progress=False))
    d.teacher_traces.update(dict(n_prompts=4, prompt_offset=2, n_samples=2, max_new_tokens=8))
    out = distill.run(d)
    assert set(out["models"]) == {"student_base", "distilled", "rl", "teacher"}
    tt = out["teacher_traces"]
    assert tt["samples"] == 8 and tt["prompts"] == 4
    assert out["traces"] == out["stage3_traces"] + tt["total"]
    assert os.path.exists(os.path.join(d.run_dir, "teacher_traces", "sft.jsonl"))
    d.teacher_traces.update(dict(n_prompts=64, prompt_offset=0))
    with pytest.raises(SystemExit, match="train.jsonl has 16"):  # more problems than the teacher run has
        distill.teacher_traces(d.teacher_traces, "unused", None, [{}] * 16, "r1_zero", str(tmp_path / "x.jsonl"), 0)
    assert out["compute"]["grpo_steps"] >= 1
    assert out["compute"]["grpo_token_passes"] <= max(out["compute"]["sft_token_passes"],
                                                      distill.grpo_step_compute(2, 2, out["compute"]["prompt_len"], 8))


@pytest.mark.slow
def test_rejection_sample_and_train_rm_cli(tmp_path):
    from r1jax.checkpoint.hf import save_pretrained
    from r1jax.cli import main
    from r1jax.data.jsonl import write_jsonl

    tok = toy_tokenizer()
    model, params = _tiny_model(tok)
    ck = tmp_path / "ck"
    save_pretrained(params, model.cfg, str(ck))
    save_tokenizer(tok, ck)
    write_jsonl(tmp_path / "p.jsonl", [REC_EN, REC_FR])
    assert main(["rejection-sample", "--config", "experiments/rejection_sample_toy.py", "--set", f"checkpoint={ck}",
                 "--set", f"data={tmp_path / 'p.jsonl'}", "--set", "n_samples=2", "--set", "max_new_tokens=6",
                 "--run-dir", str(tmp_path / "rs")]) == 0
    counts = json.load(open(tmp_path / "rs" / "sft.jsonl.counts.json"))
    assert counts["samples"] == 4
    assert main(["train-rm", "--config", "experiments/train_rm_toy.py", "--set", f"init={ck}", "--set", "n_train=32",
                 "--set", "n_heldout=16", "--set", "steps=3", "--set", "batch_pairs=8", "--set", "progress=False",
                 "--run-dir", str(tmp_path / "rm")]) == 0
    res = json.load(open(tmp_path / "rm" / "rm_results.json"))
    assert res["pairs"] == 16
    # the held-out accuracy recomputed from the saved reward model, one unpadded pair at a time
    from r1jax.data.templates import encode_prompt
    from r1jax.rewards.reward_model import load_reward_model, rm_text

    rm, rparams, meta = load_reward_model(str(tmp_path / "rm" / "final"))
    assert meta["heldout_pair_acc"] == res["pair_acc"] and meta["mid"] == res["mid"]

    def score(prompt, completion):
        ids = encode_prompt(tok, rm_text(prompt, completion)) + [tok.eos_token_ids[0]]
        return float(rm.score(rparams, jnp.asarray([ids]), jnp.asarray([len(ids) - 1]))[0][0])

    held = [json.loads(x) for x in open(tmp_path / "rm" / "pairs_heldout.jsonl")]
    diff = np.array([score(p["prompt"], p["chosen"]) - score(p["prompt"], p["rejected"]) for p in held])
    assert len(diff) == 16
    close = np.abs(diff) < 1e-5  # a pair this close may rank either way in the batched, padded pass
    assert close.sum() <= 1, diff
    assert (diff > 0)[~close].sum() <= res["pair_acc"] * 16 <= (diff > 0)[~close].sum() + close.sum()


@pytest.mark.slow
def test_reward_model_heldout_accuracy_on_the_toy_pairs():
    """All seven degenerate kinds, a random-init tiny Qwen2 backbone: >= 90% on held-out pairs
    (measured 0.922: every kind 1.0 except 'inconsistent', which stays near chance at this size)."""
    from r1jax.rewards.reward_model import RewardModel, pairwise_accuracy, train_reward_model

    tok = toy_tokenizer()
    model, params = _tiny_model(tok)
    rm = RewardModel(model)
    train, held = make_preference_pairs(1024, 0), make_preference_pairs(256, 1, split="heldout")
    p, _ = train_reward_model(rm, rm.init_params(params), tok, train, steps=300, batch_pairs=32, learning_rate=3e-3)
    res = pairwise_accuracy(rm, p, tok, held)
    assert res["pair_acc"] >= 0.9, res
