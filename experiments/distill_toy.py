"""Toy distillation (DeepSeek-R1 Table 6): a small dense Qwen2 student SFT'd on the R1 toy's
stage-3 traces (plus more traces of the final R1) vs the same student trained with GRPO from its
own base for the same compute.

    r1jax r1 --config experiments/r1_toy.py              # first: the teacher run (runs/r1_toy)
    r1jax distill --config experiments/distill_toy.py

The student's base is pretrained like the teacher's (experiments/r1_toy.py: the main job's
pretraining settings, on the teacher run's mixed corpus); the eval and the GRPO settings are the
teacher run's.
"""

import copy
import importlib.util
import os

import ml_collections


def _r1_toy_config():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "r1_toy.py")
    spec = importlib.util.spec_from_file_location("r1_toy_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def get_config():
    t = _r1_toy_config()
    c = ml_collections.ConfigDict()
    c.run_dir = "runs/distill_toy"
    c.cache_dir = t.cache_dir
    c.r1_run_dir = t.run_dir  # teacher run: data/, rejection/sft.jsonl, alignment_rl/final
    c.traces = ""  # default: <r1_run_dir>/rejection/sft.jsonl
    c.seed = 0
    c.prompt_style = t.prompt_style
    # overrides of r1jax.config.toy_qwen2 (d=96, 3 layers, head_dim 24: 0.31M parameters, which
    # learned nothing usable from the corpus in one epoch, distilled or not: pass@1 0 for both
    # students). d=128, 4 layers, 4 heads of 32 (all rotary: as wide a position key as the
    # teacher's 32-dim decoupled rope key), 2 KV heads, MLP 256: ~0.6M parameters, under the
    # teacher's 0.93M activated / 1.83M total.
    c.student = ml_collections.ConfigDict(dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                               num_key_value_heads=2, head_dim=32, intermediate_size=256))
    c.student_pretrain = copy.deepcopy(t.pretrain)  # cached in cache_dir
    c.eval = copy.deepcopy(t.eval)
    # more R1 traces (~3 min): the final R1 model on 2048 training problems the stage-3 set did not
    # use, 2 samples each, the stage-3 filters. With the stage-3 set alone (~500 distinct problems,
    # 1080 records, 8 epochs) the distilled student memorized its traces (train CE 0.05) and reached
    # held-out pass@1 0.562 vs the RL student's 0.586 (runs/distill_toy_fix).
    r = t.rejection
    c.teacher_traces = ml_collections.ConfigDict(dict(
        n_prompts=2048, prompt_offset=r.prompt_offset + r.n_prompts, n_samples=2, temperature=r.temperature,
        top_p=r.top_p, max_new_tokens=r.max_new_tokens, ngram=r.ngram, max_repeats=r.max_repeats,
        max_per_prompt=r.max_per_prompt, non_reasoning_frac=r.non_reasoning_frac, languages=t.data.languages))
    # distilled student: SFT on the traces (~4 min); 3 epochs over the ~4.5k records (stage 3 + R1
    #    traces): ~300 steps, 1.6x the 192 of the stage-3 set alone at the teacher's stage-4 8 epochs
    #    (the RL student gets the same compute: 38 GRPO steps instead of 24; it reached 0.586 at both)
    c.distill_sft = ml_collections.ConfigDict(dict(
        seq_len=256, batch_size=16, epochs=3.0, log_every=10,
        optimizer=dict(learning_rate=1e-3, warmup_steps=10, weight_decay=0.0, schedule="cosine", min_lr_ratio=0.1)))
    # RL student: GRPO from the student base with the R1-Zero rewards (accuracy + format);
    # steps=0: as many steps as the distillation SFT's compute buys (at least min_rl_steps)
    c.rl = ml_collections.ConfigDict(dict(copy.deepcopy(t.r1_zero).to_dict(), steps=0))
    c.min_rl_steps = 1
    return c
