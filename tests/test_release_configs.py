"""Release config.json files, shrunk in width, depth and vocabulary only, load as transformers loads
them and give its logits (float32): Qwen2.5-Instruct, Qwen2.5-Math and DeepSeek-R1-Distill-Qwen
(`use_mrope: false`), Llama 3.1 / 3.2 (tied, with an `lm_head.weight` shipped anyway), DeepSeek-V3
(legacy `rope_scaling.type`, `auto_map`, FP8 `quantization_config` with block-scaled weights) and a
Moonlight-like V3-architecture MoE without q_lora (`rms_norm_eps: 1e-5`)."""

import copy
import json
import os

import jax
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib

jax.config.update("jax_default_matmul_precision", "highest")

# The released files' keys and values; only the sizes marked "shrunk" differ from the originals.
QWEN25_7B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151645,
    "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
    "max_position_embeddings": 32768, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False, "vocab_size": 211,
}
QWEN25_MATH_1_5B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
    "hidden_act": "silu", "hidden_size": 48, "initializer_range": 0.02, "intermediate_size": 80,
    "max_position_embeddings": 4096, "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 4,
    "num_hidden_layers": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-06, "rope_theta": 10000,
    "sliding_window": 4096, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.37.0",
    "use_cache": True, "use_mrope": False, "use_sliding_window": False, "vocab_size": 199,
}
R1_DISTILL_QWEN_1_5B = {
    "_name_or_path": "Qwen/Qwen2.5-Math-1.5B", "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 48,
    "initializer_range": 0.02, "intermediate_size": 80, "max_position_embeddings": 131072, "max_window_layers": 21,
    "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 1,
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "sliding_window": 4096, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "transformers_version": "4.44.0", "use_cache": True, "use_mrope": False,
    "use_sliding_window": False, "vocab_size": 199,
}
LLAMA31_8B_INSTRUCT = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
    "intermediate_size": 112, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 203,
}
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "head_dim": 16, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
    "intermediate_size": 128, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": True, "vocab_size": 197,
}
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                 "AutoModel": "modeling_deepseek.DeepseekV3Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 1,
    "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02, "intermediate_size": 96,
    "kv_lora_rank": 32, "max_position_embeddings": 163840, "model_type": "deepseek_v3", "moe_intermediate_size": 32,
    "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 16, "n_shared_experts": 1, "norm_topk_prob": True,
    "num_attention_heads": 4, "num_experts_per_tok": 8, "num_hidden_layers": 3, "num_key_value_heads": 4,
    "num_nextn_predict_layers": 1, "pretraining_tp": 1, "q_lora_rank": 48, "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8, "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                                                   "quant_method": "fp8", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                                            "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                                            "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
    "transformers_version": "4.33.1", "use_cache": True, "v_head_dim": 16, "vocab_size": 229,
}
MOONLIGHT_16B_A3B = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
                 "AutoModel": "modeling_deepseek.DeepseekV3Model",
                 "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
    "vocab_size": 223, "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 24,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4, "n_shared_experts": 2,
    "n_routed_experts": 16, "ep_size": 1, "routed_scaling_factor": 2.446, "kv_lora_rank": 32, "q_lora_rank": None,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 16, "topk_method": "noaux_tc", "n_group": 1,
    "topk_group": 1, "num_experts_per_tok": 6, "moe_layer_freq": 1, "first_k_dense_replace": 1,
    "norm_topk_prob": True, "scoring_func": "sigmoid", "aux_loss_alpha": 0.001, "seq_aux": True,
    "hidden_act": "silu", "max_position_embeddings": 8192, "initializer_range": 0.02, "rms_norm_eps": 1e-05,
    "use_cache": True, "pad_token_id": None, "bos_token_id": 163584, "eos_token_id": 163585, "pretraining_tp": 1,
    "tie_word_embeddings": False, "rope_theta": 50000.0, "rope_scaling": None, "attention_bias": False,
    "attention_dropout": 0.0, "torch_dtype": "bfloat16", "transformers_version": "4.45.2", "model_type": "deepseek_v3",
}
RELEASES = {"qwen2.5-7b-instruct": QWEN25_7B_INSTRUCT, "qwen2.5-math-1.5b": QWEN25_MATH_1_5B,
            "r1-distill-qwen-1.5b": R1_DISTILL_QWEN_1_5B, "llama-3.1-8b-instruct": LLAMA31_8B_INSTRUCT,
            "llama-3.2-1b": LLAMA32_1B, "deepseek-v3": DEEPSEEK_V3, "moonlight-16b-a3b": MOONLIGHT_16B_A3B}


