"""The GRPO run's config: `grpo_config(**overrides)` (every key with its default and what it does),
`validate_config` (fails early, naming the key); the keys change through r1jax.config.override, the
one override walk of every config (`rewards` is replaced as a whole, `loss_kwargs` is checked
against the loss). The trainer is r1jax.rl.trainer.GRPOTrainer (run_grpo).

Checked before anything heavy runs: an unknown key at any depth fails naming the dotted key and
the closest valid one (`optimizer.lr` -> `optimizer.learning_rate`), at `grpo_config(**kw)` and again in `validate_config` (which also catches keys set as attributes); every
`loss_kwargs` key must be an option of the configured loss (its keyword parameters; a loss with
**kwargs takes any); reward names must be registered or importable specs; enumerated settings
(adv_scale, loss_agg, format_template, prompt_style, ...) must be one of their values. With a loss
other than the built-in "grpo" that declares no **kwargs, `loss_kwargs` starts empty (the
defaults below are grpo_loss's options)."""

from __future__ import annotations

import os
import warnings

import ml_collections

from r1jax import backends, train
from r1jax.config import DTYPES, REMAT_POLICIES, check_choice, check_keys, closest, schema_of
from r1jax.config import override as override_config
from r1jax.config.overrides import ConfigKeyError
from r1jax.data.prompts import ANSWER_FORMATS, PROMPT_STYLES, PromptFormat
from r1jax.generation.engine import ENGINES
from r1jax.parallel.mesh import check_mesh_config
from r1jax.plugins import is_spec, load_callable
from r1jax.rewards.format import TEMPLATES
from r1jax.rewards.registry import REWARDS, reward_specs
from r1jax.rewards.sandbox import ISOLATION
from r1jax.rl import grpo
from r1jax.rl.policy import TRAINER_LOSS_ARGS, passed_loss_args
from r1jax.rl.rollout_correction import CORRECTIONS


def grpo_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        run_dir="runs/grpo",
        init="",  # HF checkpoint folder (policy and reference)
        tokenizer="",  # tokenizer folder; default: the init folder
        train_data="",  # prompts: .jsonl, .json, .parquet (file, folder, glob), save_to_disk folder; fields mapped by
                        # problem_key / answer_key (dotted paths: "reward_model.ground_truth") / answer_format; a prompt
                        # field of chat messages (TRL, verl) goes through the chat template
        problem_key="",  # "" -> "problem", else "question" (GSM8K), else "prompt"
        answer_key="answer",
        answer_format="raw",  # raw | gsm8k (after '####') | boxed (last \\boxed{}) | auto
        prompt_style="r1_zero",  # chat (the checkpoint's template) | r1_zero | short | raw (r1jax.data.prompts)
        system_prompt="",  # chat: a system message before the problem
        user_template="{problem}",  # chat / raw: the user message around the problem
        rewards=ml_collections.ConfigDict({"accuracy": 1.0, "format": 0.5}),
        # names of `rewards` bound to "module:function" / "file.py:function" specs (config keys cannot hold
        # dots): reward_functions={"trl_acc": "trl.rewards:accuracy_reward"}, rewards={"trl_acc": 1.0}; TRL and
        # verl forms are detected (r1jax.rewards.forms)
        reward_functions=ml_collections.ConfigDict(),
        format_template="r1_zero",
        language="en",  # default target language of the language reward (a record's "language" wins)
        preference_model="",  # reward-model folder (`r1jax train-rm`) scoring the "preference" reward
        preference_start_frac=0.0,  # "preference" scores 0 before this fraction of `steps` (R1: last part only)
        # isolation of untrusted model output (the code reward's programs, the math workers' LaTeX):
        # "auto" (root: per-run uid; else an unprivileged user namespace; SandboxError where neither
        # works, checked at setup) | "unsafe" (no isolation: logged loudly at start)
        sandbox="auto",
        reward_timeout_s=300.0,  # time limit of one call of a TRL / verl reward function (r1jax.rewards.forms)
        group_size=8,
        prompts_per_step=16,
        max_new_tokens=128,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        steps=100,
        mu=1,
        minibatches=1,
        grad_accum=1,  # pack=False: micro-batches per mini-batch (gradients accumulated, weighted by the loss's
                       # normaliser); packed updates size micro-batches by max_tokens_per_microbatch
        # the update batch (r1jax.rl.packed): each sample (prompt + completion) a segment of rows of
        # pack_len tokens, micro-batches by a token budget, balanced over data-parallel ranks, one program
        # for the run; pack=False: today's rows padded to prompt + max_new_tokens, grad_accum micro-batches
        pack=True,
        pack_len=0,  # tokens per packed row; 0: longest prompt of the first step + max_new_tokens, rounded up
                     # to 128 (grows, with a recompile and a warning, if a later step needs more)
        max_tokens_per_microbatch=0,  # tokens per micro-batch per data-parallel rank; 0: a quarter of the first
                                      # step's rows, at most the padded update's rows per rank (GRPOTrainer.pack_spec)
        # model implementation (model config keys; "" keeps the model's): attention_impl xla | pallas | auto
        # (pallas on TPU / GPU, xla on CPU: r1jax.backends.attention_impl), moe_impl ragged | dense | ep
        attention_impl="auto",
        moe_impl="",
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
        # where rollouts run (docs/SCALE.md, "Rollouts on every device"): "mesh" (SPMD over the training
        # mesh, the params as they are sharded; with several processes one program over all their
        # devices: every process passes all the step's prompts and keeps its block's samples; for weights
        # that do not fit one device) | "local" (each process samples its prompts over all its own
        # devices, rows split over them, a replica of the compute-dtype weights on each, all-gathered on
        # device: r1jax.parallel.handoff.replicate_on; no cross-process traffic while decoding) | "auto"
        # (mesh with one process; with several, local where the replica takes <= 1/4 of a device)
        rollout_placement="auto",
        # asynchronous GRPO (r1jax.rl.async_sampler; docs/ASYNC.md): "sync" samples each step with the weights
        # it trains | "async": a sampler thread generates and scores the next steps while the trainer updates;
        # step s's rollout is drawn by the weights after step s - max_staleness exactly (0: the sync run)
        rollout_mode="sync",
        max_staleness=1,
        # async: "wait" (step s drawn by the weights after step s - max_staleness exactly: deterministic) |
        # "drop" (the sampler never waits, draws with the newest weights; a rollout more than max_staleness
        # versions behind the step that would train it is dropped and counted: async/dropped)
        stale_policy="wait",
        # async: with rollout_engine="continuous", tokens after a newer weights version is published are
        # drawn by it (in-flight updates; the lag bound holds, the interleaving then depends on timing)
        inflight_updates=False,
        # devices of each process that only sample (the last ones of jax.local_devices()); the others form the
        # training mesh and push the weights to them after each update (0: sampler and trainer share them)
        sampler_devices=0,
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
    return _grpo_overrides(c, kw)


