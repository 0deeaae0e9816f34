import numpy as np

from r1jax.data.packing import pack


def test_pack_masks_completion_only_and_restarts_positions():
    ex = [([5, 6, 7], [8, 9]), ([1, 2], [3]), ([4], [4, 4, 4, 4, 4, 4, 4, 4, 4])]
    out, st = pack(ex, 8)
    assert st["rows"] == 2 and st["truncated"] == 1
    # best-fit decreasing: the (truncated) 8-token example fills row 0, the other two share row 1
    np.testing.assert_array_equal(out["input_ids"][0], [4] * 8)
    out = {k: v[1:] for k, v in out.items()}
    np.testing.assert_array_equal(out["input_ids"][0], [5, 6, 7, 8, 9, 1, 2, 3])
    np.testing.assert_array_equal(out["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(out["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])
    # targets 8, 9 (from positions 2, 3) and 3 (from position 6) are trained; nothing across segments
    np.testing.assert_array_equal(out["loss_mask"][0], [0, 0, 1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(out["targets"][0][[2, 3, 6]], [8, 9, 3])
    full, _ = pack(ex[:1], 8, loss_on_prompt=True)
    np.testing.assert_array_equal(full["loss_mask"][0], [1, 1, 1, 1, 0, 0, 0, 0])


def _best_fit_brute(lengths, cap):
    """Best-fit decreasing by scanning every open row (the O(n x rows) definition)."""
    free = []
    for i in np.argsort(-np.asarray(lengths), kind="stable"):
        fits = [r for r, f in enumerate(free) if f >= lengths[i]]
        if not fits:
            free.append(cap)
            fits = [len(free) - 1]
        r = min(fits, key=lambda r: free[r])
        free[r] -= lengths[i]
    return sorted(free)


def test_best_fit_decreasing_matches_the_scan():
    from r1jax.data.packing import best_fit_decreasing

    rng = np.random.default_rng(0)
    for _ in range(100):
        cap = int(rng.integers(1, 200))
        lengths = rng.integers(1, cap + 1, int(rng.integers(0, 150)))
        row_of = best_fit_decreasing(lengths, cap)
        n_rows = int(row_of.max()) + 1 if len(lengths) else 0
        loads = np.bincount(row_of, weights=lengths, minlength=n_rows) if n_rows else np.zeros(0)
        assert (loads <= cap).all()
        assert sorted((cap - loads).astype(int).tolist()) == _best_fit_brute(lengths, cap)


def test_pack_plan_windows_seeded_and_streamed_rows(tmp_path):
    """PackPlan: every example once (short ones out), rows within seq_len, the same plan from the same
    lengths and seed; rows built from a disk token store equal those of the in-memory one."""
    from r1jax.data.packing import PackPlan, fill_rows
    from r1jax.data.token_store import TokenStore

    rng = np.random.default_rng(1)
    ex = [(list(rng.integers(1, 50, rng.integers(1, 6))), list(rng.integers(1, 50, rng.integers(0, 30))))
          for _ in range(300)]
    mem = TokenStore.build(ex)
    disk = TokenStore.build(iter(ex), path=str(tmp_path / "toks.bin"))
    assert isinstance(disk.tokens, np.memmap)
    np.testing.assert_array_equal(mem.lengths, disk.lengths)
    plan = PackPlan.build(mem.lengths, 32, window=64, seed=3)
    again = PackPlan.build(disk.lengths, 32, window=64, seed=3)
    np.testing.assert_array_equal(plan.members, again.members)
    keep = sorted(i for i, (p, c) in enumerate(ex) if len(p) + len(c) >= 2)
    assert sorted(plan.members.tolist()) == keep
    for r in range(plan.rows):
        assert np.minimum(mem.lengths[plan.row(r)], 32).sum() <= 32
    sel = [0, 5, plan.rows - 1]
    a = fill_rows([[(mem.example(j)[0][:32], mem.example(j)[1]) for j in plan.row(r)] for r in sel], 32)
    b = fill_rows([[(disk.example(j)[0][:32], disk.example(j)[1]) for j in plan.row(r)] for r in sel], 32)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert plan.fill > 0.9
    assert disk.id_range() == (int(min(min(p + c) for p, c in ex if p + c)), int(max(max(p + c) for p, c in ex)))
