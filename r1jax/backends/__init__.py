"""How r1jax runs where: the backend-specific choices, in one place, that the model and the
rollout engine ask for. r1jax/model/ reads as the math; what XLA:CPU needs to run it fast lives
here (the GPU/TPU paths are the plain ones, plus the Pallas kernels under r1jax/model's
attention_impl):

    attention_impl()           attention_impl="auto": "pallas" on TPU / GPU, "xla" on CPU
    moe_dispatch()             "cpu" on CPU (backends/cpu_experts.py), else "ragged" (ragged_dot)
    expert_fn(name)            every routed-expert dispatch by name (model/experts.py's + the backends')
    lm_head_matmul()           CPU: the head matmul with a backward laid out for XLA:CPU
                               (backends/cpu_lm_head.py); elsewhere None (the plain einsum)
    unroll_layers(n)           CPU: unroll layer stacks of <= CPU_UNROLL_MAX_LAYERS layers
    unstack_for_decode()       CPU: one array per layer during generation (no per-step slice copies)
    decode_compiler_options()  CPU: XLA options of the decode programs (backends/cpu_compile.py)
    jit_with_options(fn, options, **kw)  jax.jit with those options where the backend takes them

Each answer follows `jax.default_backend()` at the time it is asked (trace time). One-way: this
package imports r1jax.model.experts (the generic math); r1jax/model never imports r1jax.backends'
modules at import time, only asks these functions when it traces. Measurements
behind the CPU choices: docs/PERF_CPU.md.
"""

from __future__ import annotations

import jax

from r1jax.backends import cpu_compile
from r1jax.backends.cpu_compile import jit_with_cpu_options
from r1jax.backends.cpu_experts import CPU_EXPERT_FNS
from r1jax.backends.cpu_lm_head import head_matmul_cpu
from r1jax.model.experts import GENERIC_EXPERT_FNS

# on CPU, layer stacks this shallow run unrolled: a while loop over layers stacks every residual of
# the backward into [n, ...] buffers (zero-filled, then written and read slice by slice), ~10% of a
# small model's train step; at this depth unrolling keeps compile time small
CPU_UNROLL_MAX_LAYERS = 8


def platform() -> str:
    return jax.default_backend()


def on_cpu() -> bool:
    return platform() == "cpu"


def attention_impl() -> str:
    """attention_impl="auto": "pallas" on TPU and GPU (the MLA kernels of pallas_kernels, and for the
    dense GQA path jax's splash attention on TPU / its Pallas flash attention on GPU), "xla" on CPU
    (where Pallas only interprets; the XLA path is blockwise from r1jax.model.flash.FLASH_MIN_LEN)."""
    return "pallas" if platform() in ("tpu", "gpu", "cuda", "rocm") else "xla"


ATTENTION_IMPLS = ("xla", "pallas", "auto")  # what SFT / GRPO configs may set ("" keeps the model's)
MOE_IMPLS = ("ragged", "dense", "ep")


def implementation_overrides(attention: str = "", moe: str = "") -> dict:
    """The model config keys a trainer config sets (SFT / GRPO `attention_impl`, `moe_impl`; "" keeps the
    model's, attention_impl="auto" is `attention_impl()` here)."""
    out = {}
    if attention:
        out["attention_impl"] = attention_impl() if attention == "auto" else attention
    if moe:
        out["moe_impl"] = moe
    return out


def moe_dispatch() -> str:
    """The dropless single-device routed-expert dispatch: "cpu" on CPU, else "ragged"."""
    return "cpu" if on_cpu() else "ragged"


def expert_fns() -> dict:
    """Every routed-expert dispatch by name: the generic ones (r1jax.model.experts: dense, ragged)
    and the backends' (cpu_experts: grouped, blocked, cpu)."""

    return {**GENERIC_EXPERT_FNS, **CPU_EXPERT_FNS}


def expert_fn(impl: str):
    """The dispatch named `impl` ("ragged" on CPU is not rewritten here: see moe_dispatch)."""
    fns = expert_fns()
    if impl not in fns:
        raise KeyError(f"unknown MoE dispatch {impl!r}; known: {sorted(fns)}")
    return fns[impl]


def lm_head_matmul():
    """The backend's 2-D LM-head matmul (x [tokens, hidden] @ kernel [hidden, vocab]), or None."""
    if on_cpu():
        return head_matmul_cpu
    return None


def unroll_layers(n_layers: int) -> bool:
    """Whether a stack of n_layers layers runs unrolled (its params stay stacked either way)."""
    return on_cpu() and n_layers <= CPU_UNROLL_MAX_LAYERS


def unstack_for_decode() -> bool:
    """Whether generation splits the stacked layer params into one array per layer."""
    return on_cpu()


def decode_compiler_options() -> dict | None:
    """XLA compiler options of the decode programs on this backend (None: none)."""
    if on_cpu():
        return cpu_compile.CPU_DECODE_COMPILER_OPTIONS
    return None


def jit_with_options(fn, options, **kw):
    """jax.jit(fn, **kw), with `options` where this backend and jaxlib accept them."""

    return jit_with_cpu_options(fn, options, **kw)
