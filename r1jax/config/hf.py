"""HF `config.json` <-> r1jax model config: `from_hf_config` (as transformers reads the file, failing on
keys that change the math) and `to_hf_config` (its inverse)."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from r1jax.config.schema import base_config, eos_ids, make_config, validate

# Keys of released config.json files that carry no meaning for the forward pass (read and ignored).
_HF_IGNORED = {
    "architectures", "auto_map", "transformers_version", "torch_dtype", "dtype", "use_cache", "model_type",
    "initializer_range", "aux_loss_alpha", "seq_aux", "ep_size", "_name_or_path", "id2label", "label2id",
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "pruned_heads", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "cross_attention_hidden_size",
    "add_cross_attention", "tie_encoder_decoder", "problem_type", "tokenizer_class", "prefix", "sep_token_id",
    "decoder_start_token_id", "task_specific_params", "finetuning_task", "output_router_logits",
    "router_aux_loss_coef", "qk_head_dim", "max_window_layers", "sliding_window", "bos_token_id", "eos_token_id",
    "pad_token_id", "tie_word_embeddings", "rope_scaling", "rope_parameters", "rope_theta", "head_dim",
    "quantization_config", "num_nextn_predict_layers",
    # pretraining_tp only split the matmuls of the original Llama training code; transformers ignores it
    "pretraining_tp",
}


def _false(v):
    return not v


# Keys accepted only at the value r1jax computes (others change the math): key -> (test, what is supported).
_HF_CHECKED = {
    "use_mrope": (_false, "false (multimodal rotary positions are not supported)"),
    "use_sliding_window": (_false, "false (sliding-window attention is not supported)"),
    "mlp_bias": (_false, "false (biases on the MLP are not supported)"),
    "attention_dropout": (_false, "0.0 (r1jax has no dropout)"),
    "hidden_dropout": (_false, "0.0 (r1jax has no dropout)"),
    "layer_types": (lambda v: all(t == "full_attention" for t in (v or [])), "only 'full_attention' layers"),
    "use_qk_norm": (_false, "false"),
    "embedding_multiplier": (lambda v: v in (None, 1, 1.0), "1.0"),
}
_HF_COPIED = {
    "deepseek_v3": (
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "n_shared_experts", "n_routed_experts",
        "routed_scaling_factor", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "v_head_dim",
        "qk_nope_head_dim", "topk_method", "n_group", "topk_group", "num_experts_per_tok", "moe_layer_freq",
        "first_k_dense_replace", "norm_topk_prob", "scoring_func", "hidden_act", "max_position_embeddings",
        "rms_norm_eps", "attention_bias", "rope_interleave",
    ),
    "qwen2": (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps",
    ),
    "llama": (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "attention_bias",
    ),
}
_HF_TYPES = {"deepseek_v3": "deepseek_v3", "deepseek_v2": "deepseek_v3", "qwen2": "qwen2", "llama": "llama"}
# What transformers' config classes take when a key is absent (where r1jax's own default differs).
_HF_DEFAULTS = {
    "deepseek_v3": dict(rms_norm_eps=1e-6, attention_bias=False, rope_interleave=True, q_lora_rank=1536,
                        n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=8, n_group=8, topk_group=4,
                        first_k_dense_replace=3, norm_topk_prob=True, routed_scaling_factor=2.5,
                        topk_method="noaux_tc", scoring_func="sigmoid", moe_layer_freq=1, hidden_act="silu"),
    "qwen2": dict(rms_norm_eps=1e-6, hidden_act="silu"),
    "llama": dict(rms_norm_eps=1e-6, attention_bias=False, hidden_act="silu"),
}
FP8_QUANT = dict(quant_method="fp8", fmt="e4m3", weight_block_size=[128, 128])


def _read_json(src: str, what: str) -> dict:
    try:
        with open(src) as f:
            out = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{src}: no {what}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{src}: not valid JSON ({e})") from None
    if not isinstance(out, dict):
        raise ValueError(f"{src}: expected a JSON object, got {type(out).__name__}")
    return out


def _check_quantization(q, src):
    """Only the DeepSeek-V3 release's FP8 (e4m3, 128x128 block scales) is read (dequantized on load)."""
    if not q:
        return
    if not isinstance(q, dict) or q.get("quant_method") != "fp8":
        raise ValueError(f"{src}: quantization_config={q!r} is not supported (only quant_method='fp8' with "
                         "128x128 block scales, as the DeepSeek-V3 release; dequantize the checkpoint first)")
    if q.get("fmt", "e4m3") != "e4m3" or list(q.get("weight_block_size", [128, 128])) != [128, 128]:
        raise ValueError(f"{src}: quantization_config fmt={q.get('fmt')!r}, weight_block_size="
                         f"{q.get('weight_block_size')!r} is not supported (e4m3, [128, 128])")


