"""The GRPO trainer: prompts -> G samples each -> rule rewards -> group advantages -> clipped updates.

    cfg = grpo_config(init="/ckpts/Qwen2.5-1.5B-Instruct", train_data="gsm8k_train.jsonl",
                      problem_key="question", answer_format="gsm8k", prompt_style="chat")
    model, params = run_grpo(cfg)          # r1jax grpo --config experiments/grpo_gsm8k.py --set ...

One step (DeepSeekMath / R1 GRPO, with the options of TRL / verl / DAPO):
  1. `prompts_per_step` records from a Grain pipeline over JSONL read as the file comes
     (`problem_key` / `answer_key` / `answer_format`, r1jax.data.prompts; resumable order), each
     rendered as a prompt by `prompt_style` (the checkpoint's own chat template, or the R1-Zero text);
  2. `group_size` samples per prompt from the rollout engine (r1jax.generate: latent KV cache, the
     weights in the compute dtype, stopping on the tokenizer's EOS set), with the sampler's
     log-probs as the old policy's (or recomputed: `old_logp="recompute"`);
  3. rewards named in `rewards` with weights (r1jax.rewards) on the whole response ("<think>" +
     completion when the prompt opened the think block), computed off the accelerator; a sample
     whose reward does not exist (its gold answer does not parse) is left out of its group's
     statistics and of the loss;
  4. advantages `group_advantages(total, G, scale=adv_scale, valid=...)`; optionally mask
     completions cut at max_new_tokens (`mask_truncated`) and drop groups with zero reward spread
     (`filter_zero_spread`, DAPO dynamic sampling; the fraction is logged);
  5. `mu` passes over `minibatches` mini-batches with the compiled GRPO step (r1jax.train, the
     loss from the registry `loss`, `grad_accum` micro-batches weighted by the loss's normaliser,
     frozen reference params in the compute dtype only when kl_coef > 0), the log-probs from the
     LM head `logprob_chunk` positions at a time, fp32 master weights (`param_dtype`) under
     `dtype` compute, padding out of the MoE expert load;
  6. the router-bias update (inside the step), logging, eval every `eval_every`, Orbax
     checkpoint every `save_every` (a rerun resumes with the same data order and seeds, so a
     killed run continues the same curve), and at the end an HF folder with the tokenizer files.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import backends, train
from r1jax import config as cl
from r1jax import config as config_lib
from r1jax.checkpoint.hf import save_pretrained
from r1jax.checkpoint.orbax import Checkpointer
from r1jax.data.packing import best_fit_decreasing
from r1jax.data.pipeline import PromptPipeline
from r1jax.data.prompts import PromptFormat, decode_completion, opens_think, prompt_of, read_prompt_records
from r1jax.data.tokenizer import check_fits_model, load_tokenizer
from r1jax.eval.runner import evaluate, has_reflection
from r1jax.generation.engine import check_positions, generate
from r1jax.generation.programs import route_shape
from r1jax.model import precision
from r1jax.parallel import handoff
from r1jax.parallel.mesh import make_mesh, use_mesh
from r1jax.parallel.placement import Placement
from r1jax.parallel.sharding import process_batch_slice, shard_local_batch
from r1jax.rewards.preference import preference_active
from r1jax.rewards.registry import REWARDS, check_isolation, compute_rewards, register_reward
from r1jax.rl import grpo
from r1jax.rl.async_sampler import Sampler, WeightHistory
from r1jax.rl.batch import bucket, build_batch
from r1jax.rl.config import grpo_config, override, validate_config
from r1jax.rl.packed import PackSpec, pack_samples, padded_micro_batches, plan_micro_batches, sample_lengths
from r1jax.rl.policy import make_logprob_fn, make_policy_loss
from r1jax.runlog import RunLogger

__all__ = [  # the trainer, and the names tools/ and tests import from here (defined in the modules above)
    "run_grpo", "load_train_records", "grpo_config", "validate_config", "override", "bucket", "build_batch",
    "make_policy_loss", "make_logprob_fn", "compute_rewards", "register_reward", "REWARDS", "preference_active",
]


def load_train_records(c, path: str) -> list[dict]:
    """Prompt records of a JSONL file with the config's field mapping (r1jax.data.prompts)."""

    return read_prompt_records(path, problem_key=c.problem_key, answer_key=c.answer_key,
                               answer_format=c.answer_format)


# ------------------------------------------------------------------------------ one step's parts


