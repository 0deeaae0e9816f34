"""HF checkpoints in and out: `from_pretrained(path)` and `save_pretrained(params, cfg, path)`.

Reads `config.json` and one or several safetensors files (`model.safetensors.index.json`), in the
layout transformers and the DeepSeek releases use: per-expert keys
(`model.layers.{i}.mlp.experts.{j}.gate_proj.weight`), the MTP module as layer index
`num_hidden_layers` (`enorm`, `hnorm`, `eh_proj`, `shared_head.norm`, and a full decoder layer),
and FP8 e4m3 weights with `weight_scale_inv` (128x128 blocks) dequantized on load. A missing,
extra or mis-shaped tensor fails, naming the tensor and the file.

Layout mapping (HF torch Linear `weight [out, in]` -> flax kernel `[in, out...]`) lives in
`tensor_specs(cfg)`: one entry per HF tensor with the param path, the stack index of the layer
(scanned layers are stacked on a leading axis) and the reshape.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from r1jax import config as config_lib
from r1jax.checkpoint.safetensors_io import SafeTensorsFile, save_file
from r1jax.model import Transformer, abstract_params
from r1jax.parallel import handoff
from r1jax.parallel.sharding import param_shardings

FP8_BLOCK = 128


@dataclasses.dataclass(frozen=True)
class Spec:
    """One HF tensor <-> one param (or one slice of a stacked/expert param)."""

    hf_key: str
    path: tuple[str, ...]  # path in the params pytree
    index: tuple[int, ...]  # leading indices into the param (layer in stack, expert)
    hf_shape: tuple[int, ...]
    to_param: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _linear(in_dim, out_shape):
    """torch weight [prod(out), in] <-> kernel [in, *out]."""
    out_shape = tuple(out_shape)
    n_out = int(np.prod(out_shape))
    return ((n_out, in_dim), lambda w: w.T.reshape((in_dim,) + out_shape),
            lambda k: k.reshape(in_dim, n_out).T)


def _linear_in(in_shape, out_dim):
    """torch weight [out, prod(in)] <-> kernel [*in, out] (o_proj over heads)."""
    in_shape = tuple(in_shape)
    n_in = int(np.prod(in_shape))
    return ((out_dim, n_in), lambda w: w.T.reshape(in_shape + (out_dim,)), lambda k: k.reshape(n_in, out_dim).T)


def _same(shape):
    return (tuple(shape), lambda w: w, lambda k: k)


def _bias(out_shape):
    out_shape = tuple(out_shape)
    n = int(np.prod(out_shape))
    return ((n,), lambda b: b.reshape(out_shape), lambda b: b.reshape(n))


def _layer_specs(cfg, prefix: str, path: tuple, index: tuple, moe: bool) -> list[Spec]:
    d = cfg.hidden_size
    out: list[Spec] = []

    def add(name, sub, shape_fns, idx=index):
        shp, tp, th = shape_fns
        out.append(Spec(f"{prefix}.{name}", path + sub, idx, shp, tp, th))

    add("input_layernorm.weight", ("input_layernorm", "weight"), _same((d,)))
    add("post_attention_layernorm.weight", ("post_attention_layernorm", "weight"), _same((d,)))
    a = ("self_attn",)
    h = cfg.num_attention_heads
    if cfg.model_type == "deepseek_v3":
        qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        r = cfg.kv_lora_rank
        if cfg.q_lora_rank:
            add("self_attn.q_a_proj.weight", a + ("q_a_proj", "kernel"), _linear(d, (cfg.q_lora_rank,)))
            add("self_attn.q_a_layernorm.weight", a + ("q_a_layernorm", "weight"), _same((cfg.q_lora_rank,)))
            add("self_attn.q_b_proj.weight", a + ("q_b_proj", "kernel"), _linear(cfg.q_lora_rank, (h, qk)))
            if cfg.attention_bias:
                add("self_attn.q_a_proj.bias", a + ("q_a_proj", "bias"), _bias((cfg.q_lora_rank,)))
        else:
            add("self_attn.q_proj.weight", a + ("q_proj", "kernel"), _linear(d, (h, qk)))
        add("self_attn.kv_a_proj_with_mqa.weight", a + ("kv_a_proj_with_mqa", "kernel"),
            _linear(d, (r + cfg.qk_rope_head_dim,)))
        if cfg.attention_bias:
            add("self_attn.kv_a_proj_with_mqa.bias", a + ("kv_a_proj_with_mqa", "bias"),
                _bias((r + cfg.qk_rope_head_dim,)))
        add("self_attn.kv_a_layernorm.weight", a + ("kv_a_layernorm", "weight"), _same((r,)))
        add("self_attn.kv_b_proj.weight", a + ("kv_b_proj",), _linear(r, (h, cfg.qk_nope_head_dim + cfg.v_head_dim)))
        add("self_attn.o_proj.weight", a + ("o_proj", "kernel"), _linear_in((h, cfg.v_head_dim), d))
    else:
        hd, kvh = cfg.head_dim, cfg.num_key_value_heads
        for nm, nh in (("q_proj", h), ("k_proj", kvh), ("v_proj", kvh)):
            add(f"self_attn.{nm}.weight", a + (nm, "kernel"), _linear(d, (nh, hd)))
            if cfg.qkv_bias or cfg.attention_bias:
                add(f"self_attn.{nm}.bias", a + (nm, "bias"), _bias((nh, hd)))
        add("self_attn.o_proj.weight", a + ("o_proj", "kernel"), _linear_in((h, hd), d))
    if cfg.model_type != "deepseek_v3" and cfg.attention_bias:
        add("self_attn.o_proj.bias", a + ("o_proj", "bias"), _bias((d,)))
    elif cfg.model_type == "deepseek_v3" and cfg.attention_bias:
        add("self_attn.o_proj.bias", a + ("o_proj", "bias"), _bias((d,)))

    def mlp(hf_prefix, sub, inter):
        add(f"{hf_prefix}.gate_proj.weight", sub + ("gate_proj", "kernel"), _linear(d, (inter,)))
        add(f"{hf_prefix}.up_proj.weight", sub + ("up_proj", "kernel"), _linear(d, (inter,)))
        add(f"{hf_prefix}.down_proj.weight", sub + ("down_proj", "kernel"), _linear(inter, (d,)))

    if moe:
        e, inter = cfg.n_routed_experts, cfg.moe_intermediate_size
        add("mlp.gate.weight", ("mlp", "gate"), _linear(d, (e,)))
        add("mlp.gate.e_score_correction_bias", ("mlp", "e_score_correction_bias"), _same((e,)))
        for j in range(e):
            for nm, fns in (("gate_proj", _linear(d, (inter,))), ("up_proj", _linear(d, (inter,))),
                            ("down_proj", _linear(inter, (d,)))):
                add(f"mlp.experts.{j}.{nm}.weight", ("mlp", f"experts_{nm}"), fns, idx=index + (j,))
        if cfg.n_shared_experts:
            mlp("mlp.shared_experts", ("mlp", "shared_experts"), inter * cfg.n_shared_experts)
    else:
        mlp("mlp", ("mlp",), cfg.intermediate_size)
    return out


def tensor_specs(cfg) -> list[Spec]:
    """Every HF tensor of the model (MTP included when cfg.num_nextn_predict_layers)."""
    d, v = cfg.hidden_size, cfg.vocab_size
    specs = [Spec("model.embed_tokens.weight", ("embed_tokens", "embedding"), (), (v, d), lambda w: w, lambda w: w),
             Spec("model.norm.weight", ("norm", "weight"), (), (d,), lambda w: w, lambda w: w)]
    if not cfg.tie_word_embeddings:
        specs.append(Spec("lm_head.weight", ("lm_head", "kernel"), (), (v, d), lambda w: w.T, lambda k: k.T))
    n_dense = config_lib.num_dense_layers(cfg)
    for i in range(cfg.num_hidden_layers):
        if i < n_dense:
            specs += _layer_specs(cfg, f"model.layers.{i}", ("dense_layers",), (i,), False)
        else:
            specs += _layer_specs(cfg, f"model.layers.{i}", ("moe_layers",), (i - n_dense,), True)
    if cfg.num_nextn_predict_layers:
        L = cfg.num_hidden_layers
        p = f"model.layers.{L}"
        moe = config_lib.is_moe(cfg) and L >= cfg.first_k_dense_replace
        specs += _layer_specs(cfg, p, ("mtp", "block"), (), moe)
        for nm in ("enorm", "hnorm"):
            specs.append(Spec(f"{p}.{nm}.weight", ("mtp", nm, "weight"), (), (d,), lambda w: w, lambda w: w))
        specs.append(Spec(f"{p}.shared_head.norm.weight", ("mtp", "shared_head_norm", "weight"), (), (d,),
                          lambda w: w, lambda w: w))
        shp, tp, th = _linear(2 * d, (d,))
        specs.append(Spec(f"{p}.eh_proj.weight", ("mtp", "eh_proj", "kernel"), (), shp, tp, th))
    return specs


def _mtp_shared_keys(cfg) -> dict[str, str]:
    """MTP tensors the release stores as copies of main ones: key -> the main key it must equal."""
    if not cfg.num_nextn_predict_layers:
        return {}
    L = cfg.num_hidden_layers
    head = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
    return {f"model.layers.{L}.embed_tokens.weight": "model.embed_tokens.weight",
            f"model.layers.{L}.shared_head.head.weight": head}


# ------------------------------------------------------------------------------------ reading


class _Reader:
    """All tensors of a checkpoint folder: one file or an index over shards."""

    def __init__(self, path: str):
        self.path = path
        idx = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        self.files: dict[str, SafeTensorsFile] = {}
        self.where: dict[str, str] = {}
        if os.path.exists(idx):
            with open(idx) as f:
                try:
                    wm = json.load(f)["weight_map"]
                except (json.JSONDecodeError, KeyError) as e:
                    raise ValueError(f"{idx}: not a safetensors index ({e})") from None
            for k, fn in wm.items():
                self.where[k] = os.path.join(path, fn)
        elif os.path.exists(single):
            self.where = {k: single for k in SafeTensorsFile(single).keys()}
        else:
            files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
            if not files:
                raise FileNotFoundError(f"{path}: no model.safetensors, index, or *.safetensors files")
            for fn in files:
                for k in SafeTensorsFile(os.path.join(path, fn)).keys():
                    self.where[k] = os.path.join(path, fn)

    def file(self, k) -> SafeTensorsFile:
        fn = self.where[k]
        if fn not in self.files:
            if not os.path.exists(fn):
                raise FileNotFoundError(f"{fn}: shard named in the index for tensor {k!r} is missing")
            self.files[fn] = SafeTensorsFile(fn)
        return self.files[fn]

    def shape(self, k):
        return self.file(k).shape(k)

    def get(self, k) -> np.ndarray:
        return self.file(k).get(k)


def dequantize_fp8(w: np.ndarray, scale_inv: np.ndarray, block: int = FP8_BLOCK) -> np.ndarray:
    """w: [out, in] float8_e4m3fn, scale_inv: [ceil(out/128), ceil(in/128)] -> float32 w * scale."""
    out_d, in_d = w.shape
    s = np.repeat(np.repeat(scale_inv.astype(np.float32), block, 0), block, 1)[:out_d, :in_d]
    return w.astype(np.float32) * s


def quantize_fp8(w: np.ndarray, block: int = FP8_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise e4m3 quantization as the DeepSeek-V3 release: returns (w_fp8, weight_scale_inv)."""
    w = np.asarray(w, np.float32)
    out_d, in_d = w.shape
    nb_o, nb_i = -(-out_d // block), -(-in_d // block)
    pad = np.zeros((nb_o * block, nb_i * block), np.float32)
    pad[:out_d, :in_d] = w
    blocks = pad.reshape(nb_o, block, nb_i, block)
    amax = np.abs(blocks).max(axis=(1, 3))
    fmax = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)
    scale = np.where(amax > 0, amax / fmax, 1.0).astype(np.float32)
    q = (blocks / scale[:, None, :, None]).reshape(pad.shape)[:out_d, :in_d]
    return q.astype(ml_dtypes.float8_e4m3fn), scale


