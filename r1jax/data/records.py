"""Data files as the Hub, verl and TRL write them: one reader for every dataset path a config names.

    src = open_records("train.parquet")          # a RecordSource: len(src), src[i] -> dict, iter(src)
    src = open_records("data/gsm8k/")            # a folder of Parquet shards, or a save_to_disk folder
    src = open_records("data/*.parquet")         # a glob of shards (read in sorted order)
    src.where(i)                                 # "data/train-00001-of-00002.parquet: row 17"

Formats (by name and content, never guessed from a failed decode):
  .jsonl               one JSON object per line (in RAM: the file's records as dicts)
  .json                a JSON list of objects (in RAM)
  .parquet, a folder of *.parquet, a glob
                       read with pyarrow a row group at a time: random access decodes the row group
                       holding the row (a small LRU cache), so a million-row file never sits decoded
                       in host memory; iteration streams record batches
  a `datasets.Dataset.save_to_disk` folder (dataset_info.json / state.json + *.arrow)
                       Arrow IPC streams, memory-mapped (the pages the process touches are resident,
                       the rest stays on disk)
Anything else fails naming the path and the formats read. Nested fields come back as Python values
(verl's `reward_model: {"style": ..., "ground_truth": ...}`, TRL's `prompt: [{"role", "content"}]`);
`field(record, "reward_model.ground_truth")` reads a dotted path.
"""

from __future__ import annotations

import bisect
import glob
import json
import os
import pathlib
import re
from collections import OrderedDict
from typing import Any, Iterator

from r1jax.data.jsonl import JsonlError, iter_jsonl

FORMATS = ".jsonl, .json (a list of objects), .parquet (a file, a folder of shards or a glob), or a folder " \
          "written by datasets' save_to_disk"
ROW_GROUP_CACHE = 4  # decoded row groups kept per Parquet source


class RecordSource:
    """Random-access records of one dataset (a Sequence of dicts)."""

    path: str

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, i: int) -> dict:
        raise NotImplementedError

    def where(self, i: int) -> str:
        return f"{self.path}: row {i}"

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.record(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.path}: row {i} of {n}")
        return self.record(i)

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self.record(i)


class ListSource(RecordSource):
    """JSONL / JSON records, parsed into RAM (errors name FILE:LINE / FILE: item N)."""

    def __init__(self, path: str, records: list[dict], wheres: list[str]):
        self.path, self._records, self._wheres = path, records, wheres

    def __len__(self):
        return len(self._records)

    def record(self, i):
        return self._records[i]

    def where(self, i):
        return self._wheres[i]