OLD_LOGP = ("sampler", "recompute")  # where old_logp comes from (r1jax.rl.trainer.GRPOTrainer.recompute_logps)
ROLLOUT_PLACEMENTS = ("auto", "mesh", "local")  # where rollouts run (r1jax.rl.trainer.GRPOTrainer)
ROLLOUT_MODES = ("sync", "async")  # sampler and trainer in turn, or at the same time (r1jax.rl.async_sampler)
STALE_POLICIES = ("wait", "drop")  # async: wait for the version a step needs, or drop rollouts that are too old
OPEN_KEYS = ("loss_kwargs", "reward_functions")  # checked against the loss's signature / as reward specs
REPLACED_KEYS = ("rewards",)  # reward name -> weight, replaced as a whole


def check_loss(c, what: str = "grpo config"):
    """The configured loss takes every loss_kwargs key and what the trainer passes (entropy, and
    sampler_logp with a rollout correction); the built-in loss's enumerated options are valid
    values. Returns the loss function."""

    lk = c.loss_kwargs.to_dict() if hasattr(c.loss_kwargs, "to_dict") else dict(c.loss_kwargs)
    fn = grpo.check_loss_kwargs(c.loss, lk, passed=passed_loss_args(lk, packed=bool(c.get("pack", True))),
                                reserved=TRAINER_LOSS_ARGS, what=what)
    if fn is grpo.grpo_loss:
        opts = {k: lk[k] for k in ("loss_agg", "kl_estimator", "ratio_level", "dual_clip_c", "rollout_correction")
                if k in lk}
        try:
            grpo.check_loss_options(prefix="loss_kwargs.", **opts)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    return fn


