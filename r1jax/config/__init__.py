"""Model configurations: presets and `from_hf_config`.

A model config is an `ml_collections.ConfigDict` whose keys follow the HF `config.json` names of
the architecture (`kv_lora_rank`, `qk_rope_head_dim`, `n_routed_experts`, ...) so a reader maps
both ways. Keys that only r1jax has (compute dtype, attention/MoE implementation, remat, losses)
are listed in `R1JAX_KEYS`.

Conventions where HF uses null: `q_lora_rank = 0` means "no q low-rank path" (DeepSeek-V2-Lite
style); `n_routed_experts = 0` means a dense model; `rope_scaling.rope_type = "default"` means no
scaling.

Presets: `deepseek_v3_671b`, `qwen2_5_1_5b` (a real dense shape), `small_moe` (the training
benchmark's MoE), `toy_moe` (the toy R1-Zero base model), `tiny_moe` / `tiny_moe_no_qlora` (tests),
`tiny_qwen2`, `tiny_llama`, `toy_qwen2`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

MODEL_TYPES = ("deepseek_v3", "qwen2", "llama")

# Keys that r1jax adds on top of the HF names.
R1JAX_KEYS = (
    "dtype",  # compute dtype of activations/matmuls: "float32" | "bfloat16"
    "param_dtype",  # storage dtype of params
    "attention_impl",  # "xla" (plain JAX) | "pallas" (pallas_kernels.mla_prefill / mla_decode)
    "moe_impl",  # "ragged" (sort + ragged_dot, dropless) | "dense" (all experts; reference) | "ep" (shard_map)
    "capacity_factor",  # expert parallelism: per-device buffer = capacity_factor * tokens * top_k / n_experts
    "scan_layers",  # layers under nn.scan (compile time independent of depth)
    "remat_policy",  # "none" | "full" | "dots" | "dots_no_batch"
    "mtp_loss_weight",  # lambda of the multi-token-prediction loss
    "aux_loss_alpha",  # weight of the complementary sequence-wise balance loss (0 = off)
    "router_bias_update_rate",  # gamma of auxiliary-loss-free balancing (0 = frozen bias)
    "qkv_bias",  # bias on q/k/v projections only (Qwen2)
    "attention_bias",  # HF Llama/DeepSeek meaning: bias on the attention projections
    "initializer_range",
)


def _rope(rope_type: str = "default", **kw) -> ml_collections.ConfigDict:
    d = dict(
        rope_type=rope_type,
        factor=1.0,
        original_max_position_embeddings=0,
        beta_fast=32.0,
        beta_slow=1.0,
        mscale=1.0,
        mscale_all_dim=0.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        truncate=True,
        attention_factor=0.0,  # YaRN cos/sin factor; 0: derived from factor / mscale (as transformers)
    )
    for k, v in kw.items():
        if k not in d:
            raise KeyError(f"rope_scaling: unknown key {k!r}")
        d[k] = type(d[k])(v) if not isinstance(d[k], bool) else bool(v)
    return ml_collections.ConfigDict(d)


def base_config() -> ml_collections.ConfigDict:
    """Every key a model config has, with defaults (DeepSeek-V3 naming)."""
    return ml_collections.ConfigDict(
        dict(
            model_type="deepseek_v3",
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=8,
            head_dim=64,  # dense (GQA) models only
            hidden_act="silu",
            rms_norm_eps=1e-6,
            max_position_embeddings=4096,
            rope_theta=10000.0,
            rope_scaling=_rope(),
            rope_interleave=True,
            tie_word_embeddings=False,
            attention_bias=False,
            qkv_bias=False,
            # MLA
            q_lora_rank=0,
            kv_lora_rank=128,
            qk_nope_head_dim=64,
            qk_rope_head_dim=32,
            v_head_dim=64,
            # MoE
            n_routed_experts=0,
            n_shared_experts=1,
            num_experts_per_tok=2,
            moe_intermediate_size=256,
            n_group=1,
            topk_group=1,
            first_k_dense_replace=1,
            moe_layer_freq=1,
            norm_topk_prob=True,
            routed_scaling_factor=1.0,
            scoring_func="sigmoid",
            topk_method="noaux_tc",
            # MTP
            num_nextn_predict_layers=0,
            # r1jax
            dtype="float32",
            param_dtype="float32",
            attention_impl="xla",
            moe_impl="ragged",
            capacity_factor=2.0,
            scan_layers=True,
            remat_policy="none",
            mtp_loss_weight=0.3,
            aux_loss_alpha=0.0,
            router_bias_update_rate=1e-3,
            initializer_range=0.02,
            bos_token_id=-1,  # -1: none
            eos_token_id=(),  # every id that ends generation (HF config.json: an int or a list)
            pad_token_id=-1,
        )
    )


def make_config(**overrides) -> ml_collections.ConfigDict:
    """`base_config()` with overrides; nested `rope_scaling` may be a dict. Unknown keys fail."""
    cfg = base_config()
    for k, v in overrides.items():
        if k not in cfg:
            raise KeyError(f"model config: unknown key {k!r}")
        if k == "rope_scaling":
            v = _rope(**dict(v)) if v is not None else _rope()
        if k == "eos_token_id":
            v = eos_ids(v)
        cfg[k] = v
    validate(cfg)
    return cfg


def eos_ids(v) -> tuple:
    """An HF `eos_token_id` (None, an int or a list of ints) as a tuple of ids."""
    if v is None:
        return ()
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),)


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Fails on contradictory settings, naming the key."""

    def bad(key, why):
        raise ValueError(f"model config: {key}={cfg.get(key)!r} {why}")

    if cfg.model_type not in MODEL_TYPES:
        bad("model_type", f"is not one of {MODEL_TYPES}")
    if cfg.model_type in ("qwen2", "llama") and cfg.rope_interleave:
        bad("rope_interleave", f"is not representable for model_type={cfg.model_type!r}: its HF checkpoints use "
                               "the half-split rotary layout (rope_interleave=False)")
    if cfg.num_attention_heads % max(cfg.num_key_value_heads, 1):
        bad("num_key_value_heads", f"does not divide num_attention_heads={cfg.num_attention_heads}")
    if cfg.n_routed_experts:
        if cfg.num_experts_per_tok > cfg.n_routed_experts:
            bad("num_experts_per_tok", f"exceeds n_routed_experts={cfg.n_routed_experts}")
        if cfg.n_routed_experts % cfg.n_group:
            bad("n_group", f"does not divide n_routed_experts={cfg.n_routed_experts}")
        if cfg.topk_group > cfg.n_group:
            bad("topk_group", f"exceeds n_group={cfg.n_group}")
        per_group = cfg.n_routed_experts // cfg.n_group
        if cfg.n_group > 1 and per_group < 2:
            bad("n_group", "leaves fewer than 2 experts per group (groups are ranked by their top-2 scores)")
        if cfg.topk_group * per_group < cfg.num_experts_per_tok:
            bad("topk_group", f"x experts per group ({per_group}) < num_experts_per_tok={cfg.num_experts_per_tok}")
        if cfg.moe_layer_freq != 1:
            bad("moe_layer_freq", "must be 1 (every layer after first_k_dense_replace is MoE)")
        if cfg.scoring_func != "sigmoid":
            bad("scoring_func", "is not supported (only DeepSeek-V3's 'sigmoid')")
        if cfg.topk_method not in ("noaux_tc", "greedy"):
            bad("topk_method", "is not supported (noaux_tc | greedy)")
        if cfg.first_k_dense_replace > cfg.num_hidden_layers:
            bad("first_k_dense_replace", f"exceeds num_hidden_layers={cfg.num_hidden_layers}")
    if cfg.model_type != "deepseek_v3" and cfg.n_routed_experts:
        bad("n_routed_experts", f"must be 0 for model_type={cfg.model_type}")
    if cfg.model_type != "deepseek_v3" and cfg.num_nextn_predict_layers:
        bad("num_nextn_predict_layers", "is only supported for deepseek_v3")
    if cfg.num_nextn_predict_layers > 1:
        bad("num_nextn_predict_layers", "> 1 is not supported (DeepSeek-V3 uses depth 1)")
    if cfg.model_type == "deepseek_v3" and cfg.qk_rope_head_dim % 2:
        bad("qk_rope_head_dim", "must be even")
    if cfg.rope_scaling.rope_type not in ("default", "yarn", "llama3", "linear"):
        bad("rope_scaling", "has an unsupported rope_type")
    if cfg.rope_scaling.rope_type in ("yarn", "llama3") and cfg.rope_scaling.original_max_position_embeddings <= 0:
        bad("rope_scaling", "needs original_max_position_embeddings > 0")
    for k in ("dtype", "param_dtype"):
        if cfg[k] not in ("float32", "bfloat16", "float16"):
            bad(k, "must be float32 | bfloat16 | float16")
    if cfg.attention_impl not in ("xla", "pallas"):
        bad("attention_impl", "must be xla | pallas")
    if cfg.moe_impl not in ("ragged", "dense", "ep"):
        bad("moe_impl", "must be ragged | dense | ep")
    if cfg.remat_policy not in ("none", "full", "dots", "dots_no_batch"):
        bad("remat_policy", "must be none | full | dots | dots_no_batch")
    if cfg.hidden_act not in ("silu", "swish"):
        bad("hidden_act", "is not supported (the gated MLP is SwiGLU: silu)")


