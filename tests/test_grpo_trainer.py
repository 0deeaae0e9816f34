"""A tiny end-to-end GRPO run raises its reward; kill + resume reproduces the uninterrupted curve."""

import json
import os

import jax
import numpy as np

from r1jax import config as config_lib
from r1jax.toy.tokenizer import toy_tokenizer
from r1jax.model import Transformer, init_params
from r1jax.rl.config import grpo_config
from r1jax.rl.trainer import GRPOTrainer, run_grpo

DIGITS = set("0123456789")


def digit_reward(texts, records):
    """Trivial rewardable task: the share of completion words that are digits."""
    out = []
    for t in texts:
        w = t.split()
        out.append(sum(x in DIGITS for x in w) / max(len(w), 1))
    return out


RECORDS = [{"problem": f"what is {a} + {b}", "answer": str(a + b)} for a in range(1, 9) for b in range(1, 5)]


def _run(run_dir, preset="tiny_qwen2", **kw):
    tok = toy_tokenizer()
    cfg = getattr(config_lib, preset)(vocab_size=tok.vocab_size)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    c = grpo_config(run_dir=str(run_dir), rewards={"test_grpo_trainer:digit_reward": 1.0}, group_size=4,
                    prompts_per_step=4, max_new_tokens=6, steps=kw.pop("steps", 10), eval_every=0, save_hf=False,
                    progress=False, optimizer=dict(learning_rate=1e-2), **kw)
    run_grpo(c, model=model, params=params, tokenizer=tok, train_records=RECORDS)
    rows = [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]
    return rows


def test_grpo_raises_reward_and_resume_matches(tmp_path):
    full = _run(tmp_path / "full", steps=10, save_every=3)
    r = [x["reward/test_grpo_trainer:digit_reward"] for x in full]
    assert np.mean(r[-3:]) > np.mean(r[:3]) + 0.15, r
    assert all(0 <= x["train/clip_frac_low"] <= 1 for x in full)
    # kill after step 5 (last checkpoint at 3), then rerun the same command
    _run(tmp_path / "resumed", steps=10, save_every=3, stop_after=5)
    resumed = _run(tmp_path / "resumed", steps=10, save_every=3)
    assert [x["step"] for x in resumed] == list(range(1, 11))
    for a, b in zip(full, resumed):
        assert a["train/loss"] == b["train/loss"], (a["step"], a["train/loss"], b["train/loss"])
        assert a["reward/total"] == b["reward/total"]


def test_trainer_steps_one_at_a_time_as_run_grpo_does(tmp_path):
    """GRPOTrainer: the set-up in __init__, one step per step() call (its state moves by mu x minibatches
    updates); two step() calls log what run_grpo's first two steps log."""
    full = _run(tmp_path / "full", steps=2, mu=2)
    tok = toy_tokenizer()
    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size)
    c = grpo_config(run_dir=str(tmp_path / "stepped"), rewards={"test_grpo_trainer:digit_reward": 1.0}, group_size=4,
                    prompts_per_step=4, max_new_tokens=6, steps=2, eval_every=0, save_hf=False, progress=False,
                    optimizer=dict(learning_rate=1e-2), mu=2)
    t = GRPOTrainer(c, model=Transformer(cfg), params=init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tok,
                    train_records=RECORDS)
    assert t.start == 0 and int(t.state.step) == 0
    for s, want in enumerate(full):
        got = t.step(s)
        assert int(t.state.step) == 2 * (s + 1)
        for k in ("train/loss", "reward/total", "rollout/response_length", "train/grad_norm"):
            assert got[k] == want[k], (s, k, got[k], want[k])
    t.close()


def test_training_config_refuses_temperature_zero(tmp_path):
    import pytest

    c = grpo_config(run_dir=str(tmp_path), temperature=0.0)
    with pytest.raises(ValueError, match="temperature=0"):
        run_grpo(c, model=object(), params=None, tokenizer=toy_tokenizer(), train_records=RECORDS)


def test_padding_counts_in_no_expert_load():
    """The GRPO loss passes the batch's real-token mask to the model: the MoE load (which moves the
    router bias) counts prompt + completion tokens, never the right padding of a row."""
    import jax.numpy as jnp

    from r1jax.rl import grpo
    from r1jax.rl.batch import build_batch
    from r1jax.rl.policy import make_policy_loss

    cfg = config_lib.tiny_moe(num_hidden_layers=2, num_nextn_predict_layers=0)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    prompts, comps = [[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]]
    host = build_batch(prompts, comps, [[-1.0] * 4, [-1.0]], [1.0, -1.0], [True, True], pad_id=0, seq_len=32)
    assert host["token_mask"].sum() == 7 + 3
    loss = make_policy_loss(grpo.grpo_loss, 1.0, dict(loss_agg="token-mean"))
    _, aux = loss(params, jax.tree.map(jnp.asarray, host), model)
    n_moe = cfg.num_hidden_layers - cfg.first_k_dense_replace
    np.testing.assert_array_equal(np.asarray(aux["load"]).sum(-1), [10 * cfg.num_experts_per_tok] * n_moe)


def test_rollout_trainer_agreement_is_logged_and_below_1e5_in_f32(tmp_path):
    """Every step logs the sampler/trainer gap from its update batch; in f32 on CPU (same params,
    decode path vs training forward) it is float rounding. A registered correction runs with
    old_logp="recompute" (its weights are 1 up to that rounding) and is refused with "sampler"."""
    import pytest

    rows = _run(tmp_path / "a", preset="tiny_moe", steps=2)  # MoE: expert choices recorded and compared
    for r in rows:
        assert r["rollout/agree_max_abs_dlogp"] < 1e-5, r
        assert r["rollout/agree_kl_k3"] < 1e-10 and r["rollout/agree_ratio_out_frac"] == 0.0
        assert r["rollout/agree_expert_mismatch"] == 0.0
    rows = _run(tmp_path / "b", steps=2, old_logp="recompute",
                loss_kwargs=dict(rollout_correction="tis", tis_cap=2.0))
    assert all(abs(r["train/correction_weight"] - 1.0) < 1e-5 for r in rows), rows
    with pytest.raises(ValueError, match="old_logp='recompute'"):
        _run(tmp_path / "c", steps=1, loss_kwargs=dict(rollout_correction="mis"))


def test_packed_and_padded_updates_train_alike(tmp_path):
    """The trainer end to end with pack=True (default) and pack=False on the same samples: recomputed
    old log-probs, the reference's KL, two mini-batches, two micro-batches: the same loss at every step
    (the samples of step 1 are the same; later ones follow from parameters equal to float rounding)."""
    kw = dict(steps=3, old_logp="recompute", minibatches=2, grad_accum=2,
              loss_kwargs=dict(kl_coef=0.05, loss_agg="seq-mean-token-mean"))
    packed = _run(tmp_path / "packed", **kw)
    padded = _run(tmp_path / "padded", pack=False, **kw)
    assert packed[0]["train/micro_batches"] >= 2 and padded[0]["train/micro_batches"] == 4
    for a, b in zip(packed, padded):
        assert a["reward/total"] == b["reward/total"]
        np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-4, atol=1e-6)
