"""The GRPO trainer: prompts -> G samples each -> rule rewards -> group advantages -> clipped updates.

    cfg = grpo_config(init="/ckpts/Qwen2.5-1.5B-Instruct", train_data="gsm8k_train.jsonl",
                      problem_key="question", answer_format="gsm8k", prompt_style="chat")
    model, params = run_grpo(cfg)          # r1jax grpo --config experiments/grpo_gsm8k.py --set ...

    trainer = GRPOTrainer(cfg)             # the set-up: config checked, model, steps compiled, run resumed
    metrics = trainer.step(s)              # one step: rollout -> score -> advantages -> batch -> log-probs
                                           # -> update -> metrics (trainer.state is the new state)

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
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import backends, launch
from r1jax import config as cl
from r1jax.data.buckets import round_up
from r1jax.data.packing import best_fit_decreasing
from r1jax.data.pipeline import PromptPipeline
from r1jax.data.prompts import PromptFormat, decode_completion, prompt_of, read_prompt_records, whole_response
from r1jax.eval.runner import evaluate, has_reflection
from r1jax.generation.engine import check_budget, check_positions, generate
from r1jax.generation.programs import route_shape
from r1jax.model import precision
from r1jax.parallel import handoff
from r1jax.parallel.mesh import make_mesh, use_mesh
from r1jax.parallel.placement import Placement
from r1jax.parallel.sharding import process_batch_slice, shard_local_batch
from r1jax.rewards.preference import preference_active
from r1jax.rewards.registry import check_isolation, compute_rewards
from r1jax.rl import grpo
from r1jax.rl.async_sampler import Sampler, WeightHistory
from r1jax.rl.batch import ROW_MULTIPLE, build_batch
from r1jax.rl.config import validate_config
from r1jax.rl.packed import PackSpec, pack_samples, padded_micro_batches, plan_micro_batches, sample_lengths
from r1jax.rl.policy import make_logprob_fn, make_policy_loss


def load_train_records(c, path: str) -> list[dict]:
    """Prompt records of a JSONL file with the config's field mapping (r1jax.data.prompts)."""
    return read_prompt_records(path, problem_key=c.problem_key, answer_key=c.answer_key,
                               answer_format=c.answer_format)


# ------------------------------------------------------------------------------ a step's results


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


@dataclasses.dataclass
class Scores:
    """The rewards of a step's samples: `per_reward` {name: [n] (None where it does not exist)}, the
    weighted `total` [n] float32 (0 where invalid), `valid` [n] bool and the seconds taken."""
    per_reward: dict
    total: np.ndarray
    valid: np.ndarray
    seconds: float


@dataclasses.dataclass
class Advantages:
    """`advantages` [n] float32, `sample_mask` [n] bool (the samples that enter the loss) and
    `spread` [groups] bool (the group's rewards differ)."""
    advantages: np.ndarray
    sample_mask: np.ndarray
    spread: np.ndarray


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


def _prompt_block(gen, lo: int, n_prompts: int, n: int):
    """The samples of prompts lo .. lo + n_prompts - 1 of a generation over all prompts (n samples
    each, in prompt order), their prompt_index counted from lo; stats are the whole call's."""
    a, b = lo * n, (lo + n_prompts) * n
    return dataclasses.replace(gen, tokens=gen.tokens[a:b], logprobs=gen.logprobs[a:b],
                               finish_reason=gen.finish_reason[a:b],
                               prompt_index=[i - lo for i in gen.prompt_index[a:b]],
                               routes=gen.routes[a:b] if gen.routes is not None else None)


def advantages(c, sc: Scores, finish_reason) -> Advantages:
    """Group advantages and the samples that enter the loss. A sample whose reward does not exist
    (its gold answer does not parse) is left out of its group's mean and std and out of the loss;
    mask_truncated / filter_zero_spread drop more."""
    G, tot, valid = c.group_size, sc.total, sc.valid
    adv = np.asarray(grpo.group_advantages(jnp.asarray(tot), G, scale=c.adv_scale, valid=jnp.asarray(valid)))
    vg = valid.reshape(-1, G)
    tg = np.where(vg, tot.reshape(-1, G), np.nan)
    spread = (np.nanmax(np.where(vg, tg, -np.inf), -1) > np.nanmin(np.where(vg, tg, np.inf), -1))
    sample_mask = valid.copy()
    if c.mask_truncated:
        sample_mask &= np.array([r != "length" for r in finish_reason])
    if c.filter_zero_spread:
        sample_mask &= np.repeat(spread, G)
    return Advantages(adv, sample_mask, spread)


