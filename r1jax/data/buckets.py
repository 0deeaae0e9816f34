"""Shape buckets: a size rounded up to one of few values, so that jitted programs see few distinct
shapes (each new shape is a retrace and a compile). Two kinds, by how much padding they may add:

    pow2_bucket(n, minimum)   the smallest minimum * 2^k >= n: few buckets over a wide range of sizes
                              (the rollout engines' prompt lengths and row counts, the reward model's
                              batches); at most ~2x padding
    round_up(n, multiple)     the smallest multiple of `multiple` >= n: more buckets, little padding
                              (the GRPO update's row length)
"""

from __future__ import annotations


def pow2_bucket(n: int, minimum: int) -> int:
    """The smallest minimum * 2^k >= n (k >= 0): a power of two when `minimum` is one.

    >>> pow2_bucket(5, 1), pow2_bucket(16, 16), pow2_bucket(17, 16), pow2_bucket(0, 8), pow2_bucket(9, 3)
    (8, 16, 32, 8, 12)
    """
    if minimum < 1:
        raise ValueError(f"pow2_bucket: minimum must be >= 1, got {minimum}")
    b = int(minimum)
    while b < n:
        b *= 2
    return b


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= n.

    >>> round_up(1, 32), round_up(32, 32), round_up(33, 32), round_up(0, 32), round_up(130, 128)
    (32, 32, 64, 0, 256)
    """
    if multiple < 1:
        raise ValueError(f"round_up: multiple must be >= 1, got {multiple}")
    return -(-int(n) // multiple) * multiple
