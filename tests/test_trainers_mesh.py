"""The SFT and GRPO trainers and the toy R1-Zero job run unchanged on a sharded mesh (the fake
8-device CPU mesh of conftest), and compute what they compute on one device."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest

from r1jax import config as config_lib
from r1jax.toy.tokenizer import toy_tokenizer
from r1jax.model import Transformer, init_params
from r1jax.parallel.placement import Placement
from r1jax.rl.config import grpo_config
from r1jax.rl.trainer import run_grpo
from r1jax.sft.trainer import run_sft, sft_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH = "data=2,fsdp=2,expert=2"
RECORDS = [{"problem": f"what is {a} + {b}", "answer": str(a + b)} for a in range(1, 9) for b in range(1, 5)]

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs the 8 fake CPU devices of tests/conftest.py")


def _metrics(run_dir):
    return [json.loads(x) for x in open(os.path.join(run_dir, "metrics.jsonl"))]


def test_placement_shards_state_and_batches():
    cfg = config_lib.tiny_moe(vocab_size=64)
    from r1jax import train

    tx = train.make_optimizer(train.optimizer_config(learning_rate=1e-3))
    place = Placement(MESH)
    assert place.batch_multiple == 8
    state = place.train_state(cfg, init_params(cfg, jax.random.PRNGKey(0)), tx)
    experts = state.params["moe_layers"]["mlp"]["experts_up_proj"]
    assert "expert" in str(experts.sharding.spec), experts.sharding
    b = place.batch({"x": np.zeros((8, 4), np.int32)})
    assert len(b["x"].sharding.device_set) == 8
    with pytest.raises(ValueError, match="multiple of 8"):
        place.batch({"x": np.zeros((6, 4), np.int32)})


def test_sft_on_mesh_matches_one_device(tmp_path):
    tok = toy_tokenizer()
    cfg = config_lib.tiny_moe(vocab_size=tok.vocab_size)
    recs = [{"prompt": f"what is {a} + {b}", "completion": f" <answer> {a + b} </answer>"} for a in range(10)
            for b in range(10)]
    losses = {}
    for name, mesh in (("one", ""), ("mesh", MESH)):
        c = sft_config(run_dir=str(tmp_path / name), seq_len=64, batch_size=8, steps=3, log_every=1, save_hf=False,
                       progress=False, mesh=mesh)
        run_sft(c, recs, model=Transformer(cfg), params=init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tok)
        losses[name] = [r["sft/loss"] for r in _metrics(c.run_dir) if "sft/loss" in r]
    assert len(losses["one"]) == 3
    np.testing.assert_allclose(losses["mesh"], losses["one"], rtol=2e-4)


def _chars_reward(texts, records):
    """A reward with spread on a random model: a tenth of the response's characters."""
    return [len(t) / 10 for t in texts]


def test_grpo_on_mesh_matches_one_device(tmp_path, monkeypatch):
    """Three GRPO steps (two updates each, mu=2) with a reward that differs between samples, so the
    advantages, the policy loss and the gradient are not zero: the mesh run logs the one-device
    run's rewards, lengths, losses and gradient norms at every step."""
    from r1jax.rewards import registry

    monkeypatch.setitem(registry.REWARDS, "chars", _chars_reward)
    tok = toy_tokenizer()
    cfg = config_lib.tiny_moe(vocab_size=tok.vocab_size)
    rows = {}
    for name, mesh in (("one", ""), ("mesh", MESH)):
        c = grpo_config(run_dir=str(tmp_path / name), rewards={"chars": 1.0}, group_size=4, prompts_per_step=4,
                        max_new_tokens=8, steps=3, mu=2, eval_every=0, save_every=0, save_hf=False, progress=False,
                        old_logp="recompute", loss_kwargs=dict(kl_coef=0.01), mesh=mesh)
        run_grpo(c, model=Transformer(cfg), params=init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tok,
                 train_records=RECORDS)
        rows[name] = _metrics(c.run_dir)
    assert len(rows["one"]) == len(rows["mesh"]) == 3
    for a, b in zip(rows["one"], rows["mesh"]):
        # every group has a reward spread, so the advantages are not all zero
        assert a["rollout/zero_spread_groups"] == 0.0 and b["rollout/zero_spread_groups"] == 0.0
        # same rollouts (same params up to f32 rounding, same seeds): same lengths and rewards
        assert a["rollout/response_length"] == b["rollout/response_length"]
        assert a["reward/total"] == b["reward/total"]
        for k in ("train/loss", "train/pg_loss", "train/grad_norm"):
            assert abs(a[k]) > 1e-3, (k, a[k])
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, err_msg=k)
        assert a["train/kl"] > 0
        np.testing.assert_allclose(b["train/kl"], a["train/kl"], rtol=1e-3)