def step_metrics(c, ro: Rollout, sc: Scores, adv: Advantages, ub: UpdateBatch, ms, times: dict,
                 step: int) -> dict:
    """The step's figures over every process's samples (each process holds its prompts' groups;
    the all-gathers run in the same order on every process). times: generate, reward, logp, train, step0."""

    gen = ro.gen
    g = lambda x: handoff.allgather_rows(np.asarray(x))  # noqa: E731
    lengths = g([len(t) for t in gen.tokens])
    tot, valid, spread = g(sc.total), g(sc.valid), g(adv.spread)
    texts_refl = g([float(has_reflection(t)) for t in ro.texts])
    truncated = g([float(r == "length") for r in gen.finish_reason])
    scores = {k: g([np.nan if x is None else float(x) for x in v]) for k, v in sc.per_reward.items()}
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


# ------------------------------------------------------------------------------------ trainer


class GRPOTrainer:
    """One GRPO run (see the module doc). `__init__` is the set-up: the config checked, the tokenizer,
    records and model loaded, the optimizer, placement and compiled steps built, the run folder resumed
    (`self.state`, `self.start`). `step(s)` runs step s; `run()` runs the remaining steps, with the
    sampler thread when rollout_mode="async", and finishes the run (checkpoint, plot, HF export).

    Processes: `proc` of `n_proc`, each sampling `p_local` prompts; `mb_rows`: the process-local rows
    of each mini-batch."""

    def __init__(self, c, *, model=None, params=None, tokenizer=None, train_records=None, eval_records=None):
        validate_config(c)
        check_isolation(c, list(c.rewards.keys()))  # the sandbox works here (or sandbox="unsafe", said loudly)
        model_cfg, model_where = launch.run_model_config(c, "grpo", model)
        tokenizer, eos, pad = launch.load_run_tokenizer(c, "grpo", tokenizer)
        # the tokenizer against the model's embedding table and position budget, before the weights load
        launch.check_tokenizer_fits(c, model_cfg, tokenizer, "grpo", model_where)
        check_budget(model_cfg, c.max_new_tokens, what="grpo config", model_where=model_where)
        fmt = PromptFormat(c.prompt_style, system_prompt=c.system_prompt, user_template=c.user_template)
        if train_records is None:
            if not c.train_data:
                raise ValueError("grpo config: train_data is empty: set it to a JSONL of prompts "
                                 "(--set train_data=FILE)")
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
        model, params = launch.load_model(c, model, params)
        lk = c.loss_kwargs.to_dict()
        policy_loss = grpo.get_loss_fn(c.loss)
        takes = grpo.loss_options(policy_loss)
        if not lk.get("max_len") and (takes is None or "max_len" in takes):
            # Dr. GRPO's constant normaliser: the generation budget, the same every step
            lk["max_len"] = c.max_new_tokens
        loss_fn = make_policy_loss(policy_loss, c.temperature, lk, chunk=c.logprob_chunk)
        tx = launch.make_optimizer(c, c.steps * c.mu * c.minibatches)
        sampler_devs, train_devs = split_devices(int(c.sampler_devices))
        place = Placement(c.mesh, devices=train_devs)
        if not c.pack and (mb // c.grad_accum) % place.batch_multiple:
            raise ValueError(f"grpo config: a micro-batch of {mb // c.grad_accum} rows does not split over mesh "
                             f"{c.mesh!r} ({place.batch_multiple} ways)")
        if place.batch_multiple % n_proc:
            raise ValueError(f"grpo: the mesh's batch axes ({place.batch_multiple} ways) do not split over "
                             f"{n_proc} processes")
        if n_proc > 1 and place.mesh is None:
            raise ValueError(f"grpo: {n_proc} processes need a mesh over their devices (mesh config key)")
        state = place.train_state(model.cfg, params, tx)
        del params
        self.step_fn = self.accum_fn = None  # the padded update (grad_accum) / the packed one (train.AccumStep)
        if c.pack:
            self.accum_fn = place.accum_step(model, loss_fn, tx, router_bias_update_rate=c.router_bias_update_rate)
        else:
            self.step_fn = place.train_step(model, loss_fn, tx, grad_accum=c.grad_accum,
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
                             "collectives on the same devices from two threads, whose launch order may differ "
                             "per device; give the sampler its own devices (sampler_devices=N) or train on one "
                             "device")
        if c.rollout_mode == "async" and c.stale_policy == "drop" and n_proc > 1:
            raise ValueError("grpo: stale_policy='drop' with several processes: each process would drop on its "
                             "own timing and train other prompts than the others; use stale_policy='wait'")
        # outside the mesh the rollouts use the local expert dispatch
        self.rollout_model = (model.clone(moe_impl=backends.moe_dispatch())
                              if local_rollout and model.cfg.moe_impl == "ep" else model)
        # The frozen reference exists only when the KL term does; it is held in the compute dtype.
        self.ref_params = None
        if lk.get("kl_coef"):
            self.ref_params = precision.compute_copy(state.params, model.cfg)
            if self.ref_params is state.params:  # same dtype: a copy (the state's buffers are donated to each step)
                self.ref_params = jax.tree.map(jnp.copy, state.params)
        rs = route_shape(model.cfg)
        self.c, self.model, self.tokenizer, self.fmt, self.eos, self.pad = c, model, tokenizer, fmt, eos, pad
        self.place, self.n_proc, self.proc, self.p_local, self.mb_rows = place, n_proc, proc, p_local, mb_rows
        self.local_rollout, self.rollout_mesh = local_rollout, rollout_mesh
        self.logp_fn = make_logprob_fn(model, c.temperature, c.logprob_chunk)
        self.record_routes = bool(rs) and n_rows * c.max_new_tokens * rs[0] * rs[1] * 2 <= c.route_agreement_mib * 2**20
        self.local_ranks = place.batch_multiple // n_proc  # data-parallel ranks of this process's devices
        self.padded_rows_per_rank = max(1, mb // c.grad_accum // place.batch_multiple)  # the packed one's cap
        self.pack_len = 0  # pack=True: tokens per row (set by the first step when not configured)
        self.rows_per_rank = 0  # pack=True: rows of a micro-batch per data-parallel rank (set by pack_spec)
        self.reward_scorers = {}  # the reward models the preference reward loaded, kept for the run
        self.eval_records = eval_records
        self.pipe = PromptPipeline(train_records, batch_size=c.prompts_per_step, seed=c.seed)
        self.files = launch.RunFiles(c, "grpo", c.steps)  # close() them when not calling run()
        self.state = self.files.resume(state)
        self.start = self.files.start
        if self.files.meta is not None:  # resumed: the prompt stream where the checkpoint left it
            self.pipe.set_state(self.files.meta["data"])
        self.data_state = self.pipe.get_state()  # the prompt stream after the last step trained
        self.sampler = None  # rollout_mode="async": the sampler thread, while run() runs

    # ---------------------------------------------------------------------------- placement

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

    # ---------------------------------------------------------------------------- a step's parts

    def rollout(self, state, recs: list[dict], step: int, *, weights=None, weight_source=None,
                version: int = 0) -> Rollout:
        """Samples group_size completions of this process's block of the step's global prompts
        (prompts lo .. lo + p_local - 1, lo = proc * p_local). weights: the rollout weights (default:
        `self.rollout_params(state)`); weight_source / version: in-flight updates (asynchronous GRPO)."""

        c, t0 = self.c, time.perf_counter()
        prompt_ids, prompt_texts = self.fmt.render_all(self.tokenizer, [prompt_of(r) for r in recs])
        check_positions(self.model.cfg, [len(p) for p in prompt_ids], c.max_new_tokens,
                        what=f"grpo step {step + 1}: train_data", key="max_new_tokens")
        lo, G = self.proc * self.p_local, c.group_size
        # several processes sampling SPMD on the sharded weights ("mesh"): one program over every process's
        # devices, so every process passes every prompt and keeps its block's samples (the outputs are read
        # whole on each process); with a local replica each process samples its block alone
        spmd = self.n_proc > 1 and not self.local_rollout
        params_r = self.rollout_params(state) if weights is None else weights
        inflight = {"weight_source": weight_source, "params_version": version} if weight_source is not None else {}
        with self.rollout_context():
            gen = generate(self.rollout_model, params_r, prompt_ids if spmd else prompt_ids[lo:lo + self.p_local],
                           max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                           eos_id=self.eos, seed=c.seed * 1_000_003 + step, n=G, return_routes=self.record_routes,
                           engine=c.rollout_engine, slots=c.rollout_slots or None, first_request=0 if spmd else lo * G,
                           **inflight)
        del params_r
        if spmd:
            gen = _prompt_block(gen, lo, self.p_local, G)
        seconds = time.perf_counter() - t0
        # The rewards see the whole response: "<think>" + completion when the prompt opened the block.
        texts = [whole_response(prompt_texts[lo + i], decode_completion(self.tokenizer, t, self.eos))
                 for t, i in zip(gen.tokens, gen.prompt_index)]
        return Rollout(gen=gen, texts=texts, records=[recs[lo + i] for i in gen.prompt_index],
                       prompt_ids=[prompt_ids[lo + i] for i in gen.prompt_index],
                       # the row length: global, the same on every process
                       seq_len=round_up(max(len(p) for p in prompt_ids) + c.max_new_tokens, ROW_MULTIPLE),
                       seconds=seconds)

    def score(self, ro: Rollout, step: int) -> Scores:
        """The rewards of the rollout's whole responses (r1jax.rewards.compute_rewards)."""
        t0 = time.perf_counter()
        per_reward, totals = compute_rewards(self.c, ro.texts, ro.records, step=step, completion_ids=ro.gen.tokens,
                                             scorers=self.reward_scorers)
        valid = np.array([t is not None for t in totals])
        total = np.array([t if t is not None else 0.0 for t in totals], np.float32)
        return Scores(per_reward, total, valid, time.perf_counter() - t0)

    def update_batches(self, ro: Rollout, adv, sample_mask) -> UpdateBatch:
        """The step's samples as the update takes them: packed (pack=True; r1jax.rl.packed, micro-batches
        on the device) or padded rows (pack=False). Several processes agree on the micro-batch count."""
        c, gen = self.c, ro.gen
        if not c.pack:
            host = build_batch(ro.prompt_ids, gen.tokens, gen.logprobs, adv, sample_mask, self.pad, ro.seq_len,
                               routes=gen.routes)
            subs = [{k: v[rows] for k, v in host.items()} for rows in self.mb_rows]
            n = len(gen.tokens)
            stats = {"micro_batches": len(subs) * c.grad_accum, "rows": n, "tokens": int(host["token_mask"].sum()),
                     "loss_tokens": int(host["loss_mask"].sum()), "fill": float(host["token_mask"].mean())}
            return UpdateBatch(parts=[padded_micro_batches(sub, c.grad_accum) for sub in subs],
                               whole=[None] * len(subs), stats=stats, host=subs)
        lengths = sample_lengths(ro.prompt_ids, gen.tokens)
        spec = self.pack_spec(ro.seq_len, lengths)
        plans = [plan_micro_batches(lengths[rows], spec) for rows in self.mb_rows]
        if self.n_proc > 1:  # every process runs the same number of micro-batches (empty ones pad)
            need = handoff.allgather_rows(np.array([len(p) for p in plans], np.int64).reshape(1, -1)).max(0)
            plans = [plan_micro_batches(lengths[rows], spec, int(m)) for rows, m in zip(self.mb_rows, need)]
        parts, agg = [], {"micro_batches": 0, "rows": 0, "tokens": 0, "loss_tokens": 0}
        for rows, plan in zip(self.mb_rows, plans):
            pick = lambda xs: None if xs is None else [xs[i] for i in rows]  # noqa: E731
            mbs, st = pack_samples(spec, pick(ro.prompt_ids), pick(gen.tokens), pick(gen.logprobs), adv[rows],
                                   sample_mask[rows], self.pad, routes=pick(gen.routes), plan=plan,
                                   slot_offset=self.slot_offset(spec))
            parts.append([self.to_device(mb) for mb in mbs])
            for k in agg:
                agg[k] += st[k]
        agg["fill"] = agg["tokens"] / max(agg["micro_batches"] * spec.rows * spec.pack_len, 1)
        agg["pack_len"] = spec.pack_len
        return UpdateBatch(parts=parts, whole=None, stats=agg)

    def pack_spec(self, seq_len: int, lengths):
        """The run's PackSpec, fixed at the first step: pack_len (configured, or the step's longest prompt +
        max_new_tokens rounded up to 128; it grows, with a warning and one recompile, only when a later
        step's prompts no longer fit) and the rows of a micro-batch per data-parallel rank: from
        max_tokens_per_microbatch, or a quarter of the first step's rows per rank (a step is then about
        AUTO_MICRO_BATCHES micro-batches, and the partly filled last one wastes at most about a quarter;
        longer responses later add micro-batches, not memory), at most the padded update's rows per rank
        (so a micro-batch never needs more memory than a padded one)."""
        c = self.c
        if c.pack_len:  # configured: every sample must fit (the longest over every process)
            longest = int(lengths.max()) if len(lengths) else 0
            if self.n_proc > 1:
                longest = int(handoff.allgather_rows(np.array([longest], np.int64)).max())
            if longest > c.pack_len:
                raise ValueError(f"grpo: a sample of {longest} tokens (prompt + completion) does not fit pack_len="
                                 f"{c.pack_len}: raise pack_len to the longest prompt + max_new_tokens")
            seq_len = c.pack_len
        if self.pack_len < seq_len:
            if self.pack_len:
                warnings.warn(f"grpo: a step needs rows of {seq_len} tokens > pack_len={self.pack_len}: pack_len grows "
                              f"(the update recompiles); set pack_len to the longest prompt + max_new_tokens",
                              RuntimeWarning, stacklevel=2)
            self.pack_len = c.pack_len or round_up(seq_len + (seq_len // 8 if self.pack_len else 0), 128)
            if c.max_tokens_per_microbatch:
                if c.max_tokens_per_microbatch < self.pack_len:
                    raise ValueError(f"grpo: max_tokens_per_microbatch={c.max_tokens_per_microbatch} < pack_len="
                                     f"{self.pack_len}: a micro-batch holds at least one row")
                self.rows_per_rank = c.max_tokens_per_microbatch // self.pack_len
            else:
                rows = max(int(best_fit_decreasing(lengths[r], self.pack_len).max()) + 1 for r in self.mb_rows)
                if self.n_proc > 1:
                    rows = int(handoff.allgather_rows(np.array([rows], np.int64)).max())
                want = -(-rows // (self.local_ranks * AUTO_MICRO_BATCHES))
                self.rows_per_rank = max(1, min(self.padded_rows_per_rank, want))
        return PackSpec(pack_len=self.pack_len, rows_per_rank=self.rows_per_rank, ranks=self.local_ranks,
                        sample_capacity=len(self.mb_rows[0]))

    def slot_offset(self, spec) -> int:
        """Where this process's sample slots start in the global per-sample arrays: the first global row
        its devices hold of an array of (processes x ranks x sample_capacity) rows, as
        make_array_from_process_local_data places process-local rows (not assumed to be proc x size)."""
        if self.n_proc == 1 or self.place.mesh is None:
            return 0

        return int(process_batch_slice(self.n_proc * spec.ranks * spec.sample_capacity, self.place.mesh).start or 0)

    def recompute_logps(self, state, ub: UpdateBatch) -> None:
        """old_logp recomputed by the policy (old_logp="recompute") and ref_logp by the reference (KL),
        one micro-batch at a time, into the update's micro-batches (never all rows at once)."""
        if self.c.old_logp != "recompute" and self.ref_params is None:
            return
        keys = (("old_logp",) if self.c.old_logp == "recompute" else ()) + (("ref_logp",) if self.ref_params is not None
                                                                            else ())
        with self.place.context():
            for j, parts in enumerate(ub.parts):
                done = []
                for mb in parts:
                    if ub.whole is not None:  # padded: a host part of the mini-batch's rows
                        mb = self.to_device({k: mb[k] for k in ("input_ids", "targets", "token_mask", "loss_mask")})
                    args = (mb["input_ids"], mb["targets"], mb["token_mask"], mb.get("positions"),
                            mb.get("segment_ids"))
                    for k in keys:
                        p = state.params if k == "old_logp" else self.ref_params
                        mb[k] = self.logp_fn(p, *args) * mb["loss_mask"]
                    done.append(mb)
                if ub.whole is not None:  # the grad_accum step takes the mini-batch whole, rebuilt from each part's
                    for k in keys:        # process-local rows (the parts split the local rows)
                        ub.host[j][k] = np.concatenate([handoff.local_rows(mb[k]) for mb in done])
                jax.block_until_ready([mb[k] for mb in done for k in keys])

    def update(self, state, ub: UpdateBatch):
        """mu passes over the mini-batches (the prompts j, j + minibatches, ...: whole groups) -> the new
        state and each update's metrics (on the host)."""
        ms = []
        for _ in range(self.c.mu):
            for j in range(len(ub.parts)):
                if ub.whole is not None:
                    if ub.whole[j] is None:  # padded: the mini-batch on the device once, for every pass
                        ub.whole[j] = self.to_device(ub.host[j])
                    state, m = self.step_fn(state, ub.whole[j])
                else:
                    state, m = self.accum_fn(state, ub.parts[j])
                ms.append(m)
        return state, handoff.host_tree(ms)

    def step(self, step: int) -> dict:
        """Step `step` (0-based): rollout -> score -> advantages -> update batch -> log-probs -> update
        -> metrics; self.state becomes the new state. With the sampler thread (rollout_mode="async") the
        rollout and its scores are the sampler's, drawn with the weights of version step - max_staleness
        (or newer), and the new weights are published to it after the update."""
        c, t0, lag = self.c, time.perf_counter(), {}
        if self.sampler is None:
            recs = next(self.pipe)  # the global prompts of this step (the same on every process)
            ro = self.rollout(self.state, recs, step)  # this process's block of prompts x group_size
            sc = self.score(ro, step)
            self.data_state = self.pipe.get_state()
        else:
            item, waited, dropped = self.sampler.take_fresh(step)
            ro, sc, self.data_state = item["ro"], item["scores"], item["data"]
            lag = lag_metrics(step, item, ro.gen, waited)
            lag["async/dropped"] = float(dropped)  # rollouts too old for this step (stale_policy="drop")
        adv = advantages(c, sc, ro.gen.finish_reason)
        ub = self.update_batches(ro, adv.advantages, adv.sample_mask)
        t1 = time.perf_counter()
        self.recompute_logps(self.state, ub)
        t2 = time.perf_counter()
        self.state, ms = self.update(self.state, ub)
        t3 = time.perf_counter()
        if self.sampler is not None:
            lag["async/publish_s"] = self.publish(self.state, self.sampler.history, step + 1)
        times = dict(generate=ro.seconds, reward=sc.seconds, logp=t2 - t1, train=t3 - t2, step0=t0)
        return {**step_metrics(c, ro, sc, adv, ub, ms, times, step), **lag}

    # ---------------------------------------------------------------------------- async, eval, the run

    def publish(self, state, history, version: int) -> float:
        """Hands the weights after `version` GRPO steps to the sampler (asynchronous GRPO): the rollout
        weights (compute dtype; replicated on the sampler's devices: with `sampler_devices` a device-to-
        device push, no host copy), copied so that the next update's donated buffers are not the
        sampler's. The copies are dispatched, not waited for (the sampler waits for them and logs how
        long they took: async/push_s) -> the seconds this thread spent."""
        t0 = time.perf_counter()
        with jax.transfer_guard_device_to_host("disallow_explicit"):  # device to device only: fails on a host copy
            weights = jax.tree.map(jnp.copy, self.rollout_params(state))
        history.publish(version, weights)
        return time.perf_counter() - t0

    def start_sampler(self, state, start: int):
        """The sampler thread of rollout_mode="async" (r1jax.rl.async_sampler): step s's prompts, rollout
        and rewards, drawn by the weights of version max(start, s - max_staleness) (stale_policy="wait") or
        the newest ("drop")."""
        c = self.c
        history = WeightHistory(keep=c.max_staleness + 1 if c.stale_policy == "wait" else 1)

        def newest():
            v, w = history.newest()
            return None if w is None else (v, w)

        def produce(step, version, weights):
            recs = next(self.pipe)
            # in-flight updates: later tokens of the step from newer weights, as soon as they are published
            source = newest if c.inflight_updates else None
            ro = self.rollout(None, recs, step, weights=weights, weight_source=source, version=version)
            return {"ro": ro, "scores": self.score(ro, step), "data": self.pipe.get_state(), "version": version,
                    "push_gb": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(weights)) / 1e9}

        self.publish(state, history, start)
        sampler = Sampler(produce, range(start, c.steps), c.max_staleness, history, policy=c.stale_policy)
        return sampler.start()

    def run_eval(self, state, step: int):
        """pass@1 / cons@k / format / reflection on the held-out records (every process evaluates the same
        records with the same seed; one process logs)."""
        if self.eval_records is None:
            return None
        c = self.c
        if c.rollout_mode == "async":  # the sampler's devices are its thread's: eval on the trainer's own
            params_e, ctx, model_e = (precision.compute_copy(state.params, self.model.cfg), self.place.context(),
                                      self.model)
        else:
            params_e, ctx, model_e = self.rollout_params(state), self.rollout_context(), self.rollout_model
        with ctx:
            r = evaluate(model_e, params_e, self.tokenizer, self.eval_records, k=c.eval_k,
                         temperature=c.eval_temperature, top_p=c.eval_top_p, max_new_tokens=c.max_new_tokens,
                         prompt_style=c.prompt_style, system_prompt=c.system_prompt, user_template=c.user_template,
                         seed=12345, template=c.format_template, sandbox=c.sandbox)
        self.files.log.scalars(step, {f"eval/{k}": r[k] for k in ("pass@1", "cons@k", "mean_length", "format",
                                                                 "reflection")})
        return r

    def run(self, on_step=None):
        """The remaining steps (eval every eval_every, a checkpoint every save_every), then the final
        checkpoint, the plot and the HF export -> (model, params). on_step(step, metrics) after each step."""
        c, start = self.c, self.start
        if start == 0 and c.eval_every:
            self.run_eval(self.state, 0)
        if c.rollout_mode == "async" and start < c.steps:
            self.sampler = self.start_sampler(self.state, start)
        done_here = 0
        try:
            for step in self.files.progress():
                vals = self.step(step)
                self.files.log.scalars(step + 1, vals)
                self.files.bar.set_postfix(acc=f"{vals.get('reward/accuracy', math.nan):.2f}",
                                           len=f"{vals['rollout/response_length']:.0f}",
                                           loss=f"{vals['train/loss']:.3f}")
                if on_step is not None:
                    on_step(step + 1, vals)
                if c.eval_every and (step + 1) % c.eval_every == 0:
                    self.run_eval(self.state, step + 1)
                if c.save_every and (step + 1) % c.save_every == 0:
                    self.files.ckpt.save(step + 1, self.state, {"step": step + 1, "data": self.data_state})
                done_here += 1
                if c.stop_after and done_here >= c.stop_after:
                    break
        finally:
            if self.sampler is not None:
                self.sampler.stop()
                self.sampler = None
        if done_here:
            self.pipe.set_state(self.data_state)  # the prompts the trainer used (async: not those run ahead to)
        finished = int(handoff.host_scalar(self.state.step)) // max(c.mu * c.minibatches, 1) >= c.steps
        if finished and self.files.ckpt.latest_step() != c.steps:
            self.files.ckpt.save(c.steps, self.state, {"step": c.steps, "data": self.pipe.get_state()})
        self.files.close(self.state.params, self.model.cfg, self.tokenizer, [
            ("reward/accuracy", "train accuracy"), ("eval/pass@1", "held-out pass@1"),
            ("rollout/response_length", "mean response length"), ("rollout/reflection", "reflection words")],
            "grpo_curves.png", export=finished)
        return self.model, self.state.params

    def close(self) -> None:
        """Closes the run folder's checkpointer and logger (run() does; for a caller stepping by hand)."""
        self.files.close()


def run_grpo(c, *, model=None, params=None, tokenizer=None, train_records=None, eval_records=None,
             on_step=None):
    """Runs GRPO as configured (see module doc); returns (model, params)."""
    trainer = GRPOTrainer(c, model=model, params=params, tokenizer=tokenizer, train_records=train_records,
                          eval_records=eval_records)
    del params  # the trainer's state holds the weights now (the caller's arrays may be freed)
    return trainer.run(on_step)
