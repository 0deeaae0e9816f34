"""tools/bench_trl_grpo.py (TRL's GRPOTrainer, the peer of bench_grpo) on CPU with a tiny HF checkpoint:
its step splits into parts that add up, the model it builds is the checkpoint's shape, and --compare
divides by a bench_grpo JSON of the same settings (and refuses one of other settings)."""

import json
import os
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("trl")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

import bench_trl_grpo  # noqa: E402


def test_trl_peer_step_parts_and_ratio(tmp_path):
    from r1jax import config as config_lib
    from r1jax.checkpoint.hf import save_pretrained
    from r1jax.model import init_params
    from r1jax.toy.tokenizer import model_token_ids, toy_tokenizer

    tok = toy_tokenizer()
    cfg = config_lib.tiny_qwen2(vocab_size=tok.vocab_size, **model_token_ids(tok))
    ckpt = tmp_path / "tiny"
    save_pretrained(init_params(cfg, jax.random.PRNGKey(0)), cfg, str(ckpt), tokenizer=tok)
    ours = dict(model=str(ckpt), prompts=2, group_size=2, new_tokens=8, remat="full", grad_accum=2, old_logp="sampler",
                step_s=0.5, rollout_s=0.25, update_s=0.125)
    (tmp_path / "ours.json").write_text(json.dumps(ours))
    argv = ["--model", str(ckpt), "--prompts", "2", "--group-size", "2", "--new-tokens", "8", "--steps", "1",
            "--remat", "full", "--grad-accum", "2"]
    out = tmp_path / "trl.json"
    res = bench_trl_grpo.main(argv + ["--json", str(out), "--compare", str(tmp_path / "ours.json")])
    js = json.loads(out.read_text())
    assert js["step_s"] == res["step_s"] and js["steps_measured"] == 1
    # the dense checkpoint's shape, parameter for parameter (the MoE router bias is a buffer in transformers)
    assert js["model_params"] == config_lib.count_params(cfg)["total"]
    parts = js["rollout_s"] + js["reward_s"] + js["logp_s"] + js["update_s"]
    np.testing.assert_allclose(parts, js["step_s"], rtol=1e-9)
    assert min(js["rollout_s"], js["reward_s"], js["logp_s"], js["update_s"]) > 0
    assert js["first_step_s"] > 0 and 1 <= js["mean_response_length"] <= 8
    np.testing.assert_allclose(js["rollout_tokens_per_s"], 4 * js["mean_response_length"] / js["rollout_s"], rtol=1e-9)
    for k in ("step_s", "rollout_s", "update_s"):
        np.testing.assert_allclose(js["vs_r1jax"][k], js[k] / ours[k], rtol=1e-12)
    for key, theirs, msg in (("new_tokens", 16, "new_tokens 16 there, 8 here"),
                             ("remat", "none", "remat 'none' there, 'full' here"),
                             ("old_logp", "recompute", "old_logp 'recompute' there, 'sampler' here")):
        (tmp_path / "other.json").write_text(json.dumps(dict(ours, **{key: theirs})))
        with pytest.raises(SystemExit, match=msg):
            bench_trl_grpo.main(argv + ["--compare", str(tmp_path / "other.json")])
