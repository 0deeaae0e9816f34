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
  3. rewards named in `rewards` with weights (r1jax.rl.rewards) on the whole response ("<think>" +
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

import contextlib
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from r1jax import train
from r1jax.rl import grpo


def grpo_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        run_dir="runs/grpo",
        init="",  # HF checkpoint folder (policy and reference)
        tokenizer="",  # tokenizer folder; default: the init folder
        train_data="",  # JSONL of prompts (fields mapped by problem_key / answer_key / answer_format)
        problem_key="",  # "" -> "problem", else "question" (GSM8K), else "prompt"
        answer_key="answer",
        answer_format="raw",  # raw | gsm8k (after '####') | boxed (last \\boxed{}) | auto
        prompt_style="r1_zero",  # chat (the checkpoint's template) | r1_zero | short | raw (r1jax.data.prompts)
        system_prompt="",  # chat: a system message before the problem
        user_template="{problem}",  # chat / raw: the user message around the problem
        rewards=ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.5}),
        format_template="r1_zero",
        language="en",  # default target language of the language reward (a record's "language" wins)
        preference_model="",  # reward-model folder (`r1jax train-rm`) scoring the "preference" reward
        preference_start_frac=0.0,  # "preference" scores 0 before this fraction of `steps` (R1: last part only)
        group_size=8,
        prompts_per_step=16,
        max_new_tokens=128,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        steps=100,
        mu=1,
        minibatches=1,
        grad_accum=1,  # micro-batches per mini-batch (gradients accumulated, weighted by the loss's normaliser)
        loss="grpo",  # a registered name, "module:function" or "file.py:function"
        loss_kwargs=ml_collections.ConfigDict(dict(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.0,
                                                   loss_agg="token-mean", kl_estimator="k3",
                                                   max_len=0,  # Dr. GRPO's constant; 0: max_new_tokens
                                                   # sampler/trainer gap (r1jax.rl.rollout_correction):
                                                   # none | tis | icepop | mis, with old_logp="recompute"
                                                   rollout_correction="none", tis_cap=2.0, is_low=0.5,
                                                   is_high=2.0)),
        adv_scale="group",
        mask_truncated=False,
        filter_zero_spread=False,
        old_logp="sampler",  # sampler | recompute
        optimizer=train.optimizer_config(learning_rate=1e-4, schedule="constant", warmup_steps=0, weight_decay=0.0,
                                         grad_clip=1.0),
        router_bias_update_rate=1e-3,
        # MoE: the engine records each generated token's experts (rows x max_new_tokens x MoE layers x
        # top-k int16 on the device, int32 in the update batch) and the trainer logs the fraction it did
        # not choose; recorded while that buffer is at most this many MiB (0: never)
        route_agreement_mib=256,
        rollout_engine="static",  # static | continuous | auto (r1jax.generate; docs/ROLLOUT.md)
        rollout_slots=0,  # decode rows of the continuous engine (0: all of a step's samples)
        # where rollouts run: "mesh" (SPMD over the training mesh, the params as they are sharded) |
        # "local" (each process samples its prompts on a replica of the weights on its first local
        # device, all-gathered on device: r1jax.parallel.handoff) | "auto" (mesh with one process,
        # local with several)
        rollout_placement="auto",
        # precision and memory (applied to the init checkpoint; a model passed in keeps its params)
        param_dtype="float32",  # master weights (and Adam moments: always float32)
        dtype="",  # compute dtype, e.g. "bfloat16"; "": the model's (float32 unless set)
        remat_policy="",  # "" (the model's) | none | full | dots | dots_no_batch
        logprob_chunk=256,  # positions per block of the LM head in the log-prob passes (0: full logits)
        save_dtype="",  # dtype of the saved HF checkpoint ("": the params')
        mesh="",  # "" (one device) or mesh axis sizes, e.g. "data=2,fsdp=2,expert=2" (r1jax.parallel.placement)
        seed=0,
        eval_data="",  # held-out JSONL (same field mapping); empty: no eval during training
        eval_every=10,
        eval_problems=64,
        eval_k=4,
        eval_temperature=0.6,
        eval_top_p=0.95,
        save_every=10,
        save_hf=True,
        log_every=1,
        progress=True,
        stop_after=0,  # stop (as if killed) after this many steps of this invocation; tests use it
    ))
    return override(c, kw)


