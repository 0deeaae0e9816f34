"""The Grain prompt pipeline: per-epoch shuffles, sharding, and exact resume from saved state."""
import json

import pytest

from r1jax.data.jsonl import JsonlError, write_jsonl
from r1jax.data.pipeline import PromptPipeline


def _recs(n):
    return [{"problem": f"p{i}", "answer": i} for i in range(n)]


def _ids(batch):
    return [r["answer"] for r in batch]


def _take(pipe, k):
    return [_ids(next(pipe)) for _ in range(k)]


def test_epochs_are_permutations_with_fresh_order():
    pipe = PromptPipeline(_recs(12), batch_size=4, seed=3)
    assert pipe.batches_per_epoch == 3
    e1 = sum(_take(pipe, 3), [])
    e2 = sum(_take(pipe, 3), [])
    assert sorted(e1) == sorted(e2) == list(range(12))
    assert e1 != e2 and e1 != list(range(12))
    # Same seed, same order; another seed, another order.
    assert sum(_take(PromptPipeline(_recs(12), batch_size=4, seed=3), 3), []) == e1
    assert sum(_take(PromptPipeline(_recs(12), batch_size=4, seed=4), 3), []) != e1


def test_shards_partition_each_epoch():
    shards = [PromptPipeline(_recs(20), batch_size=5, seed=0, shard_index=i, shard_count=2) for i in range(2)]
    got = [sum(_take(s, 2), []) for s in shards]
    assert not set(got[0]) & set(got[1])
    assert sorted(got[0] + got[1]) == list(range(20))
    with pytest.raises(ValueError, match="shard_index"):
        PromptPipeline(_recs(4), batch_size=1, seed=0, shard_index=2, shard_count=2)


def test_finite_epochs_and_remainder():
    assert len(list(PromptPipeline(_recs(10), batch_size=3, seed=0, num_epochs=1))) == 3
    last = list(PromptPipeline(_recs(10), batch_size=3, seed=0, num_epochs=1, drop_remainder=False))
    assert [len(b) for b in last] == [3, 3, 3, 1]
    assert sorted(sum((_ids(b) for b in last), [])) == list(range(10))
    assert len(list(PromptPipeline(_recs(10), batch_size=5, seed=0, num_epochs=2))) == 4


def test_resume_mid_way_continues_identically(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, _recs(37))
    kw = dict(batch_size=8, seed=11, shard_index=1, shard_count=2)
    ref = PromptPipeline(path, **kw)
    full = _take(ref, 12)  # several epochs of this 19-record shard

    run = PromptPipeline(path, **kw)
    head = _take(run, 5)
    state = json.loads(json.dumps(run.get_state()))  # what a checkpoint would store
    assert head == full[:5]

    resumed = PromptPipeline(path, **kw)
    resumed.set_state(state)
    assert _take(resumed, 7) == full[5:]
    # The original iterator is unaffected by the save.
    assert _take(run, 7) == full[5:]


def test_state_rejects_other_configuration():
    a = PromptPipeline(_recs(10), batch_size=2, seed=0)
    next(a)
    b = PromptPipeline(_recs(10), batch_size=2, seed=1)
    with pytest.raises(ValueError, match="seed"):
        b.set_state(a.get_state())
    with pytest.raises(ValueError, match="not a PromptPipeline state"):
        b.set_state({"next_index": 3})


def test_jsonl_source_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "q"}\n', encoding="utf-8")
    with pytest.raises(JsonlError, match=rf"{path}:1: missing key 'answer'"):
        PromptPipeline(path, batch_size=1, seed=0)


def test_transform_applies_per_record():
    pipe = PromptPipeline(_recs(6), batch_size=3, seed=0, transform=lambda r: {**r, "answer": r["answer"] * 10})
    assert all(x % 10 == 0 for x in _ids(next(pipe)))
