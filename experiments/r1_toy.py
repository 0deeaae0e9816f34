"""Toy DeepSeek-R1: the full recipe (cold start -> reasoning RL -> rejection sampling -> SFT ->
alignment RL with a reward model), and R1-Zero on the same two-language mixed base.

    r1jax r1 --config experiments/r1_toy.py
    r1jax r1 --config experiments/r1_toy.py --set seed=1 --set run_dir=runs/r1_toy_s1

Data, model, base pretraining and GRPO settings come from experiments/r1_zero_toy.py (the main
job), with the corpus posed in two languages. Budget (2 CPU cores, target <= 45 minutes from
nothing; see each stage's comment): the RL stages are short because the cold start / SFT
already teach the readable single-language format.
"""

import copy
import importlib.util
import os

import ml_collections


def _r1_zero_config():
    """experiments/r1_zero_toy.py: the validated base recipe (data sizes, model, pretraining) and
    GRPO settings that this experiment shares with the R1-Zero main job."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r1_zero_toy.py")
    spec = importlib.util.spec_from_file_location("r1_zero_toy_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def get_config():
    z = _r1_zero_config()
    c = ml_collections.ConfigDict()
    c.run_dir = "runs/r1_toy"
    c.cache_dir = z.cache_dir
    c.seed = 0
    c.prompt_style = z.prompt_style
    c.stages = ("r1_zero", "cold_start", "reasoning_rl", "rejection", "sft", "rm", "alignment_rl")
    # The main job's task and corpus (data.restate: its restated-operand chain format, used by
    # every stage: corpus, cold-start traces, preference pairs), posed in two toy languages;
    # p_mix of the worked chains switch language at a random step (so the base, and R1-Zero, mix
    # languages). 0.8: mixing is the common mode of the corpus's chains. At 0.3 the mixed chains
    # were the minority mode, which GRPO with accuracy + format sharpened away (R1-Zero mixed in
    # 1% of its samples, the base in 1.8%: no contrast with R1 to show).
    c.data = copy.deepcopy(z.data)
    c.data.languages = ("en", "fr")
    c.data.p_mix = 0.8
    c.data.mix_style = "switch"
    c.model = copy.deepcopy(z.model)  # overrides of r1jax.config.toy_moe (the main job's)
    # base: the main job's pretraining on the mixed corpus (cached in cache_dir)
    c.pretrain = copy.deepcopy(z.pretrain)
    # 1 epoch, not the main job's 2 (raised for seed 1, whose 1-epoch base reasoned right only
    # 45% of the time): on this mixed corpus the 1-epoch base's chains are right 90% of the time
    # (seed 0: R1-Zero 0.992 held-out pass@1), and the 45-minute budget of the whole recipe
    # cannot spare the extra half epoch (~4-5 min on 2 cores).
    c.pretrain.epochs = 1.0
    # every model: the same held-out problems (both languages), k samples at T=0.6 / top-p 0.95
    # Response budget: R1-format traces in the main job's chain format (restate=True: each step
    # restates the operands' remaining columns) are, with the toy tokenizer, 53/80/111 tokens
    # (worked) and up to 79/109/142 (with a check step) at levels 2/3/4, summary included; 160
    # leaves room for a second check. Generation stops when every sequence has ended.
    max_new = 160
    c.eval = ml_collections.ConfigDict(dict(problems=128, k=4, temperature=0.6, top_p=0.95, seed=7,
                                            max_new_tokens=max_new))
    rl = {k: v for k, v in z.grpo.to_dict().items() if k not in ("eval_problems", "eval_k", "rewards", "steps")}
    rl.update(max_new_tokens=max_new, eval_every=0, save_every=10)
    # R1-Zero on the mixed base: the main job's GRPO (accuracy + format only)
    c.r1_zero = ml_collections.ConfigDict(dict(rl, rewards=z.grpo.rewards.to_dict(), steps=z.grpo.steps))
    # 1. cold start: a few hundred readable single-language long-CoT traces with a summary (~2 min).
    #    8 epochs (~80 steps): after 3 (30 steps) the chains and the summary were right but the
    #    <answer> block after the summary was not (held-out pass@1 0.27); after 8, 0.93.
    c.cold_start = ml_collections.ConfigDict(dict(
        n=400, p_check=0.3,
        sft=dict(seq_len=256, batch_size=16, epochs=8.0, log_every=5,
                 optimizer=dict(learning_rate=1e-3, warmup_steps=5, weight_decay=0.0, schedule="cosine",
                                min_lr_ratio=0.1)),
    ))
    # 2. reasoning RL: accuracy + format (R1 format) + language consistency (~4 min)
    c.reasoning_rl = ml_collections.ConfigDict(dict(
        rl, rewards={"accuracy": 1.0, "format": 0.5, "language": 0.5}, format_template="r1", steps=20))
    c.reasoning_rl.optimizer.learning_rate = 1e-4  # from an SFT'd (sharp) policy: half the R1-Zero lr
    # 3. rejection sampling from the stage-2 model (~2 min). ngram 12: a restated chain with a
    #    check of its first step legitimately repeats the 8-token restated problem 3 times
    #    (step, check, summary); a looped step (>= 14 tokens) still repeats its 12-grams.
    #    512 prompts x 4 samples, not 256 x 8: the stage-2 model's chain is nearly deterministic
    #    per problem (256 x 8 gave 1403 duplicates of 1802 correct samples, 399 kept), so the same
    #    sampling compute buys about twice as many distinct problems.
    c.rejection = ml_collections.ConfigDict(dict(
        prompt_offset=0, n_prompts=512, n_samples=4, temperature=0.8, top_p=0.95, max_new_tokens=max_new, ngram=12,
        max_repeats=3, max_per_prompt=4, non_reasoning_frac=0.1, non_reasoning_min=0))
    # 4. SFT of the base on the rejection-sampled set (~2 min). 8 epochs as the cold start: the
    #    set is small (stage-2 samples are mostly duplicates: ~450 distinct records) and 2 epochs
    #    (18 steps) left the <answer> block after the summary wrong (held-out pass@1 0.10).
    c.sft = ml_collections.ConfigDict(dict(
        seq_len=256, batch_size=16, epochs=8.0, log_every=10,
        optimizer=dict(learning_rate=1e-3, warmup_steps=10, weight_decay=0.0, schedule="cosine", min_lr_ratio=0.1)))
    # reward model on toy preference pairs, backbone = the stage-4 model (~2 min)
    c.rm = ml_collections.ConfigDict(dict(n_train=1024, n_heldout=256, steps=150, batch_pairs=32, learning_rate=1e-3,
                                          eval_every=50, progress=True))
    # 5. alignment RL: rule rewards on reasoning prompts, the reward model on every response
    #    (general prompts: the reward model only) from preference_start_frac of the steps on (~3 min)
    #    lr 5e-5, a quarter of the main job's: from the stage-4 model at 2e-4 the 12 steps lost 10
    #    points of held-out pass@1 (0.922 -> 0.818), at 1e-4 6 points (-> 0.859).
    c.alignment_rl = ml_collections.ConfigDict(dict(
        rl, steps=12, general_frac=0.2, preference_weight=1.0, preference_start_frac=0.5))
    c.alignment_rl.optimizer.learning_rate = 5e-5
    return c