def is_moe(cfg) -> bool:
    return cfg.model_type == "deepseek_v3" and cfg.n_routed_experts > 0


def num_dense_layers(cfg) -> int:
    return min(cfg.first_k_dense_replace, cfg.num_hidden_layers) if is_moe(cfg) else cfg.num_hidden_layers


def num_moe_layers(cfg) -> int:
    return cfg.num_hidden_layers - num_dense_layers(cfg)


# ----------------------------------------------------------------------------------- presets


def deepseek_v3_671b() -> ml_collections.ConfigDict:
    """The released DeepSeek-V3 / R1 dimensions (config.json of deepseek-ai/DeepSeek-V3)."""
    return make_config(
        model_type="deepseek_v3",
        vocab_size=129280,
        hidden_size=7168,
        intermediate_size=18432,
        moe_intermediate_size=2048,
        num_hidden_layers=61,
        num_attention_heads=128,
        num_key_value_heads=128,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=256,
        n_shared_experts=1,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
        first_k_dense_replace=3,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        max_position_embeddings=163840,
        rope_theta=10000.0,
        rope_scaling=dict(
            rope_type="yarn",
            factor=40,
            original_max_position_embeddings=4096,
            beta_fast=32,
            beta_slow=1,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
        num_nextn_predict_layers=1,
        bos_token_id=0,
        eos_token_id=(1,),
        dtype="bfloat16",
        param_dtype="bfloat16",
        remat_policy="full",
    )


def v3_moe_2b() -> ml_collections.ConfigDict:
    """A DeepSeek-V3-architecture MoE sized for one 80 GB GPU with fp32 master weights and Adam:
    MLA (kv_lora 512, q_lora 768, decoupled rope 64, YaRN), 64 routed experts top-6 + 2 shared,
    sigmoid group-limited routing, the first layer dense, MTP; DeepSeek-V2-Lite's routing shape at
    hidden 1024 x 16 layers: 2.5B total, 0.5B activated per token (count_params)."""
    return make_config(
        model_type="deepseek_v3",
        vocab_size=102400,
        hidden_size=1024,
        intermediate_size=5632,
        moe_intermediate_size=704,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        q_lora_rank=768,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=64,
        n_shared_experts=2,
        num_experts_per_tok=6,
        n_group=8,
        topk_group=4,
        first_k_dense_replace=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.0,
        max_position_embeddings=32768,
        rope_theta=10000.0,
        rope_scaling=dict(rope_type="yarn", factor=8, original_max_position_embeddings=4096, beta_fast=32,
                          beta_slow=1, mscale=1.0, mscale_all_dim=1.0),
        num_nextn_predict_layers=1,
        bos_token_id=0,
        eos_token_id=(1,),
    )


def small_moe() -> ml_collections.ConfigDict:
    """The training benchmark's MoE: vocab 32000, d 512, 8 layers (first dense), 16 routed top-2 + 1 shared."""
    return make_config(
        vocab_size=32000,
        hidden_size=512,
        intermediate_size=1408,
        moe_intermediate_size=352,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=8,
        q_lora_rank=256,
        kv_lora_rank=128,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        n_routed_experts=16,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        first_k_dense_replace=1,
        routed_scaling_factor=1.0,
        max_position_embeddings=4096,
    )


def toy_moe(vocab_size: int = 128) -> ml_collections.ConfigDict:
    """The toy R1-Zero base model: MLA + MoE (shared expert), MTP on; ~1M params."""
    return make_config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=64,
        kv_lora_rank=32,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        first_k_dense_replace=1,
        routed_scaling_factor=1.0,
        max_position_embeddings=512,
        num_nextn_predict_layers=1,
        mtp_loss_weight=0.3,
    )


