"""What the SFT and GRPO trainers share before their first step and after their last.

    model_cfg, where = run_model_config(c, "grpo", model)    # before any weight loads: for the checks
    tok, eos, pad = load_run_tokenizer(c, "grpo")            # c.tokenizer or c.init; it must define an EOS
    check_tokenizer_fits(c, model_cfg, tok, "grpo", where)    # ids fit the embedding table
    model, params = load_model(c, model, params)             # + param_dtype / dtype / remat / impl overrides
    tx = make_optimizer(c, total_steps)
    files = RunFiles(c, "grpo", total)                       # checkpoints, metrics logger, progress bar
    state = files.resume(state)                               # from the latest checkpoint, if any
    ...
    files.close(params, model.cfg, tok, plots, "grpo_curves.png", export=True)  # plot, close, final/

Both trainers read the same keys for these parts: init, tokenizer, seed, param_dtype, dtype,
remat_policy, attention_impl, moe_impl, optimizer, run_dir, progress, save_hf, save_dtype (and SFT's
`model`, the config of a random init). With several processes every process joins every collective;
process 0 writes metrics, plots, progress and final/.
"""

from __future__ import annotations

import os

import jax
from tqdm import tqdm

from r1jax import backends, train
from r1jax import config as config_lib
from r1jax.checkpoint.hf import from_pretrained, save_pretrained
from r1jax.checkpoint.orbax import Checkpointer
from r1jax.data.tokenizer import check_fits_model, load_tokenizer
from r1jax.model import Transformer, init_params, precision
from r1jax.runlog import RunLogger


def load_for_training(init: str, model_cfg=None, seed: int = 0, **overrides):
    """(model, params) from an HF checkpoint folder, or a random init of `model_cfg` (config keys),
    with `overrides` (param_dtype, dtype, remat_policy, ...) applied."""
    if init:
        return from_pretrained(init, **overrides)
    mc = model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else dict(model_cfg or {})
    cfg = config_lib.make_config(**{**mc, **overrides})
    return Transformer(cfg), init_params(cfg, jax.random.PRNGKey(seed))


def load_run_tokenizer(c, what: str, tokenizer=None):
    """-> (tokenizer, eos ids (tuple), pad id): the one passed in, else c.tokenizer or c.init's; a
    tokenizer without an EOS is refused (generation could not stop, completions could not end)."""
    if tokenizer is None and not (c.tokenizer or c.init):
        raise ValueError(f"{what} config: tokenizer and init are empty: set tokenizer (a tokenizer.json or its "
                         "folder) or init (a checkpoint folder holding one)")
    tok = tokenizer if tokenizer is not None else load_tokenizer(c.tokenizer or c.init)
    eos = tuple(tok.eos_token_ids)
    if not eos:
        raise ValueError(f"{what}: the tokenizer ({c.tokenizer or c.init or 'passed in'}) defines no EOS token")
    return tok, eos, tok.pad_token_id if tok.pad_token_id is not None else eos[0]


def run_model_config(c, what: str, model=None):
    """-> (the model config the run will train, where it comes from, for messages), read before any
    weight loads: the model passed in, c.init's config.json, or the config's `model` keys (SFT's
    random init)."""
    if model is not None:
        return model.cfg, repr(c.init) if c.init else "passed in"
    if c.init:
        return config_lib.from_hf_config(c.init), repr(c.init)
    if "model" in c:
        return config_lib.make_config(**c.model.to_dict()), "of the config's `model`"
    raise ValueError(f"{what} config: init is empty: set it to the HF checkpoint folder to train (--set init=DIR)")


def check_tokenizer_fits(c, model_cfg, tokenizer, what: str, model_where: str) -> None:
    """The tokenizer's ids (added / special, EOS, pad) fit the model's embedding table
    (r1jax.data.tokenizer.check_fits_model, naming both folders and sizes)."""
    check_fits_model(tokenizer, model_cfg.vocab_size, model_where=model_where, what=what,
                     tokenizer_where=repr(c.tokenizer or c.init) if c.tokenizer or c.init else "passed in")


def load_model(c, model=None, params=None):
    """(model, params) for training: c.init's checkpoint (or a random init of c.model), or the model
    passed in, with the config's param_dtype / dtype / remat_policy / attention_impl / moe_impl. A
    model passed in keeps its params' storage; compute dtype, remat and implementations may change."""
    over = precision.model_overrides(c.param_dtype, c.dtype, c.remat_policy)
    over.update(backends.implementation_overrides(c.attention_impl, c.moe_impl))
    if model is None:
        return load_for_training(c.init, c.get("model"), c.seed, **over)
    return precision.with_overrides(model, params, **{k: v for k, v in over.items() if k != "param_dtype"})


def make_optimizer(c, total_steps: int):
    """The config's `optimizer` (r1jax.train.make_optimizer) with its schedule over total_steps updates."""
    return train.make_optimizer(train.optimizer_config(**{**c.optimizer.to_dict(), "total_steps": total_steps}))


class RunFiles:
    """A run's folder: the Orbax checkpoints (resumed from the latest), the metrics logger
    (TensorBoard, metrics.jsonl; process 0 writes) and the progress bar.

        files = RunFiles(c, "sft", total)
        state = files.resume(state)        # the latest checkpoint's state, or `state`; files.start, files.meta
        for step in files.progress(): ...  # steps files.start .. total - 1
        files.close(params, model_cfg, tokenizer, plots, "sft_curves.png")"""

    def __init__(self, c, what: str, total: int):
        self.c, self.what, self.total = c, what, total
        self.writer = jax.process_index() == 0
        os.makedirs(c.run_dir, exist_ok=True)
        self.ckpt = Checkpointer(os.path.join(c.run_dir, "checkpoints"))
        self.start, self.meta, self.log, self.bar = 0, None, None, None

    def resume(self, state):
        """The state of the latest checkpoint (its step in self.start, its metadata in self.meta), or
        `state` as it is; opens the logger, which keeps the history up to that step."""
        restored, self.meta = self.ckpt.restore(state)
        if restored is not None:
            state, self.start = restored, int(self.meta["step"])
        self.log = RunLogger(self.c.run_dir, resume_step=self.start if restored is not None else None,
                             writes=self.writer)
        return state

    def progress(self):
        """The progress bar over the remaining steps (process 0, when c.progress)."""
        self.bar = tqdm(range(self.start, self.total), desc=f"{self.what} {os.path.basename(self.c.run_dir)}",
                        disable=not self.c.progress or not self.writer, dynamic_ncols=True, initial=self.start,
                        total=self.total)
        return self.bar

    def close(self, params=None, model_cfg=None, tokenizer=None, plots=(), plot_name: str = "",
              export: bool = False) -> None:
        """Closes the bar, writes the PNG of `plots` ([(metric, title)]) to run_dir/plot_name, closes
        the logger and the checkpointer, and (with `export` and c.save_hf) writes run_dir/final: every
        process joins (one tensor gathered and cast at a time, no replica of the fp32 master weights on
        a device), process 0 writes."""
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            if plots:
                self.log.plot(os.path.join(self.c.run_dir, plot_name), list(plots))
            self.log.close()
        self.ckpt.close()
        if export and self.c.save_hf:
            save_pretrained(params, model_cfg, os.path.join(self.c.run_dir, "final"), tokenizer=tokenizer,
                            dtype=self.c.save_dtype or None)
