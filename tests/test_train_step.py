"""The compiled train step: loss falls, accumulation equals one big batch, router bias moves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import config as config_lib
from r1jax import train
from r1jax.model import Transformer, init_params

from numerics import assert_close


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
    rate = 1e-2
    step = train.make_train_step(model, train.lm_loss, tx, router_bias_update_rate=rate)
    batch = _batch()
    losses = []
    for _ in range(15):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    bias = np.asarray(state.params["moe_layers"]["mlp"]["e_score_correction_bias"])
    assert np.abs(bias).max() > 0  # moved by the sign rule, not by the optimizer
    # only multiples of the rate (up to float32 sums of 15 steps: ~1e-7 of the rate)
    assert np.all(np.abs(np.round(bias / rate) * rate - bias) < 1e-4 * rate)
    assert "mtp_ce" in m and np.isfinite(float(m["mtp_ce"]))


def _keep_grads():
    """optax: passes the gradients on unchanged and keeps them as its state (to compare them)."""
    return optax.GradientTransformation(lambda p: jax.tree.map(jnp.zeros_like, p), lambda g, s, p=None: (g, g))


def test_grad_accumulation_equals_full_batch():
    """Loss, gradients and grad norm of 2 accumulated micro-batches equal the full batch's.

    The gradients are compared themselves (kept by _keep_grads ahead of the optimizer), not through
    the params after an Adam step: Adam's first step lr * g / (|g| + eps) is ~lr * sign(g), so float
    noise on a near-zero gradient moves it by a sizable share of lr (0.7% of a step was seen), while
    it hides a wrong gradient scale (e.g. micro-batch grads summed, not averaged) that this catches."""
    cfg = config_lib.tiny_moe(moe_impl="dense")
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(1))
    tx = optax.chain(_keep_grads(), train.make_optimizer(train.optimizer_config(learning_rate=1e-3,
                                                                                schedule="constant")))
    batch = _batch(4, 12, seed=3)
    outs = []
    for acc in (1, 2):
        st = train.init_train_state(params, tx)
        step = train.make_train_step(model, train.lm_loss, tx, grad_accum=acc, donate=False)
        st, m = step(st, batch)
        outs.append((st, m))
    (st1, m1), (st2, m2) = outs
    # each micro-batch has the same token count, so the mean of means equals the full mean
    assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
    assert float(m2["grad_norm"]) == pytest.approx(float(m1["grad_norm"]), rel=1e-5)
    # the kept state is the step's gradients (not its zero init)
    assert float(optax.global_norm(st1.opt_state[0])) == pytest.approx(float(m1["grad_norm"]), rel=1e-6)
    assert float(m1["grad_norm"]) > 0.1
    for (path, g1), g2 in zip(jax.tree_util.tree_flatten_with_path(st1.opt_state[0])[0],
                              jax.tree.leaves(st2.opt_state[0])):
        assert_close(g2, g1, rtol=5e-5, err_msg=jax.tree_util.keystr(path))  # <= 5e-7 seen


def test_optimizer_masks():
    cfg = config_lib.tiny_moe()
    params = init_params(cfg)
    labels = train._labels(params)
    assert labels["moe_layers"]["mlp"]["e_score_correction_bias"] == "frozen"
    assert labels["norm"]["weight"] == "no_decay"
    assert labels["moe_layers"]["mlp"]["experts_gate_proj"] == "decay"