def check_rewards(c, what: str = "grpo config") -> dict:
    """Every reward name is registered (r1jax.rewards.registry) or a "module:function" /
    "file.py:function" spec, imported now so that a bad one fails before the first rollout; weights
    are numbers; "preference" needs preference_model. -> {name: fn}."""

    rewards = c.rewards.to_dict() if hasattr(c.rewards, "to_dict") else dict(c.rewards or {})
    bound = reward_specs(c)
    for name, spec in bound.items():
        if not isinstance(spec, str) or not is_spec(spec):
            raise ValueError(f"{what}: reward_functions.{name}={spec!r}: give a 'module:function' or "
                             "'file.py:function' spec")
        if name not in rewards:
            raise ValueError(f"{what}: reward_functions.{name} is named in no rewards weight (add rewards.{name})")
    if not rewards:
        raise ValueError(f"{what}: rewards is empty: name at least one reward with its weight, e.g. "
                         "{'accuracy': 1.0}")
    fns = {}
    for name, w in rewards.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise ValueError(f"{what}: rewards.{name}={w!r}: a reward's weight must be a number")
        if callable(name):
            fns[name] = name
        elif name in bound:
            try:
                fns[name] = load_callable(bound[name], "reward")
            except Exception as e:  # noqa: BLE001 - an import error, a missing file or function
                raise ValueError(f"{what}: reward_functions.{name}: cannot load {bound[name]!r}: {e}") from e
        elif name in REWARDS:
            fns[name] = REWARDS[name]
        elif is_spec(name):
            try:
                fns[name] = load_callable(name, "reward")
            except Exception as e:  # an import error, a missing file or function: before any rollout
                raise ValueError(f"{what}: rewards: cannot load reward {name!r}: {e}") from e
        else:
            m = closest(str(name), REWARDS)
            hint = f"; did you mean {'rewards.' + m!r}?" if m else ""
            raise ConfigKeyError(f"{what}: unknown reward {'rewards.' + str(name)!r}: registered rewards are "
                                 f"{', '.join(sorted(REWARDS))}, or give 'module:function' / 'file.py:function' "
                                 f"(fn(texts, records) -> list){hint}")
    if "preference" in rewards:
        if not c.preference_model:
            raise ValueError(f"{what}: rewards.preference needs preference_model (a `r1jax train-rm` folder)")

        if not os.path.isdir(c.preference_model):
            raise ValueError(f"{what}: preference_model={c.preference_model!r} is not a folder")
    return fns


