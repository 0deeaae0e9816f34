"""The GRPO run's config: `grpo_config(**overrides)` (every key with its default and what it does),
`validate_config` (fails early, naming the key) and `override` (key=value; `rewards` is replaced
as a whole). The trainer is r1jax.rl.trainer.run_grpo."""

from __future__ import annotations

import ml_collections

from r1jax import train
from r1jax.config import override as override_config


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
        # where rollouts run: "mesh" (SPMD over the training mesh, the params as they are sharded; with
        # several processes one program over all their devices: every process passes all the step's
        # prompts and keeps its block's samples; for weights that do not fit one device) | "local" (each
        # process samples its prompts on a replica of the weights on its first local device,
        # all-gathered on device: r1jax.parallel.handoff; no cross-process traffic while decoding) |
        # "auto" (mesh with one process, local with several)
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
    return override_config(c, kw, "grpo config", replace=("rewards",))
