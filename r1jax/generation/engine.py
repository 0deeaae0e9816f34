"""Batched generation with a compressed latent KV cache.

    out = r1jax.generate(model, params, prompts, max_new_tokens=64, temperature=0.6, top_p=0.95, seed=0, n=8)
    out.tokens[i], out.logprobs[i], out.finish_reason[i]   # for sample i = prompt i // n, copy i % n

    # long-tail lengths: a per-prompt budget, and a fixed number of decode rows refilled as they free
    out = r1jax.generate(model, params, prompts, max_new_tokens=[...], engine="continuous", slots=16)

Requests: sample i (prompt i // n, copy i % n) is request i. Its t-th token is drawn with the key
fold_in(fold_in(PRNGKey(seed), i), t) (`sampling.token_keys`), so a request's output depends on
(seed, i) only, not on the engine, the batch, the slot or the step it ran in (up to float rounding
of the batch's matmuls, which does not move a draw in practice: tests compare exactly).

Engines:
  - "static" (this module): all requests decode together in one bucketed batch, until the last one
    ends. One prefill and one decode program per call; best when the lengths are alike.
  - "continuous" (r1jax.generation.continuous): `slots` decode rows over the cache; a row whose
    request ended is refilled with the next waiting one (its prompt prefilled into that row).
    Best when lengths spread (reasoning traces): rows do not idle behind the longest sample.
  - "auto": continuous when there are more requests than `slots`, else static.

Generation stops at any of the EOS ids: by default the checkpoint's set (`model.cfg.eos_token_id`:
config.json's ids and generation_config.json's, as `r1jax.from_pretrained` reads them, e.g.
Qwen2.5-Instruct's <|im_end|> and <|endoftext|>, Llama 3's three); trainers pass their tokenizer's
`eos_token_ids`; `eos_id=()` runs every sequence to max_new_tokens.

How the static engine runs:
  - prompts (token lists) are right-padded into a bucketed [B, P] batch; the cache holds
    `max_len = cache_length(P, max_new_tokens)` slots (P + max_new_tokens rounded up to a multiple of
    128, `programs.CACHE_ALIGN`). For MLA layers a slot is the latent
    `[c_kv | k_rope]` (kv_lora_rank + qk_rope_head_dim numbers), for GQA layers K and V.
  - one jitted prefill writes the prompts (expanded MLA) into a cache of P positions and samples
    each prompt's first token from its last prompt position; its rows are then repeated `n` times
    (the n samples of a prompt share its prefill) and padded to max_len: the decode cache;
  - one jitted decode loop (`lax.while_loop`, cache donated) feeds each sequence's last token at
    its own position (absorbed MLA over the cache, or the Pallas `mla_decode` kernel), samples,
    and stops each sequence at its own EOS; the loop ends when all are done or at max_new_tokens.
  - on CPU (or with `unstack_layers=True`) the layers run unstacked, one array per layer, params
    and cache (why: r1jax.model.transformer's module doc);
  - on CPU the decode loop is compiled with XLA's YNNPACK dot rewrite off
    (`r1jax.backends.decode_compiler_options`);
  - under a mesh (`r1jax.parallel.use_mesh`: the trainer's, or a process's own devices with
    `rollout_placement="local"`) the rows are padded to a multiple of its batch ways and the cache
    and decode state are split over them (`programs.rows_over_mesh`): every device decodes its rows;
  - with params sharded over several processes' devices (a pod; `jax.distributed`), every process
    calls generate with the same prompts: the programs run SPMD over all the devices and the outputs
    are read whole on every process (`r1jax.parallel.handoff.host_tree`), so each gets every sample
    (the same as one process draws); the continuous engine likewise;
  - batch and prompt lengths are bucketed to powers of two (min 1/16), the cache length to
    multiples of 128 over the prompt bucket + budget, so that recompiles are rare; `compile_count()` reports how many prefill/decode programs were traced.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.data.buckets import pow2_bucket
from r1jax.generation import continuous
from r1jax.generation.programs import (GenerationOutput, cache_batch_axis, cache_length, compile_count,
                                     count_trace, decode_options_key, decode_step, jit_decode, pad_positions,
                                     prepare_model, route_shape, routes_of, row_devices, row_multiple, rows_over_mesh)
from r1jax.generation.sampling import request_keys, sample, token_keys
from r1jax.model.transformer import init_cache
from r1jax.parallel.handoff import host_tree

__all__ = ["generate", "GenerationOutput", "compile_count", "check_prompt_ids", "check_positions", "check_budget",
           "ENGINES"]

ENGINES = ("static", "continuous", "auto")


def _prefill(params, tokens, lengths, keys, idx, active, eos, max_new, *, model, max_len, temperature, top_p,
             top_k):
    """Prefill [b, p] prompts once, repeat rows by `idx` (n samples each), sample first tokens.
    keys [rows, 2]: each row's request key; max_new [rows]: each row's budget."""
    count_trace("prefill")
    b, p = tokens.shape
    # the prefill writes a cache of the prompt bucket's positions; its rows repeated for the samples
    # and padded to max_len are the decode cache (no second full-length cache)
    cache = init_cache(model.cfg, b, p, unstacked=model.unstacked)
    out = model.clone(mode="prefill").apply({"params": params}, tokens, cache=cache, logits_at=lengths - 1)
    cache = out.cache
    last = out.logits[:, 0]  # [b, vocab] at each prompt's last position
    ax = cache_batch_axis(model)
    cache = pad_positions(jax.tree.map(lambda c: jnp.take(c, idx, axis=ax), cache), max_len, ax + 1)
    cache = rows_over_mesh(cache, lambda c: ax)  # under a mesh: each device holds its rows only
    tok, lp = sample(jnp.take(last, idx, axis=0), token_keys(keys, 0), temperature, top_p, top_k)
    done = jnp.isin(tok, eos) | ~active | (max_new <= 1)
    return cache, tok, lp, done


def _decode(params, cache, first_tok, first_lp, done, lengths, keys, eos, max_new, *, model, steps, temperature,
            top_p, top_k, routes):
    """Decode loop. lengths [b]: prompt lengths (slot of the first generated token); max_new [b]: each
    row's budget (<= steps, the loop's bound); routes: (n_moe, k) to record each fed token's experts."""
    count_trace("decode")
    b = first_tok.shape[0]
    dec = model.clone(mode="decode")
    out_tok, out_lp = rows_over_mesh((jnp.zeros((b, steps), jnp.int32).at[:, 0].set(first_tok),
                                      jnp.zeros((b, steps), jnp.float32).at[:, 0].set(first_lp)), lambda x: 0)
    n_gen = jnp.ones((b,), jnp.int32)
    out_route = jnp.zeros((b, steps) + tuple(routes), jnp.int16) if routes else jnp.zeros((), jnp.int16)

    def cond(st):
        i, _, _, _, done, _, _ = st
        return (i < steps) & ~jnp.all(done)

    def body(st):
        i, cache, out_tok, out_lp, done, n_gen, out_route = st
        prev = out_tok[:, i - 1]
        logits, cache, route = decode_step(dec, params, prev, lengths + i - 1, cache, bool(routes))
        if routes:  # the experts of completion token i - 1, fed now
            out_route = out_route.at[:, i - 1].set(route)
        tok, lp = sample(logits, token_keys(keys, i), temperature, top_p, top_k)
        tok = jnp.where(done, 0, tok)
        lp = jnp.where(done, 0.0, lp)
        out_tok = out_tok.at[:, i].set(tok)
        out_lp = out_lp.at[:, i].set(lp)
        n_gen = n_gen + (~done).astype(jnp.int32)
        done = done | jnp.isin(tok, eos) | (n_gen >= max_new)
        return i + 1, cache, out_tok, out_lp, done, n_gen, out_route

    st = (jnp.int32(1), cache, out_tok, out_lp, done, n_gen, out_route)
    i, cache, out_tok, out_lp, done, n_gen, out_route = jax.lax.while_loop(cond, body, st)
    # The cache is returned so that its donated input buffer is updated in place (aliased).
    return out_tok, out_lp, n_gen, i, out_route, cache