@pytest.mark.slow
def test_r1_zero_experiment_config_runs_on_a_mesh(tmp_path):
    """experiments/r1_zero_toy.py as is, with `mesh` set and its sizes shrunk (the short variant).
    Slow: it compiles the SFT step, the GRPO step and generation for the 8-device mesh."""
    from r1jax.toy.pipelines import r1_zero

    spec = importlib.util.spec_from_file_location("r1_zero_toy", os.path.join(ROOT, "experiments", "r1_zero_toy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.mesh = MESH
    c.run_dir, c.cache_dir, c.update_readme = str(tmp_path / "run"), str(tmp_path / "cache"), False
    c.data.n_train_problems, c.data.n_heldout_problems, c.data.n_corpus = 64, 16, 200
    c.pretrain.update(dict(steps=4, batch_size=8, log_every=2))
    c.grpo.update(dict(steps=2, prompts_per_step=2, group_size=4, max_new_tokens=24, eval_every=0, save_every=0))
    c.eval.update(dict(problems=8, k=2, harder_problems=4, harder_max_new_tokens=24))
    res = r1_zero.run(c)
    saved = json.load(open(os.path.join(c.run_dir, "results.json")))
    n = 8 * 2  # problems x k samples
    assert saved["problems"] == 8 and saved["k"] == 2
    for side in ("base", "final"):
        assert set(saved[side]) == {"pass@1", "cons@k", "mean_length"}
        # counts over the 16 samples / 8 majority votes: exact multiples of 1/16 and 1/8
        assert (saved[side]["pass@1"] * n).is_integer() and (saved[side]["cons@k"] * 8).is_integer()
        assert (saved[side]["mean_length"] * n).is_integer() and 1 <= saved[side]["mean_length"] <= 24
    # the kept samples are judged as the accuracy reward judges them
    from r1jax.rewards import accuracy_reward

    assert len(saved["final_samples"]) == 4
    for x in saved["final_samples"]:
        assert x["correct"] == accuracy_reward(x["completion"], x["answer"]), x
    # the R1-Zero observations: length per GRPO step, self-checks before / after, a harder level
    assert len(saved["response_length_by_step"]) == 2 and min(saved["response_length_by_step"]) > 0
    assert set(saved["self_check"]) == {"base", "final", "by_step"} and len(saved["self_check"]["by_step"]) == 2
    assert saved["harder"]["levels"] == [5] and saved["harder"]["problems"] == 4
    assert set(saved["harder"]["base"]) == {"pass@1", "mean_length", "reflection"}
    assert res["final"] == saved["final"]
    assert os.path.exists(os.path.join(c.run_dir, "r1_zero.png"))


@pytest.mark.parametrize("mesh", ["data=2,expert=4", pytest.param("data=2,fsdp=2,expert=2", marks=pytest.mark.slow)])
def test_generate_on_mesh_matches_one_device(mesh):
    """Sharded generation (batch over data, experts over expert) with the same code: greedy tokens
    are those of one device, sampler log-probs agree to f32 rounding."""
    import r1jax

    cfg = config_lib.tiny_moe(vocab_size=64)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(1))
    rng = np.random.RandomState(0)
    prompts = [list(rng.randint(1, 64, size=n)) for n in (3, 7, 5, 9, 4, 6, 8, 2)]
    ref = r1jax.generate(model, params, prompts, max_new_tokens=12, temperature=0.0)
    place = Placement(mesh)
    sharded = place.params(cfg, params)
    assert any(len(x.sharding.device_set) == 8 for x in jax.tree.leaves(sharded))
    with place.context():
        out = r1jax.generate(model, sharded, prompts, max_new_tokens=12, temperature=0.0)
    assert [list(t) for t in out.tokens] == [list(t) for t in ref.tokens]
    for a, b in zip(out.logprobs, ref.logprobs):
        np.testing.assert_allclose(a, b, atol=1e-4)
