"""XLA:CPU compiler options of the rollout engine's decode programs (r1jax.backends.decode_compiler_options)."""

from __future__ import annotations

import jax

# XLA:CPU options for the decode programs (None: none), read by each generate call (the compiled
# programs are cached per options). An empty ynn fusion type list turns off the YNNPACK rewrite of
# dots: Eigen runs the decode's small batched matmuls (per-expert [8, 512] x [512, 352], attention
# [8, 160] x [160, T] per sequence) faster; small_moe batch 32: 1.18x tokens/s in a same-process A/B
# (tools/bench_generate.py --compare-decode-options). A jaxlib that does not know an option gets the
# program without them.
CPU_DECODE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def jit_with_cpu_options(fn, options, **kw):
    """jax.jit(fn, **kw), compiled with `options` on the CPU backend when this jaxlib accepts them."""
    plain = jax.jit(fn, **kw)
    if not options or jax.default_backend() != "cpu":
        return plain
    chosen = [jax.jit(fn, compiler_options=options, **kw)]

    def call(*args):
        try:
            return chosen[0](*args)
        except jax.errors.JaxRuntimeError as e:  # raised at compile time, before any buffer is donated
            if chosen[0] is plain or "compile option" not in str(e):
                raise
            chosen[0] = plain
            return plain(*args)

    return call


