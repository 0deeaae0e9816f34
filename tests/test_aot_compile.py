"""tools/aot_compile.py: the sharded train step compiles for a TPU topology on this CPU host.

A small variant of the 671B compile: the tiny MoE on v5p:2x2x2 (8 chips, fsdp=2 x expert=4), with
the same step, rules, expert-parallel shard_map, bf16 params and fp32 moments. The 671B state is
also laid out on the 512-chip v5p:8x8x8 mesh (shapes only, no compile) to check the per-chip
train-state bytes. The GRPO policy step: the tiny MoE on 8 chips, a tiny dense model on one v5p
chip with fp32 master weights, and a vocab-heavy tiny variant where the chunked log-probs
(--logprob-chunk) need a fraction of the full-logits path's temporaries. Skips only when libtpu
cannot be imported.
"""

import importlib.util
import os
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed (pip install 'jax[tpu]==<jax version>')")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another process compiling for TPU holds the lockfile

import aot_compile  # noqa: E402


def test_small_topology_train_step_compiles_for_tpu(tmp_path):
    hlo = tmp_path / "step.hlo"
    info = aot_compile.main(["--config", "tiny_moe", "--topology", "v5p:2x2x2", "--mesh", "fsdp=2,expert=4",
                             "--seq", "64", "--dump-hlo", str(hlo), "--json", str(tmp_path / "aot.json")])
    assert info["chips"] == 8 and info["device_kind"].startswith("TPU")
    assert info["mesh"] == dict(data=1, fsdp=2, expert=4, tensor=1)
    assert info["batch"] == 8  # one sequence per batch shard (data x fsdp x expert)
    # the donated train state is an argument, and aliased to the output
    assert info["argument_gib"] >= info["state_gib_per_device"]
    assert info["alias_gib"] >= 0.9 * info["state_gib_per_device"]
    assert 0 < info["total_gib_per_device"] < 1 and info["fits"]
    text = hlo.read_text()
    assert "all-to-all" in text  # expert-parallel dispatch / return
    assert "all-gather" in text or "all-reduce" in text  # fsdp


def test_grpo_step_compiles_for_tpu(tmp_path):
    """The GRPO policy step (token_mask, old/ref log-probs, advantages in the batch), the LM head
    in blocks of 32 positions (seq 64: two blocks, the scan path), micro-batches of 4 rows."""
    info = aot_compile.main(["--config", "tiny_moe", "--topology", "v5p:2x2x2", "--mesh", "data=2,expert=4",
                             "--seq", "64", "--step", "grpo", "--logprob-chunk", "32", "--grad-accum", "2",
                             "--json", str(tmp_path / "aot.json")])
    assert info["step"] == "grpo" and info["chips"] == 8 and info["fits"]
    assert info["logprob_chunk"] == 32 and info["kl_coef"] == 0.001
    assert info["batch"] == 16 and info["micro_batch"] == 8  # 8 batch shards x grad_accum 2
    assert info["alias_gib"] >= 0.9 * info["state_gib_per_device"]


def test_grpo_dense_single_chip_fp32_master_weights():
    """A dense (qwen2) preset on ONE v5p chip (chips_per_host_bounds 1x1x1), fp32 master weights +
    fp32 Adam: the state is 12 bytes per parameter; no KL -> no ref_logp in the batch."""
    args = aot_compile.parse_args(["--config", "tiny_qwen2", "--topology", "v5p:1x1x1", "--step", "grpo",
                                   "--param-dtype", "float32", "--seq", "64", "--batch", "4", "--kl", "0"])
    mesh, cfg, step, state_avals, b_avals, info = aot_compile.build(args)
    assert info["chips"] == 1 and dict(mesh.shape) == dict(data=1, fsdp=1, expert=1, tensor=1)
    assert info["logprob_chunk"] == 256  # the grpo default
    assert set(b_avals) == {"input_ids", "targets", "loss_mask", "token_mask", "old_logp", "advantages"}
    assert str(b_avals["token_mask"].dtype) == "int32"
    n = info["params_total"]
    state = aot_compile.state_bytes_per_device(state_avals)
    assert 12 * n <= state < 12 * n + 1024, (state, n)  # params 4 + Adam m 4 + v 4 (+ step counters)
    compiled = step.lower(state_avals, b_avals).compile()
    assert compiled.memory_analysis().argument_size_in_bytes >= state