def validate_config(c) -> None:
    """Fails early, naming the key, on settings a run cannot train with: unknown or missing keys
    (dotted, with the closest valid one), numbers out of range, enumerated settings that are not one
    of their values, loss_kwargs the loss does not take, rewards that do not resolve. Loads no model
    and reads no data (the trainer calls it first)."""

    what = "grpo config"
    check_keys(c, schema_of(grpo_config(), open=OPEN_KEYS + REPLACED_KEYS), what, complete=True)
    if not c.temperature > 0:
        raise ValueError(f"grpo config: temperature={c.temperature!r}: sampling for training needs temperature > 0 "
                         "(0 is greedy: every sample of a group is the same, so every advantage is 0)")
    for k in ("group_size", "prompts_per_step", "max_new_tokens", "steps", "mu", "minibatches", "grad_accum"):
        if int(c[k]) < 1:
            raise ValueError(f"grpo config: {k}={c[k]!r} must be >= 1")
    if c.group_size < 2:
        raise ValueError(f"grpo config: group_size={c.group_size} must be >= 2 (advantages are relative to the group)")
    for k in ("top_k", "rollout_slots", "logprob_chunk", "route_agreement_mib", "eval_every", "eval_problems",
              "pack_len", "max_tokens_per_microbatch", "reward_timeout_s",
              "save_every", "log_every", "stop_after", "router_bias_update_rate"):
        if c[k] < 0:
            raise ValueError(f"grpo config: {k}={c[k]!r} must be >= 0")
    if c.eval_k < 1:
        raise ValueError(f"grpo config: eval_k={c.eval_k!r} must be >= 1")
    for k in ("top_p", "eval_top_p"):
        if not 0 < c[k] <= 1:
            raise ValueError(f"grpo config: {k}={c[k]!r} must be in (0, 1]")
    if not c.eval_temperature >= 0:
        raise ValueError(f"grpo config: eval_temperature={c.eval_temperature!r} must be >= 0")
    if not 0 <= c.preference_start_frac <= 1:
        raise ValueError(f"grpo config: preference_start_frac={c.preference_start_frac!r} must be in [0, 1]")
    check_choice(what, "old_logp", c.old_logp, OLD_LOGP)
    check_choice(what, "sandbox", c.sandbox, ISOLATION)
    check_choice(what, "rollout_placement", c.rollout_placement, ROLLOUT_PLACEMENTS)
    check_choice(what, "rollout_mode", c.rollout_mode, ROLLOUT_MODES)
    check_choice(what, "stale_policy", c.stale_policy, STALE_POLICIES)
    if int(c.max_staleness) < 0 or int(c.sampler_devices) < 0:
        raise ValueError(f"{what}: max_staleness={c.max_staleness} and sampler_devices={c.sampler_devices} "
                         "must be >= 0")
    if c.inflight_updates and (c.rollout_mode != "async" or c.rollout_engine != "continuous"):
        raise ValueError(f"{what}: inflight_updates=True needs rollout_mode='async' and "
                         f"rollout_engine='continuous' (got {c.rollout_mode!r}, {c.rollout_engine!r})")
    if c.sampler_devices and c.rollout_mode != "async":
        raise ValueError(f"{what}: sampler_devices={c.sampler_devices} splits the devices between an "
                         "asynchronous sampler and the trainer: set rollout_mode='async'")
    check_choice(what, "rollout_engine", c.rollout_engine, ENGINES)
    check_choice(what, "adv_scale", c.adv_scale, grpo.ADV_SCALES)
    check_choice(what, "format_template", c.format_template, TEMPLATES)
    check_choice(what, "prompt_style", c.prompt_style, PROMPT_STYLES)
    check_choice(what, "answer_format", c.answer_format, ANSWER_FORMATS)
    check_choice(what, "param_dtype", c.param_dtype, DTYPES)
    check_choice(what, "dtype", c.dtype, DTYPES, allow_empty=True)
    check_choice(what, "save_dtype", c.save_dtype, DTYPES, allow_empty=True)
    check_choice(what, "remat_policy", c.remat_policy, REMAT_POLICIES, allow_empty=True)
    check_choice(what, "attention_impl", c.attention_impl, backends.ATTENTION_IMPLS, allow_empty=True)
    check_choice(what, "moe_impl", c.moe_impl, backends.MOE_IMPLS, allow_empty=True)
    if c.pack and c.pack_len and c.pack_len < c.max_new_tokens + 1:
        raise ValueError(f"grpo config: pack_len={c.pack_len} cannot hold a sample of max_new_tokens="
                         f"{c.max_new_tokens} plus its prompt")
    if c.pack and c.pack_len and c.max_tokens_per_microbatch and c.max_tokens_per_microbatch < c.pack_len:
        raise ValueError(f"grpo config: max_tokens_per_microbatch={c.max_tokens_per_microbatch} < pack_len="
                         f"{c.pack_len}: a micro-batch holds at least one row")
    try:
        PromptFormat(c.prompt_style, system_prompt=c.system_prompt, user_template=c.user_template)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None
    train.validate_optimizer(c.optimizer, what, prefix="optimizer.")
    if c.mesh:
        check_mesh_config(c.mesh, what)
    check_loss(c, what)
    corr = c.loss_kwargs.get("rollout_correction", "none")

    if corr not in CORRECTIONS:
        raise ValueError(f"grpo config: loss_kwargs.rollout_correction={corr!r}: registered corrections are "
                         f"{sorted(CORRECTIONS)}")
    if corr != "none" and c.old_logp != "recompute":
        raise ValueError(f"grpo config: loss_kwargs.rollout_correction={corr!r} weights exp(old_logp - sampler_logp), "
                         "which is 1 with old_logp='sampler': set old_logp='recompute'")
    check_rewards(c, what)
    if c.param_dtype != "float32":
        warnings.warn(f"grpo config: param_dtype={c.param_dtype!r}: updates smaller than the dtype's resolution "
                      "are lost (an AdamW step at lr 1e-6 rounds away in bfloat16); keep float32 master weights "
                      "and set dtype='bfloat16' for bf16 compute", RuntimeWarning, stacklevel=2)


def _grpo_overrides(c, kw):
    """grpo_config's key=value overrides, every key checked at any depth (`rewards` is replaced as a
    whole, `loss_kwargs` is merged and checked against the loss, other dicts are merged key by key).
    A new loss other than the built-in "grpo" whose signature has no **kwargs starts loss_kwargs
    empty: the defaults are grpo_loss's options."""
    kw = dict(kw)
    if "loss" in kw and kw["loss"] != c.loss:
        override_config(c, {"loss": kw.pop("loss")}, "grpo config")

        try:
            fn = grpo.get_loss_fn(c.loss)
        except (ValueError, TypeError) as e:
            raise ValueError(f"grpo config: loss={c.loss!r}: {e}") from e
        if fn is not grpo.grpo_loss and grpo.loss_options(fn) is not None:
            c.loss_kwargs = ml_collections.ConfigDict()
    override_config(c, kw, "grpo config", replace=REPLACED_KEYS, open=OPEN_KEYS)
    if "loss_kwargs" in kw or c.loss != "grpo":
        check_loss(c)
    return c