def _set(tree: dict, path: tuple, value):
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple):
    for p in path:
        tree = tree[p]
    return tree


def load_params(path: str, cfg, shardings=None) -> dict:
    """Reads the params pytree of `cfg` from an HF checkpoint folder (see module doc).

    Each param is stored in the dtype `cfg` gives it: `cfg.param_dtype` for the weights, float32
    for the norm weights and the router's correction bias (whatever the checkpoint holds)."""

    reader = _Reader(path)
    specs = tensor_specs(cfg)
    present = set(reader.where)
    expected = {s.hf_key for s in specs}
    # Weights with weight_scale_inv are FP8: the scale tensors are expected too.
    scale_keys = {k for k in present if k.endswith(".weight_scale_inv")}
    shared = _mtp_shared_keys(cfg)
    ignorable = {k for k in present if k.endswith("rotary_emb.inv_freq")} | set(shared)
    if cfg.tie_word_embeddings:  # a tied checkpoint may still ship the head (transformers ties it to the embedding)
        ignorable.add("lm_head.weight")
    missing = sorted(expected - present)
    if missing:
        raise ValueError(f"{path}: checkpoint is missing tensor {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(present - expected - scale_keys - ignorable)
    if extra:
        raise ValueError(f"{path}: unexpected tensor {extra[0]!r} in {reader.where[extra[0]]}"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    abstract = nn.unbox(abstract_params(cfg))
    out: dict = {}
    for s in specs:
        f = reader.file(s.hf_key)
        if tuple(f.shape(s.hf_key)) != s.hf_shape:
            raise ValueError(f"{f.path}: tensor {s.hf_key!r} has shape {f.shape(s.hf_key)}, expected {s.hf_shape}")
        w = f.get(s.hf_key)
        sk = s.hf_key[: -len("weight")] + "weight_scale_inv" if s.hf_key.endswith(".weight") else None
        if w.dtype == np.dtype(ml_dtypes.float8_e4m3fn):
            if sk not in present:
                raise ValueError(f"{f.path}: FP8 tensor {s.hf_key!r} has no {sk!r}")
            scale = reader.get(sk)
            exp = (-(-w.shape[0] // FP8_BLOCK), -(-w.shape[1] // FP8_BLOCK))
            if tuple(scale.shape) != exp:
                raise ValueError(f"{reader.where[sk]}: tensor {sk!r} has shape {scale.shape}, expected {exp}")
            w = dequantize_fp8(w, scale)
        val = s.to_param(np.asarray(w, np.float32) if w.dtype != np.float32 else np.asarray(w))
        full = _get(abstract, s.path)
        try:
            arr = _get(out, s.path)
        except KeyError:
            arr = np.empty(full.shape, full.dtype)
            _set(out, s.path, arr)
        if s.index:
            arr[s.index] = val
        else:
            arr[...] = val
    for k, main in shared.items():  # the release keeps copies: check they match what we share
        if k in present and reader.shape(k) != reader.shape(main):
            raise ValueError(f"{reader.where[k]}: tensor {k!r} shape {reader.shape(k)} != {main!r}")
    missing_params = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]
                      if _try_get(out, p) is None]
    if missing_params:
        raise ValueError(f"{path}: no tensor maps to param {missing_params[0]}")
    if shardings is not None:
        return jax.tree.map(lambda a, sh: jax.device_put(a, sh), out, shardings)
    return jax.tree.map(jnp.asarray, out)


def _try_get(tree, keypath):
    try:
        for k in keypath:
            tree = tree[k.key]
        return tree
    except (KeyError, TypeError):
        return None


def from_pretrained(path: str | os.PathLike, dtype=None, mesh=None, **overrides):
    """Loads an HF checkpoint folder -> (model, params).

    dtype: param and compute dtype (e.g. jnp.bfloat16 for inference); default float32. For training
      keep float32 master weights and compute in bf16: `param_dtype="float32", dtype="bfloat16"`
      (norm weights and the router bias are float32 either way).
    mesh: a `jax.sharding.Mesh`; params are placed straight into their sharded layout.
    overrides: r1jax config keys (param_dtype, attention_impl, moe_impl, remat_policy, ...).

    The config's `eos_token_id` becomes the set that ends generation: config.json's ids, then those
    of generation_config.json (an int or a list, e.g. Llama 3's three) when the folder has one.
    """

    path = os.fspath(path)
    if dtype is not None:
        name = jnp.dtype(dtype).name
        overrides.setdefault("param_dtype", name)
        overrides.setdefault("dtype", name)
    cfg = config_lib.from_hf_config(path, **overrides)
    gen_eos = generation_eos_ids(path)
    if gen_eos:
        cfg = config_lib.replace(cfg, eos_token_id=tuple(dict.fromkeys(tuple(cfg.eos_token_id) + gen_eos)))
    if cfg.num_nextn_predict_layers:
        L = cfg.num_hidden_layers
        probe = _Reader(path).where
        if not any(k.startswith(f"model.layers.{L}.") for k in probe):
            print(f"r1jax: {path}: config.json has num_nextn_predict_layers={cfg.num_nextn_predict_layers} but "
                  f"no model.layers.{L}.* tensors (transformers does not save MTP): loading without MTP",
                  file=sys.stderr)
            cfg = config_lib.replace(cfg, num_nextn_predict_layers=0)
    shardings = None
    if mesh is not None:
        shardings = param_shardings(cfg, mesh)
    params = load_params(path, cfg, shardings=shardings)
    return Transformer(cfg), params


def generation_eos_ids(path: str) -> tuple:
    """`eos_token_id` of the folder's generation_config.json (int or list) as a tuple; () if none."""
    p = os.path.join(path, "generation_config.json")
    if not os.path.exists(p):
        return ()
    try:
        with open(p) as f:
            g = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: cannot read generation config ({e})") from None
    try:
        return config_lib.eos_ids(g.get("eos_token_id") if isinstance(g, dict) else None)
    except (TypeError, ValueError):
        raise ValueError(f"{p}: eos_token_id={g.get('eos_token_id')!r} is not an int or a list of ints") from None


# ------------------------------------------------------------------------------------ writing


def save_pretrained(params, cfg, path: str | os.PathLike, *, dtype=None, max_shard_bytes: int = 4 << 30,
                    fp8: bool = False, tokenizer=None) -> None:
    """Writes `config.json` + safetensors (sharded with an index above `max_shard_bytes`).

    `params` may be sharded over a mesh, also one spanning several processes (then every process
    calls this; process 0 writes): each tensor is gathered and cast on its own
    (r1jax.parallel.handoff.host_leaves), never a replica of all the weights on a device.

    dtype: storage dtype (default the params'). fp8=True writes 2-D projection weights as
    float8_e4m3fn with `weight_scale_inv`, as the DeepSeek-V3 release does (norms, embeddings,
    router and head stay in `dtype`). tokenizer: an `r1jax.data.tokenizer.Tokenizer` whose files
    (tokenizer.json, tokenizer_config.json, chat template, generation_config.json) are written beside
    the weights, so transformers and vLLM load the folder as it is.
    """
    path = os.fspath(path)
    # one tensor at a time to the host, cast on device to the storage dtype (fp8 quantizes from the
    # params' values); with several processes every process joins each gather, process 0 writes
    host = handoff.host_leaves(params, None if fp8 else dtype)
    if jax.process_index() != 0:
        return
    os.makedirs(path, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save(path)
    tensors: dict[str, np.ndarray] = {}
    for s in tensor_specs(cfg):
        full = _get(host, s.path)
        val = full[s.index] if s.index else full
        w = s.to_hf(np.asarray(val, np.float32))
        out_dt = np.dtype(dtype) if dtype is not None else full.dtype
        if fp8 and w.ndim == 2 and _fp8_eligible(s.hf_key):
            q, sc = quantize_fp8(w)
            tensors[s.hf_key] = q
            tensors[s.hf_key[: -len("weight")] + "weight_scale_inv"] = sc
        else:
            tensors[s.hf_key] = w.astype(out_dt)
    for k, main in _mtp_shared_keys(cfg).items():
        if main in tensors:
            tensors[k] = tensors[main]
    hf_cfg = config_lib.to_hf_config(cfg)
    if dtype is not None:
        hf_cfg["torch_dtype"] = np.dtype(dtype).name
    if fp8:
        hf_cfg["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                         "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_cfg, f, indent=2)
    # shard
    shards, cur, size = [], {}, 0
    for k in sorted(tensors):
        nb = tensors[k].nbytes
        if cur and size + nb > max_shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = tensors[k]
        size += nb
    shards.append(cur)
    for fn in os.listdir(path):
        if fn.endswith(".safetensors") or fn == "model.safetensors.index.json":
            os.remove(os.path.join(path, fn))
    if len(shards) == 1:
        save_file(shards[0], os.path.join(path, "model.safetensors"))
        return
    wm = {}
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, os.path.join(path, fn))
        wm.update({k: fn for k in sh})
    total = sum(t.nbytes for t in tensors.values())
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)


def _fp8_eligible(key: str) -> bool:
    skip = ("embed_tokens", "lm_head", "layernorm", "norm.weight", "mlp.gate.weight", "eh_proj", "shared_head")
    return key.endswith(".weight") and not any(s in key for s in skip)
