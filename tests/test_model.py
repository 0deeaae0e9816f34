"""The DeepSeek-V3 / Qwen2 / Llama model against transformers, and its parts against numpy."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib
from r1jax.checkpoint import hf as hf_ckpt
from r1jax.checkpoint.safetensors_io import SafeTensorsFile, save_file
from r1jax.model import Transformer, init_params, update_router_bias
from r1jax import backends
from r1jax.backends import cpu_experts
from r1jax.model import experts as experts_lib
from r1jax.model import moe as moe_lib

from hf_models import hf_logits, make_hf_model
from numerics import assert_close

jax.config.update("jax_default_matmul_precision", "highest")

CASES = {
    "v3_qlora_yarn_bias": ("deepseek_v3", dict(q_lora=True, yarn=True)),
    "v3_no_qlora": ("deepseek_v3", dict(q_lora=False, yarn=False)),
    "qwen2": ("qwen2", {}),
    "llama3_rope": ("llama", {}),
}
SEQ = 40  # longer than YaRN's original window (16) and llama3's (32)


def _ids(b=2, s=SEQ, seed=0):
    return np.random.RandomState(seed).randint(0, 97, (b, s))


@pytest.fixture(scope="module")
def hf_ckpts(tmp_path_factory):
    out = {}
    for name, (kind, kw) in CASES.items():
        path = str(tmp_path_factory.mktemp(name))
        out[name] = (make_hf_model(kind, path, **kw), path)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_transformers(hf_ckpts, name):
    model_hf, path = hf_ckpts[name]
    model, params = r1jax.from_pretrained(path)
    ids = _ids()
    ref = hf_logits(model_hf, ids)
    out = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    assert out.shape == ref.shape
    assert_close(out, ref, rtol=1e-4)


@pytest.mark.parametrize("name", list(CASES))
def test_round_trip_through_transformers(hf_ckpts, name, tmp_path):
    from transformers import AutoModelForCausalLM

    _, path = hf_ckpts[name]
    model, params = r1jax.from_pretrained(path)
    r1jax.save_pretrained(params, model.cfg, tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").float().eval()
    ids = _ids(seed=1)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    assert_close(ours, hf_logits(back, ids), rtol=1e-4)


def test_yarn_mscale_changes_the_scale():
    cfg = config_lib.tiny_moe()
    from r1jax.model.rope import softmax_scale

    m = 0.1 * np.log(4.0) + 1.0
    assert softmax_scale(cfg, 24) == pytest.approx(24**-0.5 * m * m)


def test_mla_absorbed_equals_expanded():
    cfg = config_lib.tiny_moe()
    params = init_params(cfg, jax.random.PRNGKey(3))
    ids = jnp.asarray(_ids(2, 24))
    seg = jnp.asarray(np.repeat([[1] * 10 + [2] * 14], 2, 0))
    for kw in ({}, {"segment_ids": seg}):
        a = Transformer(cfg).apply({"params": params}, ids, **kw)
        b = Transformer(cfg, absorb=True).apply({"params": params}, ids, **kw)
        assert_close(b, a, rtol=1e-5, err_msg=str(list(kw)))


def _filled_params(cfg, seed=0):
    """Random params of cfg's tree without compiling its init (the tests below check shapes and
    paths, or compare outputs of one set of params): N(0, 0.05), norm weights 1."""
    import flax.linen as nn

    from r1jax.model import abstract_params

    shapes = nn.unbox(abstract_params(cfg))
    leaves, tree = jax.tree.flatten_with_path(shapes)
    rng = np.random.RandomState(seed)
    return jax.tree.unflatten(tree, [jnp.ones(x.shape, x.dtype) if path[-1].key == "weight" else
                                     jnp.asarray(0.05 * rng.randn(*x.shape), x.dtype) for path, x in leaves])


def test_model_output_fields_and_shapes_per_mode():
    """The plain call returns the logits array; output=True and the cache modes a ModelOutput whose
    hidden is the final-normed LM-head input (logits = head(hidden)) and whose aux holds the pre-norm
    hidden states, the MoE loads/routes and (train) the MTP outputs."""
    from r1jax.model import ModelOutput, init_cache
    from r1jax.model.logprobs import head_kernel

    cfg = config_lib.tiny_moe(num_hidden_layers=2)  # a dense layer, an MoE layer, MTP
    params = _filled_params(cfg)
    b, s, d, v, k = 2, 8, cfg.hidden_size, cfg.vocab_size, cfg.num_experts_per_tok
    n_moe, e = cfg.num_hidden_layers - cfg.first_k_dense_replace, cfg.n_routed_experts
    ids = jnp.asarray(_ids(b, s))

    def run(mode="train", **kw):  # compiled
        return jax.jit(lambda p, *a, **arrays: Transformer(cfg, mode=mode).apply({"params": p}, *a, **arrays, **kw))

    def shapes(mode="train", *args, **kw):  # traced only
        return jax.eval_shape(lambda p: Transformer(cfg, mode=mode).apply({"params": p}, *args, **kw), params)

    plain = run()(params, ids)
    assert isinstance(plain, jax.Array) and plain.shape == (b, s, v)

    out = run(output=True)(params, ids)
    assert isinstance(out, ModelOutput) and out.cache is None
    assert out.logits.shape == (b, s, v) and out.hidden.shape == (b, s, d)
    assert_close(out.logits, plain, rtol=1e-6)
    assert_close(out.hidden @ head_kernel(params, cfg), out.logits, rtol=1e-5)  # hidden: the head's input
    pre = np.asarray(out.aux["pre_norm_hidden"], np.float64)
    assert pre.shape == (b, s, d)
    normed = pre / np.sqrt((pre**2).mean(-1, keepdims=True) + cfg.rms_norm_eps) * np.asarray(params["norm"]["weight"])
    assert_close(out.hidden, normed, rtol=1e-5)
    assert out.aux["balance_loss"].shape == () and out.aux["load"].shape == (n_moe, e)
    assert out.aux["route"].shape == (n_moe, b, s, k)
    assert out.aux["mtp_logits"].shape == (b, s, v) and out.aux["mtp_load"].shape == (e,)
    assert "mtp_logits" not in shapes("train", ids, output=True, compute_mtp=False).aux

    nohead = run(output=True, head=False)(params, ids)
    assert nohead.logits is None and "mtp_logits" not in nohead.aux
    assert_close(nohead.hidden, out.hidden, rtol=1e-6)
    assert_close(nohead.aux["mtp_hidden"] @ head_kernel(params, cfg), out.aux["mtp_logits"], rtol=1e-5)
    with pytest.raises(ValueError, match="output=True"):
        shapes("train", ids, head=False)

    cache = init_cache(cfg, b, 16)
    pre_out = run("prefill")(params, ids, cache=cache)
    assert isinstance(pre_out, ModelOutput)
    assert pre_out.logits.shape == (b, s, v) and pre_out.hidden.shape == (b, s, d)
    assert jax.tree.structure(pre_out.cache) == jax.tree.structure(cache)
    assert pre_out.aux["route"].shape == (n_moe, b, s, k) and "mtp_logits" not in pre_out.aux
    assert_close(pre_out.logits, plain, rtol=1e-5)
    at = shapes("prefill", ids, cache=cache, logits_at=jnp.asarray([7, 3]))
    assert at.logits.shape == (b, 1, v) and at.hidden.shape == (b, 1, d)
    assert at.aux["pre_norm_hidden"].shape == (b, s, d)
    dec = shapes("decode", ids[:, :1], jnp.full((b, 1), s, jnp.int32), cache=cache)
    assert dec.logits.shape == (b, 1, v) and dec.hidden.shape == (b, 1, d)
    assert dec.aux["route"].shape == (n_moe, b, 1, k)
    assert jax.tree.map(lambda x: x.shape, dec.cache) == jax.tree.map(jnp.shape, cache)
    with pytest.raises(ValueError, match="needs a cache"):
        shapes("decode", ids)
    with pytest.raises(ValueError, match="takes no cache"):
        shapes("train", ids, cache=cache)

    dense_cfg = config_lib.tiny_qwen2()
    dense_out = jax.eval_shape(lambda p: Transformer(dense_cfg).apply({"params": p}, ids, output=True),
                               _filled_params(dense_cfg))
    assert dense_out.hidden.shape == (b, s, dense_cfg.hidden_size) and "load" not in dense_out.aux


def test_mla_path_enum_picks_each_path(monkeypatch):
    """mla_path maps (mode, absorb) to one MLAPath; MLA dispatches on it (each path's attention runs)."""
    from r1jax.model import MLAPath, init_cache
    from r1jax.model import mla as mla_lib

    assert mla_lib.mla_path("train") is MLAPath.EXPANDED
    assert mla_lib.mla_path("train", absorb=True) is MLAPath.ABSORBED
    assert mla_lib.mla_path("prefill") is MLAPath.PREFILL
    assert mla_lib.mla_path("decode") is MLAPath.DECODE
    assert [p.uses_cache for p in MLAPath] == [False, False, True, True]
    for mode in ("prefill", "decode"):
        with pytest.raises(ValueError, match="absorb"):
            mla_lib.mla_path(mode, absorb=True)
    with pytest.raises(ValueError, match="mode"):
        mla_lib.mla_path("generate")
    assert mla_lib.MLA(None, mode="decode").path is MLAPath.DECODE

    ran = []
    for name in ("_expanded_attention", "_decode_attention", "absorbed_attention"):
        fn = getattr(mla_lib, name)
        monkeypatch.setattr(mla_lib, name, lambda *a, _n=name, _f=fn: (ran.append(_n), _f(*a))[1])
    cfg = config_lib.tiny_moe(num_hidden_layers=1, first_k_dense_replace=1, num_nextn_predict_layers=0)
    params = _filled_params(cfg)
    ids = jnp.asarray(_ids(1, 4))
    cache = init_cache(cfg, 1, 8)
    want = {"train": ["_expanded_attention"], "absorbed": ["absorbed_attention"],
            "prefill": ["_expanded_attention"], "decode": ["_decode_attention", "absorbed_attention"]}
    for case, expect in want.items():
        ran.clear()
        mode = "train" if case == "absorbed" else case
        kw = {} if mode == "train" else {"cache": cache}
        model = Transformer(cfg, mode=mode, absorb=case == "absorbed")
        jax.eval_shape(lambda p: model.apply({"params": p}, ids, **kw), params)  # the trace takes the path
        assert set(ran) == set(expect), (case, ran)  # (the layer scan may trace its body more than once)


def _np_route(x, w, bias, cfg):
    """Independent numpy router: sigmoid, group top-2 sums, group mask, top-k, weights.
    Also returns the smallest gap, relative to the scores' scale, between the last chosen and the
    first rejected group sum / expert score (how far the choices are from a tie)."""
    s = 1 / (1 + np.exp(-(x @ w)))
    c = s + bias
    n, e = c.shape
    g = cfg.n_group
    gs = np.sort(c.reshape(n, g, e // g), -1)[..., -2:].sum(-1)
    keep = np.argsort(-gs, -1)[:, : cfg.topk_group]
    gs_desc = -np.sort(-gs, -1)
    gap = (gs_desc[:, cfg.topk_group - 1] - gs_desc[:, cfg.topk_group]).min()
    mask = np.zeros((n, g), bool)
    np.put_along_axis(mask, keep, True, -1)
    c = np.where(np.repeat(mask, e // g, 1), c, -np.inf)
    idx = np.argsort(-c, -1)[:, : cfg.num_experts_per_tok]
    c_desc = -np.sort(-c, -1)
    k = cfg.num_experts_per_tok
    gap = min(gap, (c_desc[:, k - 1] - c_desc[:, k]).min()) / np.abs(s + bias).max()
    wt = np.take_along_axis(s, idx, -1)
    wt = wt / wt.sum(-1, keepdims=True) * cfg.routed_scaling_factor
    return idx, wt, gap


def test_router_matches_numpy():
    cfg = config_lib.tiny_moe()
    rs = np.random.RandomState(0)
    x, w, bias = rs.randn(50, 64), rs.randn(64, 8) * 0.3, rs.randn(8) * 0.3
    s = jax.nn.sigmoid(jnp.asarray(x @ w, jnp.float32))
    idx, wt = moe_lib.route(s, jnp.asarray(bias, jnp.float32), cfg)
    ridx, rwt, gap = _np_route(x, w, bias, cfg)
    # float32 (here) vs float64 (numpy) scores differ by ~1e-7 of their scale: the choices below can
    # only be compared exactly because this data has no near-tie (smallest gap 1.7e-3 of the scale)
    assert gap > 1e-4, gap
    order = np.argsort(np.asarray(idx), -1)
    rorder = np.argsort(ridx, -1)
    np.testing.assert_array_equal(np.take_along_axis(np.asarray(idx), order, -1), np.take_along_axis(ridx, rorder, -1))
    np.testing.assert_allclose(np.take_along_axis(np.asarray(wt), order, -1), np.take_along_axis(rwt, rorder, -1),
                               rtol=1e-5)
    # the bias changes the choice but not the weights' source (un-biased scores)
    assert not np.array_equal(_np_route(x, w, 0 * bias, cfg)[0], ridx)


@pytest.mark.parametrize("impl", ["ragged", "blocked", "grouped", "grouped_block8", "blocked_overflow"])
def test_moe_dispatch_equals_dense_reference(impl):
    cfg = config_lib.tiny_moe()
    rs = np.random.RandomState(1)
    n, d, e, i = 37, 64, 8, 32
    x = jnp.asarray(rs.randn(n, d), jnp.float32)
    idx = jnp.asarray(np.stack([rs.choice(e, 2, replace=False) for _ in range(n)]), jnp.int32)
    w = jnp.asarray(rs.rand(n, 2), jnp.float32)
    wg, wu = (jnp.asarray(rs.randn(e, d, i) * 0.1, jnp.float32) for _ in range(2))
    wd = jnp.asarray(rs.randn(e, i, d) * 0.1, jnp.float32)
    fn = {"grouped_block8": functools.partial(cpu_experts.experts_grouped, block=8),  # several blocks per expert
          "blocked_overflow": functools.partial(cpu_experts.experts_blocked, capacity_factor=0.5, block=8),
          }.get(impl) or backends.expert_fn(impl)

    def loss(f, *a):
        return (f(*a) ** 2).sum()

    assert_close(fn(x, idx, w, wg, wu, wd), experts_lib.experts_dense(x, idx, w, wg, wu, wd), rtol=1e-5)
    g1 = jax.grad(lambda *a: loss(fn, *a), argnums=(0, 2, 3, 4, 5))(x, idx, w, wg, wu, wd)
    g2 = jax.grad(lambda *a: loss(experts_lib.experts_dense, *a), argnums=(0, 2, 3, 4, 5))(x, idx, w, wg, wu, wd)
    for name, a, b in zip(("dx", "dw", "dwg", "dwu", "dwd"), g1, g2):
        assert_close(a, b, rtol=5e-5, err_msg=name)  # ~1e-6 seen: sums over experts and tokens


def test_cpu_dispatch_picks_grouped_for_many_tokens_and_stays_exact():
    rs = np.random.RandomState(3)
    e, d, i = 8, 32, 16
    wg, wu = (jnp.asarray(rs.randn(e, d, i) * 0.1, jnp.float32) for _ in range(2))
    wd = jnp.asarray(rs.randn(e, i, d) * 0.1, jnp.float32)
    for n in (40, 600):  # mean load 10 (blocked) and 150 >= one 128-row block per expert (grouped)
        x = jnp.asarray(rs.randn(n, d), jnp.float32)
        p = np.r_[np.full(2, 0.3), np.full(e - 2, 0.4 / (e - 2))]  # two hot experts: several blocks each
        idx = jnp.asarray(np.stack([rs.choice(e, 2, replace=False, p=p) for _ in range(n)]), jnp.int32)
        w = jnp.asarray(rs.rand(n, 2), jnp.float32)
        want = cpu_experts.experts_grouped if n * 2 >= e * cpu_experts.GROUPED_BLOCK else cpu_experts.experts_blocked
        assert (n == 600) == (want is cpu_experts.experts_grouped)
        got = jax.jit(cpu_experts.experts_cpu)(x, idx, w, wg, wu, wd)
        assert_close(got, experts_lib.experts_dense(x, idx, w, wg, wu, wd), rtol=1e-5)
        # exact: experts_cpu dispatches in Python, so both jits trace the same program
        np.testing.assert_array_equal(got, jax.jit(want)(x, idx, w, wg, wu, wd))


def test_model_moe_impls_agree_and_load_counts_tokens():
    cfg = config_lib.tiny_moe()
    params = init_params(cfg, jax.random.PRNGKey(1))
    ids = jnp.asarray(_ids(2, 16))
    mask = jnp.asarray(np.r_[[1] * 16, [1] * 10 + [0] * 6].reshape(2, 16).astype(bool))
    outs = {}
    for impl in ("dense", "ragged", "blocked", "grouped", "cpu"):
        out = Transformer(cfg, moe_impl=impl).apply({"params": params}, ids, token_mask=mask, output=True)
        outs[impl] = (out.logits, out.aux)
    for impl in ("ragged", "blocked", "grouped", "cpu"):
        assert_close(outs[impl][0], outs["dense"][0], rtol=1e-5, err_msg=impl)
    load = np.asarray(outs["dense"][1]["load"])
    assert load.shape == (2, 8)
    np.testing.assert_allclose(load.sum(-1), 26 * 2)  # 26 unmasked tokens x top-2, per MoE layer


def test_update_router_bias():
    bias = jnp.zeros(4)
    load = jnp.asarray([10.0, 0.0, 5.0, 5.0])
    np.testing.assert_allclose(update_router_bias(bias, load, 0.1), [-0.1, 0.1, 0.0, 0.0])


def test_sequence_balance_loss_matches_numpy():
    cfg = config_lib.tiny_moe()
    rs = np.random.RandomState(2)
    scores = rs.rand(2, 5, 8)
    idx = np.argsort(-scores, -1)[..., :2]
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)
    got = moe_lib.sequence_balance_loss(jnp.asarray(scores), jnp.asarray(idx), jnp.asarray(mask), cfg)
    ref = []
    for b in range(2):
        t = mask[b].sum()
        f = np.zeros(8)
        p = np.zeros(8)
        for s in range(5):
            if mask[b, s]:
                f[idx[b, s]] += 8 / (2 * t)
                p += scores[b, s] / scores[b, s].sum() / t
        ref.append((f * p).sum())
    assert float(got) == pytest.approx(np.mean(ref), rel=1e-5)


def test_671b_param_counts_and_abstract_init():
    cfg = config_lib.deepseek_v3_671b()
    c = config_lib.count_params(cfg)
    assert 670.5e9 < c["total"] < 671.5e9
    assert 36e9 < c["activated"] < 38e9
    from r1jax.model import abstract_params
    import flax.linen as nn

    shapes = nn.unbox(abstract_params(cfg))  # eval_shape: nothing allocated
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    assert n == c["total"] + c["mtp"]
    assert shapes["moe_layers"]["mlp"]["experts_gate_proj"].shape == (58, 256, 7168, 2048)


def test_fp8_checkpoint_loads_within_quantization_error(hf_ckpts, tmp_path):
    model_hf, path = hf_ckpts["v3_qlora_yarn_bias"]
    f = SafeTensorsFile(os.path.join(path, "model.safetensors"))
    out, quantized = {}, []
    for k in f.keys():
        w = np.array(f.get(k))
        if w.ndim == 2 and hf_ckpt._fp8_eligible(k):
            q, s = hf_ckpt.quantize_fp8(w)
            out[k], out[k[:-6] + "weight_scale_inv"] = q, s
            quantized.append(k)
        else:
            out[k] = w
    assert len(quantized) > 20
    save_file(out, tmp_path / "model.safetensors")
    cfg = json.load(open(os.path.join(path, "config.json")))
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}
    json.dump(cfg, open(tmp_path / "config.json", "w"))
    model, params = r1jax.from_pretrained(tmp_path)
    _, ref_params = r1jax.from_pretrained(path)
    # every dequantized weight within e4m3's rounding of the original: 3 mantissa bits (2^-4 relative)
    # for normals; below 2^-6 * block scale (subnormals) half a step of 2^-9, 2^-10 x the block scale =
    # max|block| / 448 (<= max|tensor| / 448)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.all(np.abs(a - b) <= 2**-4 * np.abs(b) + 2**-10 * np.abs(b).max() / 448)
    # the logits equal transformers' run on weights dequantized independently here (numpy kron)
    from transformers import AutoModelForCausalLM

    deq_t = {k: v for k, v in out.items() if not k.endswith("_scale_inv")}
    for k in quantized:
        q, s = out[k].astype(np.float32), out[k[:-6] + "weight_scale_inv"]
        deq_t[k] = q * np.kron(s, np.ones((128, 128), np.float32))[: q.shape[0], : q.shape[1]]
    (tmp_path / "deq").mkdir()
    save_file(deq_t, tmp_path / "deq" / "model.safetensors")
    json.dump(json.load(open(os.path.join(path, "config.json"))), open(tmp_path / "deq" / "config.json", "w"))
    deq = AutoModelForCausalLM.from_pretrained(tmp_path / "deq", attn_implementation="eager").float().eval()
    ids = _ids()
    assert_close(model.apply({"params": params}, jnp.asarray(ids)), hf_logits(deq, ids), rtol=1e-4)
    # and the quantize -> dequantize round trip of one tensor is exact on the grid
    w = np.array(f.get(quantized[0]))
    q, s = hf_ckpt.quantize_fp8(w)
    s_full = np.kron(s, np.ones((128, 128), np.float32))[: w.shape[0], : w.shape[1]]  # each weight's block scale
    err = np.abs(hf_ckpt.dequantize_fp8(q, s).astype(np.float64) - w)
    assert np.all(err <= 2**-4 * np.abs(w) + 2**-10 * s_full), err.max()  # normals / subnormals, as above


def test_mtp_weights_round_trip_and_sharded_save(tmp_path):
    cfg = config_lib.tiny_moe()
    params = init_params(cfg, jax.random.PRNGKey(5))
    r1jax.save_pretrained(params, cfg, tmp_path, max_shard_bytes=200_000)
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    keys = json.load(open(tmp_path / "model.safetensors.index.json"))["weight_map"]
    assert "model.layers.3.eh_proj.weight" in keys and "model.layers.3.mlp.experts.7.up_proj.weight" in keys
    assert "model.layers.3.shared_head.head.weight" in keys
    model, back = r1jax.from_pretrained(tmp_path)
    assert model.cfg.num_nextn_predict_layers == 1
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_checkpoints_name_the_tensor(hf_ckpts, tmp_path):
    _, path = hf_ckpts["qwen2"]
    f = SafeTensorsFile(os.path.join(path, "model.safetensors"))
    tensors = {k: np.array(f.get(k)) for k in f.keys()}
    cfg = open(os.path.join(path, "config.json")).read()

    def write(t, sub):
        d = tmp_path / sub
        d.mkdir()
        save_file(t, d / "model.safetensors")
        (d / "config.json").write_text(cfg)
        return d

    miss = dict(tensors)
    miss.pop("model.layers.1.mlp.up_proj.weight")
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        r1jax.from_pretrained(write(miss, "missing"))
    extra = dict(tensors, **{"model.layers.9.foo.weight": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"model\.layers\.9\.foo\.weight"):
        r1jax.from_pretrained(write(extra, "extra"))
    bad = dict(tensors)
    bad["model.layers.0.self_attn.k_proj.weight"] = np.zeros((5, 64), np.float32)
    with pytest.raises(ValueError, match=r"k_proj\.weight.*shape"):
        r1jax.from_pretrained(write(bad, "shape"))


def test_config_errors_name_the_key(tmp_path):
    good = config_lib.to_hf_config(config_lib.tiny_moe())
    with pytest.raises(ValueError, match="frobnicate"):
        config_lib.from_hf_config(dict(good, frobnicate=1))
    with pytest.raises(ValueError, match="topk_group"):
        config_lib.from_hf_config(dict(good, topk_group=9))
    with pytest.raises(ValueError, match="num_key_value_heads"):
        config_lib.make_config(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(KeyError, match="hidden_sise"):
        config_lib.make_config(hidden_sise=3)
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        config_lib.from_hf_config(p)


def test_hf_config_round_trip_of_presets():
    for name in ("tiny_moe", "tiny_qwen2", "tiny_llama", "deepseek_v3_671b"):
        cfg = config_lib.get_preset(name)
        back = config_lib.from_hf_config(config_lib.to_hf_config(cfg), dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                         remat_policy=cfg.remat_policy)
        for k in ("hidden_size", "q_lora_rank", "n_group", "rope_interleave", "num_nextn_predict_layers",
                  "tie_word_embeddings", "head_dim"):
            assert back[k] == cfg[k], (name, k)
        assert back.rope_scaling.to_dict() == cfg.rope_scaling.to_dict(), name


def test_lm_head_cpu_backward_equals_reference_and_params_unchanged():
    """LMHead: the CPU custom-backward matmul has the reference's value and gradients, and the
    param ("lm_head"/"kernel" [hidden, vocab]) is initialised exactly as nn.DenseGeneral did."""
    import flax.linen as nn

    from r1jax.backends.cpu_lm_head import head_matmul_cpu
    from r1jax.model import layers

    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(24, 16).astype(np.float32))
    k = jnp.asarray(rng.randn(16, 40).astype(np.float32))
    g = jnp.asarray(rng.randn(24, 40).astype(np.float32))
    y, vjp = jax.vjp(head_matmul_cpu, x, k)
    y_ref, vjp_ref = jax.vjp(layers.head_matmul_reference, x, k)
    assert_close(y, y_ref, rtol=1e-5)
    for name, a, b in zip(("dx", "dk"), vjp(g), vjp_ref(g)):
        assert a.shape == b.shape
        assert_close(a, b, rtol=1e-5, err_msg=name)

    cfg = config_lib.tiny_moe()
    h = jnp.asarray(rng.randn(2, 3, cfg.hidden_size).astype(np.float32))
    new = layers.LMHead(cfg).init(jax.random.PRNGKey(3), h)
    old = nn.DenseGeneral(cfg.vocab_size, use_bias=False, kernel_init=layers.normal_init(cfg, ("embed", "vocab"))).init(
        jax.random.PRNGKey(3), h)
    np.testing.assert_array_equal(np.asarray(nn.unbox(new)["params"]["kernel"]),
                                  np.asarray(nn.unbox(old)["params"]["kernel"]))
    assert new["params"]["kernel"].names == ("embed", "vocab")
    assert_close(layers.LMHead(cfg).apply(new, h), h @ nn.unbox(new)["params"]["kernel"], rtol=1e-5)


def test_dense_configs_refuse_interleaved_rope_that_their_checkpoints_cannot_hold():
    """Qwen2/Llama checkpoints are half-split: a config with rope_interleave=True would save and
    reload as another model (the toy student once did: trained CE 0.19, reloaded CE 6)."""
    from r1jax import config as config_lib

    assert not config_lib.toy_qwen2().rope_interleave
    with pytest.raises(ValueError, match="rope_interleave"):
        config_lib.tiny_qwen2(rope_interleave=True)
    cfg = config_lib.toy_qwen2()
    with pytest.raises(ValueError, match="rope_interleave"):  # a changed config is made, so checked, again
        config_lib.replace(cfg, rope_interleave=True)
    with pytest.raises(Exception, match="immutable|frozen|FrozenConfigDict"):  # no change after the checks
        cfg.rope_interleave = True
    hand_made = ml_collections.ConfigDict(cfg.to_dict())  # a config built by hand is checked before it is saved
    hand_made.rope_interleave = True
    with pytest.raises(ValueError, match="rope_interleave"):
        config_lib.to_hf_config(hand_made)