def validate_config(c) -> None:
    """Fails early, naming the key, on settings a run cannot train with."""
    if not c.temperature > 0:
        raise ValueError(f"grpo config: temperature={c.temperature!r}: sampling for training needs temperature > 0 "
                         "(0 is greedy: every sample of a group is the same, so every advantage is 0)")
    for k in ("group_size", "prompts_per_step", "max_new_tokens", "steps", "mu", "minibatches", "grad_accum"):
        if int(c[k]) < 1:
            raise ValueError(f"grpo config: {k}={c[k]!r} must be >= 1")
    if c.group_size < 2:
        raise ValueError(f"grpo config: group_size={c.group_size} must be >= 2 (advantages are relative to the group)")
    if c.old_logp not in ("sampler", "recompute"):
        raise ValueError(f"grpo config: old_logp={c.old_logp!r} must be sampler | recompute")
    if c.rollout_placement not in ("auto", "mesh", "local"):
        raise ValueError(f"grpo config: rollout_placement={c.rollout_placement!r} must be auto | mesh | local")
    if c.rollout_engine not in ("static", "continuous", "auto"):
        raise ValueError(f"grpo config: rollout_engine={c.rollout_engine!r} must be static | continuous | auto")
    corr = c.loss_kwargs.get("rollout_correction", "none")
    from r1jax.rl.rollout_correction import CORRECTIONS

    if corr not in CORRECTIONS:
        raise ValueError(f"grpo config: loss_kwargs.rollout_correction={corr!r}: registered corrections are "
                         f"{sorted(CORRECTIONS)}")
    if corr != "none" and c.old_logp != "recompute":
        raise ValueError(f"grpo config: loss_kwargs.rollout_correction={corr!r} weights exp(old_logp - sampler_logp), "
                         "which is 1 with old_logp='sampler': set old_logp='recompute'")
    if c.param_dtype != "float32":
        import warnings

        warnings.warn(f"grpo config: param_dtype={c.param_dtype!r}: updates smaller than the dtype's resolution "
                      "are lost (an AdamW step at lr 1e-6 rounds away in bfloat16); keep float32 master weights "
                      "and set dtype='bfloat16' for bf16 compute", RuntimeWarning, stacklevel=2)


def override(c, kw):
    """grpo_config's key=value overrides (`rewards` is replaced as a whole, other dicts are merged)."""
    from r1jax.config import override as override_config

    return override_config(c, kw, "grpo config", replace=("rewards",))


# ------------------------------------------------------------------------------ loss function


def make_policy_loss(policy_loss, temperature: float, loss_kwargs: dict, chunk: int = 0):
    """The train-step loss: forward at `temperature`, token log-probs (the LM head `chunk` positions
    at a time, r1jax.model.logprobs), then the policy loss. Padding (batch["token_mask"] == 0) does
    not count in the MoE expert load. aux["weight"] is the loss's normaliser (gradient accumulation).
    When the batch carries "sampler_logp", the metrics include the sampler/trainer agreement
    (`agree_*`, r1jax.rl.rollout_correction.agreement) and a rollout correction gets it."""
    from r1jax.model.logprobs import head_kernel, token_logprobs_from_hidden
    from r1jax.rl.rollout_correction import agreement, expert_mismatch

    agg = loss_kwargs.get("loss_agg", "seq-mean-token-mean")
    correct = loss_kwargs.get("rollout_correction", "none") != "none"

    def loss_fn(params, batch, model):
        tm = batch.get("token_mask")
        hidden, aux = model.apply({"params": params}, batch["input_ids"], token_mask=None if tm is None else tm > 0,
                                  return_aux=True, compute_mtp=False, head=False)
        logp, ent = token_logprobs_from_hidden(hidden, head_kernel(params, model.cfg), batch["targets"],
                                               temperature=temperature, chunk=chunk, with_entropy=True)
        extra = {"sampler_logp": batch["sampler_logp"]} if correct else {}
        loss, metrics = policy_loss(logp, batch["old_logp"], batch.get("ref_logp"), batch["advantages"],
                                    batch["loss_mask"], entropy=ent, **extra, **loss_kwargs)
        if "sampler_logp" in batch:
            agree = agreement(jax.lax.stop_gradient(logp), batch["sampler_logp"], batch["loss_mask"],
                              loss_kwargs.get("clip_eps", 0.2))
            metrics = {**metrics, **{f"agree_{k}": v for k, v in agree.items()}}
        if "ep_dropped" in aux:  # expert parallelism: assignments over capacity, of all routed
            metrics["ep_dropped_frac"] = jnp.sum(aux["ep_dropped"]) / aux["route"].size
        if "sampler_route" in batch and "route" in aux:  # [n_moe, b, s, k] -> [b, s, n_moe, k]
            metrics["agree_expert_mismatch"] = expert_mismatch(jnp.moveaxis(aux["route"], 0, 2),
                                                               batch["sampler_route"])
        weight = (grpo.aggregation_weight(batch["loss_mask"], agg) if agg in grpo.LOSS_AGGS
                  else batch["loss_mask"].sum())
        out = {"metrics": metrics, "weight": weight}
        if "load" in aux:
            out["load"] = aux["load"]
        return loss, out

    return loss_fn


