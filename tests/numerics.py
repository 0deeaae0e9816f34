"""Float comparisons whose tolerance is on the scale of the values compared.

The same math run by two different programs (another fusion, blocking, reduction order, XLA:CPU
thread count or vector width, another CPU, torch vs XLA) differs in float32 by a few ulps *of the
largest terms involved*, not of each output element: an element that is a small sum of large terms
carries the large terms' rounding. So

* an absolute tolerance (atol=1e-6) is machine-dependent: too tight for values of magnitude 5,
  meaningless for values of magnitude 1e-8;
* a purely elementwise rtol fails on elements near zero.

`assert_close` bounds the largest difference by rtol times the largest magnitude of the reference
(or of an explicit `scale`). Pick rtol well above float32 noise (~1e-7 per op, ~1e-6 after a few
layers) and well below a real bug: a wrong scale, a missing term, a swapped axis or a wrong mask
move results by O(1) of their scale; even a silent bf16 round trip moves them by ~4e-3.

Set R1JAX_TOL_LOG=<file> to append each comparison's observed error / allowed error to <file>
(to see the margins on a machine).
"""

from __future__ import annotations

import os

import numpy as np


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def max_rel_err(actual, desired, scale=None) -> float:
    """max|actual - desired| / scale, scale = max|desired| by default (0/0 -> 0)."""
    a, b = _f64(actual), _f64(desired)
    s = float(np.abs(b).max()) if scale is None and b.size else float(scale or 0.0)
    err = float(np.abs(a - b).max()) if a.size else 0.0
    if err == 0.0:
        return 0.0
    return err / s if s > 0 else float("inf")


def _log(err: float, allowed: float, err_msg: str) -> None:
    path = os.environ.get("R1JAX_TOL_LOG")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    ratio = err / allowed if allowed > 0 else (0.0 if err == 0 else float("inf"))
    with open(path, "a") as f:
        f.write(f"{ratio:.3e}\t{test}\t{err_msg}\n")


def assert_close(actual, desired, rtol: float, *, scale=None, err_msg: str = "") -> None:
    """max|actual - desired| <= rtol * scale, scale = max|desired| unless given.

    Shapes must match; non-finite entries must be identical (same positions and values).
    """
    a, b = _f64(actual), _f64(desired)
    assert a.shape == b.shape, f"{err_msg}: shape {a.shape} != {b.shape}"
    fa, fb = np.isfinite(a), np.isfinite(b)
    assert np.array_equal(fa, fb) and np.array_equal(a[~fa], b[~fb], equal_nan=True), f"{err_msg}: non-finite entries differ"
    a, b = np.where(fa, a, 0.0), np.where(fb, b, 0.0)
    s = float(np.abs(b).max()) if scale is None and b.size else float(scale or 0.0)
    diff = np.abs(a - b)
    err = float(diff.max()) if diff.size else 0.0
    allowed = rtol * s
    _log(err, allowed, err_msg)
    if err <= allowed:
        return
    at = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), diff.shape))
    raise AssertionError(
        f"{err_msg}\nmax|actual - desired| = {err:.3e} at {at} (actual {a[at]:.7g}, desired {b[at]:.7g})"
        f" > rtol {rtol:g} x scale {s:.4g} = {allowed:.3e}  (relative error {err / s if s else float('inf'):.3e})")


def first_disagreement(got, want, want_logits, rtol: float, err_msg: str = "") -> int:
    """Greedy tokens `got` against the reference's greedy tokens `want`, where want_logits[t] are the
    reference's logits that chose want[t] (from the same context: the sequences agree before t).

    They must be equal, except that they may part at a step where the reference's logit of got[t]
    is within rtol * max|logits[t]| of its top logit: a near-tie that float error (another
    implementation or summation order) can flip. After that step the contexts differ and nothing
    more is compared. Returns the number of steps compared equal (len(want) when all are).
    A wrong model still fails: its first wrong token is not a near-tie of the reference.
    """
    assert len(got) == len(want), f"{err_msg}: {len(got)} tokens vs {len(want)}"
    for t, (g, w) in enumerate(zip(got, want)):
        if g == w:
            continue
        lg = _f64(want_logits[t])
        assert int(lg.argmax()) == w or lg[w] >= lg.max() - rtol * np.abs(lg).max(), \
            f"{err_msg}: want_logits[{t}] do not pick the reference's token"
        gap = float(lg.max() - lg[g])
        allowed = rtol * float(np.abs(lg).max())
        assert gap <= allowed, (
            f"{err_msg}: step {t}: token {g} instead of {w}; the reference's logit gap {gap:.3e} is no"
            f" near-tie (> {allowed:.3e})\n got  {list(got)}\n want {list(want)}")
        return t
    return len(want)


def min_top2_margin(logits) -> float:
    """Smallest (top1 - top2) / max|logits| over the rows of logits [..., vocab] (to report margins)."""
    lg = _f64(logits).reshape(-1, np.shape(logits)[-1])
    top2 = np.sort(lg, -1)[:, -2:]
    return float(((top2[:, 1] - top2[:, 0]) / np.abs(lg).max(-1)).min())
