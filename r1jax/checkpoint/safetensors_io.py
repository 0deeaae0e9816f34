"""Read and write safetensors files as numpy arrays (incl. bfloat16 and float8 via ml_dtypes), no torch.

Reading and writing go through the `safetensors` library: `safe_open(path, framework="numpy")`
(memory-mapped, a tensor is only read when asked for; `get_slice` gives shapes and dtypes without
reading data) and `safetensors.numpy.save_file`. bfloat16 needs `ml_dtypes` imported (the library
resolves the numpy dtype by the name "bfloat16", which ml_dtypes registers), as this module does.
No speed reason keeps a hand-written reader: `get` + astype(float32) over 256 MB of bf16 tensors
took 0.06 s through the library vs 0.04 s through the former memmap view (2 CPU cores).

One hand-written part stays, for float8 tensors only (`_read_fp8`): safetensors 0.8.0's numpy
(and flax) framework builds F8_E4M3 / F8_E5M2 arrays with `getattr(numpy, "float8_e4m3fn")`,
which numpy does not have, so `get_tensor` and `get_slice(...)[...]` on an FP8 tensor raise
`AttributeError: module 'numpy' has no attribute 'float8_e4m3fn'` (measured 2026-11-26 with
safetensors 0.8.0, numpy + ml_dtypes 0.6.0; writing FP8 works). The DeepSeek-V3 release stores its
weights as F8_E4M3, so those tensors are read from the file's header offsets (8-byte little-endian
header length, JSON header with `data_offsets`) as a view of a memory map, the way the library
would.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
NAMES = {v: k for k, v in DTYPES.items()}
_FP8 = ("F8_E4M3", "F8_E5M2")  # read by `_read_fp8` (see module doc)


class SafeTensorsFile:
    """Lazy reader: `keys()`, `shape(k)`, `dtype(k)`, `get(k) -> np.ndarray`; errors name file and tensor."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            self._f = safetensors.safe_open(self.path, framework="numpy")
        except (OSError, safetensors.SafetensorError) as e:
            raise ValueError(f"{self.path}: not a readable safetensors file ({e})") from None
        self.metadata = self._f.metadata() or {}
        self._keys = list(self._f.keys())
        self._names = set(self._keys)
        self._fp8 = None  # (header, data offset, memmap), only once an FP8 tensor is read

    def keys(self):
        return list(self._keys)

    def _slice(self, k):
        if k not in self._names:
            raise KeyError(f"{self.path}: no tensor {k!r}")
        return self._f.get_slice(k)

    def shape(self, k) -> tuple:
        return tuple(self._slice(k).get_shape())

    def dtype(self, k) -> np.dtype:
        name = self._slice(k).get_dtype()
        if name not in DTYPES:
            raise ValueError(f"{self.path}: tensor {k!r} has unsupported dtype {name}")
        return DTYPES[name]

    def get(self, k) -> np.ndarray:
        dt = self.dtype(k)  # checks the name and the dtype first
        if NAMES[dt] in _FP8:
            return self._read_fp8(k, dt)
        try:
            return self._f.get_tensor(k)
        except (safetensors.SafetensorError, ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"{self.path}: cannot read tensor {k!r} ({e})") from None

    def _read_fp8(self, k, dt) -> np.ndarray:
        if self._fp8 is None:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            self._fp8 = (header, 8 + n, np.memmap(self.path, dtype=np.uint8, mode="r"))
        header, off, mm = self._fp8
        a, b = header[k]["data_offsets"]
        return mm[off + a: off + b].view(dt).reshape(self.shape(k))


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Writes numpy arrays (any dtype in DTYPES) as a safetensors file (atomically: temp file, rename)."""
    arrays = {}
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k])  # the library writes the raw buffer: must be C-contiguous
        if a.dtype not in NAMES:
            raise ValueError(f"tensor {k!r}: dtype {a.dtype} cannot be written to safetensors")
        arrays[k] = a
    tmp = os.fspath(path) + ".tmp"
    safetensors.numpy.save_file(arrays, tmp, metadata={"format": "pt", **(metadata or {})})
    os.replace(tmp, path)
