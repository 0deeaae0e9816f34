"""The toy reward model on its own: Bradley-Terry on toy preference pairs (helpful readable
summary vs a degenerate response), backbone from a policy checkpoint.

    r1jax train-rm --config experiments/train_rm_toy.py [--set init=runs/r1_toy/sft/final]

Writes <run_dir>/final (the reward model), rm_results.json (held-out pairwise accuracy).
"""

from r1jax.toy.pipelines.train_rm import train_rm_config


def get_config():
    return train_rm_config(
        run_dir="runs/train_rm_toy",
        init="runs/r1_toy/sft/final",
        n_train=1024, n_heldout=256, levels=(2, 3, 4), restate=True, steps=150, batch_pairs=32, learning_rate=1e-3, eval_every=50,
    )
