"""Batched generation with a compressed latent KV cache.

    out = r1jax.generate(model, params, prompts, max_new_tokens=64, temperature=0.6, top_p=0.95, seed=0, n=8)
    out.tokens[i], out.logprobs[i], out.finish_reason[i]   # for sample i = prompt i // n, copy i % n

Generation stops at any of the EOS ids: by default the checkpoint's set (`model.cfg.eos_token_id`:
config.json's ids and generation_config.json's, as `r1jax.from_pretrained` reads them, e.g.
Qwen2.5-Instruct's <|im_end|> and <|endoftext|>, Llama 3's three); trainers pass their tokenizer's
`eos_token_ids`; `eos_id=()` runs every sequence to max_new_tokens.

How it runs:
  - prompts (token lists) are right-padded into a bucketed [B, P] batch; the cache holds
    `max_len = bucket(P + max_new_tokens)` slots. For MLA layers a slot is the latent
    `[c_kv | k_rope]` (kv_lora_rank + qk_rope_head_dim numbers), for GQA layers K and V.
  - one jitted prefill writes the prompts (expanded MLA) and samples each prompt's first token
    from its last prompt position; the cache is then repeated `n` times, so the n samples of a
    prompt share its prefill;
  - one jitted decode loop (`lax.while_loop`, cache donated) feeds each sequence's last token at
    its own position (absorbed MLA over the cache, or the Pallas `mla_decode` kernel), samples,
    and stops each sequence at its own EOS; the loop ends when all are done or at max_new_tokens.
  - on CPU (or with `unstack_layers=True`) the layer params are split once per call into one
    array per layer (`r1jax.model.transformer.unstack_layers`) and the cache is one array per
    layer: XLA:CPU would otherwise copy every layer's weight slice out of the stacked params at
    every decode step (measured on small_moe: ~20% of a decode step);
  - on CPU the decode loop is compiled with XLA's YNNPACK dot rewrite off
    (`CPU_DECODE_COMPILER_OPTIONS`): Eigen runs the decode's small batched matmuls (per-expert
    [8, 512] x [512, 352], attention [8, 160] x [160, T] per sequence) faster; small_moe batch 32:
    1.18x tokens/s in a same-process A/B (tools/bench_generate.py --compare-decode-options);
  - batch, prompt and cache lengths are bucketed to powers of two (min 8/16) so that recompiles
    are rare; `compile_count()` reports how many prefill/decode programs were traced.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.generate.sampling import sample
from r1jax.model.transformer import init_cache, unstack_layers

_TRACES = {"prefill": 0, "decode": 0}


def compile_count() -> dict:
    """How many times the prefill and decode programs were traced (= compiled) in this process."""
    return dict(_TRACES)


def bucket(n: int, minimum: int = 16) -> int:
    b = minimum
    while b < n:
        b *= 2
    return b


@dataclasses.dataclass
class GenerationOutput:
    tokens: list[list[int]]  # completion tokens (EOS included when it stopped there)
    logprobs: list[list[float]]  # per completion token, under log_softmax(logits / T)
    finish_reason: list[str]  # "eos" | "length"
    prompt_index: list[int]  # which prompt each sample continues
    stats: dict


def _prefill(params, tokens, lengths, rng, idx, active, eos, *, model, max_len, temperature, top_p, top_k):
    """Prefill [b, p] prompts once, repeat rows by `idx` (n samples each), sample first tokens."""
    _TRACES["prefill"] += 1
    b, p = tokens.shape
    cache = init_cache(model.cfg, b, max_len, unstacked=model.unstacked)
    logits, cache = model.clone(mode="prefill").apply({"params": params}, tokens, cache=cache,
                                                      logits_at=lengths - 1)
    last = logits[:, 0]  # [b, vocab] at each prompt's last position
    batch_axis = 0 if model.unstacked else 1  # per-layer [b, L, ...] or stacked [n, b, L, ...]
    cache = jax.tree.map(lambda c: jnp.take(c, idx, axis=batch_axis), cache)
    tok, lp = sample(jnp.take(last, idx, axis=0), rng, temperature, top_p, top_k)
    done = jnp.isin(tok, eos) | ~active
    return cache, tok, lp, done


def _decode(params, cache, first_tok, first_lp, done, lengths, rng, eos, *, model, max_new, temperature, top_p,
            top_k):
    """Decode loop. lengths [b]: prompt lengths (slot of the first generated token)."""
    _TRACES["decode"] += 1
    b = first_tok.shape[0]
    dec = model.clone(mode="decode")
    out_tok = jnp.zeros((b, max_new), jnp.int32).at[:, 0].set(first_tok)
    out_lp = jnp.zeros((b, max_new), jnp.float32).at[:, 0].set(first_lp)
    n_gen = jnp.ones((b,), jnp.int32)

    def cond(st):
        i, _, _, _, done, _, _ = st
        return (i < max_new) & ~jnp.all(done)

    def body(st):
        i, cache, out_tok, out_lp, done, n_gen, rng = st
        rng, sub = jax.random.split(rng)
        prev = out_tok[:, i - 1]
        pos = (lengths + i - 1)[:, None]
        logits, cache = dec.apply({"params": params}, prev[:, None], pos, cache=cache)
        tok, lp = sample(logits[:, 0], sub, temperature, top_p, top_k)
        tok = jnp.where(done, 0, tok)
        lp = jnp.where(done, 0.0, lp)
        out_tok = out_tok.at[:, i].set(tok)
        out_lp = out_lp.at[:, i].set(lp)
        n_gen = n_gen + (~done).astype(jnp.int32)
        done = done | jnp.isin(tok, eos)
        return i + 1, cache, out_tok, out_lp, done, n_gen, rng

    st = (jnp.int32(1), cache, out_tok, out_lp, done, n_gen, rng)
    i, cache, out_tok, out_lp, done, n_gen, _ = jax.lax.while_loop(cond, body, st)
    # The cache is returned so that its donated input buffer is updated in place (aliased).
    return out_tok, out_lp, done, n_gen, i, cache


# XLA:CPU options for the decode program (None: none), read by each generate call (the compiled
# programs are cached per options). An empty ynn fusion type list turns off the YNNPACK rewrite of
# dots; a jaxlib that does not know an option gets the program without them.
CPU_DECODE_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _jit_with_cpu_options(fn, options, **kw):
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


@functools.lru_cache(maxsize=64)
def _jitted(model, max_len, max_new, temperature, top_p, top_k, decode_options: tuple):
    """decode_options: the (key, value) items of the decode's CPU compiler options (hashable)."""
    pre = jax.jit(functools.partial(_prefill, model=model, max_len=max_len, temperature=temperature, top_p=top_p,
                                    top_k=top_k))
    dec = _jit_with_cpu_options(functools.partial(_decode, model=model, max_new=max_new, temperature=temperature,
                                                  top_p=top_p, top_k=top_k), dict(decode_options),
                                donate_argnums=(1,))
    return pre, dec