class ParquetSource(RecordSource):
    """Parquet shards read a row group at a time (module doc)."""

    def __init__(self, path: str, files: list[str]):
        import pyarrow.parquet as pq  # heavy: loaded only for Parquet / save_to_disk data

        self.path, self.files = path, files
        self._groups = []  # (file index, row group, first global row)
        self._starts = []
        self._file_first = []  # first global row of each file
        n = 0
        for fi, f in enumerate(files):
            self._file_first.append(n)
            try:
                meta = pq.ParquetFile(f).metadata
            except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError kinds
                raise JsonlError(f"{f}: not a readable Parquet file: {e}") from None
            for g in range(meta.num_row_groups):
                self._groups.append((fi, g, n))
                self._starts.append(n)
                n += meta.row_group(g).num_rows
        self._n = n
        self._cache: OrderedDict = OrderedDict()
        self._files: dict = {}

    def __len__(self):
        return self._n

    def _locate(self, i: int):
        k = bisect.bisect_right(self._starts, i) - 1
        return k, self._groups[k]

    def _group(self, k: int):
        """Row group k as a pyarrow Table (decoded columns; rows become dicts one at a time)."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        import pyarrow.parquet as pq  # heavy: loaded only for Parquet / save_to_disk data

        fi, g, _ = self._groups[k]
        pf = self._files.get(fi)
        if pf is None:
            pf = self._files[fi] = pq.ParquetFile(self.files[fi])
        table = pf.read_row_group(g)
        self._cache[k] = table
        while len(self._cache) > ROW_GROUP_CACHE:
            self._cache.popitem(last=False)
        return table

    def record(self, i):
        k, (_, _, start) = self._locate(i)
        return self._group(k).slice(i - start, 1).to_pylist()[0]

    def where(self, i):
        k, (fi, _, _) = self._locate(i)
        return f"{self.files[fi]}: row {i - self._file_first[fi]}"

    def __iter__(self):
        import pyarrow.parquet as pq  # heavy: loaded only for Parquet / save_to_disk data

        for f in self.files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                yield from batch.to_pylist()


class ArrowDiskSource(RecordSource):
    """A datasets save_to_disk folder: its Arrow stream files, memory-mapped."""

    def __init__(self, path: str, files: list[str]):
        import pyarrow as pa  # heavy: loaded only for Parquet / save_to_disk data

        self.path, self.files = path, files
        self._tables, self._starts, n = [], [], 0
        for f in files:
            try:
                t = pa.ipc.open_stream(pa.memory_map(f, "r")).read_all()
            except Exception as e:  # noqa: BLE001
                raise JsonlError(f"{f}: not an Arrow stream (datasets save_to_disk) file: {e}") from None
            self._tables.append(t)
            self._starts.append(n)
            n += t.num_rows
        self._n = n

    def __len__(self):
        return self._n

    def _locate(self, i):
        k = bisect.bisect_right(self._starts, i) - 1
        return k, i - self._starts[k]

    def record(self, i):
        k, r = self._locate(i)
        return self._tables[k].slice(r, 1).to_pylist()[0]

    def where(self, i):
        k, r = self._locate(i)
        return f"{self.files[k]}: row {r}"


def _not_text(p: pathlib.Path) -> JsonlError:
    with p.open("rb") as f:
        head = f.read(8)
    kind = "Parquet" if head[:4] == b"PAR1" else "Arrow" if head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff" \
        else "binary"
    return JsonlError(f"{p}: not UTF-8 text: the file is {kind} data; datasets are read by their extension "
                      f"({FORMATS})")


def _read_jsonl(p: pathlib.Path) -> ListSource:
    recs, wheres = [], []
    try:
        for lineno, rec in iter_jsonl(p):
            recs.append(rec)
            wheres.append(f"{p}:{lineno}")
    except UnicodeDecodeError:
        raise _not_text(p) from None
    return ListSource(str(p), recs, wheres)


def _read_json(p: pathlib.Path) -> ListSource:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _not_text(p) from None
    except json.JSONDecodeError as e:
        raise JsonlError(f"{p}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):  # {"data": [...]} as some exports write
        data = data["data"]
    if not isinstance(data, list):
        raise JsonlError(f"{p}: a .json dataset is a list of objects, got {type(data).__name__} (JSON Lines: .jsonl)")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise JsonlError(f"{p}: item {i}: expected a JSON object, got {type(rec).__name__}")
    return ListSource(str(p), data, [f"{p}: item {i}" for i in range(len(data))])


def _split_of(path: str) -> str:
    """The split a Hub-style shard belongs to ("main/train-00000-of-00002.parquet" -> "train"); other
    names: their folder."""

    rel = path.rsplit(".parquet", 1)[0]
    return re.sub(r"-\d{5}-of-\d{5}$", "", rel).rsplit("/", 1)[-1] if re.search(r"-\d{5}-of-\d{5}$", rel) \
        else os.path.dirname(path)


def open_records(path: str | os.PathLike) -> RecordSource:
    """The records of a dataset path (module doc); FileNotFoundError / JsonlError naming it otherwise."""
    s = str(path)
    if any(ch in s for ch in "*?["):
        files = sorted(glob.glob(s))
        if not files:
            raise FileNotFoundError(f"dataset {s}: the glob matches no file")
        bad = [f for f in files if not f.endswith(".parquet")]
        if bad:
            raise JsonlError(f"dataset {s}: a glob reads Parquet shards; {bad[0]} is not .parquet ({FORMATS})")
        return ParquetSource(s, files)
    p = pathlib.Path(s)
    if p.is_dir():
        if (p / "state.json").exists():  # save_to_disk: its data files, as state.json lists them
            try:
                files = [str(p / f["filename"]) for f in json.loads((p / "state.json").read_text())["_data_files"]]
            except (KeyError, TypeError, json.JSONDecodeError) as e:
                raise JsonlError(f"dataset folder {p}: state.json does not list its data files ({e})") from None
            return ArrowDiskSource(str(p), files)
        parquet = sorted(str(x) for x in p.rglob("*.parquet"))
        if parquet:
            splits = sorted({_split_of(f) for f in parquet})
            if len(splits) > 1:
                raise JsonlError(f"dataset folder {p} holds Parquet shards of several splits ({', '.join(splits)}): "
                                 f"name one, e.g. {p}/**/{splits[-1]}-*.parquet as a glob, or its file")
            return ParquetSource(str(p), parquet)
        raise JsonlError(f"dataset folder {p}: no *.parquet shards and no save_to_disk files (state.json + "
                         f"*.arrow); datasets are read from {FORMATS}")
    if not p.exists():
        raise FileNotFoundError(f"dataset {p} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(p)
    if suffix == ".json":
        return _read_json(p)
    if suffix == ".parquet":
        return ParquetSource(str(p), [str(p)])
    raise JsonlError(f"dataset {p}: unknown format {suffix or '(no extension)'!r}; datasets are read from {FORMATS}")


def field(record: dict, key: str, where: str = "<record>") -> Any:
    """record[key], or a dotted path through nested objects ("reward_model.ground_truth"); a key
    holding a dot itself wins over the path. JsonlError naming `where` and the keys present."""
    if key in record:
        return record[key]
    cur: Any = record
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            have = sorted(cur) if isinstance(cur, dict) else type(cur).__name__
            raise JsonlError(f"{where}: missing key {key!r} (at {part!r}); keys present: {have}")
        cur = cur[part]
    return cur


def has_field(record: dict, key: str) -> bool:
    try:
        field(record, key)
        return True
    except JsonlError:
        return False


__all__ = ["open_records", "RecordSource", "field", "has_field", "FORMATS"]
