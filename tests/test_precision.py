"""Precision and memory for real sizes: fp32 master weights under bf16 compute, fp32 norms and router
bias, gradient accumulation weighted by token counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib
from r1jax import train
from r1jax.model import Transformer, init_params
from r1jax.model.precision import compute_copy, with_overrides
from r1jax.rl import grpo
from r1jax.rl.policy import make_policy_loss


def _leaves(tree):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _batch(cfg, rows=4, seq=24, seed=0, lengths=None):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, cfg.vocab_size, (rows, seq)).astype(np.int32)
    lengths = lengths or [seq] * rows
    mask = np.zeros((rows, seq), np.float32)
    tok = np.zeros((rows, seq), np.int32)
    for i, n in enumerate(lengths):
        mask[i, 4:n - 1] = 1.0
        tok[i, :n] = 1
    return {"input_ids": ids, "targets": np.roll(ids, -1, 1), "loss_mask": mask, "token_mask": tok,
            "old_logp": -3.0 * mask, "advantages": rng.randn(rows).astype(np.float32)}


def test_bf16_compute_step_at_lr_1e6_changes_fp32_master_weights_router_bias_stays_fp32(tmp_path):
    # one dense + one MoE layer, no MTP: the smallest model with every kind of param
    cfg = config_lib.tiny_moe(num_hidden_layers=2, num_nextn_predict_layers=0, param_dtype="bfloat16", dtype="bfloat16")
    params = init_params(cfg, jax.random.PRNGKey(0))
    leaves = _leaves(params)
    bias = [k for k in leaves if "e_score_correction_bias" in k]
    norms = [k for k in leaves if "layernorm" in k or k.endswith("['norm']['weight']")]
    assert bias and norms
    assert all(leaves[k].dtype == jnp.float32 for k in bias + norms)  # fp32 whatever param_dtype says
    r1jax.save_pretrained(params, cfg, tmp_path / "ckpt", dtype=jnp.bfloat16)  # a bf16 release-style folder
    tx = train.make_optimizer(train.optimizer_config(learning_rate=1e-6, schedule="constant", weight_decay=0.0,
                                                     grad_clip=0.0))
    loss = make_policy_loss(grpo.grpo_loss, 1.0, dict(loss_agg="token-mean"))

    batch = jax.tree.map(jnp.asarray, _batch(cfg))

    def one_step(param_dtype):
        # (the dense MoE reference dispatch: the quickest to compile; the dispatch is not what is tested)
        model, p = r1jax.from_pretrained(tmp_path / "ckpt", param_dtype=param_dtype, dtype="bfloat16",
                                         moe_impl="dense")
        ps = _leaves(p)
        assert all(ps[k].dtype == jnp.float32 for k in bias + norms)
        grads = _leaves(jax.jit(jax.grad(lambda q: loss(q, batch, model)[0]))(p))
        state = train.init_train_state(p, tx)
        step = train.make_train_step(model, loss, tx, router_bias_update_rate=1e-3, donate=False)
        new, _ = step(state, batch)
        after = _leaves(new.params)
        assert all(after[k].dtype == jnp.float32 for k in bias + norms)
        # of the weights with a gradient (Adam's first step moves each by ~lr * sign(g)), the share that moved
        moved = {k: float(jnp.mean((after[k] != ps[k])[jnp.abs(grads[k].astype(jnp.float32)) > 1e-6]))
                 for k in ps if ps[k].ndim >= 2 and bool(jnp.any(jnp.abs(grads[k]) > 1e-6))}
        return ps, after, moved, {k for k in ps if ps[k].dtype == jnp.bfloat16}

    ps, after, moved, _ = one_step("float32")
    assert all(ps[k].dtype == jnp.float32 for k in ps)
    assert len(moved) >= 10 and min(moved.values()) > 0.999, moved
    # the sign rule moves the main layers' router bias, in fp32 (the MTP module is not run by GRPO)
    for k in (k for k in bias if "moe_layers" in k):
        d = np.abs(np.asarray(after[k] - ps[k]))
        assert d.max() > 0 and np.all((d < 1e-9) | (np.abs(d - 1e-3) < 1e-7)), d  # steps of exactly rate
    # the same step with bf16 params: lr 1e-6 is below bf16's resolution, (nearly) nothing moves
    _, _, moved16, bf16 = one_step("bfloat16")
    frac = [v for k, v in moved16.items() if k in bf16]  # (the fp32 norms still move)
    assert len(frac) >= 10 and np.mean(frac) < 0.05, moved16  # only weights within ~1e-4 of 0 can


def test_compute_copy_holds_weights_in_compute_dtype_and_gives_the_same_logits():
    cfg = config_lib.tiny_moe(num_hidden_layers=2, param_dtype="float32", dtype="bfloat16")
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    cp = compute_copy(params, cfg)
    for k, x in _leaves(cp).items():
        fp32 = x.ndim < 2 or k.endswith("['gate']")  # norms, router bias and router weight stay fp32
        assert x.dtype == (jnp.float32 if fp32 else jnp.bfloat16), k
    ids = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 16)))
    a = model.apply({"params": params}, ids).astype(jnp.float32)
    b = model.apply({"params": cp}, ids).astype(jnp.float32)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_grad_accum_weighted_by_the_loss_normaliser_equals_one_batch(agg):
    """Micro-batches with very different token counts: accumulated gradients equal the whole batch's."""
    cfg = config_lib.tiny_qwen2(num_hidden_layers=1)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(3))
    batch = jax.tree.map(jnp.asarray, _batch(cfg, rows=4, seq=32, lengths=[32, 30, 8, 7]))  # 2 long, 2 short
    loss = make_policy_loss(grpo.grpo_loss, 1.0, dict(loss_agg=agg, max_len=32))
    grad_fn = jax.jit(jax.grad(lambda p, b: loss(p, b, model)[0]))
    whole = grad_fn(params, batch)

    vg = jax.jit(jax.value_and_grad(lambda p, b: loss(p, b, model), has_aux=True))

    def accumulated(n):
        micro = jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)
        gs, ws = [], []
        for j in range(n):
            mb = jax.tree.map(lambda x: x[j], micro)
            (_, aux), g = vg(params, mb)
            gs.append(g)
            ws.append(float(aux["weight"]))
        return jax.tree.map(lambda *g: sum(w * x for w, x in zip(ws, g)) / sum(ws), *gs)

    acc = accumulated(2)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(acc)[0], jax.tree.leaves(whole)):
        scale = float(jnp.abs(b).max()) or 1.0
        assert float(jnp.abs(a - b).max()) <= 1e-5 * scale, jax.tree_util.keystr(path)
    # and the compiled step with grad_accum=2 makes the same update as grad_accum=1 (plain SGD, so the
    # update is the gradient itself: Adam's first step, ~lr * sign(g), would amplify rounding near g = 0)
    import optax

    tx = optax.sgd(1.0)
    s0 = train.init_train_state(params, tx)
    s1, m1 = train.make_train_step(model, loss, tx, donate=False)(s0, batch)
    s2, m2 = train.make_train_step(model, loss, tx, grad_accum=2, donate=False)(s0, batch)
    np.testing.assert_allclose(float(m2["loss"]), float(m1["loss"]), rtol=1e-5)
    for a, b, g in zip(jax.tree.leaves(s2.params), jax.tree.leaves(s1.params), jax.tree.leaves(whole)):
        # the updates agree to 1e-5 of the gradient's scale, plus the rounding of params + update
        tol = 1e-5 * float(jnp.abs(g).max()) + 2 * float(jnp.finfo(jnp.float32).eps) * float(jnp.abs(b).max())
        assert float(jnp.abs(a - b).max()) <= tol
    # equal weights (the old behaviour) would differ: the short micro-batch's tokens would count ~4x
    if agg == "token-mean":
        naive = jax.tree.map(lambda *g: sum(g) / 2, *[grad_fn(params, jax.tree.map(lambda x: x[j * 2:(j + 1) * 2],
                                                                                    batch)) for j in range(2)])
        diff = max(float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-30))
                   for a, b in zip(jax.tree.leaves(naive), jax.tree.leaves(whole)))
        assert diff > 1e-2


def test_with_overrides_casts_params_and_keeps_fp32_norms():
    cfg = config_lib.tiny_moe()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    m2, p2 = with_overrides(model, params, param_dtype="bfloat16", dtype="bfloat16", remat_policy="full")
    assert m2.cfg.remat_policy == "full" and m2.cfg.dtype == "bfloat16"
    for k, x in _leaves(p2).items():
        want = jnp.float32 if ("e_score_correction_bias" in k or "norm" in k) else jnp.bfloat16
        assert x.dtype == want, k