def toy_qwen2(vocab_size: int = 128) -> ml_collections.ConfigDict:
    """A small dense Qwen2 student for the toy distillation."""
    return make_config(
        model_type="qwen2",
        vocab_size=vocab_size,
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        qkv_bias=True,
        tie_word_embeddings=True,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rope_interleave=False,  # Qwen2 checkpoints are half-split (a saved student reloads as such)
    )


def qwen2_5_1_5b() -> ml_collections.ConfigDict:
    """The dense Qwen2.5-1.5B(-Instruct) shape (its config.json), for memory and speed measurements."""
    return make_config(
        model_type="qwen2",
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        head_dim=128,
        qkv_bias=True,
        tie_word_embeddings=True,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rope_interleave=False,
        bos_token_id=151643,
        eos_token_id=(151645, 151643),
        pad_token_id=151643,
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy="full",
    )


def tiny_moe(**kw) -> ml_collections.ConfigDict:
    """A tiny DeepSeek-V3 for tests: q_lora, group-limited routing, YaRN, MTP."""
    d = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        moe_intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=32,
        kv_lora_rank=16,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=12,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        max_position_embeddings=256,
        rope_scaling=dict(
            rope_type="yarn", factor=4.0, original_max_position_embeddings=16, mscale=1.0, mscale_all_dim=1.0
        ),
        num_nextn_predict_layers=1,
    )
    d.update(kw)
    return make_config(**d)