@functools.lru_cache(maxsize=64)
def _jitted(model, max_len, steps, temperature, top_p, top_k, decode_options: tuple, routes=None):
    """decode_options: the (key, value) items of the decode's CPU compiler options (hashable);
    routes: None or (n_moe, k) to record."""
    pre = jax.jit(functools.partial(_prefill, model=model, max_len=max_len, temperature=temperature, top_p=top_p,
                                    top_k=top_k))
    dec = jit_decode(functools.partial(_decode, model=model, steps=steps, temperature=temperature,
                                                 top_p=top_p, top_k=top_k, routes=routes), dict(decode_options),
                               donate_argnums=(1,))
    return pre, dec


def _budgets(max_new_tokens, n_prompts: int) -> list[int]:
    """int or one int per prompt -> per-prompt budgets (each >= 1)."""
    if isinstance(max_new_tokens, (int, np.integer)):
        budgets = [int(max_new_tokens)] * n_prompts
    else:
        budgets = [int(m) for m in max_new_tokens]
        if len(budgets) != n_prompts:
            raise ValueError(f"generate: max_new_tokens has {len(budgets)} entries for {n_prompts} prompts")
    bad = [i for i, m in enumerate(budgets) if m < 1]
    if bad:
        raise ValueError(f"generate: max_new_tokens of prompt {bad[0]} is {budgets[bad[0]]} (must be >= 1)")
    return budgets