@dataclasses.dataclass
class Run:
    """What every step reads, set up once by run_grpo (processes: `proc` of `n_proc`, each sampling
    `p_local` prompts; `mb_rows`: the process-local rows of each mini-batch)."""
    c: ml_collections.ConfigDict
    model: object  # the trained model
    rollout_model: object  # the same model, the local expert dispatch when sampling outside the mesh
    tokenizer: object
    fmt: object  # r1jax.data.prompts.PromptFormat
    eos: tuple
    pad: int
    place: object  # r1jax.parallel.placement.Placement
    step_fn: object
    logp_fn: object
    ref_params: object  # frozen reference (compute dtype), None without the KL term
    n_proc: int
    proc: int
    p_local: int
    mb_rows: list
    local_rollout: bool
    record_routes: bool
    rollout_mesh: object = None  # local_rollout: the mesh of this process's devices the rollouts run on
    accum_fn: object = None  # pack=True: the update over a changing number of micro-batches (train.AccumStep)
    pack_len: int = 0  # pack=True: tokens per row (0 until the first step sets it, when not configured)
    rows_per_rank: int = 0  # pack=True: rows of a micro-batch per data-parallel rank (set by pack_spec)
    local_ranks: int = 1  # data-parallel ranks of this process's devices
    padded_rows_per_rank: int = 1  # the padded update's micro-batch rows per rank (the packed one's cap)

    def to_device(self, host):
        """Process-local rows -> global arrays (one process: the whole batch)."""

        return shard_local_batch(host, self.place.mesh) if self.n_proc > 1 else self.place.batch(host)

    def rollout_params(self, state):
        """The weights the rollout engine reads: the compute-dtype copy, as sharded ("mesh") or
        replicated on every device of this process ("local": all-gathered on device, no host copy;
        r1jax.parallel.handoff.replicate_on)."""

        p = precision.compute_copy(state.params, self.model.cfg)
        return handoff.replicate_on(p, self.rollout_mesh, self.place.mesh) if self.local_rollout else p

    def rollout_context(self):
        """Where the engines run: this process's device mesh (rows split over its devices) or the
        training mesh."""

        return use_mesh(self.rollout_mesh) if self.local_rollout else self.place.context()


@dataclasses.dataclass
class Rollout:
    """This process's samples of one step: `gen` (the engine's output), the whole responses `texts`,
    each sample's prompt record and prompt ids, the step's (global) row length and the seconds taken."""
    gen: object
    texts: list
    records: list
    prompt_ids: list
    seq_len: int
    seconds: float


def rollout(run: Run, state, recs: list[dict], step: int, *, weights=None, weight_source=None,
            version: int = 0) -> Rollout:
    """Samples group_size completions of this process's block of the step's global prompts
    (prompts lo .. lo + p_local - 1, lo = proc * p_local). weights: the rollout weights (default:
    `run.rollout_params(state)`); weight_source / version: in-flight updates (asynchronous GRPO)."""

    c, t0 = run.c, time.perf_counter()
    prompt_ids, prompt_texts = run.fmt.render_all(run.tokenizer, [prompt_of(r) for r in recs])
    check_positions(run.model.cfg, [len(p) for p in prompt_ids], c.max_new_tokens,
                    what=f"grpo step {step + 1}: train_data", key="max_new_tokens")
    lo, G = run.proc * run.p_local, c.group_size
    # several processes sampling SPMD on the sharded weights ("mesh"): one program over every process's
    # devices, so every process passes every prompt and keeps its block's samples (the outputs are read
    # whole on each process); with a local replica each process samples its block alone
    spmd = run.n_proc > 1 and not run.local_rollout
    params_r = run.rollout_params(state) if weights is None else weights
    inflight = {"weight_source": weight_source, "params_version": version} if weight_source is not None else {}
    with run.rollout_context():
        gen = generate(run.rollout_model, params_r, prompt_ids if spmd else prompt_ids[lo:lo + run.p_local],
                       max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                       eos_id=run.eos, seed=c.seed * 1_000_003 + step, n=G, return_routes=run.record_routes,
                       engine=c.rollout_engine, slots=c.rollout_slots or None, first_request=0 if spmd else lo * G,
                       **inflight)
    del params_r
    if spmd:
        gen = _prompt_block(gen, lo, run.p_local, G)
    seconds = time.perf_counter() - t0
    # The rewards see the whole response: "<think>" + completion when the prompt opened the block.
    texts = [("<think>" if opens_think(prompt_texts[lo + i]) else "") + decode_completion(run.tokenizer, t, run.eos)
             for t, i in zip(gen.tokens, gen.prompt_index)]
    return Rollout(gen=gen, texts=texts, records=[recs[lo + i] for i in gen.prompt_index],
                   prompt_ids=[prompt_ids[lo + i] for i in gen.prompt_index],
                   seq_len=bucket(max(len(p) for p in prompt_ids) + c.max_new_tokens),  # global: the same everywhere
                   seconds=seconds)


def _prompt_block(gen, lo: int, n_prompts: int, n: int):
    """The samples of prompts lo .. lo + n_prompts - 1 of a generation over all prompts (n samples
    each, in prompt order), their prompt_index counted from lo; stats are the whole call's."""
    a, b = lo * n, (lo + n_prompts) * n
    return dataclasses.replace(gen, tokens=gen.tokens[a:b], logprobs=gen.logprobs[a:b],
                               finish_reason=gen.finish_reason[a:b],
                               prompt_index=[i - lo for i in gen.prompt_index[a:b]],
                               routes=gen.routes[a:b] if gen.routes is not None else None)


def score(c, ro: Rollout, step: int):
    """-> per-reward scores, totals [n] float32 (0 where invalid), valid [n] bool, seconds."""
    t0 = time.perf_counter()
    scores, totals = compute_rewards(c, ro.texts, ro.records, step=step, completion_ids=ro.gen.tokens)
    seconds = time.perf_counter() - t0
    valid = np.array([t is not None for t in totals])
    tot = np.array([t if t is not None else 0.0 for t in totals], np.float32)
    return scores, tot, valid, seconds


