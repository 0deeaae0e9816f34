"""Model configurations: presets and `from_hf_config`.

Keys and conventions (HF config.json names, `R1JAX_KEYS`, what 0 means where HF uses null): see
r1jax.config.schema.

Presets: `deepseek_v3_671b`, `qwen2_5_1_5b` (a real dense shape), `v3_moe_2b` (the V3
architecture at one-GPU size), `small_moe` (the training
benchmark's MoE), `toy_moe` (the toy R1-Zero base model), `tiny_moe` (tests),
`tiny_qwen2`, `tiny_llama`, `toy_qwen2`.

One module per concern, everything re-exported here (`from r1jax import config as config_lib`):

    schema.py     every key and its default (base_config), make_config, validate, is_moe, layer counts, dtype_of
    presets.py    the presets, PRESETS, get_preset
    hf.py         from_hf_config / to_hf_config (HF config.json)
    counting.py   count_params, flops_per_token
    overrides.py  override (the key=value walk the GRPO / SFT configs use too), check_keys, check_choice
"""

from r1jax.config.counting import count_params, flops_per_token
from r1jax.config.hf import FP8_QUANT, from_hf_config, to_hf_config
from r1jax.config.overrides import OPEN as OPEN_SCHEMA
from r1jax.config.overrides import ConfigKeyError, check_choice, check_keys, closest, override, schema_of, unknown_key
from r1jax.config.presets import (
                                   PRESETS,
                                   deepseek_v3_671b,
                                   get_preset,
                                   qwen2_5_1_5b,
                                   small_moe,
                                   tiny_llama,
                                   tiny_moe,
                                   tiny_qwen2,
                                   toy_moe,
                                   toy_qwen2,
                                   v3_moe_2b,
)
from r1jax.config.schema import (
                                   DTYPES,
                                   MODEL_TYPES,
                                   R1JAX_KEYS,
                                   REMAT_POLICIES,
                                   base_config,
                                   dtype_of,
                                   eos_ids,
                                   is_moe,
                                   make_config,
                                   num_dense_layers,
                                   num_moe_layers,
                                   replace,
                                   validate,
)

__all__ = [
    "base_config", "make_config", "replace", "validate", "from_hf_config", "to_hf_config", "count_params", "flops_per_token",
    "get_preset", "PRESETS", "is_moe", "num_dense_layers", "num_moe_layers", "dtype_of", "override",
    "eos_ids", "MODEL_TYPES", "R1JAX_KEYS", "DTYPES", "REMAT_POLICIES", "check_choice", "check_keys", "closest",
    "schema_of", "ConfigKeyError", "unknown_key", "OPEN_SCHEMA", "FP8_QUANT", "deepseek_v3_671b", "v3_moe_2b", "small_moe", "toy_moe",
    "toy_qwen2", "qwen2_5_1_5b", "tiny_moe", "tiny_qwen2", "tiny_llama",
]
