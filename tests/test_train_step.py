"""The compiled train step: loss falls, accumulation equals one big batch, router bias moves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import config as config_lib
from r1jax import train
from r1jax.model import Transformer, init_params


def _batch(b=4, s=16, seed=0, vocab=97):
    ids = np.random.RandomState(seed).randint(0, vocab, (b, s + 1))
    return {"input_ids": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
            "loss_mask": jnp.ones((b, s), jnp.float32)}


def test_loss_falls_and_router_bias_moves():
    cfg = config_lib.tiny_moe()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    tx = train.make_optimizer(train.optimizer_config(learning_rate=3e-3, schedule="constant", weight_decay=0.0))
    state = train.init_train_state(params, tx)
    step = train.make_train_step(model, train.lm_loss, tx, router_bias_update_rate=1e-2)
    batch = _batch()
    losses = []
    for _ in range(15):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    bias = np.asarray(state.params["moe_layers"]["mlp"]["e_score_correction_bias"])
    assert np.abs(bias).max() > 0  # moved by the sign rule, not by the optimizer
    assert np.all(np.abs(np.round(bias / 1e-2) * 1e-2 - bias) < 1e-6)  # only multiples of the rate
    assert "mtp_ce" in m and np.isfinite(float(m["mtp_ce"]))


def test_grad_accumulation_equals_full_batch():
    cfg = config_lib.tiny_moe(moe_impl="dense")
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(1))
    tx = train.make_optimizer(train.optimizer_config(learning_rate=1e-3, schedule="constant"))
    batch = _batch(4, 12, seed=3)
    outs = []
    for acc in (1, 2):
        st = train.init_train_state(params, tx)
        step = train.make_train_step(model, train.lm_loss, tx, grad_accum=acc, donate=False)
        st, m = step(st, batch)
        outs.append((st, m))
    # each micro-batch has the same token count, so the mean of means equals the full mean
    assert float(outs[0][1]["loss"]) == pytest.approx(float(outs[1][1]["loss"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(outs[0][0].params), jax.tree.leaves(outs[1][0].params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # 1% of one lr step: Adam amplifies fp noise


def test_optimizer_masks():
    cfg = config_lib.tiny_moe()
    params = init_params(cfg)
    labels = train._labels(params)
    assert labels["moe_layers"]["mlp"]["e_score_correction_bias"] == "frozen"
    assert labels["norm"]["weight"] == "no_decay"
    assert labels["moe_layers"]["mlp"]["experts_gate_proj"] == "decay"
