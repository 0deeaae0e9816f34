"""Supervised fine-tuning (and toy pretraining): packed sequences, loss on completions.

    cfg = sft_config(run_dir="runs/sft", data="train.jsonl", init="path/to/hf_ckpt", ...)
    params = run_sft(cfg)                  # also writes cfg.run_dir/final (HF safetensors)

Records are JSONL with `prompt` and `completion` strings (or given as a list). They are tokenized
(`tokenizer.json`), EOS appended to each completion, packed into rows of `seq_len` with segment
ids (attention stays within an example) and a loss mask on completion tokens (every token with
`loss_on_prompt`, as for pretraining). The same compiled train step as GRPO (r1jax.train) runs
it, with the router-bias update and the MTP loss. Orbax checkpoints every `save_every` steps;
rerunning the same command resumes (data order is a function of (seed, epoch)).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from r1jax import config as config_lib
from r1jax import train
from r1jax.data.packing import pack


def sft_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        run_dir="runs/sft",
        data="",  # JSONL with prompt/completion
        tokenizer="",  # tokenizer.json or its folder (default: the init checkpoint's folder)
        init="",  # HF checkpoint folder to start from; empty: random init of `model`
        model=ml_collections.ConfigDict(),  # model config when init is empty (r1jax.config keys)
        seq_len=256,
        batch_size=16,  # packed rows per step
        steps=0,  # 0: run `epochs` epochs
        epochs=1.0,
        loss_on_prompt=False,
        seed=0,
        optimizer=train.optimizer_config(learning_rate=1e-3, warmup_steps=20, weight_decay=0.01),
        router_bias_update_rate=1e-3,
        mesh="",  # "" (one device) or mesh axis sizes, e.g. "data=2,fsdp=2,expert=2" (r1jax.parallel.placement)
        log_every=10,
        save_every=0,  # orbax checkpoint period (0: only at the end)
        save_hf=True,
        progress=True,
    ))
    return config_lib.override(c, kw, "sft config")


def tokenize_records(records, tokenizer, eos_id: int):
    from r1jax.data.templates import encode_prompt

    out = []
    for r in records:
        p = encode_prompt(tokenizer, r["prompt"])
        c = encode_prompt(tokenizer, r["completion"]) + [eos_id]
        out.append((p, c))
    return out


def load_model(cfg_init: str, model_cfg, seed: int = 0):
    """(model, params) from an HF checkpoint folder, or a random init of `model_cfg`."""
    from r1jax.model import Transformer, init_params

    if cfg_init:
        from r1jax.checkpoint.hf import from_pretrained

        return from_pretrained(cfg_init)
    mc = config_lib.make_config(**model_cfg.to_dict()) if not isinstance(model_cfg, dict) else \
        config_lib.make_config(**model_cfg)
    return Transformer(mc), init_params(mc, jax.random.PRNGKey(seed))


def run_sft(c, records=None, *, model=None, params=None, tokenizer=None) -> tuple:
    """Runs SFT as configured; returns (model, params). See module doc."""
    from tqdm import tqdm

    from r1jax.checkpoint.orbax import Checkpointer
    from r1jax.data.jsonl import read_jsonl
    from r1jax.data.tokenizer import load_tokenizer, special_ids
    from r1jax.parallel.placement import Placement
    from r1jax.runlog import RunLogger

    os.makedirs(c.run_dir, exist_ok=True)
    if model is None:
        model, params = load_model(c.init, c.model, c.seed)
    if tokenizer is None:
        tokenizer = load_tokenizer(c.tokenizer or c.init)
    if records is None:
        records = read_jsonl(c.data, required=("prompt", "completion"))
    ids = special_ids(tokenizer)
    examples = tokenize_records(records, tokenizer, ids["eos"])
    rows, pstats = pack(examples, c.seq_len, loss_on_prompt=c.loss_on_prompt, pad_id=ids["pad"])
    n_rows = rows["input_ids"].shape[0]
    if n_rows < c.batch_size:
        raise ValueError(f"sft: {n_rows} packed rows < batch_size {c.batch_size} (data: {c.data or 'records'})")
    per_epoch = n_rows // c.batch_size
    steps = c.steps or max(1, int(round(c.epochs * per_epoch)))
    opt = ml_collections.ConfigDict(c.optimizer.to_dict())
    opt.total_steps = steps
    tx = train.make_optimizer(opt)
    place = Placement(c.mesh)
    if c.batch_size % place.batch_multiple:
        raise ValueError(f"sft: batch_size {c.batch_size} must be a multiple of {place.batch_multiple} on mesh {c.mesh!r}")
    state = place.train_state(model.cfg, params, tx)
    step_fn = place.train_step(model, train.lm_loss, tx, router_bias_update_rate=c.router_bias_update_rate)
    ckpt = Checkpointer(os.path.join(c.run_dir, "checkpoints"))
    start = 0
    restored, meta = ckpt.restore(state)
    if restored is not None:
        state, start = restored, int(meta["step"])
    log = RunLogger(c.run_dir, resume_step=start if restored is not None else None)

    def batch_at(step):
        epoch, i = divmod(step, per_epoch)
        perm = np.random.default_rng([c.seed, epoch]).permutation(n_rows)
        sel = perm[i * c.batch_size:(i + 1) * c.batch_size]
        return place.batch({k: v[sel] for k, v in rows.items()})

    bar = tqdm(range(start, steps), desc=f"sft {os.path.basename(c.run_dir)}", disable=not c.progress,
               dynamic_ncols=True, initial=start, total=steps)
    t0, toks = time.perf_counter(), 0
    m = {}
    for step in bar:
        batch = batch_at(step)
        state, m = step_fn(state, batch)
        toks += int(rows["segment_ids"].shape[1] * c.batch_size)
        if (step + 1) % c.log_every == 0 or step + 1 == steps:
            m = jax.device_get(m)
            dt = time.perf_counter() - t0
            vals = {f"sft/{k}": v for k, v in m.items()}
            vals["sft/tokens_per_s"] = toks / max(dt, 1e-9)
            log.scalars(step + 1, vals)
            bar.set_postfix(loss=f"{float(m['loss']):.3f}", tok_s=f"{toks / max(dt, 1e-9):.0f}")
            t0, toks = time.perf_counter(), 0
        if c.save_every and (step + 1) % c.save_every == 0 and step + 1 < steps:
            ckpt.save(step + 1, state, {"step": step + 1})
    bar.close()
    if steps > start:
        ckpt.save(steps, state, {"step": steps})
    log.plot(os.path.join(c.run_dir, "sft_curves.png"), [("sft/ce", "cross entropy"), ("sft/mtp_ce", "MTP CE"),
                                                         ("sft/grad_norm", "grad norm")])
    log.scalars(steps, {"sft/pack_fill": pstats["fill"], "sft/truncated": pstats["truncated"]})
    log.close()
    ckpt.close()
    if c.save_hf:
        from r1jax.checkpoint.hf import save_pretrained

        final = os.path.join(c.run_dir, "final")
        save_pretrained(state.params, model.cfg, final)
        _copy_tokenizer(c.tokenizer or c.init, final)
    return model, state.params


def _copy_tokenizer(src, dst):
    import shutil

    if not src:
        return
    src = src if os.path.isdir(src) else os.path.dirname(src)
    for fn in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        p = os.path.join(src, fn)
        if os.path.exists(p) and os.path.abspath(p) != os.path.abspath(os.path.join(dst, fn)):
            shutil.copy(p, os.path.join(dst, fn))
