"""Model presets: `deepseek_v3_671b`, `v3_moe_2b`, `qwen2_5_1_5b` (a real dense shape), `small_moe`
(the training benchmark's MoE), `toy_moe` (the toy R1-Zero base model), `tiny_moe` (tests),
`tiny_qwen2`, `tiny_llama`, `toy_qwen2`; `PRESETS` by name and `get_preset`."""

from __future__ import annotations

import ml_collections

from r1jax.config.schema import make_config


def deepseek_v3_671b() -> ml_collections.FrozenConfigDict:
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


def v3_moe_2b() -> ml_collections.FrozenConfigDict:
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


def small_moe() -> ml_collections.FrozenConfigDict:
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


def toy_moe(vocab_size: int = 128) -> ml_collections.FrozenConfigDict:
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


def toy_qwen2(vocab_size: int = 128) -> ml_collections.FrozenConfigDict:
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


def qwen2_5_1_5b() -> ml_collections.FrozenConfigDict:
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


def tiny_moe(**kw) -> ml_collections.FrozenConfigDict:
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


def tiny_qwen2(**kw) -> ml_collections.FrozenConfigDict:
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


def tiny_llama(**kw) -> ml_collections.FrozenConfigDict:
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


def get_preset(name: str) -> ml_collections.FrozenConfigDict:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]()