def advantages_and_mask(c, tot, valid, finish_reason):
    """Group advantages and the samples that enter the loss. A sample whose reward does not exist
    (its gold answer does not parse) is left out of its group's mean and std and out of the loss;
    mask_truncated / filter_zero_spread drop more. -> advantages, sample_mask, spread (per group)."""
    G = c.group_size
    adv = np.asarray(grpo.group_advantages(jnp.asarray(tot), G, scale=c.adv_scale, valid=jnp.asarray(valid)))
    vg = valid.reshape(-1, G)
    tg = np.where(vg, tot.reshape(-1, G), np.nan)
    spread = (np.nanmax(np.where(vg, tg, -np.inf), -1) > np.nanmin(np.where(vg, tg, np.inf), -1))
    sample_mask = valid.copy()
    if c.mask_truncated:
        sample_mask &= np.array([r != "length" for r in finish_reason])
    if c.filter_zero_spread:
        sample_mask &= np.repeat(spread, G)
    return adv, sample_mask, spread


@dataclasses.dataclass
class UpdateBatch:
    """One step's update data, per mini-batch: `parts[j]` the micro-batches of mini-batch j (packed: device
    arrays; padded: the host rows split in grad_accum parts for the log-prob passes) and, padded,
    `whole[j]` the mini-batch as the grad_accum step takes it (`host[j]` its process-local rows; placed on
    the device when the update first needs it, after the log-prob passes filled the host rows).
    stats: micro_batches, rows, tokens, loss_tokens, fill."""
    parts: list
    whole: list | None
    stats: dict
    host: list | None = None


AUTO_MICRO_BATCHES = 4  # packed, max_tokens_per_microbatch=0: micro-batches of the first step (pack_spec)


