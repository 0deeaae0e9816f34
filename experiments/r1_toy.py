"""Toy DeepSeek-R1: the full recipe (cold start -> reasoning RL -> rejection sampling -> SFT ->
alignment RL with a reward model), and R1-Zero on the same two-language mixed base.

    r1jax r1 --config experiments/r1_toy.py
    r1jax r1 --config experiments/r1_toy.py --set seed=1 --set run_dir=runs/r1_toy_s1

Budget (2 CPU cores, target <= 45 minutes from nothing; see each stage's comment): the base
pretraining is the R1-Zero main job's (same corpus size and model), the RL stages are short
because the cold start / SFT already teach the readable single-language format.
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.run_dir = "runs/r1_toy"
    c.cache_dir = "runs/cache"
    c.seed = 0
    c.prompt_style = "r1_zero"
    c.stages = ("r1_zero", "cold_start", "reasoning_rl", "rejection", "sft", "rm", "alignment_rl")
    # Two toy languages; p_mix of the worked chains switch language at a random step.
    c.data = ml_collections.ConfigDict(dict(
        seed=0, tasks=("add",), levels=(2, 3, 4, 5), languages=("en", "fr"), n_train_problems=4000,
        n_heldout_problems=200, n_corpus=32000, p_direct=0.70, p_worked=0.24, p_check=0.06, p_mix=0.3,
        mix_style="switch",
    ))
    c.model = ml_collections.ConfigDict()  # overrides of r1jax.config.toy_moe
    # base: ~7 min (the R1-Zero main job's pretraining; cached in cache_dir)
    c.pretrain = ml_collections.ConfigDict(dict(
        seq_len=128, batch_size=32, epochs=1.0, loss_on_prompt=False, seed=0, log_every=20,
        optimizer=dict(learning_rate=3e-3, warmup_steps=50, weight_decay=0.01, schedule="cosine", min_lr_ratio=0.1),
    ))
    # every model: the same held-out problems (both languages), k samples at T=0.6 / top-p 0.95
    c.eval = ml_collections.ConfigDict(dict(problems=128, k=4, temperature=0.6, top_p=0.95, seed=7,
                                            max_new_tokens=160))
    rl = dict(group_size=8, prompts_per_step=16, max_new_tokens=160, temperature=1.0, mu=1, minibatches=1,
              loss_kwargs=dict(clip_eps=0.2, clip_eps_high=0.28, kl_coef=0.0, loss_agg="token-mean"),
              optimizer=dict(learning_rate=2e-4, schedule="constant", weight_decay=0.0),
              eval_every=0, save_every=10)
    # R1-Zero on the mixed base: accuracy + format only (~8 min)
    c.r1_zero = ml_collections.ConfigDict(dict(rl, rewards={"accuracy": 1.0, "format": 0.5}, steps=40))
    # 1. cold start: a few hundred readable single-language long-CoT traces with a summary (~1 min)
    c.cold_start = ml_collections.ConfigDict(dict(
        n=400, p_check=0.3,
        sft=dict(seq_len=256, batch_size=16, epochs=3.0, log_every=5,
                 optimizer=dict(learning_rate=1e-3, warmup_steps=5, weight_decay=0.0, schedule="cosine",
                                min_lr_ratio=0.1)),
    ))
    # 2. reasoning RL: accuracy + format (R1 format) + language consistency (~4 min)
    c.reasoning_rl = ml_collections.ConfigDict(dict(
        rl, rewards={"accuracy": 1.0, "format": 0.5, "language": 0.5}, format_template="r1", steps=20))
    # 3. rejection sampling from the stage-2 model (~2 min)
    c.rejection = ml_collections.ConfigDict(dict(
        prompt_offset=0, n_prompts=256, n_samples=8, temperature=0.8, top_p=0.95, max_new_tokens=160, ngram=8,
        max_repeats=3, max_per_prompt=4, non_reasoning_frac=0.1, non_reasoning_min=0))
    # 4. SFT of the base on the rejection-sampled set (~2 min)
    c.sft = ml_collections.ConfigDict(dict(
        seq_len=256, batch_size=16, epochs=2.0, log_every=10,
        optimizer=dict(learning_rate=1e-3, warmup_steps=10, weight_decay=0.0, schedule="cosine", min_lr_ratio=0.1)))
    # reward model on toy preference pairs, backbone = the stage-4 model (~1 min)
    c.rm = ml_collections.ConfigDict(dict(n_train=1024, n_heldout=256, steps=150, batch_pairs=32, learning_rate=1e-3,
                                          eval_every=50, progress=True))
    # 5. alignment RL: rule rewards on reasoning prompts, reward model on general prompts from
    #    preference_start_frac of the steps on (~3 min)
    c.alignment_rl = ml_collections.ConfigDict(dict(
        rl, steps=12, general_frac=0.2, preference_weight=1.0, preference_start_frac=0.5))
    return c