def from_hf_config(path_or_dict: str | os.PathLike | dict, **overrides) -> ml_collections.FrozenConfigDict:
    """Reads an HF `config.json` (path to the file or its folder, or the parsed dict) as transformers does.

    Supports DeepseekV3 (and DeepseekV2-layout configs without q_lora, with V3's sigmoid router, e.g.
    Moonlight), Qwen2 / Qwen2.5 (incl. Math and R1-Distill variants) and Llama 3.x (llama3 rope
    scaling). Keys that carry no meaning for the forward pass (`auto_map`, `torch_dtype`, `use_cache`,
    `_name_or_path`, ...) are ignored; keys that change the math are accepted only at the values r1jax
    computes (`use_mrope: false`, `use_sliding_window: false`, `mlp_bias: false`, ...) and otherwise
    fail naming the key; an unknown key fails naming the key and the file. Absent keys take
    transformers' defaults (e.g. `tie_word_embeddings` false for all three architectures).
    `eos_token_id` may be an int or a list. `overrides` set r1jax keys (dtype, attention_impl, ...).
    """
    src = "<dict>"
    if isinstance(path_or_dict, dict):
        hf = dict(path_or_dict)
    else:
        src = os.fspath(path_or_dict)
        if os.path.isdir(src):
            src = os.path.join(src, "config.json")
        hf = _read_json(src, "config.json")
    hf_type = hf.get("model_type")
    if hf_type not in _HF_TYPES:
        raise ValueError(f"{src}: model_type={hf_type!r} is not supported (one of {sorted(_HF_TYPES)})")
    mt = _HF_TYPES[hf_type]
    if hf_type == "deepseek_v2" and hf.get("scoring_func", "softmax") != "sigmoid":
        raise ValueError(
            f"{src}: scoring_func={hf.get('scoring_func', 'softmax')!r}: DeepSeek-V2's softmax routing is not "
            "supported; only its MLA layout (no q_lora) with V3's sigmoid router"
        )
    copied = _HF_COPIED[mt]
    d: dict[str, Any] = {"model_type": mt, **_HF_DEFAULTS[mt]}
    for k, v in hf.items():
        if k in copied:
            if k in ("q_lora_rank", "n_routed_experts") and v is None:
                v = 0
            d[k] = v
        elif k in _HF_CHECKED:
            ok, supported = _HF_CHECKED[k]
            if not ok(v):
                raise ValueError(f"{src}: {k}={v!r} is not supported (r1jax computes {supported})")
        elif k not in _HF_IGNORED:
            raise ValueError(f"{src}: unknown config key {k!r} for model_type={hf_type!r}")
    _check_quantization(hf.get("quantization_config"), src)
    if mt == "deepseek_v3":
        if hf_type == "deepseek_v2":
            d.setdefault("topk_method", "noaux_tc")
    else:
        hd = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        d["head_dim"] = hd
        d["rope_interleave"] = False
        if mt == "qwen2":
            d["qkv_bias"] = True
    d["tie_word_embeddings"] = bool(hf.get("tie_word_embeddings", False))
    for k in ("bos_token_id", "pad_token_id"):
        v = hf.get(k)
        if isinstance(v, list):
            v = v[0] if v else None
        d[k] = -1 if v is None else int(v)
    d["eos_token_id"] = eos_ids(hf.get("eos_token_id"))
    # rope: transformers 5 writes `rope_parameters` (with rope_theta inside); older files `rope_scaling`
    # (legacy `type` for `rope_type`).
    rp = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rp = dict(rp)
    theta = rp.pop("rope_theta", None) or hf.get("rope_theta", 10000.0)
    d["rope_theta"] = float(theta)
    rtype, legacy = rp.pop("rope_type", None), rp.pop("type", None)  # files of transformers 4.4x hold both
    rtype = rtype or legacy or "default"
    prf = rp.pop("partial_rotary_factor", None)
    if prf not in (None, 1, 1.0):
        raise ValueError(f"{src}: rope partial_rotary_factor={prf!r} is not supported (1.0)")
    known = set(base_config().rope_scaling.keys()) - {"rope_type"}
    for k in list(rp):
        if rp[k] is None:
            rp.pop(k)
        elif k not in known:
            raise ValueError(f"{src}: unknown rope_scaling key {k!r}")
    if rtype == "yarn" and not rp.get("original_max_position_embeddings"):
        raise ValueError(f"{src}: rope_scaling (yarn) needs original_max_position_embeddings")
    if rtype == "yarn" and "factor" not in rp:  # transformers: max_position_embeddings / original
        rp["factor"] = hf["max_position_embeddings"] / rp["original_max_position_embeddings"]
    d["rope_scaling"] = dict(rope_type=rtype, **rp)
    if mt == "deepseek_v3" and hf.get("num_nextn_predict_layers") is not None:
        d["num_nextn_predict_layers"] = int(hf["num_nextn_predict_layers"])
    for k, v in overrides.items():
        d[k] = v
    try:
        return make_config(**d)
    except (KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{src}: {e}") from None


def to_hf_config(cfg) -> dict:
    """The HF `config.json` dict transformers loads for this config (inverse of `from_hf_config`)."""
    validate(cfg)  # a config not made by make_config (a ConfigDict built by hand) must not be saved unchecked
    rs = cfg.rope_scaling
    rope = None
    if rs.rope_type == "yarn":
        rope = dict(
            rope_type="yarn", factor=rs.factor, original_max_position_embeddings=rs.original_max_position_embeddings,
            beta_fast=rs.beta_fast, beta_slow=rs.beta_slow, mscale=rs.mscale, mscale_all_dim=rs.mscale_all_dim,
        )
        if rs.attention_factor:
            rope["attention_factor"] = rs.attention_factor
    elif rs.rope_type == "llama3":
        rope = dict(
            rope_type="llama3", factor=rs.factor, low_freq_factor=rs.low_freq_factor,
            high_freq_factor=rs.high_freq_factor, original_max_position_embeddings=rs.original_max_position_embeddings,
        )
    elif rs.rope_type == "linear":
        rope = dict(rope_type="linear", factor=rs.factor)
    common = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta, rope_scaling=rope, tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=None if cfg.bos_token_id < 0 else cfg.bos_token_id,
        eos_token_id=(None if not cfg.eos_token_id else cfg.eos_token_id[0] if len(cfg.eos_token_id) == 1
                      else list(cfg.eos_token_id)),
        pad_token_id=None if cfg.pad_token_id < 0 else cfg.pad_token_id,
        torch_dtype=cfg.param_dtype,
    )
    if cfg.model_type == "deepseek_v3":
        common.update(
            model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"],
            moe_intermediate_size=cfg.moe_intermediate_size, n_shared_experts=cfg.n_shared_experts,
            n_routed_experts=cfg.n_routed_experts or None, routed_scaling_factor=cfg.routed_scaling_factor,
            kv_lora_rank=cfg.kv_lora_rank, q_lora_rank=cfg.q_lora_rank or None,
            qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim, qk_nope_head_dim=cfg.qk_nope_head_dim,
            topk_method=cfg.topk_method, n_group=cfg.n_group, topk_group=cfg.topk_group,
            num_experts_per_tok=cfg.num_experts_per_tok, moe_layer_freq=cfg.moe_layer_freq,
            first_k_dense_replace=cfg.first_k_dense_replace if cfg.n_routed_experts else cfg.num_hidden_layers,
            norm_topk_prob=cfg.norm_topk_prob, scoring_func=cfg.scoring_func, attention_bias=cfg.attention_bias,
            rope_interleave=cfg.rope_interleave, num_nextn_predict_layers=cfg.num_nextn_predict_layers,
        )
    elif cfg.model_type == "qwen2":
        common.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=False)
        if cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size:
            common["head_dim"] = cfg.head_dim
    else:
        common.update(
            model_type="llama", architectures=["LlamaForCausalLM"], attention_bias=cfg.attention_bias,
            head_dim=cfg.head_dim,
        )
    return common