def make_logprob_fn(model, temperature: float, chunk: int = 0):
    """jit (params, input_ids, targets, token_mask) -> [rows, seq] log-probs of the targets (old / ref
    policy passes), the LM head a block at a time."""
    from r1jax.model.logprobs import head_kernel, token_logprobs_from_hidden

    @jax.jit
    def f(params, ids, targets, token_mask):
        h = model.apply({"params": params}, ids, token_mask=token_mask > 0, head=False)
        return token_logprobs_from_hidden(h, head_kernel(params, model.cfg), targets, temperature=temperature,
                                          chunk=chunk)[0]

    return f


# --------------------------------------------------------------------------------- rewards


_PREFERENCE_FNS: dict = {}
REWARDS: dict = {}  # rewards registered by name: fn(texts, records) -> list (see register_reward)


def register_reward(name: str, fn=None):
    """Adds a batched reward `fn(texts, records) -> list` under `name` (usable in `rewards`; a
    name without dots, which ml_collections config keys cannot hold). Works as a decorator."""
    if fn is None:
        return lambda f: register_reward(name, f)
    if "." in name:
        raise ValueError(f"register_reward: {name!r} has a dot (config keys cannot)")
    REWARDS[name] = fn
    return fn


def preference_active(c, step: int | None) -> bool:
    """The "preference" reward counts from the 0-based step index `preference_start_frac * steps` on
    (None: always)."""
    return step is None or step >= c.preference_start_frac * c.steps


def preference_scores(c, texts: list[str], records: list[dict], step: int | None = None) -> list:
    """Reward-model scores in [0, 1] (r1jax.rl.reward_model.preference_reward_fn), 0.0 before the gate."""
    if not preference_active(c, step):
        return [0.0] * len(texts)
    if not c.preference_model:
        raise ValueError("grpo config: reward 'preference' needs preference_model (a `r1jax train-rm` folder)")
    key = (os.path.abspath(c.preference_model), c.prompt_style)
    if key not in _PREFERENCE_FNS:
        from r1jax.rl.reward_model import preference_reward_fn

        _PREFERENCE_FNS[key] = preference_reward_fn(c.preference_model, prompt_style=c.prompt_style)
    return list(_PREFERENCE_FNS[key](texts, records))


