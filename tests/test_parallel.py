"""Mesh, sharding rules, shard_map expert parallelism and the sharded train step on 8 fake CPU devices.

The single-device reference is the unsharded model with the dense MoE ("every expert on every
token"); the mesh runs use moe_impl="ep" (all-to-all dispatch under shard_map) with params,
optimizer state and batch sharded by r1jax.parallel's rules.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from r1jax import config as config_lib
from r1jax import parallel, train
from r1jax.model import Transformer, init_params
from r1jax.model import experts as experts_lib
from r1jax.model.moe_ep import capacity, experts_ep

from numerics import assert_close

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

pytestmark = pytest.mark.skipif(len(jax.devices()) < 8, reason="needs 8 (fake) devices: "
                                "XLA_FLAGS=--xla_force_host_platform_device_count=8")

E, K = 8, 2
MESHES = {
    "expert8": dict(data=1, fsdp=1, expert=8, tensor=1),
    "data2_expert4": dict(data=2, fsdp=1, expert=4, tensor=1),
    "fsdp2_expert4": dict(data=1, fsdp=2, expert=4, tensor=1),
}


def _batch(b=8, s=16, seed=0, vocab=97):
    ids = np.random.RandomState(seed).randint(0, vocab, (b, s + 1)).astype(np.int32)
    return {"input_ids": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((b, s), np.float32)}


# ------------------------------------------------------------------------------------ mesh


def test_make_mesh_fills_the_rest_and_rejects_bad_configs():
    mesh = parallel.make_mesh(dict(data=2, fsdp=-1, expert=2))
    assert dict(mesh.shape) == dict(data=2, fsdp=2, expert=2, tensor=1)
    assert parallel.make_mesh("expert=4,tensor=-1").shape["tensor"] == 2
    assert parallel.make_mesh().shape["fsdp"] == 8  # default: everything fsdp
    assert parallel.batch_axis_size(parallel.make_mesh(dict(fsdp=2, expert=2, tensor=2))) == 4
    with pytest.raises(ValueError, match="only one axis may be -1"):
        parallel.make_mesh(dict(data=-1, fsdp=-1))
    with pytest.raises(ValueError, match="not divisible"):
        parallel.make_mesh(dict(expert=3, fsdp=-1))
    with pytest.raises(ValueError, match="product"):
        parallel.make_mesh(dict(data=2, fsdp=1, expert=1, tensor=1))
    with pytest.raises(KeyError, match="pipeline"):
        parallel.make_mesh(dict(pipeline=2))


def test_use_mesh_installs_the_flax_shim_where_flax_needs_it(monkeypatch):
    """DenseGeneral with multi-dim features inits under a mesh: use_mesh installs the shim
    (r1jax.parallel._flax_compat) on the flax versions that need it."""
    import flax.linen as nn

    from r1jax.parallel import _flax_compat

    class D(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.with_logical_partitioning(nn.initializers.normal(), ("embed", "heads", "head_dim"))
            return nn.DenseGeneral((2, 4), kernel_init=init)(x)

    with parallel.use_mesh(parallel.make_mesh(dict(fsdp=2, expert=4))):
        params = jax.jit(lambda: D().init(jax.random.PRNGKey(0), jnp.ones((2, 8))))()
    assert nn.unbox(params)["params"]["DenseGeneral_0"]["kernel"].shape == (8, 2, 4)
    assert _flax_compat.needed("0.12.8")
    monkeypatch.setattr(_flax_compat, "FIXED_IN", (0, 13))  # a fixed release: the shim stays out there
    assert _flax_compat.needed("0.12.8") and not _flax_compat.needed("0.13.0rc1") and not _flax_compat.needed("1.0")


def test_rules_shard_every_param_and_fall_back_where_sizes_do_not_divide():
    cfg = config_lib.tiny_moe()
    mesh = parallel.make_mesh(dict(fsdp=2, expert=2, tensor=2))
    sh = parallel.param_shardings(cfg, mesh)
    moe = sh["moe_layers"]["mlp"]
    assert moe["experts_gate_proj"].spec == P(None, "expert", "fsdp", "tensor")  # layers, exp, embed, mlp
    assert moe["experts_down_proj"].spec == P(None, "expert", "tensor", "fsdp")
    assert moe["gate"].spec == P(None, "fsdp", "expert")  # router [embed, exp]: exp takes expert first
    assert sh["dense_layers"]["mlp"]["gate_proj"]["kernel"].spec == P(None, ("fsdp", "expert"), "tensor")
    attn = sh["moe_layers"]["self_attn"]
    assert attn["q_b_proj"]["kernel"].spec == P(None, ("fsdp", "expert"), "tensor", None)  # q_lora, heads, head_dim
    # vocab 97 is not divisible by tensor=2: left whole; embed 64 over fsdp x expert = 4
    assert sh["embed_tokens"]["embedding"].spec == P(None, ("fsdp", "expert"))
    assert sh["lm_head"]["kernel"].spec == P(("fsdp", "expert"), None)
    # every leaf has a sharding and every logical name the model uses has a rule
    names = {n for spec in jax.tree.leaves(__import__("r1jax.model", fromlist=["x"]).logical_axes(cfg),
                                             is_leaf=lambda x: isinstance(x, P)) for n in spec if n}
    assert names <= parallel.rules.KNOWN_LOGICAL_AXES, names - parallel.rules.KNOWN_LOGICAL_AXES
    assert len(jax.tree.leaves(sh)) == len(jax.tree.leaves(init_params(cfg)))


def test_671b_param_shardings_divide_on_the_aot_mesh():
    """The 512-chip AOT mesh (fsdp=8, expert=64) shards every 671B weight without a fallback."""
    from jax.sharding import AbstractMesh, AxisType

    cfg = config_lib.deepseek_v3_671b()
    mesh = AbstractMesh((1, 8, 64, 1), parallel.MESH_AXES, axis_types=(AxisType.Auto,) * 4)
    sh = parallel.param_shardings(cfg, mesh)
    moe = sh["moe_layers"]["mlp"]
    # (size-1 axes such as tensor=1 stay in the spec: harmless)
    assert moe["experts_gate_proj"].spec == P(None, "expert", "fsdp", "tensor")
    assert sh["lm_head"]["kernel"].spec == P(("fsdp", "expert"), "tensor")
    assert sh["moe_layers"]["self_attn"]["q_a_proj"]["kernel"].spec == P(None, ("fsdp", "expert"), None)


# -------------------------------------------------------------------------- expert parallel


def _moe_inputs(n=64, d=64, inter=32, seed=0):
    rs = np.random.RandomState(seed)
    x = jnp.asarray(rs.randn(n, d), jnp.float32)
    idx = jnp.asarray(np.stack([rs.choice(E, K, replace=False) for _ in range(n)]), jnp.int32)
    w = jnp.asarray(rs.rand(n, K), jnp.float32)
    wg, wu = (jnp.asarray(rs.randn(E, d, inter) * 0.1, jnp.float32) for _ in range(2))
    wd = jnp.asarray(rs.randn(E, inter, d) * 0.1, jnp.float32)
    return x, idx, w, wg, wu, wd


def _numpy_kept(idx, n_shards, c, valid=None):
    """Which assignments survive a capacity of c per (device, expert): rank in token order < c,
    counting only the valid tokens (the others are never sent: all False)."""
    idx = np.asarray(idx)
    valid = np.ones(idx.shape[0], bool) if valid is None else np.asarray(valid)
    n = idx.shape[0] // n_shards
    keep = np.zeros(idx.shape, bool)
    for s in range(n_shards):
        count = np.zeros(E, int)
        for t in range(s * n, (s + 1) * n):
            if not valid[t]:
                continue
            for j in range(idx.shape[1]):
                keep[t, j] = count[idx[t, j]] < c
                count[idx[t, j]] += 1
    return keep


@pytest.mark.parametrize("mesh_cfg", [dict(expert=8, fsdp=1), dict(fsdp=2, expert=2, tensor=2)],
                         ids=["expert8", "fsdp2_expert2_tensor2"])
def test_ep_dispatch_equals_dense_and_counts_dropped_tokens(mesh_cfg):
    cfg = config_lib.tiny_moe()
    x, idx, w, wg, wu, wd = _moe_inputs()
    mesh = parallel.make_mesh(mesh_cfg)
    shards = parallel.batch_axis_size(mesh)
    n_loc = x.shape[0] // shards

    def loss(fn, *a):
        y = fn(*a)
        return (y ** 2).sum(), y

    with parallel.use_mesh(mesh):
        # dropless capacity: equal to the dense reference, value and gradients
        ep = jax.jit(lambda *a: experts_ep(*a, cfg, capacity_factor=0.0))
        y, stats = ep(x, idx, w, wg, wu, wd)
        g = jax.jit(jax.grad(lambda *a: (experts_ep(*a, cfg, capacity_factor=0.0)[0] ** 2).sum(),
                             argnums=(0, 2, 3, 4, 5)))(x, idx, w, wg, wu, wd)
        # a tight capacity drops assignments past the C-th per (device, expert)
        y1, stats1 = jax.jit(lambda *a: experts_ep(*a, cfg, capacity_factor=1.0))(x, idx, w, wg, wu, wd)
    assert float(stats["ep_dropped"]) == 0 and int(stats["ep_capacity"]) == n_loc
    assert_close(y, experts_lib.experts_dense(x, idx, w, wg, wu, wd), rtol=1e-5)
    g0 = jax.grad(lambda *a: (experts_lib.experts_dense(*a) ** 2).sum(), argnums=(0, 2, 3, 4, 5))(x, idx, w, wg, wu, wd)
    for name, a, b in zip(("dx", "dw", "dwg", "dwu", "dwd"), g, g0):
        assert_close(a, b, rtol=5e-5, err_msg=name)  # sums over experts and tokens: ~1e-6 seen

    c = capacity(n_loc, K, E, 1.0)
    assert int(stats1["ep_capacity"]) == c < n_loc
    keep = _numpy_kept(idx, shards, c)
    assert float(stats1["ep_dropped"]) == (~keep).sum() > 0
    ref = experts_lib.experts_dense(x, idx, jnp.where(jnp.asarray(keep), w, 0.0), wg, wu, wd)
    assert_close(y1, ref, rtol=1e-5)


def test_ep_padding_takes_no_capacity_from_real_tokens():
    """Sequence padding (valid False) is not dispatched: with a tight capacity, real tokens keep the
    slots padding would have taken (fewer drops than with every token sent), padding's routed output is
    0 and only real tokens' drops are counted; the model passes its token_mask down."""
    cfg = config_lib.tiny_moe()
    x, idx, w, wg, wu, wd = _moe_inputs()
    mesh = parallel.make_mesh(dict(expert=8, fsdp=1))
    shards = parallel.batch_axis_size(mesh)
    n_loc = x.shape[0] // shards
    # rows of 4 tokens, each 1 real token then 3 of right padding: a device holds 2 rows, so the
    # padding of its first row comes before the real token of its second in the dispatch order
    valid = np.tile(np.arange(4) < 1, x.shape[0] // 4)
    with parallel.use_mesh(mesh):
        f = jax.jit(lambda v, *a: experts_ep(*a, cfg, capacity_factor=1.0, valid=v))
        y, stats = f(jnp.asarray(valid), x, idx, w, wg, wu, wd)
        y_all, stats_all = f(jnp.ones(len(valid), bool), x, idx, w, wg, wu, wd)
    c = capacity(n_loc, K, E, 1.0)
    keep = _numpy_kept(idx, shards, c, valid)
    keep_all = _numpy_kept(idx, shards, c)
    ref = experts_lib.experts_dense(x, idx, jnp.where(jnp.asarray(keep), w, 0.0), wg, wu, wd)
    assert_close(y[valid], ref[valid], rtol=1e-5)
    assert float(jnp.abs(y[~valid]).max()) == 0.0
    assert float(stats["ep_dropped"]) == (valid[:, None] & ~keep).sum()
    # sending the padding too drops real tokens' assignments that the mask keeps
    assert ((~keep_all) & valid[:, None]).sum() > ((~keep) & valid[:, None]).sum()
    assert float(stats_all["ep_dropped"]) == (~keep_all).sum()


def test_ep_without_a_mesh_runs_locally_and_pads_uneven_token_counts():
    cfg = config_lib.tiny_moe()
    x, idx, w, wg, wu, wd = _moe_inputs(n=20)
    ref = experts_lib.experts_dense(x, idx, w, wg, wu, wd)
    y, stats = experts_ep(x, idx, w, wg, wu, wd, cfg)  # no mesh in context
    assert_close(y, ref, rtol=1e-5, err_msg="no mesh")
    with parallel.use_mesh(parallel.make_mesh(dict(expert=8, fsdp=1))):  # 20 tokens on 8 shards: padded
        y, stats = jax.jit(lambda *a: experts_ep(*a, cfg, capacity_factor=0.0))(x, idx, w, wg, wu, wd)
    assert_close(y, ref, rtol=1e-5, err_msg="padded")
    assert float(stats["ep_dropped"]) == 0


# ---------------------------------------------------------------------- whole model on a mesh


def _logits_and_grads(model):
    def f(params, batch):
        (loss, _), grads = jax.value_and_grad(lambda p: train.lm_loss(p, batch, model), has_aux=True)(params)
        return model.apply({"params": params}, batch["input_ids"]), loss, grads

    return f


@pytest.fixture(scope="module")
def reference():
    cfg = config_lib.tiny_moe(moe_impl="dense")
    params = init_params(cfg, jax.random.PRNGKey(0))
    batch = _batch()
    out = jax.jit(_logits_and_grads(Transformer(cfg)))(params, jax.tree.map(jnp.asarray, batch))
    return params, batch, out


@pytest.mark.parametrize("name", list(MESHES))
def test_logits_and_grads_on_the_mesh_equal_single_device(reference, name):
    params, batch, (logits0, loss0, grads0) = reference
    cf = E / K  # capacity = all tokens of a device: nothing can be dropped
    cfg = config_lib.tiny_moe(moe_impl="ep", capacity_factor=cf)
    mesh = parallel.make_mesh(MESHES[name])
    n_loc = batch["input_ids"].size // parallel.batch_axis_size(mesh)
    assert capacity(n_loc, K, E, cf) == n_loc
    p = parallel.shard_params(params, cfg, mesh)
    b = parallel.shard_batch(batch, mesh)
    assert b["input_ids"].sharding.spec == P(("data", "fsdp", "expert"), None)
    with parallel.use_mesh(mesh):
        logits, loss, grads = jax.jit(_logits_and_grads(Transformer(cfg)))(p, b)
    assert_close(logits, logits0, rtol=1e-5)
    np.testing.assert_allclose(loss, loss0, rtol=1e-5)
    flat0 = jax.tree_util.tree_flatten_with_path(grads0)[0]
    for (path, g0), g in zip(flat0, jax.tree.leaves(grads)):
        assert_close(g, g0, rtol=5e-5, err_msg=jax.tree_util.keystr(path))  # <= 1e-6 seen
    # the expert weights' gradients come back sharded like the params
    gs = grads["moe_layers"]["mlp"]["experts_gate_proj"].sharding
    assert gs.spec[1] == "expert"


def test_ten_train_steps_on_the_mesh_match_one_device():
    """Same loss curve: 1 device (dense MoE, unsharded) vs fsdp=2 x expert=4 (EP, sharded, donated)."""
    from multihost_worker import setup, train_losses

    ref = train_losses(None, steps=10)
    init = []
    got = train_losses(MESHES["fsdp2_expert4"], steps=10, initial_state=init)
    print("1 device:", ref, "\nmesh:    ", got)
    np.testing.assert_allclose(got, ref, rtol=2e-5)
    assert ref[-1] < ref[0] - 0.5  # a real curve: the loss falls on the repeated batches

    # the state is created sharded (init under jit with out_shardings) with the reference values
    cfg, _ = setup("ep")
    state = init[0]
    wg = state.params["moe_layers"]["mlp"]["experts_gate_proj"]
    assert wg.sharding.spec == P(None, "expert", "fsdp", "tensor")
    assert wg.addressable_shards[0].data.shape == (2, 2, 32, 32)  # [layers, 8/4 experts, 64/2, 32]
    ref_params = init_params(cfg, jax.random.PRNGKey(0))
    # (init under jit with out_shardings vs eager init: same bits of randomness, another program)
    assert_close(wg, ref_params["moe_layers"]["mlp"]["experts_gate_proj"], rtol=1e-6)
    moments = [x for path, x in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
               if "'moe_layers']['mlp']['experts_gate_proj'" in jax.tree_util.keystr(path)]
    assert len(moments) == 2  # Adam mu, nu: sharded like the param
    assert all(m.sharding.spec == wg.sharding.spec and m.dtype == jnp.float32 for m in moments)


def test_adam_moments_are_fp32_for_bf16_params():
    cfg = config_lib.tiny_moe(param_dtype="bfloat16", dtype="bfloat16")
    params = init_params(cfg)
    tx = train.make_optimizer(train.optimizer_config())
    st = train.init_train_state(params, tx)
    dtypes = {str(x.dtype) for x in jax.tree.leaves(st.opt_state) if x.ndim > 0}
    assert dtypes == {"float32"}, dtypes
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

    @jax.jit
    def apply(grads, opt_state, params):
        upd, _ = tx.update(grads, opt_state, params)
        return train.optax.apply_updates(params, upd)

    new = apply(grads, st.opt_state, params)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)):  # bf16 weights stay bf16
        assert a.dtype == b.dtype


