"""JSONL records: one JSON object per line. Errors name the file, the line and the key."""
from __future__ import annotations

import json
import os
import pathlib
from typing import Iterable, Iterator, Mapping, Sequence


class JsonlError(ValueError):
    """Malformed JSONL input; the message names the file and line."""


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ("problem", "answer")) -> list[dict]:
    """Records of the JSONL file at `path`. Blank lines are skipped. Every record must be a JSON
    object holding each key of `required`; otherwise JsonlError("FILE:LINE: ...")."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"JSONL file {p} does not exist")
    out: list[dict] = []
    for lineno, rec in iter_jsonl(p):
        missing = [k for k in required if k not in rec]
        if missing:
            raise JsonlError(
                f"{p}:{lineno}: missing key {missing[0]!r}"
                + (f" (also {missing[1:]})" if len(missing) > 1 else "")
                + f"; keys present: {sorted(rec)}"
            )
        out.append(rec)
    return out


def iter_jsonl(p: pathlib.Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) for each non-blank line of the file at `p`; JsonlError("FILE:LINE: ...")
    for a line that is not a JSON object (UnicodeDecodeError passes through to the caller)."""
    with p.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlError(f"{p}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise JsonlError(f"{p}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            yield lineno, rec


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping]) -> int:
    """Write `records` (mappings) one per line, UTF-8, creating parent folders; returns the count.
    Written to a temporary file first, then renamed, so a crash leaves no half file."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for i, rec in enumerate(records):
            if not isinstance(rec, Mapping):
                raise TypeError(f"record {i} for {p} is a {type(rec).__name__}, not a mapping")
            f.write(json.dumps(dict(rec), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, p)
    return n
