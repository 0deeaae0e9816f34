"""`r1jax train-rm`: a Bradley-Terry reward model on preference pairs (the toy's, or JSONL).

    r1jax train-rm --config experiments/train_rm_toy.py [--set init=runs/r1_toy/stage4/final]

Pairs: `train_data` / `heldout_data` JSONL with prompt, chosen, rejected (and optional kind);
empty: the toy pairs of r1jax.toy.r1_toy.make_preference_pairs (helpful readable summary vs a
degenerate response; held-out pairs from held-out problems and fresh general prompts), written
to run_dir/pairs_{train,heldout}.jsonl. The backbone starts from `init` (an HF checkpoint, e.g.
the SFT model, as R1 does) or, without one, from a random `model` config.

Writes run_dir/final (the reward model: HF backbone + reward_head.safetensors +
reward_model.json with mid/scale for the [0, 1] preference reward, and the tokenizer),
run_dir/rm_results.json (held-out pairwise accuracy overall and per degenerate kind) and
run_dir/metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import time

import ml_collections
import numpy as np

from r1jax import config as config_lib
from r1jax.config import override
from r1jax.data.jsonl import read_jsonl, write_jsonl
from r1jax.data.prompts import PROMPT_STYLES
from r1jax.data.tokenizer import check_fits_model, load_tokenizer
from r1jax.launch import load_for_training
from r1jax.rewards.reward_model import (
    RewardModel,
    RewardScorer,
    pairwise_accuracy,
    rm_text,
    save_reward_model,
    train_reward_model,
)
from r1jax.runlog import RunLogger
from r1jax.toy.r1_toy import make_preference_pairs
from r1jax.toy.tokenizer import save_tokenizer, toy_tokenizer


def train_rm_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        run_dir="runs/train_rm",
        init="",  # HF checkpoint of the backbone (policy / SFT model)
        tokenizer="",  # default: init folder
        model=ml_collections.ConfigDict(),  # r1jax.config keys when init is empty
        train_data="",
        heldout_data="",
        n_train=2048,  # toy pairs when train_data is empty
        n_heldout=512,
        languages=("en", "fr"),
        levels=(2, 3, 4, 5),
        restate=False,  # chain format of the toy pairs' reasoning (r1jax.toy.corpus.solution)
        prompt_style="r1_zero",
        steps=200,
        batch_pairs=32,
        learning_rate=1e-3,
        weight_decay=0.0,
        max_len=0,
        eval_every=50,
        seed=0,
        progress=True,
    ))

    return override(c, kw, "train-rm config", open=("model",))


def validate_train_rm_config(c) -> None:
    """Fails naming the key on a setting the reward model cannot train with (before anything loads)."""

    what = "train-rm config"
    config_lib.check_keys(c, config_lib.schema_of(train_rm_config(), open=("model",)), what, complete=True)
    model_keys = config_lib.base_config()
    for k in c.model.keys():
        if k not in model_keys:
            raise config_lib.unknown_key(what, f"model.{k}", model_keys.keys(), "model.")
    config_lib.check_choice(what, "prompt_style", c.prompt_style, PROMPT_STYLES)
    for k in ("steps", "batch_pairs"):
        if c[k] < 1:
            raise ValueError(f"{what}: {k}={c[k]!r} must be >= 1")
    for k in ("n_train", "n_heldout", "max_len", "eval_every", "learning_rate", "weight_decay"):
        if c[k] < 0:
            raise ValueError(f"{what}: {k}={c[k]!r} must be >= 0")


def train_rm(c, *, model=None, params=None, tokenizer=None) -> dict:
    """Trains and saves the reward model; returns the results dict (also rm_results.json)."""


    validate_train_rm_config(c)
    t0 = time.time()
    os.makedirs(c.run_dir, exist_ok=True)
    if tokenizer is None:
        if c.tokenizer or c.init:
            tokenizer = load_tokenizer(c.tokenizer or c.init)
        else:
            tokenizer = toy_tokenizer()
    tok_dir = c.tokenizer or c.init
    if not tok_dir:
        tok_dir = os.path.join(c.run_dir, "tokenizer")
        save_tokenizer(tokenizer, tok_dir)
    mc = c.model.to_dict() if hasattr(c.model, "to_dict") else dict(c.model)
    if not c.init and "vocab_size" not in mc:
        mc["vocab_size"] = tokenizer.vocab_size

    model_cfg = (model.cfg if model is not None else config_lib.from_hf_config(c.init) if c.init
                 else config_lib.make_config(**mc))
    check_fits_model(tokenizer, model_cfg.vocab_size, tokenizer_where=repr(tok_dir),
                     model_where=repr(c.init) if c.init else "of the config's `model`", what="train-rm")
    if model is None:
        model, params = load_for_training(c.init, mc, c.seed)
    req = ("prompt", "chosen", "rejected")
    if c.train_data:
        train_pairs = read_jsonl(c.train_data, required=req)
    else:
        train_pairs = make_preference_pairs(c.n_train, c.seed, languages=tuple(c.languages), levels=tuple(c.levels),
                                            prompt_style=c.prompt_style, split="train", restate=c.restate)
        write_jsonl(os.path.join(c.run_dir, "pairs_train.jsonl"), train_pairs)
    if c.heldout_data:
        held = read_jsonl(c.heldout_data, required=req)
    else:
        held = make_preference_pairs(c.n_heldout, c.seed + 1, languages=tuple(c.languages), levels=tuple(c.levels),
                                     prompt_style=c.prompt_style, split="heldout", restate=c.restate)
        write_jsonl(os.path.join(c.run_dir, "pairs_heldout.jsonl"), held)
    rm = RewardModel(model)
    rparams = rm.init_params(params, seed=c.seed)
    log = RunLogger(c.run_dir, tensorboard=False)
    rparams, hist = train_reward_model(rm, rparams, tokenizer, train_pairs, steps=c.steps, batch_pairs=c.batch_pairs,
                                       learning_rate=c.learning_rate, weight_decay=c.weight_decay, seed=c.seed,
                                       max_len=c.max_len, eval_pairs=held, eval_every=c.eval_every, log=log,
                                       progress=c.progress)
    # calibration for the [0, 1] preference reward: midpoint / half-distance of chosen vs rejected
    sub = train_pairs[: min(len(train_pairs), 512)]
    scorer = RewardScorer(rm, rparams, tokenizer, max_len=c.max_len)
    rc = scorer([rm_text(p["prompt"], p["chosen"]) for p in sub])
    rr = scorer([rm_text(p["prompt"], p["rejected"]) for p in sub])
    mid = float((rc.mean() + rr.mean()) / 2)
    scale = float(max((rc.mean() - rr.mean()) / 2, 1e-3))
    res = pairwise_accuracy(rm, rparams, tokenizer, held, c.max_len, scorer=scorer)
    train_acc = float(np.mean(rc > rr))
    final = os.path.join(c.run_dir, "final")
    save_reward_model(final, rm, rparams, tok_dir, meta={"mid": mid, "scale": scale, "max_len": c.max_len,
                                                         "prompt_style": c.prompt_style,
                                                         "heldout_pair_acc": res["pair_acc"]})
    res.update({"train_pair_acc_sample": train_acc, "train_pairs": len(train_pairs), "mid": mid, "scale": scale,
                "steps": c.steps, "minutes": (time.time() - t0) / 60, "path": final,
                "final_bt_loss": hist[-1].get("rm/bt_loss") if hist else None})
    with open(os.path.join(c.run_dir, "rm_results.json"), "w") as f:
        json.dump(res, f, indent=2)
    log.plot(os.path.join(c.run_dir, "rm_curves.png"), [("rm/bt_loss", "Bradley-Terry loss"),
                                                        ("rm/pair_acc", "train pairwise accuracy"),
                                                        ("rm/heldout_pair_acc", "held-out pairwise accuracy")])
    log.close()
    kinds = " ".join(f"{k} {v:.2f}" for k, v in res["per_kind"].items())
    print(f"[train-rm] held-out pairwise accuracy {res['pair_acc']:.3f} ({res['pairs']} pairs; {kinds}); "
          f"wrote {final}")
    return res


def run(c) -> dict:
    d = c.to_dict() if hasattr(c, "to_dict") else dict(c)
    return train_rm(train_rm_config(**d))