@functools.partial(jax.jit, static_argnums=(1,))
def _unstack_jit(params, cfg):
    return unstack_layers(params, cfg)


def generate(model, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, eos_id: int | Sequence[int] | None = None, seed: int = 0, n: int = 1,
             pad_id: int = 0, min_batch: int = 1, unstack_layers: bool | None = None) -> GenerationOutput:
    """Samples `n` completions per prompt. See the module doc; reproducible from `seed`.
    unstack_layers: per-layer params and cache (None: on CPU only; it holds a second copy of the
    layer weights during the call)."""
    import time

    if not prompts:
        raise ValueError("generate: no prompts")
    lens = [len(p) for p in prompts]
    if min(lens) == 0:
        raise ValueError(f"generate: prompt {lens.index(0)} is empty")
    if eos_id is None:  # the checkpoint's EOS set
        eos_id = tuple(model.cfg.eos_token_id)
    eos = [eos_id] if isinstance(eos_id, int) else [int(e) for e in eos_id]
    eos_arr = jnp.asarray(eos if eos else [-1], jnp.int32)
    n_prompts = len(prompts)
    b = bucket(max(n_prompts, min_batch), 1)
    p = bucket(max(lens), 16)
    max_len = bucket(p + max_new_tokens, 16)
    tokens = np.full((b, p), pad_id, np.int32)
    lengths = np.ones((b,), np.int32)
    for i, pr in enumerate(prompts):
        tokens[i, : len(pr)] = pr
        lengths[i] = len(pr)
    if unstack_layers is None:
        unstack_layers = jax.default_backend() == "cpu"
    if unstack_layers:
        model = model.clone(unstacked=True)
    pre, dec = _jitted(model, max_len, max_new_tokens, float(temperature), float(top_p), int(top_k),
                       tuple(sorted((CPU_DECODE_COMPILER_OPTIONS or {}).items())))
    rng = jax.random.PRNGKey(seed)
    r_pre, r_dec = jax.random.split(rng)
    t0 = time.perf_counter()
    if model.unstacked:
        params = _unstack_jit(params, model.cfg)
    # n samples share a prompt's prefill: its cache rows are repeated, first tokens drawn per sample.
    idx = np.repeat(np.arange(b), n)
    active = idx < n_prompts
    cache, first_tok, first_lp, done0 = pre(params, jnp.asarray(tokens), jnp.asarray(lengths), r_pre,
                                            jnp.asarray(idx), jnp.asarray(active), eos_arr)
    lens_n = jnp.asarray(lengths[idx])
    out_tok, out_lp, done, n_gen, steps, _ = dec(params, cache, first_tok, first_lp, done0, lens_n, r_dec, eos_arr)
    out_tok, out_lp, done, n_gen = jax.device_get((out_tok, out_lp, done, n_gen))
    dt = time.perf_counter() - t0
    res_t, res_lp, reasons, pidx = [], [], [], []
    for j in range(n_prompts * n):
        k = int(n_gen[j])
        res_t.append([int(t) for t in out_tok[j, :k]])
        res_lp.append([float(x) for x in out_lp[j, :k]])
        reasons.append("eos" if bool(done[j]) else "length")
        pidx.append(j // n)
    new_tokens = int(sum(len(t) for t in res_t))
    stats = {"new_tokens": new_tokens, "seconds": dt, "tokens_per_s": new_tokens / max(dt, 1e-9),
             "decode_steps": int(steps), "batch": b * n, "prompt_bucket": p, "cache_len": max_len,
             "compiles": compile_count()}
    return GenerationOutput(res_t, res_lp, reasons, pidx, stats)

