import numpy as np

from r1jax.data.packing import pack


def test_pack_masks_completion_only_and_restarts_positions():
    ex = [([5, 6, 7], [8, 9]), ([1, 2], [3]), ([4], [4, 4, 4, 4, 4, 4, 4, 4, 4])]
    out, st = pack(ex, 8)
    assert st["rows"] == 2 and st["truncated"] == 1
    np.testing.assert_array_equal(out["input_ids"][0], [5, 6, 7, 8, 9, 1, 2, 3])
    np.testing.assert_array_equal(out["segment_ids"][0], [1, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(out["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2])
    # targets 8, 9 (from positions 2, 3) and 3 (from position 6) are trained; nothing across segments
    np.testing.assert_array_equal(out["loss_mask"][0], [0, 0, 1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(out["targets"][0][[2, 3, 6]], [8, 9, 3])
    full, _ = pack(ex[:1], 8, loss_on_prompt=True)
    np.testing.assert_array_equal(full["loss_mask"][0], [1, 1, 1, 1, 0, 0, 0, 0])
