"""The README's `r1jax sft` / `r1jax grpo` commands as 2 OS processes x 4 CPU devices on loopback
(JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), against 1 process x 8 devices:
checkpoints every step, the final HF export (one tensor gathered at a time, process 0 writing),
metrics from one writer, the exported folder read by transformers with the logits of the
one-process export, and both processes SIGKILLed mid-run resuming the same curve.

Slow (each run starts JAX in two processes on this machine's cores):
    python3 -m pytest -q -m slow tests/test_multiprocess_cli.py
"""

import json
import os
import signal
import time

import numpy as np
import pytest

import loopback
from test_user_model import user_ckpt, write_gsm8k_style  # noqa: F401  (the fixture: a tiny Qwen2 + ChatML folder)

pytestmark = pytest.mark.slow
STEPS = 3


def _launch(n_proc: int, devices: int, args: list) -> list:
    """`python -m r1jax.cli ARGS` as n_proc processes with `devices` CPU devices each."""
    return loopback.launch(["-m", "r1jax.cli"] + list(args), n_proc, devices)


def _wait(procs, timeout=1200):
    return loopback.wait(procs, timeout)


def _rows(run_dir, key):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [r for r in (json.loads(x) for x in f if x.strip()) if key in r]


def _sets(**kw):
    out = []
    for k, v in kw.items():
        out += ["--set", f"{k}={v}"]
    return out


def _grpo_args(ckpt, data, run_dir):
    return ["grpo", "--config", "experiments/grpo_gsm8k.py"] + _sets(
        init=ckpt, train_data=data, run_dir=run_dir, steps=STEPS, max_new_tokens=12, group_size=4,
        prompts_per_step=4, minibatches=2, eval_every=0, save_every=1, progress=False, mesh="data=2,fsdp=4",
        rewards='{"multihost_worker:digit_share": 1.0}', rollout_placement="auto")


def _sft_args(ckpt, data, run_dir):
    return ["sft", "--config", "experiments/sft_cold_start.py"] + _sets(
        init=ckpt, data=data, completion_key="response", run_dir=run_dir, seq_len=64, batch_size=8, grad_accum=1,
        steps=STEPS, logprob_chunk=16, progress=False, log_every=1, save_every=1, mesh="data=2,fsdp=4")


def _logits(folder):
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 11, 64]])
    with torch.no_grad():
        return hf(ids).logits.numpy()


def _same_export(a, b):
    la, lb = _logits(a), _logits(b)
    assert np.abs(la - lb).max() <= 1e-4 * np.abs(lb).max()
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())


def test_sft_two_processes_checkpoint_export_and_one_writer(user_ckpt, tmp_path):  # noqa: F811
    recs = tmp_path / "cold.jsonl"
    with open(recs, "w") as f:
        for i in range(48):
            f.write(json.dumps({"prompt": f"What is {i} + {i}?",
                                "response": f"<think>\n{i} + {i} = {2 * i}\n</think>\n<answer>{2 * i}</answer>"}) + "\n")
    one, two = tmp_path / "one", tmp_path / "two"
    _wait(_launch(1, 8, _sft_args(user_ckpt, recs, one)))
    _wait(_launch(2, 4, _sft_args(user_ckpt, recs, two)))
    ra, rb = _rows(one, "sft/ce"), _rows(two, "sft/ce")
    assert [r["step"] for r in rb] == list(range(1, STEPS + 1))  # one writer: each step once
    np.testing.assert_allclose([r["sft/ce"] for r in rb], [r["sft/ce"] for r in ra], rtol=1e-4)
    assert sorted(os.listdir(two / "checkpoints")) == sorted(os.listdir(one / "checkpoints"))
    _same_export(two / "final", one / "final")


def test_grpo_two_processes_equal_one_and_resume_after_sigkill(user_ckpt, tmp_path):  # noqa: F811
    data = write_gsm8k_style(tmp_path / "train.jsonl", n=32)
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    _wait(_launch(1, 8, _grpo_args(user_ckpt, data, one)))
    _wait(_launch(2, 4, _grpo_args(user_ckpt, data, two)))
    ra, rb = _rows(one, "train/loss"), _rows(two, "train/loss")
    assert [r["step"] for r in rb] == list(range(1, STEPS + 1))
    assert min(abs(r["train/loss"]) for r in ra) > 1e-6  # the reward has spread: non-zero losses
    assert {r["rollout/devices"] for r in ra} == {8.0}  # one process: its 8 devices decode (SPMD, the mesh)
    assert {r["rollout/devices"] for r in rb} == {4.0}  # process 0 of two: each of its 4 devices holds rows
    for a, b in zip(ra, rb):
        assert a["rollout/response_length"] == b["rollout/response_length"]
        np.testing.assert_allclose(b["reward/total"], a["reward/total"], rtol=1e-6)
        np.testing.assert_allclose(b["train/loss"], a["train/loss"], rtol=1e-4, atol=1e-7)
    _same_export(two / "final", one / "final")

    # both processes SIGKILLed after step 1 was logged, then started again with the same command
    procs = _launch(2, 4, _grpo_args(user_ckpt, data, killed))
    t0 = time.time()
    while not (killed / "metrics.jsonl").exists() or not any(r["step"] >= 1 for r in _rows(killed, "train/loss")):
        assert all(p.poll() is None for p in procs), "a process ended before it was killed"
        assert time.time() - t0 < 1200
        time.sleep(0.05)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.communicate(timeout=60)
    assert not (killed / "final").exists()
    _wait(_launch(2, 4, _grpo_args(user_ckpt, data, killed)))
    rk = _rows(killed, "train/loss")
    assert [r["step"] for r in rk] == list(range(1, STEPS + 1))
    for a, b in zip(rb, rk):
        np.testing.assert_allclose(b["train/loss"], a["train/loss"], rtol=1e-6, atol=1e-9)
        assert a["rollout/response_length"] == b["rollout/response_length"]
    _same_export(killed / "final", two / "final")
