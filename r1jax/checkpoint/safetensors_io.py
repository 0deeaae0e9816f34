"""Read and write safetensors files with numpy (incl. bfloat16 and float8 via ml_dtypes), no torch.

The format: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}}, then the raw little-endian bytes. Reading memory-maps the file, so a tensor is
only read when asked for.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

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


class SafeTensorsFile:
    """Lazy reader: `keys()`, `shape(k)`, `dtype(k)`, `get(k) -> np.ndarray` (a view of the mmap)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.path}: not a readable safetensors file ({e})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header = header
        self._offset = 8 + n
        self._mm = None

    def keys(self):
        return list(self.header)

    def shape(self, k) -> tuple:
        return tuple(self.header[k]["shape"])

    def dtype(self, k) -> np.dtype:
        name = self.header[k]["dtype"]
        if name not in DTYPES:
            raise ValueError(f"{self.path}: tensor {k!r} has unsupported dtype {name}")
        return DTYPES[name]

    def get(self, k) -> np.ndarray:
        if k not in self.header:
            raise KeyError(f"{self.path}: no tensor {k!r}")
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        a, b = self.header[k]["data_offsets"]
        raw = self._mm[self._offset + a: self._offset + b]
        return raw.view(self.dtype(k)).reshape(self.shape(k))


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Writes numpy arrays (any dtype in DTYPES) as a safetensors file."""
    header, offset, order = {}, 0, sorted(tensors)
    for k in order:
        a = np.ascontiguousarray(tensors[k])
        if a.dtype not in NAMES:
            raise ValueError(f"tensor {k!r}: dtype {a.dtype} cannot be written to safetensors")
        header[k] = {"dtype": NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt", **(metadata or {})}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for k in order:
            f.write(np.ascontiguousarray(tensors[k]).tobytes())
    os.replace(tmp, path)
