"""Asynchronous GRPO (r1jax.rl.async_sampler, docs/ASYNC.md): in-flight weight updates in the continuous
engine (a request in progress goes on with the new weights, each token's version recorded); the trainer
with rollout_mode="async": k = 0 equals sync, lag and behaviour log-probs with k >= 1, reruns equal,
the drop policy, sampler devices and in-flight updates (slow: python3 -m pytest -q -m slow
tests/test_async_grpo.py)."""

import jax
import numpy as np
import pytest

from r1jax import config as config_lib, generate
from r1jax.model import Transformer, init_params


@pytest.fixture(scope="module")
def two_policies():
    cfg = config_lib.get_preset("tiny_qwen2")
    return Transformer(cfg), init_params(cfg, jax.random.PRNGKey(0)), init_params(cfg, jax.random.PRNGKey(1))


def test_weights_updated_in_the_middle_of_requests(two_policies):
    """6 requests through 2 rows; the source hands version 1 at the second segment boundary. The
    requests in progress then carry versions 0..0 1..1 and equal the version-0 run up to the switch;
    the requests admitted after it are exactly the version-1 run's."""
    model, pa, pb = two_policies
    rs = np.random.RandomState(0)
    prompts = [list(rs.randint(3, 60, 5)) for _ in range(6)]
    kw = dict(max_new_tokens=[6, 14, 9, 11, 4, 8], temperature=1.0, seed=2, n=1, eos_id=(), engine="continuous",
              slots=2)
    ref_a = generate(model, pa, prompts, **kw)
    ref_b = generate(model, pb, prompts, **kw)
    calls = []

    def source():
        calls.append(1)
        return (1, pb) if len(calls) >= 2 else None

    got = generate(model, pa, prompts, weight_source=source, **kw)
    assert got.stats["weight_swaps"] == 1 and got.versions is not None
    mixed = switched_after = 0
    for i, (t, v) in enumerate(zip(got.tokens, got.versions)):
        assert len(v) == len(t) and v == sorted(v) and set(v) <= {0, 1}
        k = v.count(0)  # tokens drawn by version 0
        assert t[:k] == ref_a.tokens[i][:k]
        np.testing.assert_allclose(got.logprobs[i][:k], ref_a.logprobs[i][:k], rtol=1e-5, atol=1e-6)
        if k == 0:
            assert t == ref_b.tokens[i]  # admitted after the swap: the new weights' own request
            switched_after += 1
        elif k < len(t):
            mixed += 1  # in progress at the swap: kept its cache, went on with the new weights
    assert mixed >= 1 and switched_after >= 1
    with pytest.raises(ValueError, match="continuous"):
        generate(model, pa, prompts, weight_source=source, max_new_tokens=4, engine="static")


def _rows(tmp_path, name, **kw):
    from test_grpo_trainer import _run

    return _run(tmp_path / name, steps=kw.pop("steps", 3), **kw)


def test_async_k0_equals_sync_and_k1_trains_on_one_step_old_samples(tmp_path):
    """k = 0 is the synchronous run (losses and rewards equal at every step). k = 1: step 1 is drawn by
    the initial weights (lag 0), every later step by the weights one update behind (lag 1); the
    per-token behaviour log-probs enter the loss: TIS weights exp(old - behaviour) are 1 at lag 0 and
    not at lag 1 (old = the recomputed proximal policy). A rerun of k = 1 is the same run."""
    kw = dict(old_logp="recompute", loss_kwargs=dict(rollout_correction="tis", tis_cap=2.0))
    sync = _rows(tmp_path, "sync", **kw)
    k0 = _rows(tmp_path, "k0", rollout_mode="async", max_staleness=0, **kw)
    for a, b in zip(sync, k0):
        assert a["train/loss"] == b["train/loss"] and a["reward/total"] == b["reward/total"]
        assert b["async/lag_max"] == 0.0
    k1 = _rows(tmp_path, "k1", rollout_mode="async", max_staleness=1, **kw)
    assert [r["async/lag_max"] for r in k1] == [0.0, 1.0, 1.0]
    assert k1[0]["reward/total"] == sync[0]["reward/total"]  # step 1: the same weights, the same samples
    assert abs(k1[0]["train/correction_weight"] - 1.0) < 1e-5
    assert all(abs(r["train/correction_weight"] - 1.0) > 1e-4 for r in k1[1:]), k1
    again = _rows(tmp_path, "k1_again", rollout_mode="async", max_staleness=1, **kw)
    assert [r["train/loss"] for r in again] == [r["train/loss"] for r in k1]


@pytest.mark.slow  # 25 s; the default suite runs k = 0 / 1 and drop (the 2-process split: tests/test_multihost.py)
def test_async_split_devices_and_inflight_updates(tmp_path):
    """sampler_devices=2: the sampler decodes on 2 of the 8 devices (weights pushed after each update),
    lag <= k = 2; in-flight updates (continuous engine): every token's lag <= k, measured per token."""
    k2 = _rows(tmp_path, "split", steps=4, rollout_mode="async", max_staleness=2, sampler_devices=2)
    assert [r["async/lag_max"] for r in k2] == [0.0, 1.0, 2.0, 2.0]
    assert all(r["rollout/devices"] == 2.0 and r["async/push_s"] > 0 for r in k2)
    assert all(np.isfinite(r["train/loss"]) for r in k2)
    fl = _rows(tmp_path, "inflight", steps=4, rollout_mode="async", max_staleness=1, rollout_engine="continuous",
               rollout_slots=4, inflight_updates=True)
    assert all(0.0 <= r["async/lag_mean"] <= r["async/lag_max"] <= 1.0 for r in fl), fl


def test_async_drop_policy_never_trains_on_rollouts_older_than_k(tmp_path):
    """stale_policy="drop": the sampler draws with the newest weights without waiting; the trainer drops
    what is more than k = 0 versions behind (counted) and trains only on fresh rollouts."""
    rows = _rows(tmp_path, "drop", steps=4, rollout_mode="async", max_staleness=0, stale_policy="drop")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["async/lag_max"] == 0.0 for r in rows), rows
    assert all(r["async/dropped"] >= 0 for r in rows) and np.isfinite(rows[-1]["train/loss"])


def test_async_refuses_a_shared_multi_device_mesh(tmp_path):
    """Sampler and trainer threads launching collectives on the same devices could deadlock (GPU): refused,
    naming sampler_devices."""
    with pytest.raises(ValueError, match="sampler_devices"):
        _rows(tmp_path, "shared", steps=1, rollout_mode="async", mesh="fsdp=-1")


def test_weight_history_keeps_push_times_of_dropped_versions():
    """"drop" keeps one version: a sampler that took version 0 before version 1 was published still gets
    version 0's push time (it waited forever when the time went with the weights)."""
    import threading

    import jax.numpy as jnp

    from r1jax.rl.async_sampler import WeightHistory

    h = WeightHistory(keep=1)
    h.publish(0, {"w": jnp.ones(3)})
    v, w = h.newest()
    h.publish(1, {"w": jnp.zeros(3)})
    assert v == 0 and h.newest()[0] == 1
    got = []
    t = threading.Thread(target=lambda: got.append(h.push_seconds(0)), daemon=True)
    t.start()
    t.join(timeout=30)
    assert got and got[0] >= 0.0
    h.close()
    assert h.get(5) is None and h.newest() == (None, None)
