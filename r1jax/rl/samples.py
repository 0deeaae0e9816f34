"""Per-sample reductions over token arrays, padded or packed: the one place a loss finds which
sample a token belongs to.

An update batch holds token arrays [rows, seq] and per-sample arrays [num_samples]:

    padded  (one sample per row):  sample_index = None: row i is sample i (num_samples == rows)
    packed  (samples as segments): sample_index [rows, seq] int32, the sample of each token in
                                   [0, num_samples), -1 on padding

    idx = sample_ids(sample_index, rows, seq)            # [rows, seq], -1 where no sample
    n_i = sample_sum(mask, idx, S)                       # [S] tokens of each sample in the mask
    a_t = per_token(advantages, idx)                     # [rows, seq] each token's sample's value

Sums are `jax.ops.segment_sum` over the flattened tokens (padding goes to a dropped extra
segment), so the reductions are exact under any packing of the samples into rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_ids(sample_index, rows: int, seq: int):
    """[rows, seq] int32: `sample_index`, or (None) the row index of every token."""
    if sample_index is None:
        return jnp.broadcast_to(jnp.arange(rows, dtype=jnp.int32)[:, None], (rows, seq))
    sample_index = jnp.asarray(sample_index)
    if sample_index.shape != (rows, seq):
        raise ValueError(f"sample_index must be [rows, seq]={(rows, seq)}, got {sample_index.shape}")
    return sample_index.astype(jnp.int32)


def sample_sum(x, idx, num_samples: int):
    """[rows, seq] values summed per sample -> [num_samples] (tokens with idx < 0 are dropped)."""
    seg = jnp.where(idx >= 0, idx, num_samples).reshape(-1)
    return jax.ops.segment_sum(jnp.reshape(x, (-1,)), seg, num_segments=num_samples + 1)[:num_samples]


def per_token(values, idx):
    """[num_samples] -> [rows, seq]: each token gets its sample's value (0 where idx < 0)."""
    values = jnp.asarray(values)
    ext = jnp.concatenate([values, jnp.zeros((1,), values.dtype)])
    return ext[jnp.where(idx >= 0, idx, values.shape[0])]


def present(idx, num_samples: int):
    """[num_samples] bool: the samples that own at least one token of the batch."""
    return sample_sum(jnp.ones(idx.shape, jnp.float32), idx, num_samples) > 0


__all__ = ["sample_ids", "sample_sum", "per_token", "present"]
