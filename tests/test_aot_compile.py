"""tools/aot_compile.py: the sharded train step compiles for a TPU topology on this CPU host.

A small variant of the 671B compile: the tiny MoE on v5p:2x2x2 (8 chips, fsdp=2 x expert=4), with
the same step, rules, expert-parallel shard_map, bf16 params and fp32 moments. The 671B state is
also laid out on the 512-chip v5p:8x8x8 mesh (shapes only, no compile) to check the per-chip
train-state bytes. Skips only when libtpu cannot be imported.
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
    info = aot_compile.main(["--config", "tiny_moe", "--topology", "v5p:2x2x2", "--mesh", "data=2,expert=4",
                             "--seq", "64", "--step", "grpo", "--json", str(tmp_path / "aot.json")])
    assert info["step"] == "grpo" and info["chips"] == 8 and info["fits"]
    assert info["alias_gib"] >= 0.9 * info["state_gib_per_device"]


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
        # weights bf16; the router's correction bias is kept in fp32 by the model
        assert str(a.dtype) == ("float32" if "e_score_correction_bias" in name else "bfloat16"), name
