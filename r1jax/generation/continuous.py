"""Continuous batching: a fixed number of decode rows ("slots") over the latent (or GQA) cache,
each refilled with the next waiting request when its sequence ends.

    out = r1jax.generate(model, params, prompts, max_new_tokens=[...], engine="continuous", slots=16)

Reasoning RL's response lengths spread over two orders of magnitude; a static batch decodes until
its longest sample ends while the other rows idle. Here:

  - the cache holds `slots` rows of `max_len` positions each (the longest prompt's bucket and every
    prompt + its budget, rounded up to a multiple of 128: `programs.cache_length`; MLA: the latent
    [c_kv | k_rope]; GQA: K and V), allocated once per call;
  - a *segment* program (one `lax.while_loop`, cache and state donated) decodes every busy row one
    token per step, each at its own position, with its own budget and EOS set, and returns to the
    host as soon as `refill_at` rows are free and requests wait (or when all rows are done);
  - a *refill* program prefills the next waiting requests' distinct prompts (the `n` samples of a
    prompt admitted together share one prefill row) into a cache of the prompt bucket's positions
    only, writes those positions into the free slots, and draws their first tokens; its shapes
    (requests, distinct prompts, prompt length) are bucketed to powers of two, so refills and
    segments of the same buckets do not recompile, within a call or across calls;
  - requests are admitted largest budget first (per-prompt `max_new_tokens`), so that the longest
    do not start last and decode alone at the end;
  - a free row that has nothing to take keeps its position (its writes stay in its own row, which
    decode masks past each row's own position) until the call ends.

Request i's t-th token is drawn with `token_keys(request_keys(seed, [i]), t)`: the same draw as the
static engine's, whatever slot count, slot or step the request runs in.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.data.buckets import pow2_bucket
from r1jax.generation.programs import (GenerationOutput, cache_batch_axis, cache_length, compile_count,
                                     count_trace, decode_options_key, decode_step, jit_decode, prepare_model,
                                     routes_of, row_devices, row_multiple, rows_over_mesh)
from r1jax.generation.sampling import request_keys, sample, token_keys
from r1jax.model.transformer import init_cache
from r1jax.parallel.handoff import host_tree

DEFAULT_REFILL_FRACTION = 0.125  # return to refill when this fraction of the rows (>= 1 row) is free


def _state(slots: int, steps: int, routes=None):
    """Per-row decode state (all rows free); routes: (n_moe, k) to record, or None."""
    st = {
        "tok": jnp.zeros((slots,), jnp.int32),  # last token (fed at `pos` in the next step)
        "pos": jnp.zeros((slots,), jnp.int32),  # its position = prompt length + n_gen - 1
        "n_gen": jnp.zeros((slots,), jnp.int32),  # tokens generated so far
        "budget": jnp.ones((slots,), jnp.int32),
        "done": jnp.ones((slots,), bool),
        "key": jnp.zeros((slots, 2), jnp.uint32),  # the request's key (sampling.request_keys)
        "out_tok": jnp.zeros((slots, steps), jnp.int32),
        "out_lp": jnp.zeros((slots, steps), jnp.float32),
    }
    if routes:  # the experts of each fed token: [slots, steps, n_moe, k]
        st["route"] = jnp.zeros((slots, steps) + tuple(routes), jnp.int16)
    return st


def _refill(params, cache, st, tokens, lengths, row_prompt, slot, keys, budget, eos, *, model, temperature, top_p,
            top_k):
    """Prefill u prompts [u, p] once (u: the distinct prompts, bucketed) and start k requests in free rows.

    row_prompt [k]: the prompt (row of `tokens`) of each request; slot [k]: its row (== slots for
    bucket padding: dropped); keys [k, 2]: request keys; budget [k]: max new tokens."""
    count_trace("refill")
    u, p = tokens.shape
    # the prefill's cache holds the prompt bucket's p positions only; its rows are written into
    # positions 0..p-1 of the requests' slots. A slot's later positions keep the previous request's
    # entries: decode masks every slot past the row's own position, and writes each one before it
    # reads it.
    pcache = init_cache(model.cfg, u, p, unstacked=model.unstacked)
    out = model.clone(mode="prefill").apply({"params": params}, tokens, cache=pcache, logits_at=lengths - 1)
    logits, pcache = out.logits, out.cache
    ax = cache_batch_axis(model)

    def put(big, small):
        rows = jnp.take(small, row_prompt, axis=ax)
        idx = (slice(None),) * ax + (slot[:, None], jnp.arange(p)[None, :])
        return big.at[idx].set(rows.astype(big.dtype), mode="drop")

    cache = jax.tree.map(put, cache, pcache)
    tok, lp = sample(jnp.take(logits[:, 0], row_prompt, axis=0), token_keys(keys, 0), temperature, top_p, top_k)
    steps = st["out_tok"].shape[1]
    st = dict(st)
    st["tok"] = st["tok"].at[slot].set(tok, mode="drop")
    st["pos"] = st["pos"].at[slot].set(jnp.take(lengths, row_prompt), mode="drop")
    st["n_gen"] = st["n_gen"].at[slot].set(1, mode="drop")
    st["budget"] = st["budget"].at[slot].set(budget, mode="drop")
    st["done"] = st["done"].at[slot].set(jnp.isin(tok, eos) | (budget <= 1), mode="drop")
    st["key"] = st["key"].at[slot].set(keys, mode="drop")
    st["out_tok"] = st["out_tok"].at[slot].set(jnp.zeros((slot.shape[0], steps), jnp.int32).at[:, 0].set(tok),
                                               mode="drop")
    st["out_lp"] = st["out_lp"].at[slot].set(jnp.zeros((slot.shape[0], steps), jnp.float32).at[:, 0].set(lp),
                                             mode="drop")
    return cache, st


def _segment(params, cache, st, free_target, eos, *, model, temperature, top_p, top_k, record):
    """Decode busy rows until at least `free_target` rows are done (or all are). -> cache, st, steps."""
    count_trace("segment")
    dec = model.clone(mode="decode")
    slots = st["tok"].shape[0]
    rows = jnp.arange(slots)

    def cond(c):
        _, _, st = c
        n_done = jnp.sum(st["done"].astype(jnp.int32))
        return (n_done < free_target) & (n_done < slots)

    def body(c):
        i, cache, st = c
        logits, cache, route = decode_step(dec, params, st["tok"], st["pos"], cache, record)
        busy = ~st["done"]
        tok, lp = sample(logits, token_keys(st["key"], st["n_gen"]), temperature, top_p, top_k)
        st = dict(st)
        if record:  # the experts of the fed token (the row's last, index n_gen - 1)
            st["route"] = st["route"].at[rows, jnp.where(busy, st["n_gen"] - 1, st["route"].shape[1])].set(
                route, mode="drop")
        col = jnp.where(busy, st["n_gen"], st["out_tok"].shape[1])  # out of range: dropped
        st["out_tok"] = st["out_tok"].at[rows, col].set(tok, mode="drop")
        st["out_lp"] = st["out_lp"].at[rows, col].set(lp, mode="drop")
        st["n_gen"] = st["n_gen"] + busy.astype(jnp.int32)
        st["done"] = st["done"] | (busy & (jnp.isin(tok, eos) | (st["n_gen"] >= st["budget"])))
        st["tok"] = jnp.where(busy, tok, st["tok"])
        st["pos"] = jnp.where(busy, st["pos"] + 1, st["pos"])
        return i + 1, cache, st

    i, cache, st = jax.lax.while_loop(cond, body, (jnp.int32(0), cache, st))
    return cache, st, i


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _new_rows(model, slots: int, max_len: int, steps: int, routes):
    """The empty cache and decode state of `slots` rows, created split over the active mesh's batch
    ways (no device holds every row, not even at the start)."""
    ax = cache_batch_axis(model)
    cache = rows_over_mesh(init_cache(model.cfg, slots, max_len, unstacked=model.unstacked), lambda c: ax)
    return cache, rows_over_mesh(_state(slots, steps, routes), lambda x: 0)


@functools.lru_cache(maxsize=64)
def _jitted(model, max_len, temperature, top_p, top_k, decode_options: tuple, record: bool):
    refill = jax.jit(functools.partial(_refill, model=model, temperature=temperature, top_p=top_p, top_k=top_k),
                     donate_argnums=(1, 2))
    segment = jit_decode(functools.partial(_segment, model=model, temperature=temperature, top_p=top_p,
                                                     top_k=top_k, record=record), dict(decode_options),
                                   donate_argnums=(1, 2))
    return refill, segment


def generate_continuous(model, params, prompts, budgets, sampling, eos_arr, *, seed: int, n: int, pad_id: int,
                        slots: int | None, unstack_layers, refill_at: int | None = None,
                        first_request: int = 0, routes=None, weight_source=None,
                        params_version: int = 0) -> GenerationOutput:
    """The continuous engine behind `r1jax.generate(..., engine="continuous")` (see the module doc).

    budgets: max new tokens per prompt; sampling: (temperature, top_p, top_k); eos_arr [e] int32.
    refill_at: free rows that end a segment while requests wait (None: slots / 8, >= 1).
    weight_source: in-flight weight updates (see `generate`): called before every refill / segment,
    returns (version, params) or None; `params` (version `params_version`) are replaced when the
    version changes, the requests in progress go on with their caches as they are, and each token's
    version is returned (out.versions)."""
    n_req = len(prompts) * n
    slots = pow2_bucket(n_req, 1) if slots is None else int(slots)
    m = row_multiple()  # under a mesh: slots over its batch ways, every device decodes rows
    slots = -(-slots // m) * m
    refill_at = max(1, int(slots * DEFAULT_REFILL_FRACTION)) if refill_at is None else max(1, int(refill_at))
    lens = [len(p) for p in prompts]
    steps = max(budgets)
    # the refills write whole prompt buckets: room for the longest, and for every prompt + its budget
    max_len = cache_length(pow2_bucket(max(lens), 16), 0)
    max_len = max(max_len, cache_length(max(l + b for l, b in zip(lens, budgets)), 0))
    t0 = time.perf_counter()
    base_model = model
    model, params = prepare_model(model, params, unstack_layers)
    refill, segment = _jitted(model, max_len, *sampling, decode_options_key(), bool(routes))
    version, swaps = int(params_version), 0
    runs: dict[int, list] = {}  # request -> [(first token index, version), ...] (the weights of its tokens)
    n_gen = np.zeros((slots,), np.int64)  # tokens per row, as of the last segment
    cache, st = _new_rows(model, slots, max_len, steps, routes)
    devices = row_devices(st["out_tok"])
    owner = np.full((slots,), -1)  # request in each row (-1: free)
    # admission order: the largest budget first (longest-processing-time first: a long request
    # admitted last would decode alone at the end), request index among equals; with one budget for
    # all, the request order. A request's tokens do not depend on the order.
    order = np.lexsort((np.arange(n_req), -np.repeat(np.asarray(budgets), n)))
    waiting = 0  # position in `order` of the next request to admit
    results: dict[int, tuple] = {}
    n_steps = n_segments = n_refills = 0
    while len(results) < n_req:
        got = weight_source() if weight_source is not None else None
        if got is not None and int(got[0]) != version:  # new weights at this segment boundary
            version, swaps = int(got[0]), swaps + 1
            _, params = prepare_model(base_model, got[1], unstack_layers)
            for s in np.flatnonzero(owner >= 0):  # requests in progress: their next tokens are the new version's
                runs[int(owner[s])].append((int(n_gen[s]), version))
        free = np.flatnonzero(owner < 0)
        if waiting < n_req and len(free):
            take = free[: n_req - waiting]
            reqs = order[waiting: waiting + len(take)]
            waiting += len(take)
            cache, st = _admit(refill, params, cache, st, prompts, budgets, reqs, take, n, slots, seed, pad_id,
                               eos_arr, first_request, min_rows=refill_at)
            owner[take] = reqs
            for r in reqs:
                runs[int(r)] = [(0, version)]
            n_refills += 1
        busy = int((owner >= 0).sum())
        # return when refill_at more rows are free (fewer if fewer requests wait), or when all are done
        target = slots - busy + min(refill_at, n_req - waiting) if waiting < n_req else slots
        cache, st, seg_steps = segment(params, cache, st, jnp.int32(target), eos_arr)
        n_segments += 1
        # host_tree: whole arrays on every process also when the rows span several processes
        done, n_gen, seg_steps = host_tree((st["done"], st["n_gen"], seg_steps))
        seg_steps = int(seg_steps)
        n_steps += seg_steps
        finished = np.flatnonzero(done & (owner >= 0))
        if len(finished):
            out_tok, out_lp = host_tree((st["out_tok"][finished], st["out_lp"][finished]))
            out_route = host_tree(st["route"][finished]) if routes else None
            for j, s in enumerate(finished):
                k = int(n_gen[s])
                results[int(owner[s])] = ([int(t) for t in out_tok[j, :k]], [float(x) for x in out_lp[j, :k]],
                                          routes_of(out_route[j], k) if routes else None)
                owner[s] = -1
    dt = time.perf_counter() - t0
    eos_set = set(np.asarray(eos_arr).tolist())
    toks = [results[j][0] for j in range(n_req)]
    new_tokens = int(sum(len(t) for t in toks))
    versions = None
    if weight_source is not None:
        versions = []
        for j in range(n_req):
            v = np.zeros((len(toks[j]),), np.int64)
            for start, ver in runs[j]:
                v[start:] = ver
            versions.append(v.tolist())
    stats = {"engine": "continuous", "new_tokens": new_tokens, "seconds": dt,
             "tokens_per_s": new_tokens / max(dt, 1e-9), "decode_steps": n_steps, "rows": slots, "batch": slots,
             "segments": n_segments, "refills": n_refills, "cache_len": max_len, "row_devices": devices,
             # the fraction of decode row-steps that made a token (first tokens come from the refills)
             "row_utilization": (new_tokens - n_req) / max(n_steps * slots, 1), "compiles": compile_count(),
             "weight_swaps": swaps}
    return GenerationOutput(toks, [results[j][1] for j in range(n_req)],
                            ["eos" if t and t[-1] in eos_set else "length" for t in toks],
                            [j // n for j in range(n_req)], stats,
                            [results[j][2] for j in range(n_req)] if routes else None, versions)


def refill_rows(k: int, distinct: int) -> int:
    """Prefill rows of a refill that starts k requests (bucketed) of `distinct` prompts: the distinct
    prompts bucketed to a power of two (the n samples of a prompt share one prefill row)."""
    return min(pow2_bucket(distinct, 1), k)


def _admit(refill, params, cache, st, prompts, budgets, reqs, rows, n, slots, seed, pad_id, eos_arr, first_request,
           min_rows: int = 1):
    """Refill rows `rows` with requests `reqs` (one prefill per distinct prompt among them). The
    refill's rows are bucketed to powers of two >= min_rows (the usual refill size), so that a call
    meets few distinct refill programs."""
    pids = reqs // n
    uniq, row_prompt = np.unique(pids, return_inverse=True)
    k = max(pow2_bucket(len(reqs), 1), pow2_bucket(min_rows, 1))
    u = refill_rows(k, len(uniq))  # one prefill row per distinct prompt (bucketed), not per request
    p = pow2_bucket(max(len(prompts[i]) for i in uniq), 16)
    tokens = np.full((u, p), pad_id, np.int32)
    lengths = np.ones((u,), np.int32)
    for r, i in enumerate(uniq):
        tokens[r, : len(prompts[i])] = prompts[i]
        lengths[r] = len(prompts[i])
    pad = k - len(reqs)
    slot = np.concatenate([rows, np.full((pad,), slots)]).astype(np.int32)  # == slots: dropped
    row_prompt = np.concatenate([row_prompt, np.zeros((pad,), np.int64)]).astype(np.int32)
    req_ids = first_request + np.concatenate([reqs, np.zeros((pad,), np.int64)])
    budget = np.asarray([budgets[i] for i in pids] + [1] * pad, np.int32)
    return refill(params, cache, st, jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(row_prompt),
                  jnp.asarray(slot), request_keys(seed, req_ids), jnp.asarray(budget), eos_arr)
