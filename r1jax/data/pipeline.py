"""Grain input pipeline over JSONL records (prompts for RL, SFT pairs, eval problems).

    pipe = PromptPipeline("train.jsonl", batch_size=64, seed=0,
                          shard_index=jax.process_index(), shard_count=jax.process_count())
    for step, batch in zip(range(n), pipe): ...        # batch: list of record dicts
    state = pipe.get_state()                          # JSON-serializable; store it in the checkpoint
    pipe2 = PromptPipeline(..same args..); pipe2.set_state(state)   # continues the same order

Order: the records are sharded first (process `shard_index` takes records
shard_index, shard_index + shard_count, ...), then shuffled with `seed`, with a fresh
permutation every epoch (grain's per-epoch reseeding), repeated `num_epochs` times (None:
forever), and batched (a batch can straddle two epochs; the last partial batch of a finite run is dropped unless
drop_remainder=False). All of it is index arithmetic over a grain.MapDataset, so the iterator
state is one integer and restoring it resumes exactly.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import grain

from r1jax.data.jsonl import read_jsonl

STATE_VERSION = 1


def records_dataset(
    records: Sequence[Any],
    *,
    batch_size: int,
    seed: int,
    shard_index: int = 0,
    shard_count: int = 1,
    num_epochs: int | None = None,
    shuffle: bool = True,
    drop_remainder: bool = True,
    transform: Callable[[Any], Any] | None = None,
    batch_fn: Callable[[Sequence[Any]], Any] | None = list,
) -> grain.MapDataset:
    """The batched grain.MapDataset described in the module docstring."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, shard_count={shard_count})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # a random-access source (r1jax.data.prompts.PromptRecords over Parquet) is indexed as it is, not copied
    ds = grain.MapDataset.source(records if hasattr(records, "__getitem__") and hasattr(records, "__len__")
                                 else list(records))
    if shard_count > 1:
        ds = ds[shard_index::shard_count]
    if len(ds) == 0:
        raise ValueError(f"shard {shard_index}/{shard_count} of {len(records)} records is empty")
    if shuffle:
        ds = ds.shuffle(seed=int(seed) % 2**32)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.map(transform)
    return ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=batch_fn)


class PromptPipeline:
    """Iterator of record batches with a saveable / restorable position (see module docstring).

    `source`: a JSONL path (read with read_jsonl(path, required)) or a sequence of records.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[Any],
        *,
        batch_size: int,
        seed: int,
        shard_index: int = 0,
        shard_count: int = 1,
        num_epochs: int | None = None,
        shuffle: bool = True,
        drop_remainder: bool = True,
        required: Sequence[str] = ("problem", "answer"),
        transform: Callable[[Any], Any] | None = None,
    ):
        if isinstance(source, (str, os.PathLike)):
            self.path = str(source)
            records = read_jsonl(source, required=required)
        else:
            self.path = None
            records = source if hasattr(source, "__getitem__") and hasattr(source, "__len__") else list(source)
        self.num_records = len(records)
        self.config = dict(batch_size=int(batch_size), seed=int(seed), shard_index=int(shard_index),
                           shard_count=int(shard_count), num_epochs=num_epochs, shuffle=bool(shuffle),
                           drop_remainder=bool(drop_remainder), num_records=self.num_records)
        self.dataset = records_dataset(records, batch_size=batch_size, seed=seed, shard_index=shard_index,
                                       shard_count=shard_count, num_epochs=num_epochs, shuffle=shuffle,
                                       drop_remainder=drop_remainder, transform=transform)
        self._iter = self._new_iter()

    def _new_iter(self):
        # No prefetch threads: batches are cheap, and the state stays a plain index.
        opts = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
        return iter(self.dataset.to_iter_dataset(read_options=opts))

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)

    def __len__(self) -> int:
        """Batches per full run (a huge number when repeating forever)."""
        return len(self.dataset)

    @property
    def batches_per_epoch(self) -> int:
        per_shard = len(range(self.config["shard_index"], self.num_records, self.config["shard_count"]))
        b = self.config["batch_size"]
        return per_shard // b if self.config["drop_remainder"] else -(-per_shard // b)

    def get_state(self) -> dict:
        """JSON-serializable position (with the configuration, checked on restore)."""
        return dict(version=STATE_VERSION, config=dict(self.config), iterator=self._iter.get_state())

    def set_state(self, state: dict) -> None:
        """Continue from `state` (from get_state of a pipeline with the same configuration)."""
        if not isinstance(state, dict) or "iterator" not in state or "config" not in state:
            raise ValueError(f"not a PromptPipeline state: {state!r}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state version {state.get('version')} != {STATE_VERSION}")
        diff = {k: (state["config"].get(k), v) for k, v in self.config.items() if state["config"].get(k) != v}
        if diff:
            raise ValueError(f"pipeline state was saved with another configuration (saved, now): {diff}")
        self._iter = self._new_iter()
        self._iter.set_state(state["iterator"])
