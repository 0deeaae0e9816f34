"""The compiled train step: loss falls, accumulation equals one big batch, router bias moves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import config as config_lib
from r1jax import train
from r1jax.model import Transformer, init_params, update_router_bias

from numerics import assert_close


def _batch(b=4, s=16, seed=0, vocab=97):
    ids = np.random.RandomState(seed).randint(0, vocab, (b, s + 1))
    return {"input_ids": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
            "loss_mask": jnp.ones((b, s), jnp.float32)}


def _log_softmax64(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_loss_falls_and_router_bias_moves_against_the_load():
    cfg = config_lib.tiny_moe()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    tx = train.make_optimizer(train.optimizer_config(learning_rate=3e-3, schedule="constant", weight_decay=0.0))
    state = train.init_train_state(params, tx)
    rate = 1e-2
    step = train.make_train_step(model, train.lm_loss, tx, router_bias_update_rate=rate)
    batch = _batch()
    # the experts each token picks in the first step's forward (the params before the update)
    aux = model.apply({"params": params}, batch["input_ids"], output=True, compute_mtp=True).aux
    e = cfg.n_routed_experts
    route = np.asarray(aux["route"])  # [n_moe, b, s, k]
    load = np.stack([np.bincount(r.reshape(-1), minlength=e) for r in route]).astype(np.float64)  # [n_moe, E]
    mtp_load = np.asarray(aux["mtp_load"], np.float64)
    losses = []
    for i in range(15):
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
        if i == 0:
            # aux-loss-free balancing: an expert above the mean load gets its bias lowered by the rate, one
            # below it raised, one at the mean left alone (the optimizer leaves the bias frozen)
            for got, ld in ((state.params["moe_layers"]["mlp"]["e_score_correction_bias"], load),
                            (state.params["mtp"]["block"]["mlp"]["e_score_correction_bias"], mtp_load)):
                mean = ld.mean(-1, keepdims=True)
                want = np.where(ld > mean, -rate, np.where(ld < mean, rate, 0.0))
                assert (ld > mean).any() and (ld < mean).any()  # an unbalanced router: both directions occur
                np.testing.assert_allclose(np.asarray(got), want, atol=1e-9)
    assert losses[-1] < 0.5 * losses[0]
    bias = np.asarray(state.params["moe_layers"]["mlp"]["e_score_correction_bias"])
    # only multiples of the rate (up to float32 sums of 15 steps: ~1e-7 of the rate)
    assert np.all(np.abs(np.round(bias / rate) * rate - bias) < 1e-4 * rate)


def test_mtp_loss_equals_a_numpy_recomputation():
    """lm_loss's MTP term: at position i the depth-1 module (fed h_i and token i+1) predicts token
    i+2 (= targets[i+1]); positions where either target is masked or that cross a packed segment
    boundary are left out; loss = CE + mtp_loss_weight * MTP NLL sum / main token count (V3's 1/T). In float64 from
    the model's MTP logits."""
    cfg = config_lib.tiny_moe()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(2))
    b, s = 3, 12
    batch = _batch(b, s, seed=5)
    mask = np.ones((b, s), np.float32)
    mask[1, 8:] = 0  # padding
    mask[2, :2] = 0  # a prompt
    seg = np.ones((b, s), np.int32)
    seg[0, 7:] = 2  # row 0 packs two sequences
    batch = dict(batch, loss_mask=jnp.asarray(mask), segment_ids=jnp.asarray(seg))
    loss, out = jax.jit(lambda p, bt: train.lm_loss(p, bt, model))(params, batch)
    logits, _, _, aux = model.apply({"params": params}, batch["input_ids"], None, batch["segment_ids"], output=True,
                                    compute_mtp=True)
    tg = np.asarray(batch["targets"])
    lp, lp2 = _log_softmax64(logits), _log_softmax64(aux["mtp_logits"])
    ce = -(np.take_along_axis(lp, tg[..., None], -1)[..., 0] * mask).sum() / mask.sum()
    nll, n2 = 0.0, 0
    for r in range(b):
        for i in range(s - 1):
            if mask[r, i] and mask[r, i + 1] and seg[r, i] == seg[r, i + 1]:
                nll -= lp2[r, i, tg[r, i + 1]]
                n2 += 1
    assert n2 == 10 + 7 + 9  # row 0: 11 pairs less the segment boundary; row 1: 8 tokens; row 2: 10 tokens
    mtp = nll / n2
    m = out["metrics"]
    np.testing.assert_allclose(float(m["ce"]), ce, rtol=2e-6)
    np.testing.assert_allclose(float(m["mtp_ce"]), mtp, rtol=2e-6)
    # the loss adds the MTP term over the main CE's token count (V3's 1/T): mtp_ce * n2 / n
    np.testing.assert_allclose(float(loss), ce + cfg.mtp_loss_weight * nll / mask.sum(), rtol=2e-6)
    assert abs(mtp - ce) > 1e-3  # another head: not the main CE again
    # the LM head a block at a time (chunk) gives the same terms
    _, out_c = jax.jit(lambda p, bt: train.lm_loss(p, bt, model, chunk=4))(params, batch)
    np.testing.assert_allclose(float(out_c["metrics"]["mtp_ce"]), mtp, rtol=2e-6)
    # the MTP logits at i read token i+1 and nothing later (causal): change token 6
    ids2 = np.asarray(batch["input_ids"]).copy()
    ids2[:, 6] = (ids2[:, 6] + 1) % cfg.vocab_size
    aux2 = model.apply({"params": params}, jnp.asarray(ids2), None, batch["segment_ids"], output=True,
                       compute_mtp=True).aux
    d = np.abs(np.asarray(aux2["mtp_logits"]) - np.asarray(aux["mtp_logits"])).max(axis=(0, 2))
    assert np.all(d[:5] == 0) and d[5] > 1e-4


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


