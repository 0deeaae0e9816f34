"""Supervised fine-tuning (and toy pretraining): packed sequences, loss on completions.

    cfg = sft_config(run_dir="runs/sft", data="train.jsonl", init="path/to/hf_ckpt", ...)
    params = run_sft(cfg)                  # also writes cfg.run_dir/final (HF safetensors)

Records are JSONL with `prompt` and `completion` strings (or given as a list); with
`chat_template=True` the prompt is the user message of a conversation rendered by the checkpoint's
own chat template (with `system_prompt` and the generation prompt, as `r1jax grpo` renders it), and
the completion is what the assistant writes after it. They are tokenized with the checkpoint's
tokenizer, its EOS appended to each completion, packed into rows of `seq_len` with segment ids
(attention stays within an example) and a loss mask on completion tokens (every token with
`loss_on_prompt`, as for pretraining). Packing is best-fit decreasing over windows of `pack_window`
examples (r1jax.data.packing.PackPlan: O(n log n), index arrays only); a batch's rows are built
when the step asks for them from the token store (r1jax.data.token_store: one int32 per token, in
RAM or, with token_store="disk", memory-mapped from the run folder), so no packed row is held
beyond its step and a resume rebuilds the plan from the token counts (1M examples: docs/SCALE.md). The same compiled train step as GRPO (r1jax.train) runs
it, with the router-bias update, the MTP loss, fp32 master weights (`param_dtype`) and bf16
compute (`dtype`), remat (`remat_policy`), gradient accumulation weighted by token counts
(`grad_accum`) and the LM head a block of positions at a time (`logprob_chunk`). Orbax checkpoints
every `save_every` steps; rerunning the same command resumes (data order is a function of (seed,
epoch)). The final HF checkpoint carries the tokenizer files.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from r1jax import backends, train
from r1jax import config as config_lib
from r1jax.checkpoint.hf import save_pretrained
from r1jax.checkpoint.orbax import Checkpointer
from r1jax.data.jsonl import JsonlError
from r1jax.data.packing import PackPlan, fill_rows
from r1jax.data.prompts import PromptFormat, chat_messages
from r1jax.data.records import field, open_records
from r1jax.data.templates import encode_prompt
from r1jax.data.token_store import TokenStore
from r1jax.data.tokenizer import check_fits_model, load_tokenizer
from r1jax.model import precision
from r1jax.model.precision import load_for_training
from r1jax.parallel.handoff import host_tree
from r1jax.parallel.mesh import check_mesh_config
from r1jax.parallel.placement import Placement
from r1jax.runlog import RunLogger
from r1jax.sft.heldout import heldout_metrics


def sft_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        run_dir="runs/sft",
        data="",  # prompt/completion records: .jsonl, .json, .parquet (file, folder, glob), save_to_disk folder
        prompt_key="prompt",  # its fields (e.g. completion_key="response")
        completion_key="completion",
        tokenizer="",  # tokenizer.json or its folder (default: the init checkpoint's folder)
        init="",  # HF checkpoint folder to start from; empty: random init of `model`
        model=ml_collections.ConfigDict(),  # model config when init is empty (r1jax.config keys)
        seq_len=256,
        batch_size=16,  # packed rows per step
        pack_window=65536,  # examples packed together (best-fit decreasing within a window; seeded order)
        token_store="memory",  # memory | disk (the tokenized set memory-mapped from run_dir/sft_tokens.bin)
        steps=0,  # 0: run `epochs` epochs
        epochs=1.0,
        loss_on_prompt=False,
        chat_template=False,  # prompts through the tokenizer's chat template (a user message)
        system_prompt="",
        seed=0,
        grad_accum=1,  # micro-batches per step (gradients weighted by their token counts)
        param_dtype="float32",  # master weights
        dtype="",  # compute dtype ("" = the model's), e.g. "bfloat16"
        remat_policy="",  # "" (the model's) | none | full | dots | dots_no_batch
        attention_impl="auto",  # "" (the model's) | xla | pallas | auto (pallas on TPU / GPU, xla on CPU)
        moe_impl="",  # "" (the model's) | ragged | dense | ep
        logprob_chunk=0,  # positions per block of the LM head in the loss (0: the full logits at once)
        save_dtype="",  # dtype of the saved HF checkpoint ("": the params')
        optimizer=train.optimizer_config(learning_rate=1e-3, warmup_steps=20, weight_decay=0.01),
        router_bias_update_rate=1e-3,
        mesh="",  # "" (one device) or mesh axis sizes, e.g. "data=2,fsdp=2,expert=2" (r1jax.parallel.placement)
        log_every=10,
        save_every=0,  # orbax checkpoint period (0: only at the end)
        eval_data="",  # held-out prompt/completion records (same formats) (or run_sft(eval_records=...))
        eval_every=0,  # steps between held-out evaluations (0: only at the end, when there are eval records)
        eval_skip_tokens=0,  # leading completion tokens the held-out metrics do not score (r1jax.sft.heldout)
        save_hf=True,
        progress=True,
    ))
    return config_lib.override(c, kw, "sft config", open=("model",))


def validate_sft_config(c) -> None:
    """Fails early, naming the key, on settings SFT cannot run with: unknown or missing keys at any
    depth (dotted, with the closest valid one; `model` holds model config keys), enumerated settings
    (dtypes, remat policy, optimizer schedule) that are not one of their values, sizes out of
    range, a malformed mesh. Loads nothing (run_sft calls it first)."""
    what = "sft config"
    config_lib.check_keys(c, config_lib.schema_of(sft_config(), open=("model",)), what, complete=True)
    model_keys = config_lib.base_config()
    for k in (c.model.keys() if c.model is not None else ()):
        if k not in model_keys:
            raise config_lib.unknown_key(what, f"model.{k}", model_keys.keys(), "model.")
    config_lib.check_choice(what, "param_dtype", c.param_dtype, config_lib.DTYPES)
    config_lib.check_choice(what, "dtype", c.dtype, config_lib.DTYPES, allow_empty=True)
    config_lib.check_choice(what, "save_dtype", c.save_dtype, config_lib.DTYPES, allow_empty=True)
    config_lib.check_choice(what, "remat_policy", c.remat_policy, config_lib.REMAT_POLICIES, allow_empty=True)
    config_lib.check_choice(what, "token_store", c.token_store, ("memory", "disk"))
    config_lib.check_choice(what, "attention_impl", c.attention_impl, backends.ATTENTION_IMPLS, allow_empty=True)
    config_lib.check_choice(what, "moe_impl", c.moe_impl, backends.MOE_IMPLS, allow_empty=True)
    for k in ("seq_len", "batch_size", "grad_accum", "log_every", "pack_window"):
        if int(c[k]) < 1:
            raise ValueError(f"{what}: {k}={c[k]!r} must be >= 1")
    for k in ("steps", "save_every", "eval_every", "eval_skip_tokens", "logprob_chunk", "router_bias_update_rate"):
        if c[k] < 0:
            raise ValueError(f"{what}: {k}={c[k]!r} must be >= 0")
    if not c.steps and not c.epochs > 0:
        raise ValueError(f"{what}: epochs={c.epochs!r} must be > 0 (or set steps)")
    if c.batch_size % c.grad_accum:
        raise ValueError(f"{what}: batch_size={c.batch_size} does not split into grad_accum={c.grad_accum} "
                         "micro-batches")
    train.validate_optimizer(c.optimizer, what, prefix="optimizer.")
    if c.mesh:
        check_mesh_config(c.mesh, what)


def read_sft_records(path: str, prompt_key: str = "prompt", completion_key: str = "completion") -> list[dict]:
    """{"prompt", "completion"} records of a dataset (JSONL, JSON, Parquet, save_to_disk: r1jax.data.records;
    keys may be dotted). A prompt holding chat messages (TRL's conversational format) stays a message
    list, rendered by the chat template; a completion given as messages is its assistant text."""

    src = open_records(path)
    out = []
    for i, r in enumerate(src):
        where = src.where(i)
        p, c = field(r, prompt_key, where), field(r, completion_key, where)
        msgs = chat_messages(p, prompt_key, where)
        if msgs is None and not isinstance(p, str):
            raise JsonlError(f"{where}: key {prompt_key!r} must be text or chat messages, got {type(p).__name__}")
        if isinstance(c, (list, tuple)):
            c = "".join(m.get("content", "") for m in c if isinstance(m, dict) and m.get("role") == "assistant")
        if not isinstance(c, str):
            raise JsonlError(f"{where}: key {completion_key!r} must be text, got {type(c).__name__}")
        out.append({"prompt": msgs if msgs is not None else p, "completion": c})
    if not out:
        raise JsonlError(f"{path}: no records")
    return out


def iter_tokenized(records, tokenizer, eos_id: int, *, chat_template: bool = False, system_prompt: str = ""):
    """(prompt ids, completion ids + [eos_id]) per record, as they are asked for. A prompt's text is
    encoded as it is (it may spell special tokens), or, with chat_template, rendered as the user
    message of a conversation."""

    fmt = PromptFormat("chat", system_prompt=system_prompt) if chat_template else None
    chat = PromptFormat("chat", system_prompt=system_prompt)
    for r in records:
        if isinstance(r["prompt"], list):  # chat messages from the data: always through the template
            p = chat.render(tokenizer, r["prompt"])[0]
        else:
            p = fmt.render(tokenizer, r["prompt"])[0] if fmt else encode_prompt(tokenizer, r["prompt"])
        c = encode_prompt(tokenizer, r["completion"]) + [eos_id]
        yield p, c


def tokenize_records(records, tokenizer, eos_id: int, *, chat_template: bool = False, system_prompt: str = ""):
    """[(prompt ids, completion ids + [eos_id])] (iter_tokenized, as a list)."""
    return list(iter_tokenized(records, tokenizer, eos_id, chat_template=chat_template, system_prompt=system_prompt))


def _fit(example, seq_len: int):
    """(tokens, prompt_len) cut to seq_len (PackPlan counted it as seq_len tokens)."""
    toks, plen = example
    return toks[:seq_len], plen


def check_ids(ids, vocab_size: int, what: str) -> None:
    """ValueError naming `what` when a token id (host array) is outside [0, vocab_size): it would read
    past the embedding table (NaN logits), so it is refused before the rows reach the device."""
    a = np.asarray(ids)
    if a.size and (a.max() >= vocab_size or a.min() < 0):
        bad = int(a.max()) if a.max() >= vocab_size else int(a.min())
        raise ValueError(f"{what}: token id {bad} is outside the model's vocabulary (vocab_size={vocab_size}): "
                         "is the tokenizer the model's?")


def load_model(cfg_init: str, model_cfg, seed: int = 0, **overrides):
    """(model, params) from an HF checkpoint folder, or a random init of `model_cfg`
    (r1jax.model.precision.load_for_training)."""

    return load_for_training(cfg_init, model_cfg, seed, **overrides)


def run_sft(c, records=None, *, model=None, params=None, tokenizer=None, eval_records=None) -> tuple:
    """Runs SFT as configured; returns (model, params). See module doc. With held-out records
    (`eval_records` or `c.eval_data`) it logs their teacher-forced eval/ce, eval/token_acc and
    eval/exact (r1jax.sft.heldout) every `eval_every` steps and at the end."""
    import functools

    from tqdm import tqdm


    validate_sft_config(c)
    if tokenizer is None:
        tokenizer = load_tokenizer(c.tokenizer or c.init)
    # the tokenizer against the model's embedding table, before the weights load or init
    if model is not None:
        model_cfg, model_where = model.cfg, repr(c.init) if c.init else "passed in"
    elif c.init:
        model_cfg, model_where = config_lib.from_hf_config(c.init), repr(c.init)
    else:
        model_cfg, model_where = config_lib.make_config(**c.model.to_dict()), "of the config's `model`"
    check_fits_model(tokenizer, model_cfg.vocab_size, model_where=model_where, what="sft",
                     tokenizer_where=repr(c.tokenizer or c.init) if c.tokenizer or c.init else "passed in")
    if records is None:
        if not c.data:
            raise ValueError("sft config: data is empty: set it to a JSONL of prompt/completion records "
                             "(--set data=FILE)")
        records = read_sft_records(c.data, c.prompt_key, c.completion_key)
    if not tokenizer.eos_token_ids:
        raise ValueError(f"sft: the tokenizer ({c.tokenizer or c.init}) defines no EOS token to end completions with")
    eos = tokenizer.eos_token_ids[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if c.token_store == "disk":
        os.makedirs(c.run_dir, exist_ok=True)
    store = TokenStore.build(iter_tokenized(records, tokenizer, eos, chat_template=c.chat_template,
                                            system_prompt=c.system_prompt),
                             path=(os.path.join(c.run_dir, f"sft_tokens.{jax.process_index()}.bin")  # one per process
                                   if c.token_store == "disk" else None))
    if eval_records is None and c.eval_data:
        eval_records = read_sft_records(c.eval_data, c.prompt_key, c.completion_key)
    eval_examples = (tokenize_records(eval_records, tokenizer, eos, chat_template=c.chat_template,
                                      system_prompt=c.system_prompt) if eval_records else None)
    plan = PackPlan.build(store.lengths, c.seq_len, window=c.pack_window, seed=c.seed)
    pstats = {"fill": plan.fill, "truncated": int((store.lengths > c.seq_len).sum())}
    n_rows = plan.rows
    if n_rows < c.batch_size:
        raise ValueError(f"sft: {n_rows} packed rows < batch_size {c.batch_size} (data: {c.data or 'records'})")
    check_ids(np.array(store.id_range()), model_cfg.vocab_size, f"sft: the tokenized records of {c.data or 'the records'}")
    # everything above is checked before the weights load
    os.makedirs(c.run_dir, exist_ok=True)
    over = precision.model_overrides(c.param_dtype, c.dtype, c.remat_policy)
    over.update(backends.implementation_overrides(c.attention_impl, c.moe_impl))
    if model is None:
        model, params = load_model(c.init, c.model, c.seed, **over)
    else:  # a model passed in keeps its params' storage; compute dtype and remat may change
        model, params = precision.with_overrides(model, params, **{k: v for k, v in over.items()
                                                                   if k != "param_dtype"})
    per_epoch = n_rows // c.batch_size
    steps = c.steps or max(1, int(round(c.epochs * per_epoch)))
    opt = ml_collections.ConfigDict(c.optimizer.to_dict())
    opt.total_steps = steps
    tx = train.make_optimizer(opt)
    place = Placement(c.mesh)
    if (c.batch_size // c.grad_accum) % place.batch_multiple:
        raise ValueError(f"sft: a micro-batch of {c.batch_size // c.grad_accum} rows must be a multiple of "
                         f"{place.batch_multiple} on mesh {c.mesh!r}")
    state = place.train_state(model.cfg, params, tx)
    del params
    loss = functools.partial(train.lm_loss, chunk=c.logprob_chunk) if c.logprob_chunk else train.lm_loss
    step_fn = place.train_step(model, loss, tx, grad_accum=c.grad_accum,
                               router_bias_update_rate=c.router_bias_update_rate)
    ckpt = Checkpointer(os.path.join(c.run_dir, "checkpoints"))
    start = 0
    restored, meta = ckpt.restore(state)
    if restored is not None:
        state, start = restored, int(meta["step"])
    # several processes: each joins every step and collective; process 0 writes metrics, plots and final/
    log = RunLogger(c.run_dir, resume_step=start if restored is not None else None, writes=jax.process_index() == 0)

    def batch_at(step):
        epoch, i = divmod(step, per_epoch)
        perm = np.random.default_rng([c.seed, epoch]).permutation(n_rows)
        sel = perm[i * c.batch_size:(i + 1) * c.batch_size]
        rows = [[_fit(store.example(j), c.seq_len) for j in plan.row(r)] for r in sel]
        return place.batch(fill_rows(rows, c.seq_len, loss_on_prompt=c.loss_on_prompt, pad_id=pad))

    def evaluate_heldout(step, params):
        with place.context():
            hm = heldout_metrics(model, params, eval_examples, c.seq_len, pad_id=pad, place=place,
                                 skip=c.eval_skip_tokens)
        log.scalars(step, {f"eval/{k}": v for k, v in hm.items() if k != "examples"})
        return hm

    bar = tqdm(range(start, steps), desc=f"sft {os.path.basename(c.run_dir)}",
               disable=not c.progress or jax.process_index() != 0,
               dynamic_ncols=True, initial=start, total=steps)
    t0, toks = time.perf_counter(), 0
    m = {}
    for step in bar:
        batch = batch_at(step)
        state, m = step_fn(state, batch)
        toks += int(c.seq_len * c.batch_size)
        if (step + 1) % c.log_every == 0 or step + 1 == steps:
            m = host_tree(m)
            dt = time.perf_counter() - t0
            vals = {f"sft/{k}": v for k, v in m.items()}
            vals["sft/tokens_per_s"] = toks / max(dt, 1e-9)
            log.scalars(step + 1, vals)
            bar.set_postfix(loss=f"{float(m['loss']):.3f}", tok_s=f"{toks / max(dt, 1e-9):.0f}")
            t0, toks = time.perf_counter(), 0
        if eval_examples and c.eval_every and (step + 1) % c.eval_every == 0 and step + 1 < steps:
            hm = evaluate_heldout(step + 1, state.params)
            if jax.process_index() == 0:
                bar.write(f"[sft] step {step + 1}: held-out ce {hm['ce']:.4f}  token acc {hm['token_acc']:.4f}  "
                          f"exact {hm['exact']:.3f}")
        if c.save_every and (step + 1) % c.save_every == 0 and step + 1 < steps:
            ckpt.save(step + 1, state, {"step": step + 1})
    bar.close()
    if eval_examples:
        hm = evaluate_heldout(steps, state.params)
        if jax.process_index() == 0:
            print(f"[sft] final: held-out ce {hm['ce']:.4f}  token acc {hm['token_acc']:.4f}  exact {hm['exact']:.3f} "
                  f"({hm['examples']} examples)")
    if steps > start:
        ckpt.save(steps, state, {"step": steps})
    log.plot(os.path.join(c.run_dir, "sft_curves.png"), [("sft/ce", "cross entropy"), ("sft/mtp_ce", "MTP CE"),
                                                         ("sft/grad_norm", "grad norm")])
    log.scalars(steps, {"sft/pack_fill": pstats["fill"], "sft/truncated": pstats["truncated"]})
    log.close()
    ckpt.close()
    if c.save_hf:
        # every process joins (one tensor gathered at a time), process 0 writes
        save_pretrained(state.params, model.cfg, os.path.join(c.run_dir, "final"), tokenizer=tokenizer,
                        dtype=c.save_dtype or None)
    return model, state.params
