"""Tiny random transformers checkpoints for parity tests (torch CPU), saved with save_pretrained."""

from __future__ import annotations

import os

import numpy as np


def _torch():
    import pytest

    return pytest.importorskip("torch")


def deepseek_v3_config(q_lora=True, yarn=True, mtp=False, **kw):
    from transformers import DeepseekV3Config

    d = dict(
        vocab_size=97, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
        num_experts_per_tok=2, n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5,
        q_lora_rank=32 if q_lora else None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16,
        v_head_dim=12, max_position_embeddings=64, initializer_range=0.08, tie_word_embeddings=False,
        num_nextn_predict_layers=1 if mtp else 0,
    )
    if yarn:
        d["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                             "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1}
    d.update(kw)
    return DeepseekV3Config(**d)


def qwen2_config(**kw):
    from transformers import Qwen2Config

    d = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, initializer_range=0.08,
             rope_theta=10000.0)
    d.update(kw)
    return Qwen2Config(**d)


def llama_config(**kw):
    from transformers import LlamaConfig

    d = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.08, tie_word_embeddings=False,
             rope_theta=500000.0,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 32})
    d.update(kw)
    return LlamaConfig(**d)


def make_hf_model(kind: str, path: str, seed: int = 0, **kw):
    """Builds a random transformers model of `kind`, perturbs norms/biases, saves it to `path`."""
    torch = _torch()
    from transformers import AutoModelForCausalLM

    cfg = {"deepseek_v3": deepseek_v3_config, "qwen2": qwen2_config, "llama": llama_config}[kind](**kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    return model


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    torch = _torch()
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.float().numpy()


def rel_err(a, b) -> float:
    """max|a - b| / max|b| (see numerics.assert_close, which asserts it with a readable message)."""
    from numerics import max_rel_err

    return max_rel_err(a, b)