def tiny_qwen2(**kw) -> ml_collections.ConfigDict:
    d = dict(
        model_type="qwen2",
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        qkv_bias=True,
        tie_word_embeddings=True,
        max_position_embeddings=256,
        rope_theta=10000.0,
        rope_interleave=False,
    )
    d.update(kw)
    return make_config(**d)


def tiny_llama(**kw) -> ml_collections.ConfigDict:
    d = dict(
        model_type="llama",
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rope_theta=500000.0,
        rope_interleave=False,
        rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=32
        ),
    )
    d.update(kw)
    return make_config(**d)


PRESETS = {
    "deepseek_v3_671b": deepseek_v3_671b,
    "small_moe": small_moe,
    "v3_moe_2b": v3_moe_2b,
    "toy_moe": toy_moe,
    "toy_qwen2": toy_qwen2,
    "qwen2_5_1_5b": qwen2_5_1_5b,
    "tiny_moe": tiny_moe,
    "tiny_qwen2": tiny_qwen2,
    "tiny_llama": tiny_llama,
}


def get_preset(name: str) -> ml_collections.ConfigDict:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]()


# ------------------------------------------------------------------------------ HF config.json

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


def from_hf_config(path_or_dict: str | os.PathLike | dict, **overrides) -> ml_collections.ConfigDict:
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
    known = set(_rope().keys()) - {"rope_type"}
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
    validate(cfg)  # a config edited after make_config (e.g. rope_interleave on a dense model) must not be saved
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


# --------------------------------------------------------------------------- parameter count


