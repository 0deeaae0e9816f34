"""The toy: the synthetic arithmetic world the R1 system is shown on at CPU scale, kept apart from
the library and using it like any user would (no module outside r1jax.toy imports it; the CLI
front door runs its pipelines).

    tasks/          the arithmetic tasks, toy languages, problem generation (hash-split train/held-out)
    corpus.py       the base model's pretraining corpus (direct / worked / self-checked solutions)
    tokenizer.py    the toy's word-level tokenizer, saved as an HF tokenizer folder with R1's template
    r1_toy.py       R1-recipe data on the toy (cold start, general data, preference pairs, summaries)
    language_mixing.py, stage_eval.py   the toy languages' mixing rate and the recipe's per-stage eval
    pipelines/      r1_zero (the main job), r1 (the full recipe), distill, rejection_sample, train_rm
"""