def check_prompt_ids(prompts: Sequence[Sequence[int]], vocab_size: int, what: str = "generate", pad_id=None) -> None:
    """ValueError naming the first prompt with an id outside [0, vocab_size) (host-side, before anything
    reaches the device: such an id reads past the embedding table and makes the whole row NaN), or a
    pad_id outside it."""
    vocab_size = int(vocab_size)
    for i, p in enumerate(prompts):
        a = np.asarray(p)
        if a.size and (a.max() >= vocab_size or a.min() < 0):
            j = int(np.argmax((a >= vocab_size) | (a < 0)))
            raise ValueError(f"{what}: prompt {i} has token id {int(a[j])} at position {j}, outside the model's "
                             f"vocabulary (vocab_size={vocab_size}): is the tokenizer the model's?")
    if pad_id is not None and not 0 <= int(pad_id) < vocab_size:
        raise ValueError(f"{what}: pad_id={pad_id} is outside the model's vocabulary (vocab_size={vocab_size})")


def check_budget(cfg, max_new_tokens: int, *, what: str, key: str = "max_new_tokens", model_where: str = "") -> None:
    """ValueError naming `key` when the generation budget alone takes every position of the model's
    max_position_embeddings (no room for any prompt), before any prompt is known; none without a limit."""
    limit = int(cfg.get("max_position_embeddings", 0) or 0) if hasattr(cfg, "get") else 0
    if limit > 0 and int(max_new_tokens) >= limit:
        where = f" {model_where}" if model_where else ""
        raise ValueError(f"{what}: {key}={max_new_tokens} leaves no room for a prompt within the model{where}'s "
                         f"max_position_embeddings={limit}")


def check_positions(cfg, prompt_lens: Sequence[int], max_new_tokens: int, *, what: str = "generate",
                    key: str = "max_new_tokens") -> None:
    """ValueError naming `key` and the model's max_position_embeddings when the longest prompt plus
    `max_new_tokens` needs more positions than the model was configured for (none when it has no
    such limit: max_position_embeddings <= 0)."""
    limit = int(cfg.get("max_position_embeddings", 0) or 0) if hasattr(cfg, "get") else 0
    if limit <= 0 or not len(prompt_lens):
        return
    longest = int(max(prompt_lens))
    if longest + int(max_new_tokens) > limit:
        raise ValueError(f"{what}: the longest prompt ({longest} tokens) + {key}={int(max_new_tokens)} = "
                         f"{longest + int(max_new_tokens)} positions exceed the model's "
                         f"max_position_embeddings={limit}: lower {key} or shorten the prompts")


def generate(model, params, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, eos_id: int | Sequence[int] | None = None,
             seed: int = 0, n: int = 1, pad_id: int = 0, min_batch: int = 1, unstack_layers: bool | None = None,
             engine: str = "static", slots: int | None = None, first_request: int = 0,
             return_routes: bool = False, weight_source=None, params_version: int = 0) -> GenerationOutput:
    """Samples `n` completions per prompt. See the module doc; reproducible from `seed`.

    max_new_tokens: one budget, or one per prompt.
    engine: "static" | "continuous" | "auto" (continuous when len(prompts) * n > slots).
    slots: decode rows of the continuous engine (None: all requests, bucketed: no refills).
    first_request: the index of this call's first request (its samples' keys; a call that serves
    requests first_request.. of a larger set, e.g. one process' share, draws their tokens).
    return_routes: on an MoE model, record each completion token's experts (out.routes).
    unstack_layers: per-layer params and cache (None: on CPU only; it holds a second copy of the
    layer weights during the call).
    weight_source: in-flight weight updates, continuous engine only (asynchronous RL: the sampler takes
    the trainer's newer weights without dropping requests in progress): a callable, called at every
    segment boundary, returning (version, params) or None; when the version differs from the current
    one (`params_version` for `params`) the next refill and segment use those params. A request in
    progress keeps its cache (entries written by the older weights are not recomputed, as PipelineRL
    and AReaL do) and its later tokens are drawn by the new weights; out.versions gives each
    completion token's version, and out.logprobs are each token's own behaviour log-probs."""
    if not prompts:
        raise ValueError("generate: no prompts")
    if engine not in ENGINES:
        raise ValueError(f"generate: engine={engine!r} must be one of {ENGINES}")
    if slots is not None and int(slots) < 1:
        raise ValueError(f"generate: slots={slots!r} must be >= 1")
    lens = [len(p) for p in prompts]
    if min(lens) == 0:
        raise ValueError(f"generate: prompt {lens.index(0)} is empty")
    check_prompt_ids(prompts, model.cfg.vocab_size, pad_id=pad_id)
    budgets = _budgets(max_new_tokens, len(prompts))
    if eos_id is None:  # the checkpoint's EOS set
        eos_id = tuple(model.cfg.eos_token_id)
    eos = [eos_id] if isinstance(eos_id, int) else [int(e) for e in eos_id]
    eos_arr = jnp.asarray(eos if eos else [-1], jnp.int32)
    if engine == "auto":
        engine = "continuous" if slots is not None and len(prompts) * n > slots else "static"
    sampling = (float(temperature), float(top_p), int(top_k))
    routes = route_shape(model.cfg) if return_routes else None
    if weight_source is not None and engine != "continuous":
        raise ValueError(f"generate: weight_source (in-flight weight updates) needs engine='continuous', not {engine!r}")
    if engine == "continuous":
        return continuous.generate_continuous(model, params, prompts, budgets, sampling, eos_arr, seed=seed, n=n,
                                              pad_id=pad_id, slots=slots, unstack_layers=unstack_layers,
                                              first_request=first_request, routes=routes,
                                              weight_source=weight_source, params_version=params_version)
    return _generate_static(model, params, prompts, budgets, sampling, eos_arr, seed=seed, n=n, pad_id=pad_id,
                            min_batch=min_batch, unstack_layers=unstack_layers, first_request=first_request,
                            routes=routes)