def test_small_updates_accumulate_in_fp32_master_weights_and_vanish_in_bf16():
    """AdamW at lr 1e-6 with a constant gradient moves every weight by exactly lr per step (Adam's
    bias-corrected m / sqrt(v) = sign(g)). fp32 master weights (param_dtype float32, bf16 compute)
    hold p0 - n * lr; the same updates applied to bf16 weights vanish (half a bf16 ulp of a weight
    of size >= 2^-7 is 3e-5 > 1e-6)."""
    lr, n = 1e-6, 5
    tx = train.make_optimizer(train.optimizer_config(learning_rate=lr, schedule="constant", weight_decay=0.0,
                                                     grad_clip=0.0))

    @jax.jit
    def steps(params):
        opt_state = tx.init(params)
        grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3, jnp.float32), params)
        for _ in range(n):
            upd, opt_state = tx.update(grads, opt_state, params)
            params = train.optax.apply_updates(params, upd)
        return params

    def big_weights(cfg):  # the expert gate kernels, [layers, E, d, I]: the weights a bf16 step cannot move
        return init_params(cfg, jax.random.PRNGKey(0))

    master_cfg = config_lib.tiny_moe(param_dtype="float32", dtype="bfloat16")
    p0 = big_weights(master_cfg)
    p1 = steps(p0)
    k0 = np.asarray(p0["moe_layers"]["mlp"]["experts_gate_proj"], np.float64)
    k1 = np.asarray(p1["moe_layers"]["mlp"]["experts_gate_proj"])
    assert k1.dtype == np.float32
    # p0 - n * lr, to the float32 rounding of n additions (half an ulp of |p| each) and Adam's eps
    # (each step is lr * |g| / (|g| + 1e-8) = lr * (1 - 1e-5))
    ulp = np.spacing(np.maximum(np.abs(k0), np.abs(k1)).astype(np.float32)).astype(np.float64)
    tol = n * ulp + n * lr * 2e-5
    assert np.all(np.abs(k1 - (k0 - n * lr)) <= tol), np.abs(k1 - (k0 - n * lr)).max()
    # every weight of the model moved by n * lr (the router bias is frozen: the sign rule moves it)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(p1)[0], jax.tree.leaves(p0)):
        if "e_score_correction_bias" in jax.tree_util.keystr(path):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(b, np.float64) - np.asarray(a, np.float64), n * lr, rtol=0.05,
                                       err_msg=jax.tree_util.keystr(path))
    # the same n updates on bf16 weights: every weight of size >= 2^-7 is unchanged
    b0 = big_weights(config_lib.tiny_moe(param_dtype="bfloat16", dtype="bfloat16"))
    b1 = steps(b0)
    g0 = np.asarray(b0["moe_layers"]["mlp"]["experts_gate_proj"], np.float32)
    g1 = np.asarray(b1["moe_layers"]["mlp"]["experts_gate_proj"], np.float32)
    big = np.abs(g0) >= 2 ** -7
    assert big.mean() > 0.3 and np.array_equal(g1[big], g0[big])


def test_from_pretrained_loads_into_the_sharded_layout(tmp_path):
    import r1jax

    cfg = config_lib.tiny_moe()
    params = init_params(cfg, jax.random.PRNGKey(3))
    r1jax.save_pretrained(params, cfg, tmp_path)
    mesh = parallel.make_mesh(MESHES["fsdp2_expert4"])
    _, loaded = r1jax.from_pretrained(tmp_path, mesh=mesh)
    want = parallel.param_shardings(cfg, mesh)
    for (path, a), sh in zip(jax.tree_util.tree_flatten_with_path(loaded)[0], jax.tree.leaves(want)):
        assert a.sharding == sh, jax.tree_util.keystr(path)
    wg = loaded["moe_layers"]["mlp"]["experts_gate_proj"]
    assert wg.addressable_shards[0].data.shape == (2, 2, 32, 32)
    np.testing.assert_array_equal(wg, params["moe_layers"]["mlp"]["experts_gate_proj"])
