"""Pallas kernels with plain-JAX references of the same math.

MLA (DeepSeek-V3 Multi-head Latent Attention):
  mla_prefill(q, k, v, *, sm_scale, segment_ids=None, causal=True, ...) -> o
      flash attention for the train/prefill path (qk_dim != v_dim), custom VJP in Pallas.
  mla_decode(q_latent, q_rope, cache, lengths, *, sm_scale, kv_lora_rank, ...) -> o_latent
      absorbed decode over the latent KV cache, flash-decoding splits.
References live in pallas_kernels.reference. Every kernel interprets on CPU and compiles for
TPU (Mosaic) and GPU (Triton) from the same source (see pallas_kernels._backend).
"""
from .mla_decode import mla_decode
from .mla_prefill import mla_prefill
from .reference import (
    absorb_q,
    mla_decode_expanded_reference,
    mla_decode_reference,
    mla_prefill_blockwise_reference,
    mla_prefill_reference,
    unabsorb_o,
)

__all__ = [
    "mla_prefill", "mla_decode", "mla_prefill_reference", "mla_decode_reference",
    "mla_decode_expanded_reference", "mla_prefill_blockwise_reference", "absorb_q", "unabsorb_o",
]
