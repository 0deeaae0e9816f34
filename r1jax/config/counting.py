"""Parameter and FLOP counts computed from a model config (no params are built)."""

from __future__ import annotations

from r1jax.config.schema import is_moe, num_dense_layers, num_moe_layers


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
