"""Helpers every MLA Pallas kernel (and the plain-JAX references) uses: the masked-logit value, the
matmul precision of an input dtype, 2-D dots with float32 accumulation, ceil-division."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# A masked logit and the online softmax's initial running max: finite (no inf - inf = NaN when a
# row has no allowed key), and 0.7 of float32's max so that sums of a few stay finite.
NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def precision(dtype):
    """HIGHEST for float32 inputs (exact float32 matmuls, as the references), DEFAULT for bf16 / fp16."""
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def dot_nt(a, b, prec):   # [m, k] x [n, k] -> [m, n]
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=prec,
                           preferred_element_type=jnp.float32)


def dot_nn(a, b, prec):   # [m, k] x [k, n] -> [m, n]
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=prec,
                           preferred_element_type=jnp.float32)


def dot_tn(a, b, prec):   # [k, m] x [k, n] -> [m, n]
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=prec,
                           preferred_element_type=jnp.float32)


def cdiv(a, b: int):
    """ceil(a / b) for a static b > 0: a Python int for a static `a` (shapes, grid sizes), an int32
    for a traced one (a block index inside a kernel).

    >>> cdiv(7, 4), cdiv(8, 4), int(cdiv(jnp.int32(9), 4))
    (2, 2, 3)
    """
    if isinstance(a, jax.Array):  # traced (or a concrete jax value)
        return lax.div(a + jnp.int32(b - 1), jnp.int32(b))
    return -(-int(a) // int(b))