@pytest.mark.parametrize("mtp", [pytest.param(False, marks=pytest.mark.slow), True])
def test_grad_accumulation_with_unequal_token_counts_equals_the_big_batch(mtp):
    """Micro-batch 1 trains on 24 tokens, micro-batch 2 on 6: the step weights each by its token count,
    so loss and gradients equal the single big batch's (a mean over the 30 tokens); the unweighted
    mean of the two micro-batches' gradients (what equal weights would give) does not."""
    cfg = config_lib.tiny_moe(moe_impl="dense", num_nextn_predict_layers=1 if mtp else 0)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(1))
    tx = _keep_grads()
    batch = _batch(4, 12, seed=3)
    mask = np.ones((4, 12), np.float32)
    mask[2:, 3:] = 0  # rows 2, 3 (the second micro-batch): 3 target tokens each
    batch["loss_mask"] = jnp.asarray(mask)
    grads, ms = [], []
    for acc in (1, 2):
        st, m = train.make_train_step(model, train.lm_loss, tx, grad_accum=acc, donate=False)(
            train.init_train_state(params, tx), batch)
        grads.append(st.opt_state)
        ms.append(m)
    (g1, g2), (m1, m2) = grads, ms
    assert float(m1["tokens"]) == 30.0
    assert float(m2["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-5)
    assert float(m2["grad_norm"]) == pytest.approx(float(m1["grad_norm"]), rel=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(g2)[0], jax.tree.leaves(g1)):
        assert_close(a, b, rtol=5e-5, err_msg=jax.tree_util.keystr(path))
    # equal weights would be wrong: the 6 tokens of micro-batch 2 would count as much as the 24 of 1
    half = [jax.tree.map(lambda x: x[j * 2:(j + 1) * 2], batch) for j in range(2)]
    gs = [train.make_train_step(model, train.lm_loss, tx, donate=False)(train.init_train_state(params, tx), h)[0]
          .opt_state for h in half]
    naive = jax.tree.map(lambda a, b: (a + b) / 2, *gs)
    assert float(optax.global_norm(jax.tree.map(jnp.subtract, naive, g1))) > 0.1 * float(optax.global_norm(g1))


def test_accumulate_gradients_equals_one_big_batch():
    """accumulate_gradients over n micro-batches (unequal token counts, weighted by aux["weight"]) gives
    the loss, metrics and gradients of the whole batch at once, and the summed expert loads."""
    rng = np.random.RandomState(0)
    params = {"w": jnp.asarray(rng.randn(5, 3), jnp.float32), "b": jnp.asarray(rng.randn(3), jnp.float32)}
    x = jnp.asarray(rng.randn(8, 6, 5), jnp.float32)
    y = jnp.asarray(rng.randn(8, 6, 3), jnp.float32)
    mask = np.ones((8, 6), np.float32)
    mask[4:, 2:] = 0  # the later rows have fewer tokens
    batch = {"x": x, "y": y, "mask": jnp.asarray(mask)}

    def loss_fn(p, bt):  # a token mean, like lm_loss
        err = ((bt["x"] @ p["w"] + p["b"] - bt["y"]) ** 2).sum(-1)
        n = bt["mask"].sum()
        loss = (err * bt["mask"]).sum() / n
        return loss, {"metrics": {"loss": loss, "err_max": err.max()}, "weight": n,
                      "load": bt["mask"].sum(0)}

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    run = jax.jit(train.accumulate_gradients, static_argnums=(0, 3))
    l1, a1, g1 = run(grad_fn, params, batch, 1)
    for n in (2, 4):
        ln, an, gn = run(grad_fn, params, batch, n)
        np.testing.assert_allclose(float(ln), float(l1), rtol=1e-6)
        np.testing.assert_allclose(float(an["metrics"]["loss"]), float(a1["metrics"]["loss"]), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(an["load"]), np.asarray(a1["load"]), rtol=1e-6)
        assert "weight" not in an
        for k in params:
            np.testing.assert_allclose(np.asarray(gn[k]), np.asarray(g1[k]), rtol=1e-6, atol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="divisible"):
        train.accumulate_gradients(grad_fn, params, batch, 3)


def _router_bias_update_by_hand(params, load, mtp_load, rate):
    """apply_router_bias_update as it was, copying the nested dicts by hand (the reference)."""
    if not rate:
        return params
    params = dict(params)
    if load is not None and "moe_layers" in params:
        ml = dict(params["moe_layers"])
        mlp = dict(ml["mlp"])
        mlp[train.BIAS_NAME] = update_router_bias(mlp[train.BIAS_NAME], load, rate)
        ml["mlp"] = mlp
        params["moe_layers"] = ml
    if mtp_load is not None and "mtp" in params:
        mtp = jax.tree_util.tree_map(lambda x: x, params["mtp"])
        mtp["block"]["mlp"][train.BIAS_NAME] = update_router_bias(mtp["block"]["mlp"][train.BIAS_NAME], mtp_load,
                                                                  rate)
        params["mtp"] = mtp
    return params


def test_router_bias_tree_map_equals_the_hand_copy():
    import flax.linen as nn

    from r1jax.model import abstract_params

    cfg = config_lib.tiny_moe()  # MoE layers and an MoE MTP block
    rng = np.random.RandomState(0)
    params = jax.tree.map(lambda x: jnp.asarray(rng.randn(*x.shape), x.dtype), nn.unbox(abstract_params(cfg)))
    n_moe, e = cfg.num_hidden_layers - cfg.first_k_dense_replace, cfg.n_routed_experts
    load = jnp.asarray(rng.randint(0, 9, (n_moe, e)), jnp.float32)
    mtp_load = jnp.asarray(rng.randint(0, 9, (e,)), jnp.float32)
    for ld, mld, rate in ((load, mtp_load, 1e-2), (load, None, 1e-2), (None, mtp_load, 1e-3), (None, None, 1e-2),
                          (load, mtp_load, 0.0)):
        got = train.apply_router_bias_update(params, ld, mld, rate)
        want = _router_bias_update_by_hand(params, ld, mld, rate)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
    moved = train.apply_router_bias_update(params, load, mtp_load, 1e-2)
    for new, old in ((moved["moe_layers"]["mlp"], params["moe_layers"]["mlp"]),
                     (moved["mtp"]["block"]["mlp"], params["mtp"]["block"]["mlp"])):
        step = np.asarray(new[train.BIAS_NAME]) - np.asarray(old[train.BIAS_NAME])
        assert np.abs(step).max() == pytest.approx(1e-2, rel=1e-4)


def test_optimizer_masks():
    cfg = config_lib.tiny_moe()
    params = init_params(cfg)
    labels = train._labels(params)
    assert labels["moe_layers"]["mlp"]["e_score_correction_bias"] == "frozen"
    assert labels["norm"]["weight"] == "no_decay"
    assert labels["moe_layers"]["mlp"]["experts_gate_proj"] == "decay"
