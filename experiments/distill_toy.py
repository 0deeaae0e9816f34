"""Toy distillation (DeepSeek-R1 Table 6): a small dense Qwen2 student SFT'd on the R1 toy's
stage-3 traces vs the same student trained with GRPO from its own base for the same compute.

    r1jax r1 --config experiments/r1_toy.py              # first: the teacher run (runs/r1_toy)
    r1jax distill --config experiments/distill_toy.py
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.run_dir = "runs/distill_toy"
    c.cache_dir = "runs/cache"
    c.r1_run_dir = "runs/r1_toy"  # teacher run: data/, rejection/sft.jsonl, alignment_rl/final
    c.traces = ""  # default: <r1_run_dir>/rejection/sft.jsonl
    c.seed = 0
    c.prompt_style = "r1_zero"
    c.student = ml_collections.ConfigDict()  # overrides of r1jax.config.toy_qwen2
    # the student's base: the teacher base's corpus and schedule (~4 min; cached)
    c.student_pretrain = ml_collections.ConfigDict(dict(
        seq_len=128, batch_size=32, epochs=1.0, loss_on_prompt=False, seed=0, log_every=20,
        optimizer=dict(learning_rate=3e-3, warmup_steps=50, weight_decay=0.01, schedule="cosine", min_lr_ratio=0.1),
    ))
    c.eval = ml_collections.ConfigDict(dict(problems=128, k=4, temperature=0.6, top_p=0.95, seed=7,
                                            max_new_tokens=160))
    # distilled student: SFT on the traces (~2 min)
    c.distill_sft = ml_collections.ConfigDict(dict(
        seq_len=256, batch_size=16, epochs=2.0, log_every=10,
        optimizer=dict(learning_rate=1e-3, warmup_steps=10, weight_decay=0.0, schedule="cosine", min_lr_ratio=0.1)))
    # RL student: GRPO from the student base, accuracy + format (R1-Zero recipe); steps=0: as
    # many steps as the distillation SFT's compute buys (at least min_rl_steps)
    c.rl = ml_collections.ConfigDict(dict(
        rewards={"accuracy": 1.0, "format": 0.5}, group_size=8, prompts_per_step=16, max_new_tokens=160,
        temperature=1.0, steps=0, mu=1, minibatches=1,
        loss_kwargs=dict(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.0, loss_agg="token-mean"),
        optimizer=dict(learning_rate=2e-4, schedule="constant", weight_decay=0.0), eval_every=0, save_every=10))
    c.min_rl_steps = 1
    return c