def _generate_static(model, params, prompts, budgets, sampling, eos_arr, *, seed, n, pad_id, min_batch,
                     unstack_layers, first_request=0, routes=None) -> GenerationOutput:
    lens = [len(p) for p in prompts]
    n_prompts = len(prompts)
    b = pow2_bucket(max(n_prompts, min_batch), 1)
    # under a mesh (r1jax.parallel.use_mesh) the b * n rows split over its batch ways: every device decodes
    q = row_multiple() // math.gcd(n, row_multiple())
    b = -(-b // q) * q
    p = pow2_bucket(max(lens), 16)
    steps = max(budgets)
    max_len = cache_length(p, steps)
    tokens = np.full((b, p), pad_id, np.int32)
    lengths = np.ones((b,), np.int32)
    for i, pr in enumerate(prompts):
        tokens[i, : len(pr)] = pr
        lengths[i] = len(pr)
    t0 = time.perf_counter()
    model, params = prepare_model(model, params, unstack_layers)
    pre, dec = _jitted(model, max_len, steps, *sampling, decode_options_key(), routes)
    # n samples share a prompt's prefill: its cache rows are repeated, first tokens drawn per sample.
    idx = np.repeat(np.arange(b), n)
    active = idx < n_prompts
    row_budget = np.asarray([budgets[i] if i < n_prompts else 1 for i in idx], np.int32)
    keys = request_keys(seed, first_request + np.arange(b * n))  # row j: sample j of prompt j // n
    cache, first_tok, first_lp, done0 = pre(params, jnp.asarray(tokens), jnp.asarray(lengths), keys,
                                            jnp.asarray(idx), jnp.asarray(active), eos_arr, jnp.asarray(row_budget))
    lens_n = jnp.asarray(lengths[idx])
    out_tok, out_lp, n_gen, n_steps, out_route, _ = dec(params, cache, first_tok, first_lp, done0, lens_n, keys,
                                                        eos_arr, jnp.asarray(row_budget))
    devices = row_devices(out_tok)
    # whole arrays on every process, also when the rows are sharded over several processes' devices
    out_tok, out_lp, n_gen, out_route, n_steps = host_tree((out_tok, out_lp, n_gen, out_route, n_steps))
    dt = time.perf_counter() - t0
    eos_set = set(np.asarray(eos_arr).tolist())
    res_t, res_lp, reasons, pidx = [], [], [], []
    for j in range(n_prompts * n):
        k = int(n_gen[j])
        res_t.append([int(t) for t in out_tok[j, :k]])
        res_lp.append([float(x) for x in out_lp[j, :k]])
        reasons.append("eos" if k and res_t[-1][-1] in eos_set else "length")
        pidx.append(j // n)
    new_tokens = int(sum(len(t) for t in res_t))
    stats = {"engine": "static", "new_tokens": new_tokens, "seconds": dt,
             "tokens_per_s": new_tokens / max(dt, 1e-9), "decode_steps": int(n_steps), "batch": b * n,
             "rows": b * n, "prompt_bucket": p, "cache_len": max_len, "row_devices": devices,
             "compiles": compile_count()}
    rr = [routes_of(out_route[j], len(res_t[j])) for j in range(n_prompts * n)] if routes else None
    return GenerationOutput(res_t, res_lp, reasons, pidx, stats, rr)
