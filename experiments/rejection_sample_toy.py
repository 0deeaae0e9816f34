"""Rejection sampling on its own (stage 3 of the R1 toy), from any HF checkpoint.

    r1jax rejection-sample --config experiments/rejection_sample_toy.py \
        --set checkpoint=runs/r1_toy/reasoning_rl/final --set data=runs/r1_toy/data/train.jsonl

Writes <run_dir>/sft.jsonl (or `out`) and <out>.counts.json; the counts per filter are printed.
"""

from r1jax.toy.pipelines.rejection_sample import rejection_sample_config


def get_config():
    return rejection_sample_config(
        run_dir="runs/rejection_sample_toy",
        checkpoint="runs/r1_toy/reasoning_rl/final",
        data="runs/r1_toy/data/train.jsonl",
        n_prompts=256, n_samples=8, temperature=0.8, top_p=0.95, max_new_tokens=160,
        template="r1", ngram=12, max_repeats=3, max_per_prompt=4, non_reasoning_frac=0.1,
    )