def _vocab_heavy(step, chunk, tmp_path):
    # 8 rows x 512 positions x 32768 vocab: full f32 logits 512 MiB (and as much for their gradient);
    # in blocks of 64 positions 64 MiB per block
    return aot_compile.main(["--config", "tiny_qwen2", "--topology", "v5p:1x1x1", "--step", step,
                             "--vocab", "32768", "--param-dtype", "float32", "--remat", "full",
                             "--seq", "512", "--batch", "8", "--logprob-chunk", str(chunk),
                             "--json", str(tmp_path / f"{step}{chunk}.json")])


@pytest.mark.parametrize("step", ["grpo", pytest.param("lm", marks=pytest.mark.slow)])
def test_chunked_logprobs_need_fewer_temporaries(tmp_path, step):
    full = _vocab_heavy(step, 0, tmp_path)
    chunked = _vocab_heavy(step, 64, tmp_path)
    assert full["logprob_chunk"] == 0 and chunked["logprob_chunk"] == 64
    assert full["state_gib_per_device"] == chunked["state_gib_per_device"]
    logits_gib = 8 * 512 * 32768 * 4 / 2 ** 30  # 0.5
    assert full["temp_gib"] >= logits_gib, full["temp_gib"]
    assert chunked["temp_gib"] < 0.5 * full["temp_gib"], (chunked["temp_gib"], full["temp_gib"])


def test_671b_state_fits_a_v5p_512_chip_mesh():
    """Shapes only: bf16 params + fp32 Adam moments of the 671B model, sharded by the rules."""
    args = aot_compile.parse_args(["--config", "deepseek_v3_671b", "--topology", "v5p:8x8x8"])
    mesh, cfg, step, state_avals, b_avals, info = aot_compile.build(args)
    assert dict(mesh.shape) == dict(data=1, fsdp=8, expert=64, tensor=1)
    assert info["batch"] == 512 and info["seq"] == 4096
    per_chip = aot_compile.state_bytes_per_device(state_avals) / 2 ** 30
    # 682.6B params x (2 + 4 + 4) bytes / 512 chips = 12.4 GiB, every tensor divides evenly
    assert 12.0 < per_chip < 13.0, per_chip
    moments = [a for a in __import__("jax").tree.leaves(state_avals.opt_state) if a.ndim > 0]
    assert {str(a.dtype) for a in moments} == {"float32"}
    jax = __import__("jax")
    for path, a in jax.tree_util.tree_flatten_with_path(state_avals.params)[0]:
        name = jax.tree_util.keystr(path)
        # weights bf16; the RMSNorm weights and the router's correction bias are kept in fp32 by the model
        fp32 = "e_score_correction_bias" in name or "norm" in name.lower()
        assert str(a.dtype) == ("float32" if fp32 else "bfloat16"), name


def test_decode_loop_compiles_for_tpu(tmp_path):
    """The rollout engine's decode loop (while_loop of one-token steps over the MLA latent cache,
    sampling inside) on 8 chips with the training layout's shardings; the cache is donated, and
    its bytes per chip are the batch's share of [layers, rows, seq, kv_lora + rope] in bf16."""
    info = aot_compile.main(["--config", "tiny_moe", "--topology", "v5p:2x2x2", "--mesh", "data=2,expert=4",
                             "--step", "decode", "--batch", "16", "--seq", "128", "--new-tokens", "32",
                             "--json", str(tmp_path / "aot.json")])
    assert info["step"] == "decode" and info["chips"] == 8 and info["fits"]
    from r1jax import config as config_lib

    cfg = config_lib.tiny_moe()
    cache_bytes = cfg.num_hidden_layers * 16 * 128 * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2 / 8
    # the cache is an argument, donated and aliased to the returned cache
    assert info["alias_gib"] * aot_compile.GIB >= cache_bytes
    assert info["argument_gib"] * aot_compile.GIB >= cache_bytes