def pack_spec(run: Run, seq_len: int, lengths):
    """The run's PackSpec, fixed at the first step: pack_len (configured, or the step's longest prompt +
    max_new_tokens rounded up to 128; it grows, with a warning and one recompile, only when a later
    step's prompts no longer fit) and the rows of a micro-batch per data-parallel rank: from
    max_tokens_per_microbatch, or a quarter of the first step's rows per rank (a step is then about
    AUTO_MICRO_BATCHES micro-batches, and the partly filled last one wastes at most about a quarter;
    longer responses later add micro-batches, not memory), at most the padded update's rows per rank
    (so a micro-batch never needs more memory than a padded one)."""

    c = run.c
    if c.pack_len:  # configured: every sample must fit (the longest over every process)
        longest = int(lengths.max()) if len(lengths) else 0
        if run.n_proc > 1:
            longest = int(handoff.allgather_rows(np.array([longest], np.int64)).max())
        if longest > c.pack_len:
            raise ValueError(f"grpo: a sample of {longest} tokens (prompt + completion) does not fit pack_len="
                             f"{c.pack_len}: raise pack_len to the longest prompt + max_new_tokens")
        seq_len = c.pack_len
    if run.pack_len < seq_len:
        if run.pack_len:
            import warnings

            warnings.warn(f"grpo: a step needs rows of {seq_len} tokens > pack_len={run.pack_len}: pack_len grows "
                          f"(the update recompiles); set pack_len to the longest prompt + max_new_tokens",
                          RuntimeWarning, stacklevel=2)
        run.pack_len = c.pack_len or bucket(seq_len + (seq_len // 8 if run.pack_len else 0), 128)
        if c.max_tokens_per_microbatch:
            if c.max_tokens_per_microbatch < run.pack_len:
                raise ValueError(f"grpo: max_tokens_per_microbatch={c.max_tokens_per_microbatch} < pack_len="
                                 f"{run.pack_len}: a micro-batch holds at least one row")
            run.rows_per_rank = c.max_tokens_per_microbatch // run.pack_len
        else:
            rows = max(int(best_fit_decreasing(lengths[r], run.pack_len).max()) + 1 for r in run.mb_rows)
            if run.n_proc > 1:
                rows = int(handoff.allgather_rows(np.array([rows], np.int64)).max())
            want = -(-rows // (run.local_ranks * AUTO_MICRO_BATCHES))
            run.rows_per_rank = max(1, min(run.padded_rows_per_rank, want))
    return PackSpec(pack_len=run.pack_len, rows_per_rank=run.rows_per_rank, ranks=run.local_ranks,
                    sample_capacity=len(run.mb_rows[0]))


def slot_offset(run: Run, spec) -> int:
    """Where this process's sample slots start in the global per-sample arrays: the first global row
    its devices hold of an array of (processes x ranks x sample_capacity) rows, as
    make_array_from_process_local_data places process-local rows (not assumed to be proc x size)."""
    if run.n_proc == 1 or run.place.mesh is None:
        return 0

    return int(process_batch_slice(run.n_proc * spec.ranks * spec.sample_capacity, run.place.mesh).start or 0)


def update_batches(run: Run, ro: Rollout, adv, sample_mask) -> UpdateBatch:
    """The step's samples as the update takes them: packed (pack=True; r1jax.rl.packed, micro-batches
    on the device) or padded rows (pack=False). Several processes agree on the micro-batch count."""

    c, gen = run.c, ro.gen
    if not c.pack:
        host = build_batch(ro.prompt_ids, gen.tokens, gen.logprobs, adv, sample_mask, run.pad, ro.seq_len,
                           routes=gen.routes)
        subs = [{k: v[rows] for k, v in host.items()} for rows in run.mb_rows]
        n = len(gen.tokens)
        stats = {"micro_batches": len(subs) * c.grad_accum, "rows": n, "tokens": int(host["token_mask"].sum()),
                 "loss_tokens": int(host["loss_mask"].sum()), "fill": float(host["token_mask"].mean())}
        return UpdateBatch(parts=[padded_micro_batches(sub, c.grad_accum) for sub in subs],
                           whole=[None] * len(subs), stats=stats, host=subs)
    lengths = sample_lengths(ro.prompt_ids, gen.tokens)
    spec = pack_spec(run, ro.seq_len, lengths)
    plans = [plan_micro_batches(lengths[rows], spec) for rows in run.mb_rows]
    if run.n_proc > 1:  # every process runs the same number of micro-batches (empty ones pad)
        need = handoff.allgather_rows(np.array([len(p) for p in plans], np.int64).reshape(1, -1)).max(0)
        plans = [plan_micro_batches(lengths[rows], spec, int(m)) for rows, m in zip(run.mb_rows, need)]
    parts, agg = [], {"micro_batches": 0, "rows": 0, "tokens": 0, "loss_tokens": 0}
    for rows, plan in zip(run.mb_rows, plans):
        pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
        mbs, st = pack_samples(spec, pick(ro.prompt_ids), pick(gen.tokens), pick(gen.logprobs), adv[rows],
                               sample_mask[rows], run.pad, routes=pick(gen.routes), plan=plan,
                               slot_offset=slot_offset(run, spec))
        parts.append([run.to_device(mb) for mb in mbs])
        for k in agg:
            agg[k] += st[k]
    agg["fill"] = agg["tokens"] / max(agg["micro_batches"] * spec.rows * spec.pack_len, 1)
    agg["pack_len"] = spec.pack_len
    return UpdateBatch(parts=parts, whole=None, stats=agg)


def recompute_logps(run: Run, state, ub: UpdateBatch) -> None:
    """old_logp recomputed by the policy (old_logp="recompute") and ref_logp by the reference (KL),
    one micro-batch at a time, into the update's micro-batches (never all rows at once)."""

    if run.c.old_logp != "recompute" and run.ref_params is None:
        return
    keys = (("old_logp",) if run.c.old_logp == "recompute" else ()) + (("ref_logp",) if run.ref_params is not None
                                                                        else ())
    with run.place.context():
        for j, parts in enumerate(ub.parts):
            done = []
            for mb in parts:
                if ub.whole is not None:  # padded: a host part of the mini-batch's rows
                    mb = run.to_device({k: mb[k] for k in ("input_ids", "targets", "token_mask", "loss_mask")})
                args = (mb["input_ids"], mb["targets"], mb["token_mask"], mb.get("positions"), mb.get("segment_ids"))
                for k in keys:
                    mb[k] = run.logp_fn(state.params if k == "old_logp" else run.ref_params, *args) * mb["loss_mask"]
                done.append(mb)
            if ub.whole is not None:  # the grad_accum step takes the mini-batch whole, rebuilt from each part's
                for k in keys:        # process-local rows (the parts split the local rows)
                    ub.host[j][k] = np.concatenate([handoff.local_rows(mb[k]) for mb in done])
            jax.block_until_ready([mb[k] for mb in done for k in keys])


def update(run: Run, state, ub: UpdateBatch):
    """mu passes over the mini-batches (the prompts j, j + minibatches, ...: whole groups) -> the new
    state and each update's metrics (on the host)."""

    ms = []
    for _ in range(run.c.mu):
        for j in range(len(ub.parts)):
            if ub.whole is not None:
                if ub.whole[j] is None:  # padded: the mini-batch on the device once, for every pass
                    ub.whole[j] = run.to_device(ub.host[j])
                state, m = run.step_fn(state, ub.whole[j])
            else:
                state, m = run.accum_fn(state, ub.parts[j])
            ms.append(m)
    return state, handoff.host_tree(ms)


def step_metrics(c, ro: Rollout, scores, tot, valid, spread, ub: UpdateBatch, ms, times: dict, step: int) -> dict:
    """The step's figures over every process's samples (each process holds its prompts' groups;
    the all-gathers run in the same order on every process). times: generate, reward, logp, train, step0."""

    gen = ro.gen
    g = lambda x: handoff.allgather_rows(np.asarray(x))  # noqa: E731
    lengths = g([len(t) for t in gen.tokens])
    tot, valid, spread = g(tot), g(valid), g(spread)
    texts_refl = g([float(has_reflection(t)) for t in ro.texts])
    truncated = g([float(r == "length") for r in gen.finish_reason])
    scores = {k: g([np.nan if x is None else float(x) for x in v]) for k, v in scores.items()}
    train_tokens = float(g([ub.stats["loss_tokens"]]).sum()) * c.mu
    seq_tokens = float(g([ub.stats["tokens"]]).sum()) * c.mu  # prompt + completion tokens trained
    # sampler/trainer agreement: from the step's first update, before the parameters moved
    vals = {f"rollout/{k}": float(v) for k, v in ms[0].items() if k.startswith("agree_")}
    vals.update({f"train/{k}": float(np.mean([m[k] for m in ms])) for k in ms[0] if not k.startswith("agree_")})
    vals.update({f"reward/{k}": float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
                 for k, v in scores.items()})
    vals.update({
        "reward/total": float(tot[valid].mean()) if valid.any() else math.nan,
        "reward/valid": float(valid.mean()),
        "rollout/response_length": float(np.mean(lengths)),
        "rollout/reflection": float(np.mean(texts_refl)),
        "rollout/truncated": float(np.mean(truncated)),
        "rollout/zero_spread_groups": float(1.0 - spread.mean()),
        "rollout/tokens_per_s": gen.stats["tokens_per_s"],
        "rollout/devices": float(gen.stats["row_devices"]),  # this process's devices that decoded rows
        "train/tokens_per_s": train_tokens / max(times["train"], 1e-9),
        "train/seq_tokens": seq_tokens, "train/seq_len": float(ub.stats.get("pack_len", ro.seq_len)),
        "train/fill": float(ub.stats["fill"]),  # real tokens / the update's row slots (packing: near 1)
        "train/micro_batches": float(ub.stats["micro_batches"]),
        "time/generate_s": times["generate"], "time/reward_s": times["reward"], "time/train_s": times["train"],
        "time/logp_s": times["logp"],  # old / reference log-prob passes (0 without recompute and KL)
        "time/step_s": time.perf_counter() - times["step0"],
    })
    if "preference" in scores:
        vals["reward/preference_active"] = float(preference_active(c, step))
    return vals


def publish(run: Run, state, history, version: int) -> float:
    """Hands the weights after `version` GRPO steps to the sampler (asynchronous GRPO): the rollout
    weights (compute dtype; replicated on the sampler's devices: with `sampler_devices` a device-to-
    device push, no host copy), copied so that the next update's donated buffers are not the
    sampler's. The copies are dispatched, not waited for (the sampler waits for them and logs how
    long they took: async/push_s) -> the seconds this thread spent."""
    t0 = time.perf_counter()
    with jax.transfer_guard_device_to_host("disallow_explicit"):  # device to device only: fails on a host copy
        weights = jax.tree.map(jnp.copy, run.rollout_params(state))
    history.publish(version, weights)
    return time.perf_counter() - t0


def start_sampler(run: Run, state, pipe, start: int):
    """The sampler thread of rollout_mode="async" (r1jax.rl.async_sampler): step s's prompts, rollout
    and rewards, drawn by the weights of version max(start, s - max_staleness) (stale_policy="wait") or
    the newest ("drop")."""

    c = run.c
    history = WeightHistory(keep=c.max_staleness + 1 if c.stale_policy == "wait" else 1)

    def newest():
        v, w = history.newest()
        return None if w is None else (v, w)

    def produce(step, version, weights):
        recs = next(pipe)
        # in-flight updates: later tokens of the step from newer weights, as soon as they are published
        source = newest if c.inflight_updates else None
        ro = rollout(run, None, recs, step, weights=weights, weight_source=source, version=version)
        scores, tot, valid, t_rew = score(c, ro, step)
        return {"ro": ro, "scores": scores, "tot": tot, "valid": valid, "reward_s": t_rew,
                "data": pipe.get_state(), "version": version,
                "push_gb": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(weights)) / 1e9}

    publish(run, state, history, start)
    sampler = Sampler(produce, range(start, c.steps), c.max_staleness, history, policy=c.stale_policy)
    return sampler.start()


def lag_metrics(step: int, item: dict, gen, waited: float) -> dict:
    """Version lag of the step's tokens (the trained weights' version `step` minus each token's) and
    each side's idle time (this process)."""
    if gen.versions is not None:
        vs = np.concatenate([np.asarray(v, np.int64) for v in gen.versions if len(v)] or [np.zeros(0, np.int64)])
    else:
        vs = np.full((1,), item["version"], np.int64)
    lags = step - vs
    return {"async/lag_max": float(lags.max()), "async/lag_mean": float(lags.mean()),
            "async/trainer_wait_s": waited,  # the trainer waiting for this step's rollout
            # the weights this rollout used: seconds from their publication to their arrival, and their size
            "async/push_s": item["push_s"], "async/push_gb": item["push_gb"],
            # the sampler, before and while producing this step's rollout (it ran during earlier updates)
            "async/sampler_idle_s": item["sampler_idle_s"], "async/sampler_busy_s": item["sampler_busy_s"]}


def run_eval(run: Run, state, eval_records, log, step: int):
    """pass@1 / cons@k / format / reflection on the held-out records (every process evaluates the same
    records with the same seed; one process logs)."""

    if eval_records is None:
        return None
    c = run.c
    if c.rollout_mode == "async":  # the sampler's devices are its thread's: eval on the trainer's own

        params_e, ctx, model_e = precision.compute_copy(state.params, run.model.cfg), run.place.context(), run.model
    else:
        params_e, ctx, model_e = run.rollout_params(state), run.rollout_context(), run.rollout_model
    with ctx:
        r = evaluate(model_e, params_e, run.tokenizer, eval_records, k=c.eval_k,
                     temperature=c.eval_temperature, top_p=c.eval_top_p, max_new_tokens=c.max_new_tokens,
                     prompt_style=c.prompt_style, system_prompt=c.system_prompt, user_template=c.user_template,
                     seed=12345, template=c.format_template, sandbox=c.sandbox)
    log.scalars(step, {"eval/pass@1": r["pass@1"], "eval/cons@k": r["cons@k"], "eval/mean_length": r["mean_length"],
                       "eval/format": r["format"], "eval/reflection": r["reflection"]})
    return r


# ------------------------------------------------------------------------------------ loop


def _loop(run: Run, state, pipe, sampler, bar, log, ckpt, eval_records, on_step):
    """The steps of run_grpo (sync: rollout here; async: taken from the sampler thread) -> (state, the
    prompt stream's state after the last step trained, steps done)."""
    c = run.c
    data_state, done_here = None, 0
    for step in bar:
        t0 = time.perf_counter()
        if sampler is None:
            recs = next(pipe)  # the global prompts of this step (the same on every process)
            ro = rollout(run, state, recs, step)  # this process's block of prompts x group_size
            scores, tot, valid, t_rew = score(c, ro, step)
            data_state, lag = pipe.get_state(), None
        else:  # produced by the sampler thread with the weights of version step - max_staleness (or newer)
            item, waited, dropped = sampler.take_fresh(step)
            ro, scores, tot, valid, t_rew, data_state = (item[k] for k in ("ro", "scores", "tot", "valid",
                                                                              "reward_s", "data"))
            lag = lag_metrics(step, item, ro.gen, waited)
            lag["async/dropped"] = float(dropped)  # rollouts too old for this step (stale_policy="drop")
        adv, sample_mask, spread = advantages_and_mask(c, tot, valid, ro.gen.finish_reason)
        ub = update_batches(run, ro, adv, sample_mask)
        t1 = time.perf_counter()
        recompute_logps(run, state, ub)
        t2 = time.perf_counter()
        state, ms = update(run, state, ub)
        t3 = time.perf_counter()
        if sampler is not None:
            lag["async/publish_s"] = publish(run, state, sampler.history, step + 1)
        times = dict(generate=ro.seconds, reward=t_rew, logp=t2 - t1, train=t3 - t2, step0=t0)
        vals = step_metrics(c, ro, scores, tot, valid, spread, ub, ms, times, step)
        if lag is not None:
            vals.update(lag)
        log.scalars(step + 1, vals)
        bar.set_postfix(acc=f"{vals.get('reward/accuracy', math.nan):.2f}", len=f"{vals['rollout/response_length']:.0f}",
                        loss=f"{vals['train/loss']:.3f}")
        if on_step is not None:
            on_step(step + 1, vals)
        if c.eval_every and (step + 1) % c.eval_every == 0:
            run_eval(run, state, eval_records, log, step + 1)
        if c.save_every and (step + 1) % c.save_every == 0:
            ckpt.save(step + 1, state, {"step": step + 1, "data": data_state})
        done_here += 1
        if c.stop_after and done_here >= c.stop_after:
            break
    return state, data_state, done_here


def run_grpo(c, *, model=None, params=None, tokenizer=None, train_records=None, eval_records=None,
             on_step=None):
    """Runs GRPO as configured (see module doc); returns (model, params)."""
    from tqdm import tqdm


    run, state, train_records, eval_records = setup(c, model, params, tokenizer, train_records, eval_records)
    model, proc = run.model, run.proc
    del params
    pipe = PromptPipeline(train_records, batch_size=c.prompts_per_step, seed=c.seed)
    ckpt = Checkpointer(os.path.join(c.run_dir, "checkpoints"))
    start = 0
    restored, meta = ckpt.restore(state)
    if restored is not None:
        state, start = restored, int(meta["step"])
        pipe.set_state(meta["data"])
    log = RunLogger(c.run_dir, resume_step=start if restored is not None else None, writes=proc == 0)

    if start == 0 and c.eval_every:
        run_eval(run, state, eval_records, log, 0)
    bar = tqdm(range(start, c.steps), desc=f"grpo {os.path.basename(c.run_dir)}",
               disable=not c.progress or proc != 0,
               dynamic_ncols=True, initial=start, total=c.steps)
    sampler = None
    if c.rollout_mode == "async" and start < c.steps:
        sampler = start_sampler(run, state, pipe, start)
    try:
        state, data_state, done_here = _loop(run, state, pipe, sampler, bar, log, ckpt, eval_records, on_step)
    finally:
        if sampler is not None:
            sampler.stop()
    bar.close()
    if sampler is not None and done_here:
        pipe.set_state(data_state)  # the prompts the trainer used, not those the sampler ran ahead to
    finished = int(handoff.host_scalar(state.step)) // max(c.mu * c.minibatches, 1) >= c.steps
    if finished and ckpt.latest_step() != c.steps:
        ckpt.save(c.steps, state, {"step": c.steps, "data": pipe.get_state()})
    log.plot(os.path.join(c.run_dir, "grpo_curves.png"), [
        ("reward/accuracy", "train accuracy"), ("eval/pass@1", "held-out pass@1"),
        ("rollout/response_length", "mean response length"), ("rollout/reflection", "reflection words")])
    log.close()
    ckpt.close()
    if finished and c.save_hf:
        # every process joins (one tensor gathered and cast at a time, no replica of the fp32 master
        # weights on a device), process 0 writes
        save_pretrained(state.params, model.cfg, os.path.join(c.run_dir, "final"), tokenizer=run.tokenizer,
                        dtype=c.save_dtype or None)
    return model, state.params


def check_model_fits(c, model_cfg, tokenizer, what: str, *, model_where: str, tokenizer_where: str) -> None:
    """Before the weights load: the tokenizer's ids (added / special, EOS, pad) fit the model's
    embedding table (r1jax.data.tokenizer.check_fits_model, naming both folders and sizes), and
    max_new_tokens leaves room for a prompt within max_position_embeddings."""

    check_fits_model(tokenizer, model_cfg.vocab_size, tokenizer_where=tokenizer_where, model_where=model_where,
                     what=what)
    limit = int(model_cfg.get("max_position_embeddings", 0) or 0)
    if limit and c.max_new_tokens >= limit:
        raise ValueError(f"{what} config: max_new_tokens={c.max_new_tokens} leaves no room for a prompt within the "
                         f"model {model_where}'s max_position_embeddings={limit}")


ROLLOUT_REPLICA_FRACTION = 0.25  # "auto" replicates the compute-dtype weights on each device up to this share of it


def rollout_placement(placement: str, n_proc: int, cfg, params) -> str:
    """"auto" -> "mesh" with one process (the training mesh already spans its devices); with several,
    "local" (each process decodes its prompts on replicas of the compute-dtype weights on all its
    devices, no cross-host traffic while decoding) when those weights take at most
    ROLLOUT_REPLICA_FRACTION of one device's memory (the rest holds the training state's shard, the
    cache and the activations), else "mesh" (SPMD over every process's devices on the sharded weights)."""
    if placement != "auto":
        return placement
    if n_proc == 1:
        return "mesh"

    dt = np.dtype(cl.dtype_of(cfg.dtype))
    nbytes = sum(x.size * (dt.itemsize if x.ndim >= 2 else x.dtype.itemsize) for x in jax.tree.leaves(params))
    return "local" if handoff.fits_one_device(nbytes, ROLLOUT_REPLICA_FRACTION) else "mesh"


def split_devices(n: int):
    """(each process's last n local devices, the other devices of every process) for sampler_devices=n;
    (None, None) for 0 (sampler and trainer share all the devices)."""
    if not n:
        return None, None
    local = jax.local_devices()
    if n >= len(local):
        raise ValueError(f"grpo: sampler_devices={n} leaves no training device of this process's {len(local)}")
    by_proc: dict = {}
    for d in jax.devices():
        by_proc.setdefault(d.process_index, []).append(d)
    sampler = {d for devs in by_proc.values() for d in devs[-n:]}
    return local[-n:], [d for d in jax.devices() if d not in sampler]


def setup(c, model, params, tokenizer, train_records, eval_records):
    """Validates the config, loads what is not passed in (model, tokenizer, records) and builds the
    step's pieces: -> (Run, the train state, train_records, eval_records)."""

    validate_config(c)
    check_isolation(c, list(c.rewards.keys()))  # the sandbox works here (or sandbox="unsafe", said loudly)
    if model is None and not c.init:
        raise ValueError("grpo config: init is empty: set it to the HF checkpoint folder to train "
                         "(--set init=DIR)")
    if tokenizer is None:
        tokenizer = load_tokenizer(c.tokenizer or c.init)
    # the tokenizer against the model's embedding table and position budget, before the weights load
    model_cfg = model.cfg if model is not None else config_lib.from_hf_config(c.init)
    check_model_fits(c, model_cfg, tokenizer, "grpo", model_where=(repr(c.init) if model is None or c.init
                                                                    else "passed in"),
                     tokenizer_where=repr(c.tokenizer or c.init) if c.tokenizer or c.init else "passed in")
    eos = tuple(tokenizer.eos_token_ids)
    if not eos:
        raise ValueError(f"grpo: the tokenizer ({c.tokenizer or c.init}) defines no EOS token: generation could not stop")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    fmt = PromptFormat(c.prompt_style, system_prompt=c.system_prompt, user_template=c.user_template)
    if train_records is None:
        if not c.train_data:
            raise ValueError("grpo config: train_data is empty: set it to a JSONL of prompts (--set train_data=FILE)")
        train_records = load_train_records(c, c.train_data)
    if eval_records is None and c.eval_data:
        eval_records = load_train_records(c, c.eval_data)
    if eval_records is not None:
        eval_records = eval_records[: c.eval_problems]
        if c.eval_every and eval_records:  # their prompts fit the model's positions (train prompts: each step)
            lens = [len(p) for p in fmt.render_all(tokenizer, [prompt_of(r) for r in eval_records])[0]]
            check_positions(model_cfg, lens, c.max_new_tokens, what="grpo: eval_data", key="max_new_tokens")
    # Many processes: every process reads the same global prompt stream and samples its block of
    # `prompts_per_step / processes` prompts; the update's global arrays are built from the
    # process-local rows. Mini-batch j takes the prompts j, j + minibatches, ... (whole groups), so
    # the batches, rewards and losses are those of one process with the same config.
    n_proc, proc = jax.process_count(), jax.process_index()
    G = c.group_size
    n_rows = c.prompts_per_step * G
    if c.prompts_per_step % (c.minibatches * n_proc):
        raise ValueError(f"grpo config: prompts_per_step={c.prompts_per_step} must split into minibatches="
                         f"{c.minibatches} x {n_proc} processes")
    p_local = c.prompts_per_step // n_proc
    mb = n_rows // c.minibatches
    mb_rows = [np.concatenate([np.arange(i * G, (i + 1) * G) for i in range(j, p_local, c.minibatches)])
               for j in range(c.minibatches)]  # process-local row indices of each mini-batch
    if not c.pack and mb % c.grad_accum:
        raise ValueError(f"grpo config: a minibatch of {mb} rows does not split into grad_accum={c.grad_accum}")
    # everything above is checked before the weights load
    os.makedirs(c.run_dir, exist_ok=True)
    over = precision.model_overrides(c.param_dtype, c.dtype, c.remat_policy)
    over.update(backends.implementation_overrides(c.attention_impl, c.moe_impl))
    if model is None:
        model, params = precision.load_for_training(c.init, None, c.seed, **over)
    else:  # a model passed in keeps its params' storage; compute dtype and remat may change
        model, params = precision.with_overrides(model, params, **{k: v for k, v in over.items()
                                                                   if k != "param_dtype"})
    lk = c.loss_kwargs.to_dict()
    policy_loss = grpo.get_loss_fn(c.loss)
    takes = grpo.loss_options(policy_loss)
    if not lk.get("max_len") and (takes is None or "max_len" in takes):
        # Dr. GRPO's constant normaliser: the generation budget, the same every step
        lk["max_len"] = c.max_new_tokens
    loss_fn = make_policy_loss(policy_loss, c.temperature, lk, chunk=c.logprob_chunk)
    opt = ml_collections.ConfigDict(c.optimizer.to_dict())
    opt.total_steps = c.steps * c.mu * c.minibatches
    tx = train.make_optimizer(opt)
    sampler_devs, train_devs = split_devices(int(c.sampler_devices))
    place = Placement(c.mesh, devices=train_devs)
    if not c.pack and (mb // c.grad_accum) % place.batch_multiple:
        raise ValueError(f"grpo config: a micro-batch of {mb // c.grad_accum} rows does not split over mesh "
                         f"{c.mesh!r} ({place.batch_multiple} ways)")
    if place.batch_multiple % n_proc:
        raise ValueError(f"grpo: the mesh's batch axes ({place.batch_multiple} ways) do not split over {n_proc} "
                         "processes")
    local_ranks = place.batch_multiple // n_proc
    if n_proc > 1 and place.mesh is None:
        raise ValueError(f"grpo: {n_proc} processes need a mesh over their devices (mesh config key)")
    state = place.train_state(model.cfg, params, tx)
    del params
    step_fn = accum_fn = None
    if c.pack:
        accum_fn = place.accum_step(model, loss_fn, tx, router_bias_update_rate=c.router_bias_update_rate)
    else:
        step_fn = place.train_step(model, loss_fn, tx, grad_accum=c.grad_accum,
                                   router_bias_update_rate=c.router_bias_update_rate)
    local_rollout = rollout_placement(c.rollout_placement, n_proc, model.cfg, state.params) == "local"
    if sampler_devs:  # the sampler decodes on its own devices, the weights pushed to them after each update

        local_rollout, rollout_mesh = True, make_mesh({"data": len(sampler_devs)}, devices=sampler_devs)
    else:
        rollout_mesh = handoff.local_mesh() if local_rollout else None
    if c.rollout_mode == "async" and not sampler_devs and (
            (place.mesh is not None and place.mesh.devices.size > 1) or n_proc > 1):
        # Two threads launching multi-device programs with collectives on the same devices: the launch
        # order can differ from device to device, and on GPU the collectives then wait for each other.
        raise ValueError(f"grpo: rollout_mode='async' with sampler and trainer sharing the devices of mesh "
                         f"{c.mesh!r} ({jax.device_count()} devices, {n_proc} process(es)): both would run "
                         "collectives on the same devices from two threads, whose launch order may differ per "
                         "device; give the sampler its own devices (sampler_devices=N) or train on one device")
    if c.rollout_mode == "async" and c.stale_policy == "drop" and n_proc > 1:
        raise ValueError("grpo: stale_policy='drop' with several processes: each process would drop on its own "
                         "timing and train other prompts than the others; use stale_policy='wait'")
    rollout_model = model
    if local_rollout and model.cfg.moe_impl == "ep":  # outside the mesh: the local expert dispatch

        rollout_model = model.clone(moe_impl=backends.moe_dispatch())
    # The frozen reference exists only when the KL term does; it is held in the compute dtype.
    ref_params = None
    if lk.get("kl_coef"):
        ref_params = precision.compute_copy(state.params, model.cfg)
        if ref_params is state.params:  # same dtype: a copy (the state's buffers are donated to each step)
            ref_params = jax.tree.map(jnp.copy, state.params)
    logp_fn = make_logprob_fn(model, c.temperature, c.logprob_chunk)
    rs = route_shape(model.cfg)
    record_routes = bool(rs) and n_rows * c.max_new_tokens * rs[0] * rs[1] * 2 <= c.route_agreement_mib * 2**20
    run = Run(c=c, model=model, rollout_model=rollout_model, tokenizer=tokenizer, fmt=fmt, eos=eos, pad=pad,
              place=place, step_fn=step_fn, logp_fn=logp_fn, ref_params=ref_params, n_proc=n_proc, proc=proc,
              p_local=p_local, mb_rows=mb_rows, local_rollout=local_rollout, record_routes=record_routes,
              rollout_mesh=rollout_mesh,
              accum_fn=accum_fn, local_ranks=local_ranks,
              padded_rows_per_rank=max(1, mb // c.grad_accum // place.batch_multiple))
    return run, state, train_records, eval_records
