"""tools/bench_grpo.py on CPU with a tiny HF checkpoint: one measured GRPO step after a warm-up,
its parts adding up to the step, and the figures its JSON must carry."""

import json
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

import bench_grpo  # noqa: E402

KEYS = ("device", "model_params", "step_s", "rollout_s", "reward_s", "logp_s", "update_s", "other_s",
        "rollout_tokens_per_s", "train_tokens_per_s", "train_mfu", "decode_roofline", "compile_s")


@pytest.mark.slow  # 90 s: the whole trainer under the tool (python3 -m pytest -m slow)
def test_bench_grpo_tiny_checkpoint_json(tmp_path):
    from r1jax import config as config_lib
    from r1jax.checkpoint.hf import save_pretrained
    from r1jax.toy.tokenizer import model_token_ids, toy_tokenizer
    from r1jax.model import init_params

    tok = toy_tokenizer()
    cfg = config_lib.tiny_moe(vocab_size=tok.vocab_size, **model_token_ids(tok))
    ckpt = tmp_path / "tiny"
    save_pretrained(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(ckpt), tokenizer=tok)
    out = tmp_path / "bench.json"
    res = bench_grpo.main(["--model", str(ckpt), "--prompts", "2", "--group-size", "2", "--new-tokens", "8",
                           "--old-logp", "recompute", "--steps", "1", "--json", str(out)])
    js = json.loads(out.read_text())
    for k in KEYS:
        assert k in js, k
    assert js["model_params"]["total"] == config_lib.count_params(cfg)["total"]
    parts = js["rollout_s"] + js["reward_s"] + js["logp_s"] + js["update_s"] + js["other_s"]
    np.testing.assert_allclose(parts, js["step_s"], rtol=1e-9)
    assert min(js["rollout_s"], js["update_s"], js["logp_s"]) > 0 and 0 <= js["other_s"] < js["step_s"]
    assert 0 < js["train_mfu"] < 1 and 0 < js["decode_roofline"]
    assert js["compile_s"] > 0 and js["first_step_s"] > js["step_s"]
    # tokens per second from the step's own counts
    n = 2 * 2
    np.testing.assert_allclose(js["rollout_tokens_per_s"], js["mean_response_length"] * n / js["rollout_s"], rtol=1e-9)
    assert res["step_s"] == js["step_s"]


def test_decode_bytes_per_step_counts_weights_and_cache():
    from r1jax import config as config_lib

    cfg = config_lib.tiny_qwen2()
    cp = config_lib.count_params(cfg)
    item = np.dtype(config_lib.dtype_of(cfg.dtype)).itemsize
    per_tok = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * item
    weights = cp["total"] - (cp["embed"] if cp["head"] else 0)
    got = bench_grpo.decode_bytes_per_step(cfg, rows=4, mean_len=10)
    assert got == weights * item + 4 * 10 * per_tok
    # MoE: with one row, only top-k of the routed experts are read per layer
    moe = config_lib.tiny_moe()
    one, many = bench_grpo.decode_bytes_per_step(moe, 1, 0), bench_grpo.decode_bytes_per_step(moe, 4096, 0)
    per_expert = 3 * moe.hidden_size * moe.moe_intermediate_size * np.dtype(config_lib.dtype_of(moe.dtype)).itemsize
    e, k = moe.n_routed_experts, moe.num_experts_per_tok
    np.testing.assert_allclose(many - one, config_lib.num_moe_layers(moe) * (e - k) * per_expert, rtol=1e-6)


def test_drawn_lengths_are_seeded_and_long_tailed():
    """--response-lengths lognormal:MEDIAN:SIGMA: the same lengths for a (seed, step) in every run."""
    from bench_grpo import drawn_lengths, parse_lengths

    assert parse_lengths("lognormal:96:1.0") == (96.0, 1.0)
    a = drawn_lengths(0, 3, 4096, 96.0, 1.0, 1024)
    assert (a == drawn_lengths(0, 3, 4096, 96.0, 1.0, 1024)).all() and (a != drawn_lengths(0, 4, 4096, 96.0, 1.0, 1024)).any()
    assert 1 <= a.min() and a.max() <= 1024 and 85 <= np.median(a) <= 107 and a.mean() > 1.4 * np.median(a)