def count_params(cfg) -> dict:
    """Parameter counts computed from the config: total, activated per token, and parts.

    `activated` counts the weights a token touches: embeddings' one row is not counted (as in the
    DeepSeek-V3 report's 37B), the LM head is; routed experts count top-k of n. The MTP module is
    reported separately (`mtp`) and excluded from `total`/`activated`, as the 671B figure excludes
    the 14B of the MTP module.
    """
    d = cfg.hidden_size
    norms = 2 * d

    def attn_params():
        if cfg.model_type == "deepseek_v3":
            qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
            h = cfg.num_attention_heads
            if cfg.q_lora_rank:
                q = d * cfg.q_lora_rank + cfg.q_lora_rank + cfg.q_lora_rank * h * qk
            else:
                q = d * h * qk
            kv = d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) + cfg.kv_lora_rank
            kv += cfg.kv_lora_rank * h * (cfg.qk_nope_head_dim + cfg.v_head_dim)
            o = h * cfg.v_head_dim * d
            return q + kv + o
        hd, h, kvh = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
        p = d * h * hd + 2 * d * kvh * hd + h * hd * d
        if cfg.qkv_bias:
            p += h * hd + 2 * kvh * hd
        return p

    mlp = lambda inter: 3 * d * inter  # noqa: E731
    a = attn_params()
    n_dense, n_moe = num_dense_layers(cfg), num_moe_layers(cfg)
    dense_layer = a + mlp(cfg.intermediate_size) + norms
    if is_moe(cfg):
        e = cfg.n_routed_experts
        routed = e * mlp(cfg.moe_intermediate_size)
        shared = cfg.n_shared_experts * mlp(cfg.moe_intermediate_size)
        router = e * d + e
        moe_layer = a + routed + shared + router + norms
        moe_layer_active = a + shared + router + norms + cfg.num_experts_per_tok * mlp(cfg.moe_intermediate_size)
    else:
        moe_layer = moe_layer_active = 0
    embed = cfg.vocab_size * d
    head = 0 if cfg.tie_word_embeddings else cfg.vocab_size * d
    total = embed + head + d + n_dense * dense_layer + n_moe * moe_layer
    activated = (head or embed) + d + n_dense * dense_layer + n_moe * moe_layer_active
    mtp = 0
    if cfg.num_nextn_predict_layers:
        block = moe_layer if is_moe(cfg) else dense_layer
        mtp = cfg.num_nextn_predict_layers * (block + 2 * d + 2 * d * d + d)
    return dict(total=total, activated=activated, mtp=mtp, embed=embed, head=head)


def flops_per_token(cfg, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), matmuls and attention scores."""
    c = count_params(cfg)
    matmul_params = c["activated"] - (0 if cfg.tie_word_embeddings else 0)
    if cfg.model_type == "deepseek_v3":
        qk = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        attn = cfg.num_hidden_layers * cfg.num_attention_heads * (qk + cfg.v_head_dim) * seq_len  # causal: half of 2x
    else:
        attn = cfg.num_hidden_layers * cfg.num_attention_heads * 2 * cfg.head_dim * seq_len
    return 3 * (2 * matmul_params + attn)


def dtype_of(name: str):
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]


__all__ = [
    "base_config", "make_config", "validate", "from_hf_config", "to_hf_config", "count_params", "flops_per_token",
    "get_preset", "PRESETS", "is_moe", "num_dense_layers", "num_moe_layers", "dtype_of", "override",
]


def override(c: ml_collections.ConfigDict, kw: dict, what: str = "config", replace: tuple = ()) -> ml_collections.ConfigDict:
    """Sets c[k] = v for each item of `kw`; an unknown key raises KeyError naming `what`. A dict value
    for a ConfigDict field updates it key by key, except for the fields in `replace`, which it replaces."""
    for k, v in kw.items():
        if k not in c:
            raise KeyError(f"{what}: unknown key {k!r}")
        if isinstance(c[k], ml_collections.ConfigDict) and isinstance(v, dict) and k not in replace:
            for kk, vv in v.items():
                c[k][kk] = vv
        elif isinstance(c[k], ml_collections.ConfigDict) and isinstance(v, dict):
            c[k] = ml_collections.ConfigDict(v)
        else:
            c[k] = v
    return c
