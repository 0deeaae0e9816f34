"""A user's own model end to end: a tiny random Qwen2 checkpoint with a ChatML tokenizer folder (BPE
trained here, saved by transformers), GSM8K-format records as the file carries them, the recipes
through the `r1jax` command, the saved checkpoint read back by transformers, and a GRPO run killed
with SIGKILL (also while a checkpoint is being written) that resumes to the same per-step numbers."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tokenizer_folders import make_folder

ROOT = pathlib.Path(__file__).resolve().parents[1]
GSM8K_STYLE = [  # (question, worked solution ending in "#### answer"), as openai/grade-school-math writes them
    ("Tom has {a} apples and buys {b} more. How many apples does he have?",
     "Tom has {a}+{b}=<<{a}+{b}={c}>>{c} apples.\n#### {c}"),
    ("A box holds {a} pens. How many pens are in {b} boxes?",
     "There are {a}*{b}=<<{a}*{b}={d}>>{d} pens.\n#### {d}"),
]


def write_gsm8k_style(path, n=16, seed=0):
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q, s = GSM8K_STYLE[i % 2]
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            v = dict(a=a, b=b, c=a + b, d=a * b)
            f.write(json.dumps({"question": q.format(**v), "answer": s.format(**v)}) + "\n")
    return path


@pytest.fixture(scope="module")
def user_ckpt(tmp_path_factory):
    """A Qwen2.5-Instruct-style folder: tiny random Qwen2 weights + a ChatML tokenizer folder."""
    pytest.importorskip("torch")
    from hf_models import make_hf_model

    from r1jax.data.tokenizer import load_tokenizer

    d = tmp_path_factory.mktemp("qwen_user")
    make_folder("chatml", d)
    tok = load_tokenizer(d)
    # 1024 positions: the chat prompts with the R1-Zero system message are ~300-450 tokens of this small
    # BPE (MATH-500 / GSM8K test problems included), and prompt + max_new_tokens is checked against it
    make_hf_model("qwen2", str(d), vocab_size=tok.vocab_size, bos_token_id=None, eos_token_id=tok.eos_token_id,
                  num_hidden_layers=2, hidden_size=64, max_position_embeddings=1024)
    return d


def _cli(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's process
    return subprocess.Popen([sys.executable, "-m", "r1jax.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _grpo_args(ckpt, data, run_dir, steps, **extra):
    sets = dict(init=str(ckpt), train_data=str(data), steps=steps, run_dir=str(run_dir), max_new_tokens=12,
                group_size=4, prompts_per_step=2, minibatches=2, eval_every=0, save_every=1, progress=False)
    sets.update(extra)
    out = ["grpo", "--config", "experiments/grpo_gsm8k.py"]
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def _rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f if x.strip()]


def test_grpo_recipe_on_a_users_checkpoint_and_gsm8k_file(user_ckpt, tmp_path):
    import torch
    import transformers

    import r1jax

    data = write_gsm8k_style(tmp_path / "gsm8k_train.jsonl")
    run = tmp_path / "run"
    p = _cli(*_grpo_args(user_ckpt, data, run, steps=2))
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-4000:]
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert np.isfinite(r["train/loss"]) and 0.0 <= r["reward/total"] <= 1.5 and r["reward/valid"] == 1.0
    final = run / "final"
    for fn in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (final / fn).exists(), fn
    # transformers loads the saved folder as it is: the same chat template and weights
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(final))
    ref_tok = transformers.AutoTokenizer.from_pretrained(str(user_ckpt))
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}]
    assert hf_tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True) == \
        ref_tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    cfg = json.loads((final / "config.json").read_text())
    assert cfg["torch_dtype"] == "bfloat16" and cfg["model_type"] == "qwen2"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(final), torch_dtype=torch.float32).eval()
    model, params = r1jax.from_pretrained(final)
    assert set(model.cfg.eos_token_id) == set(r1jax.load_tokenizer(final).eos_token_ids)  # generation_config's too
    ids = np.asarray([hf_tok.apply_chat_template(conv, add_generation_prompt=True)["input_ids"]])
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    got = np.asarray(model.apply({"params": params}, ids))
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_sft_recipe_through_the_chat_template(user_ckpt, tmp_path):
    import transformers

    recs = tmp_path / "cold.jsonl"
    with open(recs, "w") as f:
        for i in range(24):
            f.write(json.dumps({"prompt": f"What is {i} + {i}?",
                                "response": f"<think>\n{i} + {i} = {2 * i}\n</think>\n<answer>{2 * i}</answer>"}) + "\n")
    run = tmp_path / "sft"
    p = _cli("sft", "--config", "experiments/sft_cold_start.py", "--set", f"init={user_ckpt}", "--set", f"data={recs}",
             "--set", "completion_key=response", "--set", f"run_dir={run}", "--set", "seq_len=128", "--set",
             "batch_size=4", "--set", "grad_accum=2", "--set", "steps=3", "--set", "logprob_chunk=16",
             "--set", "progress=False", "--set", "log_every=1")
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-4000:]
    rows = [r for r in _rows(run) if "sft/ce" in r]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["sft/ce"]) for r in rows)
    assert transformers.AutoTokenizer.from_pretrained(str(run / "final")).chat_template == \
        transformers.AutoTokenizer.from_pretrained(str(user_ckpt)).chat_template


def _run_to_end_with_kills(args, run_dir, kills):
    """Runs the command, SIGKILLs it at each of `kills` ("save": while a checkpoint is being written;
    ("step", k): a random moment after step k was logged), restarting after each kill; then runs it
    to the end. Returns how many kills landed and where."""
    ckpt_dir = pathlib.Path(run_dir) / "checkpoints"
    landed = []
    for kill in list(kills) + [None]:
        p = _cli(*args)
        t0 = time.time()
        while p.poll() is None and kill is not None:
            if kill == "save":
                if ckpt_dir.exists() and any("tmp" in x.name for x in ckpt_dir.iterdir()):
                    p.send_signal(signal.SIGKILL)
                    landed.append("during checkpoint write")
                    break
                time.sleep(0.002)
            else:
                rows = _rows(run_dir) if (pathlib.Path(run_dir) / "metrics.jsonl").exists() else []
                if any(r["step"] >= kill[1] for r in rows):
                    time.sleep(random.Random(kill[1]).uniform(0.0, 2.0))
                    p.send_signal(signal.SIGKILL)
                    landed.append(f"after step {kill[1]}")
                    break
                time.sleep(0.05)
            assert time.time() - t0 < 900
        out, _ = p.communicate(timeout=900)
        if kill is None:
            assert p.returncode == 0, out[-4000:]
    return landed


@pytest.mark.slow  # 2 min; tests/test_grpo_trainer.py resumes a killed run in the default suite
def test_grpo_killed_with_sigkill_resumes_to_the_same_numbers(user_ckpt, tmp_path):
    data = write_gsm8k_style(tmp_path / "train.jsonl")
    steps = 5
    ref_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    p = _cli(*_grpo_args(user_ckpt, data, ref_dir, steps))
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-4000:]
    landed = _run_to_end_with_kills(_grpo_args(user_ckpt, data, killed_dir, steps), killed_dir,
                                    ["save", ("step", 3)])
    assert len(landed) == 2, landed
    ref, got = _rows(ref_dir), _rows(killed_dir)
    assert [r["step"] for r in got] == list(range(1, steps + 1))
    for a, b in zip(ref, got):
        for k in ("train/loss", "train/pg_loss", "reward/total", "reward/accuracy", "reward/format",
                  "rollout/response_length", "train/grad_norm"):
            assert a[k] == b[k], (a["step"], k, a[k], b[k])
    assert (killed_dir / "final" / "model.safetensors").exists()


@pytest.mark.slow
def test_grpo_killed_at_random_moments_resumes_to_the_same_numbers(user_ckpt, tmp_path):
    """Six kills: three while checkpoints are written, three at random moments after steps 2, 4, 6."""
    data = write_gsm8k_style(tmp_path / "train.jsonl")
    steps = 8
    ref_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    p = _cli(*_grpo_args(user_ckpt, data, ref_dir, steps))
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-4000:]
    landed = _run_to_end_with_kills(_grpo_args(user_ckpt, data, killed_dir, steps), killed_dir,
                                    ["save", ("step", 2), "save", ("step", 4), "save", ("step", 6)])
    assert len(landed) >= 5, landed
    ref, got = _rows(ref_dir), _rows(killed_dir)
    assert [r["step"] for r in got] == list(range(1, steps + 1))
    for a, b in zip(ref, got):
        for k in ("train/loss", "reward/total", "train/grad_norm"):
            assert a[k] == b[k], (a["step"], k, a[k], b[k])


def test_eval_command_with_the_checkpoints_tokenizer_and_template(user_ckpt, tmp_path):
    """`r1jax eval` on GSM8K (and MATH-500) as the files come, prompts through the checkpoint's chat
    template, stopping on its EOS set; the real files from ../shared/data when present."""
    from conftest import SHARED_DATA

    files = [write_gsm8k_style(tmp_path / "gsm8k_style.jsonl", n=4)]
    if SHARED_DATA.is_dir():
        files += [SHARED_DATA / "gsm8k_test.jsonl", SHARED_DATA / "math500_test.jsonl"]
    for i, data in enumerate(files):
        out_json = tmp_path / f"eval{i}.json"
        p = _cli("eval", "--checkpoint", str(user_ckpt), "--data", str(data), "--problems", "3", "--k", "2",
                 "--max-new-tokens", "8", "--prompt-style", "chat", "--system-prompt", "r1_zero",
                 "--out", str(out_json))
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-4000:]
        res = json.loads(out_json.read_text())
        assert res["problems"] == 3 and res["k"] == 2 and res["skipped_gold"] == 0
        assert 0.0 <= res["pass@1"] <= 1.0 and 1 <= res["mean_length"] <= 8
        golds = [s["answer"] for s in res["samples"]]
        if "gsm8k" in data.name:
            assert all(g.lstrip("-").isdigit() for g in golds), golds  # the number after '####'