def compute_rewards(c, texts: list[str], records: list[dict], step: int | None = None) -> tuple[dict[str, list], list]:
    """Per-reward scores for every completion (records aligned with texts) and the weighted total.
    `step` (0-based) gates the "preference" reward (preference_start_frac)."""
    from r1jax.rl.rewards import (accuracy_rewards, code_rewards, combine_rewards, format_reward,
                                  language_consistency_reward)

    scores: dict[str, list] = {}
    weights = dict(c.rewards.to_dict() if hasattr(c.rewards, "to_dict") else c.rewards)
    for name in weights:
        if name == "accuracy":
            scores[name] = accuracy_rewards(texts, [str(r["answer"]) for r in records])
        elif name == "format":
            scores[name] = [format_reward(t, template=c.format_template) for t in texts]
        elif name == "language":
            scores[name] = [language_consistency_reward(t, r.get("language", c.language)) for t, r in
                            zip(texts, records)]
        elif name == "code":
            scores[name] = code_rewards(texts, [r["tests"] for r in records],
                                        prompts=[r.get("code_prompt") for r in records])
        elif name == "preference":  # learned reward model (R1's general-data reward)
            scores[name] = preference_scores(c, texts, records, step)
        elif name in REWARDS:
            scores[name] = list(REWARDS[name](texts, records))
        elif ":" in name:  # a researcher's reward: "module:function" or "file.py:function"
            fn = grpo.get_loss_fn(name)  # same import rules as custom losses
            scores[name] = list(fn(texts, records))
        else:
            raise KeyError(f"grpo config: unknown reward {name!r} (accuracy | format | language | code | preference | "
                           "a register_reward name | module:function(texts, records) -> list)")
    totals, _ = combine_rewards(scores, weights)
    return scores, totals


# --------------------------------------------------------------------------------- batching


