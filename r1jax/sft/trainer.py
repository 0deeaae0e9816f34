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

import dataclasses
import functools
import os
import time

import jax
import ml_collections
import numpy as np

from r1jax import backends, launch, train
from r1jax import config as config_lib
from r1jax.data.jsonl import JsonlError
from r1jax.data.packing import PackPlan, fill_rows
from r1jax.data.prompts import PromptFormat, chat_messages
from r1jax.data.records import field, open_records
from r1jax.data.templates import encode_prompt
from r1jax.data.token_store import TokenStore
from r1jax.parallel.handoff import host_tree
from r1jax.parallel.mesh import check_mesh_config
from r1jax.parallel.placement import Placement
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


def run_sft(c, records=None, *, model=None, params=None, tokenizer=None, eval_records=None) -> tuple:
    """Runs SFT as configured; returns (model, params). See module doc. With held-out records
    (`eval_records` or `c.eval_data`) it logs their teacher-forced eval/ce, eval/token_acc and
    eval/exact (r1jax.sft.heldout) every `eval_every` steps and at the end."""
    validate_sft_config(c)
    model_cfg, model_where = launch.run_model_config(c, "sft", model)
    tokenizer, eos, pad = launch.load_run_tokenizer(c, "sft", tokenizer)
    launch.check_tokenizer_fits(c, model_cfg, tokenizer, "sft", model_where)
    data = SFTData.build(c, records, tokenizer, eos[0], pad, model_cfg.vocab_size, eval_records)
    # everything above is checked before the weights load
    model, params = launch.load_model(c, model, params)
    steps = c.steps or max(1, int(round(c.epochs * data.per_epoch)))
    tx = launch.make_optimizer(c, steps)
    place = Placement(c.mesh)
    if (c.batch_size // c.grad_accum) % place.batch_multiple:
        raise ValueError(f"sft: a micro-batch of {c.batch_size // c.grad_accum} rows must be a multiple of "
                         f"{place.batch_multiple} on mesh {c.mesh!r}")
    files = launch.RunFiles(c, "sft", steps)
    state = files.resume(place.train_state(model.cfg, params, tx))  # the step's shardings come from the state's
    del params
    loss = functools.partial(train.lm_loss, chunk=c.logprob_chunk) if c.logprob_chunk else train.lm_loss
    step_fn = place.train_step(model, loss, tx, grad_accum=c.grad_accum,
                               router_bias_update_rate=c.router_bias_update_rate)
    log = files.log

    def evaluate_heldout(step, params, final=False):
        with place.context():
            hm = heldout_metrics(model, params, data.eval_examples, c.seq_len, pad_id=pad, place=place,
                                 skip=c.eval_skip_tokens)
        log.scalars(step, {f"eval/{k}": v for k, v in hm.items() if k != "examples"})
        if files.writer:
            files.bar.write(f"[sft] {'final' if final else f'step {step}'}: held-out ce {hm['ce']:.4f}  "
                            f"token acc {hm['token_acc']:.4f}  exact {hm['exact']:.3f} ({hm['examples']} examples)")

    t0, toks = time.perf_counter(), 0
    for step in files.progress():
        state, m = step_fn(state, place.batch(data.batch_at(step)))
        toks += int(c.seq_len * c.batch_size)
        if (step + 1) % c.log_every == 0 or step + 1 == steps:
            m, dt = host_tree(m), max(time.perf_counter() - t0, 1e-9)
            log.scalars(step + 1, {**{f"sft/{k}": v for k, v in m.items()}, "sft/tokens_per_s": toks / dt})
            files.bar.set_postfix(loss=f"{float(m['loss']):.3f}", tok_s=f"{toks / dt:.0f}")
            t0, toks = time.perf_counter(), 0
        if data.eval_examples and c.eval_every and (step + 1) % c.eval_every == 0 and step + 1 < steps:
            evaluate_heldout(step + 1, state.params)
        if c.save_every and (step + 1) % c.save_every == 0 and step + 1 < steps:
            files.ckpt.save(step + 1, state, {"step": step + 1})
    if data.eval_examples:
        evaluate_heldout(steps, state.params, final=True)
    if steps > files.start:
        files.ckpt.save(steps, state, {"step": steps})
    log.scalars(steps, {"sft/pack_fill": data.plan.fill, "sft/truncated": data.truncated})
    files.close(state.params, model.cfg, tokenizer, [("sft/ce", "cross entropy"), ("sft/mtp_ce", "MTP CE"),
                                                     ("sft/grad_norm", "grad norm")], "sft_curves.png", export=True)
    return model, state.params


@dataclasses.dataclass
class SFTData:
    """The run's examples, tokenized into the token store, and their packing plan; the held-out
    examples (tokenized) when there are any. batch_at(step) -> the host rows of the step (the order
    is a function of (seed, epoch), so a resumed run reads the same batches)."""
    c: ml_collections.ConfigDict
    store: TokenStore
    plan: PackPlan
    pad: int
    eval_examples: list | None
    truncated: int

    @property
    def per_epoch(self) -> int:
        return self.plan.rows // self.c.batch_size

    @classmethod
    def build(cls, c, records, tokenizer, eos: int, pad: int, vocab_size: int, eval_records=None) -> "SFTData":
        if records is None:
            if not c.data:
                raise ValueError("sft config: data is empty: set it to a JSONL of prompt/completion records "
                                 "(--set data=FILE)")
            records = read_sft_records(c.data, c.prompt_key, c.completion_key)
        if c.token_store == "disk":
            os.makedirs(c.run_dir, exist_ok=True)
        store = TokenStore.build(iter_tokenized(records, tokenizer, eos, chat_template=c.chat_template,
                                                system_prompt=c.system_prompt),
                                 path=(os.path.join(c.run_dir, f"sft_tokens.{jax.process_index()}.bin")  # per process
                                       if c.token_store == "disk" else None))
        if eval_records is None and c.eval_data:
            eval_records = read_sft_records(c.eval_data, c.prompt_key, c.completion_key)
        eval_examples = (tokenize_records(eval_records, tokenizer, eos, chat_template=c.chat_template,
                                          system_prompt=c.system_prompt) if eval_records else None)
        plan = PackPlan.build(store.lengths, c.seq_len, window=c.pack_window, seed=c.seed)
        if plan.rows < c.batch_size:
            raise ValueError(f"sft: {plan.rows} packed rows < batch_size {c.batch_size} (data: {c.data or 'records'})")
        check_ids(np.array(store.id_range()), vocab_size, f"sft: the tokenized records of {c.data or 'the records'}")
        return cls(c=c, store=store, plan=plan, pad=pad, eval_examples=eval_examples,
                   truncated=int((store.lengths > c.seq_len).sum()))

    def batch_at(self, step: int) -> dict:
        c = self.c
        epoch, i = divmod(step, self.per_epoch)
        perm = np.random.default_rng([c.seed, epoch]).permutation(self.plan.rows)
        sel = perm[i * c.batch_size:(i + 1) * c.batch_size]
        rows = [[_fit(self.store.example(j), c.seq_len) for j in self.plan.row(r)] for r in sel]
        return fill_rows(rows, c.seq_len, loss_on_prompt=c.loss_on_prompt, pad_id=self.pad)
