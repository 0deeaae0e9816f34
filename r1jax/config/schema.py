"""The model config's schema: every key with its default (`base_config`), `make_config`, `validate`,
and the questions asked of a config (`is_moe`, layer counts, `dtype_of`).

A model config is an `ml_collections.FrozenConfigDict` made by `make_config` only: the defaults of
`base_config`, the overrides applied by r1jax.config.override (the one override walk of every
config: unknown keys and values of the wrong type fail naming the key), then `validate`. Frozen, it
is hashable (a static jit argument, a cache key) and cannot drift from what was validated; a changed
config is a new one: `replace(cfg, dtype="bfloat16")`. Its keys follow the HF `config.json` names of
the architecture (`kv_lora_rank`, `qk_rope_head_dim`, `n_routed_experts`, ...) so a reader maps
both ways. Keys that only r1jax has (compute dtype, attention/MoE implementation, remat, losses)
are listed in `R1JAX_KEYS`.

Conventions where HF uses null: `q_lora_rank = 0` means "no q low-rank path" (DeepSeek-V2-Lite
style); `n_routed_experts = 0` means a dense model; `rope_scaling.rope_type = "default"` means no
scaling.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import ml_collections

from r1jax.config.overrides import override

MODEL_TYPES = ("deepseek_v3", "qwen2", "llama")
DTYPES = ("float32", "bfloat16", "float16")  # dtype / param_dtype names (dtype_of)
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")  # r1jax.model.transformer's checkpoint policies

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
    "qkv_bias",  # bias on q/k/v projections only (Qwen2)
    "attention_bias",  # HF Llama/DeepSeek meaning: bias on the attention projections
    "initializer_range",
)


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
            rope_scaling=dict(  # rope_type "default": no scaling
                rope_type="default",
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
            ),
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
            initializer_range=0.02,
            bos_token_id=-1,  # -1: none
            eos_token_id=(),  # every id that ends generation (HF config.json: an int or a list)
            pad_token_id=-1,
        )
    )


def make_config(**overrides) -> ml_collections.FrozenConfigDict:
    """The one way a model config is made: `base_config()` with `overrides` (r1jax.config.override:
    an unknown key or a value of the wrong type fails naming it; `rope_scaling` may be a partial dict
    over the defaults, None for them), validated, frozen."""
    kw = dict(overrides)
    if "rope_scaling" in kw and kw["rope_scaling"] is None:
        del kw["rope_scaling"]
    if "eos_token_id" in kw:
        kw["eos_token_id"] = eos_ids(kw["eos_token_id"])
    cfg = override(base_config(), kw, "model config")
    validate(cfg)
    return ml_collections.FrozenConfigDict(cfg)


def replace(cfg, **changes) -> ml_collections.FrozenConfigDict:
    """A new model config: `cfg`'s keys with `changes` (make_config checks and freezes it); a dict for
    a block (rope_scaling) changes the keys it names over `cfg`'s block."""
    d = cfg.to_dict()
    for k, v in changes.items():
        d[k] = {**d[k], **dict(v)} if isinstance(d.get(k), dict) and isinstance(v, Mapping) else v
    return make_config(**d)


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
        if cfg[k] not in DTYPES:
            bad(k, f"must be {' | '.join(DTYPES)}")
    if cfg.attention_impl not in ("xla", "pallas"):
        bad("attention_impl", "must be xla | pallas")
    if cfg.moe_impl not in ("ragged", "dense", "ep"):
        bad("moe_impl", "must be ragged | dense | ep")
    if cfg.remat_policy not in REMAT_POLICIES:
        bad("remat_policy", f"must be {' | '.join(REMAT_POLICIES)}")
    if cfg.hidden_act not in ("silu", "swish"):
        bad("hidden_act", "is not supported (the gated MLP is SwiGLU: silu)")


def is_moe(cfg) -> bool:
    return cfg.model_type == "deepseek_v3" and cfg.n_routed_experts > 0


def num_dense_layers(cfg) -> int:
    return min(cfg.first_k_dense_replace, cfg.num_hidden_layers) if is_moe(cfg) else cfg.num_hidden_layers


def num_moe_layers(cfg) -> int:
    return cfg.num_hidden_layers - num_dense_layers(cfg)


def dtype_of(name: str):
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {' | '.join(DTYPES)}")
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