def bucket(n: int, multiple: int = 32) -> int:
    """Training rows are padded to a multiple of 32 tokens (few distinct shapes, little padding)."""
    return -(-n // multiple) * multiple


def build_batch(prompt_ids, completions, sampler_logps, advantages, sample_mask, pad_id: int, seq_len: int,
                routes=None):
    """Rows = prompt + completion, right-padded to seq_len. Target t is token t+1; loss on completion.

    -> input_ids, targets [n, seq_len] int32; loss_mask, old_logp, sampler_logp [n, seq_len] float32
    (the sampler's log-probs, both; old_logp is replaced when recomputed); token_mask [n, seq_len]
    int32 (1 on the real tokens: padding counts in no MoE expert load); advantages [n].
    routes (the engine's `out.routes`, MoE): adds sampler_route [n, seq_len, n_moe, k] int32, each
    completion token's experts at its input position (-1 elsewhere)."""
    n = len(completions)
    ids = np.full((n, seq_len), pad_id, np.int32)
    targets = np.zeros((n, seq_len), np.int32)
    mask = np.zeros((n, seq_len), np.float32)
    old = np.zeros((n, seq_len), np.float32)
    real = np.zeros((n, seq_len), np.int32)
    for i, (p, comp, lp) in enumerate(zip(prompt_ids, completions, sampler_logps)):
        seq = list(p) + list(comp)
        L = min(len(seq), seq_len)
        ids[i, :L] = seq[:L]
        real[i, :L] = 1
        targets[i, : L - 1] = seq[1:L]
        a, b = len(p) - 1, min(len(p) - 1 + len(comp), seq_len - 1)
        if b > a and sample_mask[i]:
            mask[i, a:b] = 1.0
            old[i, a:b] = lp[: b - a]
    out = {"input_ids": ids, "targets": targets, "loss_mask": mask, "old_logp": old, "sampler_logp": old.copy(),
           "token_mask": real, "advantages": np.asarray(advantages, np.float32)}
    if routes is not None:
        sr = np.full((n, seq_len) + routes[0].shape[1:], -1, np.int32)
        for i, (p, r) in enumerate(zip(prompt_ids, routes)):
            m = max(min(len(r), seq_len - len(p)), 0)
            sr[i, len(p):len(p) + m] = r[:m]
        out["sampler_route"] = sr
    return out


# ------------------------------------------------------------------------------------ loop


def load_train_records(c, path: str) -> list[dict]:
    """Prompt records of a JSONL file with the config's field mapping (r1jax.data.prompts)."""
    from r1jax.data.prompts import read_prompt_records

    return read_prompt_records(path, problem_key=c.problem_key, answer_key=c.answer_key,
                               answer_format=c.answer_format)


def run_grpo(c, *, model=None, params=None, tokenizer=None, train_records=None, eval_records=None,
             on_step=None):
    """Runs GRPO as configured (see module doc); returns (model, params)."""
    from tqdm import tqdm

    from r1jax.checkpoint.orbax import Checkpointer
    from r1jax.data.pipeline import PromptPipeline
    from r1jax.data.prompts import PromptFormat, decode_completion, opens_think
    from r1jax.data.tokenizer import load_tokenizer
    from r1jax.eval.runner import evaluate, has_reflection
    from r1jax.generation.engine import generate
    from r1jax.generation.programs import route_shape
    from r1jax.model import precision
    from r1jax.parallel import handoff
    from r1jax.parallel.placement import Placement
    from r1jax.parallel.sharding import shard_local_batch
    from r1jax.runlog import RunLogger

    validate_config(c)
    os.makedirs(c.run_dir, exist_ok=True)
    over = precision.model_overrides(c.param_dtype, c.dtype, c.remat_policy)
    if model is None:
        if not c.init:
            raise ValueError("grpo config: init is empty: set it to the HF checkpoint folder to train "
                             "(--set init=DIR)")
        model, params = precision.load_for_training(c.init, None, c.seed, **over)
    else:  # a model passed in keeps its params' storage; compute dtype and remat may change
        model, params = precision.with_overrides(model, params, **{k: v for k, v in over.items()
                                                                   if k != "param_dtype"})
    if tokenizer is None:
        tokenizer = load_tokenizer(c.tokenizer or c.init)
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
    # Many processes: every process reads the same global prompt stream and samples its block of
    # `prompts_per_step / processes` prompts; the update's global arrays are built from the
    # process-local rows. Mini-batch j takes the prompts j, j + minibatches, ... (whole groups), so
    # the batches, rewards and losses are those of one process with the same config.
    n_proc, proc = jax.process_count(), jax.process_index()
    pipe = PromptPipeline(train_records, batch_size=c.prompts_per_step, seed=c.seed)
    G = c.group_size
    n_rows = c.prompts_per_step * G
    if c.prompts_per_step % (c.minibatches * n_proc):
        raise ValueError(f"grpo config: prompts_per_step={c.prompts_per_step} must split into minibatches="
                         f"{c.minibatches} x {n_proc} processes")
    p_local = c.prompts_per_step // n_proc
    mb = n_rows // c.minibatches
    mb_rows = [np.concatenate([np.arange(i * G, (i + 1) * G) for i in range(j, p_local, c.minibatches)])
               for j in range(c.minibatches)]  # process-local row indices of each mini-batch
    if mb % c.grad_accum:
        raise ValueError(f"grpo config: a minibatch of {mb} rows does not split into grad_accum={c.grad_accum}")
    lk = c.loss_kwargs.to_dict()
    if not lk.get("max_len"):  # Dr. GRPO's constant normaliser: the generation budget, the same every step
        lk["max_len"] = c.max_new_tokens
    policy_loss = grpo.get_loss_fn(c.loss)
    loss_fn = make_policy_loss(policy_loss, c.temperature, lk, chunk=c.logprob_chunk)
    opt = ml_collections.ConfigDict(c.optimizer.to_dict())
    opt.total_steps = c.steps * c.mu * c.minibatches
    tx = train.make_optimizer(opt)
    place = Placement(c.mesh)
    if (mb // c.grad_accum) % place.batch_multiple:
        raise ValueError(f"grpo config: a micro-batch of {mb // c.grad_accum} rows does not split over mesh "
                         f"{c.mesh!r} ({place.batch_multiple} ways)")
    if n_proc > 1 and place.mesh is None:
        raise ValueError(f"grpo: {n_proc} processes need a mesh over their devices (mesh config key)")
    state = place.train_state(model.cfg, params, tx)
    del params
    step_fn = place.train_step(model, loss_fn, tx, grad_accum=c.grad_accum,
                               router_bias_update_rate=c.router_bias_update_rate)
    local_rollout = c.rollout_placement == "local" or (c.rollout_placement == "auto" and n_proc > 1)
    rollout_model = model
    if local_rollout and model.cfg.moe_impl == "ep":  # outside the mesh: the local expert dispatch
        from r1jax.model.moe import local_impl

        rollout_model = model.clone(moe_impl=local_impl())

    def to_device(host):  # process-local rows -> global arrays (one process: the whole batch)
        return shard_local_batch(host, place.mesh) if n_proc > 1 else place.batch(host)

    # The frozen reference exists only when the KL term does; it is held in the compute dtype.
    ref_params = None
    if lk.get("kl_coef"):
        ref_params = precision.compute_copy(state.params, model.cfg)
        if ref_params is state.params:  # same dtype: a copy (the state's buffers are donated to each step)
            ref_params = jax.tree.map(jnp.copy, state.params)
    logp_fn = make_logprob_fn(model, c.temperature, c.logprob_chunk)
    rs = route_shape(model.cfg)
    record_routes = bool(rs) and n_rows * c.max_new_tokens * rs[0] * rs[1] * 2 <= c.route_agreement_mib * 2**20

    ckpt = Checkpointer(os.path.join(c.run_dir, "checkpoints"))
    start = 0
    restored, meta = ckpt.restore(state)
    if restored is not None:
        state, start = restored, int(meta["step"])
        pipe.set_state(meta["data"])
    log = RunLogger(c.run_dir, resume_step=start if restored is not None else None, writes=proc == 0)

    def rollout_params():
        """The weights the rollout engine reads: the compute-dtype copy, as sharded (mesh) or each
        process's local replica (all-gathered on device; r1jax.parallel.handoff)."""
        p = precision.compute_copy(state.params, model.cfg)
        return handoff.local_replica(p, place.mesh) if local_rollout and place.mesh is not None else p

    def rollout_context():
        return contextlib.nullcontext() if local_rollout else place.context()

    def run_eval(step):
        if eval_records is None:
            return None
        # every process evaluates the same records with the same seed (one process logs)
        params_e = rollout_params()
        with rollout_context():
            r = evaluate(rollout_model, params_e, tokenizer, eval_records, k=c.eval_k, temperature=c.eval_temperature,
                         top_p=c.eval_top_p, max_new_tokens=c.max_new_tokens, prompt_style=c.prompt_style,
                         system_prompt=c.system_prompt, user_template=c.user_template, seed=12345,
                         template=c.format_template)
        log.scalars(step, {"eval/pass@1": r["pass@1"], "eval/cons@k": r["cons@k"], "eval/mean_length": r["mean_length"],
                           "eval/format": r["format"], "eval/reflection": r["reflection"]})
        return r

    if start == 0 and c.eval_every:
        run_eval(0)
    bar = tqdm(range(start, c.steps), desc=f"grpo {os.path.basename(c.run_dir)}", disable=not c.progress,
               dynamic_ncols=True, initial=start, total=c.steps)
    done_here = 0
    for step in bar:
        t0 = time.perf_counter()
        recs = next(pipe)  # the global prompts of this step (the same on every process)
        prompt_ids, prompt_texts = fmt.render_all(tokenizer, [r["problem"] for r in recs])
        lo = proc * p_local  # this process samples prompts lo .. lo + p_local - 1
        params_r = rollout_params()
        with rollout_context():
            gen = generate(rollout_model, params_r, prompt_ids[lo:lo + p_local], max_new_tokens=c.max_new_tokens,
                           temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, eos_id=eos,
                           seed=c.seed * 1_000_003 + step, n=G, return_routes=record_routes,
                           engine=c.rollout_engine, slots=c.rollout_slots or None, first_request=lo * G)
        del params_r
        t_gen = time.perf_counter() - t0
        # The rewards see the whole response: "<think>" + completion when the prompt opened the block.
        texts = [("<think>" if opens_think(prompt_texts[lo + i]) else "") + decode_completion(tokenizer, t, eos)
                 for t, i in zip(gen.tokens, gen.prompt_index)]
        rec_n = [recs[lo + i] for i in gen.prompt_index]
        t1 = time.perf_counter()
        scores, totals = compute_rewards(c, texts, rec_n, step=step)
        t_rew = time.perf_counter() - t1
        valid = np.array([t is not None for t in totals])
        tot = np.array([t if t is not None else 0.0 for t in totals], np.float32)
        # A sample whose reward does not exist (its gold answer does not parse) is left out of its
        # group's mean and std and out of the loss.
        adv = np.asarray(grpo.group_advantages(jnp.asarray(tot), G, scale=c.adv_scale, valid=jnp.asarray(valid)))
        vg = valid.reshape(-1, G)
        tg = np.where(vg, tot.reshape(-1, G), np.nan)
        spread = (np.nanmax(np.where(vg, tg, -np.inf), -1) > np.nanmin(np.where(vg, tg, np.inf), -1))
        sample_mask = valid.copy()
        if c.mask_truncated:
            sample_mask &= np.array([r != "length" for r in gen.finish_reason])
        if c.filter_zero_spread:
            sample_mask &= np.repeat(spread, G)
        seq_len = bucket(max(len(p) for p in prompt_ids) + c.max_new_tokens)  # global: the same everywhere
        prompts_n = [prompt_ids[lo + i] for i in gen.prompt_index]
        host = build_batch(prompts_n, gen.tokens, gen.logprobs, adv, sample_mask, pad, seq_len, routes=gen.routes)
        t_lp = time.perf_counter()
        if c.old_logp == "recompute" or ref_params is not None:
            full = to_device(host)
            with place.context():
                args = (full["input_ids"], full["targets"], full["token_mask"])
                if c.old_logp == "recompute":
                    host["old_logp"] = handoff.local_rows(logp_fn(state.params, *args) * full["loss_mask"])
                if ref_params is not None:
                    host["ref_logp"] = handoff.local_rows(logp_fn(ref_params, *args) * full["loss_mask"])
            del full
        t2 = time.perf_counter()
        t_lp = t2 - t_lp
        subs = [to_device({k: v[rows] for k, v in host.items()}) for rows in mb_rows]
        ms = []
        for _ in range(c.mu):
            for sub in subs:
                state, m = step_fn(state, sub)
                ms.append(m)
        ms = handoff.host_tree(ms)
        t_train = time.perf_counter() - t2
        # the step's figures over every process's samples (each process holds its prompts' groups)
        g = lambda x: handoff.allgather_rows(np.asarray(x))  # noqa: E731
        lengths = g([len(t) for t in gen.tokens])
        tot, valid, spread = g(tot), g(valid), g(spread)
        texts_refl = g([float(has_reflection(t)) for t in texts])
        truncated = g([float(r == "length") for r in gen.finish_reason])
        scores = {k: g([np.nan if x is None else float(x) for x in v]) for k, v in scores.items()}
        train_tokens = float(g([host["loss_mask"].sum()]).sum()) * c.mu
        seq_tokens = float(g([host["token_mask"].sum()]).sum()) * c.mu  # prompt + completion tokens trained
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
            "train/tokens_per_s": train_tokens / max(t_train, 1e-9),
            "train/seq_tokens": seq_tokens, "train/seq_len": float(seq_len),
            "time/generate_s": t_gen, "time/reward_s": t_rew, "time/train_s": t_train,
            "time/logp_s": t_lp,  # old / reference log-prob passes (0 without recompute and KL)
            "time/step_s": time.perf_counter() - t0,
        })
        if "preference" in scores:
            vals["reward/preference_active"] = float(preference_active(c, step))
        log.scalars(step + 1, vals)
        bar.set_postfix(acc=f"{vals.get('reward/accuracy', math.nan):.2f}", len=f"{vals['rollout/response_length']:.0f}",
                        loss=f"{vals['train/loss']:.3f}")
        if on_step is not None:
            on_step(step + 1, vals)
        if c.eval_every and (step + 1) % c.eval_every == 0:
            run_eval(step + 1)
        if c.save_every and (step + 1) % c.save_every == 0:
            ckpt.save(step + 1, state, {"step": step + 1, "data": pipe.get_state()})
        done_here += 1
        if c.stop_after and done_here >= c.stop_after:
            break
    bar.close()
    finished = int(handoff.host_scalar(state.step)) // max(c.mu * c.minibatches, 1) >= c.steps
    if finished and ckpt.latest_step() != c.steps:
        ckpt.save(c.steps, state, {"step": c.steps, "data": pipe.get_state()})
    log.plot(os.path.join(c.run_dir, "grpo_curves.png"), [
        ("reward/accuracy", "train accuracy"), ("eval/pass@1", "held-out pass@1"),
        ("rollout/response_length", "mean response length"), ("rollout/reflection", "reflection words")])
    log.close()
    ckpt.close()
    if finished and c.save_hf:
        from r1jax.checkpoint.hf import save_pretrained

        params_h = handoff.local_replica(state.params, place.mesh)  # the whole weights on every process
        if proc == 0:
            save_pretrained(params_h, model.cfg, os.path.join(c.run_dir, "final"), tokenizer=tokenizer,
                            dtype=c.save_dtype or None)
        del params_h
    return model, state.params