def _release_folder(release: dict, path, seed=0, ship_tied_head=False, fp8=False):
    """Random weights for the release config (transformers builds the model), saved with the release's
    own config.json; returns the transformers model (float32) that holds exactly the saved weights."""
    import torch
    from safetensors.numpy import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_cfg = {k: copy.deepcopy(v) for k, v in release.items() if k not in ("quantization_config", "auto_map")}
    cfg = AutoConfig.for_model(**hf_cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:  # release init_range 0.02 gives near-zero logits: use a scale that tests the math
                p.copy_(0.08 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    st = os.path.join(path, "model.safetensors")
    tensors = load_file(st)
    if ship_tied_head:  # a tied checkpoint that still ships the head (transformers ties it to the embedding)
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    if fp8:  # the DeepSeek-V3 release layout: e4m3 projection weights with 128x128 weight_scale_inv
        from r1jax.checkpoint.hf import _fp8_eligible, dequantize_fp8, quantize_fp8

        ref_dir = str(path) + "_dequantized"  # the reference model holds the dequantized values
        model.save_pretrained(ref_dir)
        deq = dict(tensors)
        for k in list(tensors):
            if tensors[k].ndim == 2 and _fp8_eligible(k):
                q, sc = quantize_fp8(tensors[k])
                tensors[k], tensors[k[: -len("weight")] + "weight_scale_inv"] = q, sc
                deq[k] = dequantize_fp8(q, sc)
        save_file(deq, os.path.join(ref_dir, "model.safetensors"), metadata={"format": "pt"})
        model = AutoModelForCausalLM.from_pretrained(ref_dir, attn_implementation="eager",
                                                     torch_dtype=torch.float32).eval()
    save_file(tensors, st, metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(release, f, indent=2)
    return model


@pytest.mark.parametrize("name", list(RELEASES))
def test_release_config_logits_match_transformers(name, tmp_path):
    torch = pytest.importorskip("torch")
    release = RELEASES[name]
    hf = _release_folder(release, str(tmp_path), ship_tied_head=bool(release.get("tie_word_embeddings")),
                         fp8="quantization_config" in release)
    model, params = r1jax.from_pretrained(tmp_path)
    ids = np.random.RandomState(0).randint(0, release["vocab_size"], (2, 24))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.float().numpy()
    got = np.asarray(model.apply({"params": params}, ids))
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert err < 1e-5, err
    eos = release["eos_token_id"]
    assert model.cfg.eos_token_id == tuple(eos if isinstance(eos, list) else [eos])
    assert model.cfg.tie_word_embeddings == bool(release.get("tie_word_embeddings", False))


def test_release_keys_read_as_transformers_reads_them():
    c = config_lib.from_hf_config(DEEPSEEK_V3)
    assert c.rope_scaling.rope_type == "yarn" and c.rope_scaling.factor == 40 and c.rope_interleave
    assert config_lib.from_hf_config(MOONLIGHT_16B_A3B).q_lora_rank == 0
    no_tie = {k: v for k, v in QWEN25_7B_INSTRUCT.items() if k != "tie_word_embeddings"}
    assert config_lib.from_hf_config(no_tie).tie_word_embeddings is False  # transformers' default for qwen2
    assert config_lib.from_hf_config(LLAMA31_8B_INSTRUCT).eos_token_id == (128001, 128008, 128009)
    # to_hf_config writes a list back where there was one
    assert config_lib.to_hf_config(config_lib.from_hf_config(LLAMA31_8B_INSTRUCT))["eos_token_id"] == \
        [128001, 128008, 128009]


@pytest.mark.parametrize("key,value", [
    ("use_mrope", True), ("use_sliding_window", True), ("mlp_bias", True), ("attention_dropout", 0.1),
    ("hidden_act", "gelu"), ("layer_types", ["sliding_attention", "full_attention"]),
    ("quantization_config", {"quant_method": "awq", "bits": 4}), ("rope_scaling", {"type": "dynamic", "factor": 2.0}),
    ("some_new_key", 1),
])
def test_keys_that_change_the_math_fail_naming_the_key(key, value, tmp_path):
    base = copy.deepcopy(R1_DISTILL_QWEN_1_5B if key != "mlp_bias" else LLAMA31_8B_INSTRUCT)
    base[key] = value
    (tmp_path / "config.json").write_text(json.dumps(base))
    want = key if key not in ("rope_scaling",) else "rope"
    with pytest.raises(ValueError, match=f"config.json.*{want}"):
        config_lib.from_hf_config(tmp_path)
