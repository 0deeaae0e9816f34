"""A scalar reward model trained on preference pairs (DeepSeek-R1 §2.3.4, "general data").

    r(x) = w . rmsnorm(h_T(x)) + b

h_T is the decoder's last hidden state (r1jax Transformer, before its final norm) at the last
token of `prompt + " " + final_part(response)` followed by EOS; `rmsnorm` has no parameters.
Params are {"backbone": Transformer params, "head": {"w": [hidden], "b": []}}; the backbone is
initialized from a policy checkpoint (R1 initializes its reward models from the SFT model).

Loss (Bradley-Terry, pairwise):  L = -mean log sigmoid(r(chosen) - r(rejected)).
Pairwise accuracy = share of pairs with r(chosen) > r(rejected).

    rm = RewardModel(model)                                    # model: r1jax Transformer
    params = rm.init_params(backbone_params, seed=0)
    params, hist = train_reward_model(rm, params, tokenizer, train_pairs, steps=..., eval_pairs=...)
    save_reward_model(dir, rm, params, tokenizer_dir, meta)    # backbone as HF + reward_head.safetensors
    fn = preference_reward_fn(dir)                             # fn(texts, records) -> [0, 1] scores
    scorer = RewardScorer(rm, params, tokenizer)               # scorer(rm_texts) -> raw scores (owns its jit)

`preference_reward_fn` is what the GRPO trainer's "preference" reward calls: it builds the RM
input from each record's prompt (record["problem"] in the trainer's prompt style) and the
completion, and returns sigmoid((r - mid) / scale), with `mid` the midpoint of the mean chosen
and mean rejected scores on the training pairs and `scale` their half-distance (stored in
reward_model.json), so a typical helpful response scores ~0.73 and a degenerate one ~0.27.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from r1jax import train
from r1jax.checkpoint.hf import from_pretrained, save_pretrained
from r1jax.checkpoint.safetensors_io import SafeTensorsFile, save_file
from r1jax.data.buckets import pow2_bucket
from r1jax.data.prompts import PromptFormat
from r1jax.data.templates import encode_prompt, final_part
from r1jax.data.tokenizer import load_tokenizer

HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"


class RewardModel:
    """A Transformer backbone + scalar head. `score(params, ids, last)` -> [batch] rewards."""

    def __init__(self, model):
        self.model = model
        self.cfg = model.cfg

    def init_params(self, backbone_params, seed: int = 0) -> dict:
        h = self.cfg.hidden_size
        w = jax.random.normal(jax.random.PRNGKey(seed), (h,), jnp.float32) * (1.0 / math.sqrt(h))
        return {"backbone": backbone_params, "head": {"w": w, "b": jnp.zeros((), jnp.float32)}}

    def score(self, params, ids, last):
        """ids: [b, s] right-padded; last: [b] index of each row's last token -> [b] float32."""
        aux = self.model.apply({"params": params["backbone"]}, ids, output=True, compute_mtp=False).aux
        h = aux["pre_norm_hidden"].astype(jnp.float32)
        hl = jnp.take_along_axis(h, last[:, None, None], axis=1)[:, 0]  # [b, hidden]
        hl = hl * jax.lax.rsqrt(jnp.mean(hl * hl, axis=-1, keepdims=True) + 1e-6)
        return hl @ params["head"]["w"] + params["head"]["b"], aux


def bt_loss(r_chosen, r_rejected):
    """Bradley-Terry pairwise loss -mean log sigmoid(r_c - r_r) and pairwise accuracy."""
    d = r_chosen - r_rejected
    return -jnp.mean(jax.nn.log_sigmoid(d)), jnp.mean((d > 0).astype(jnp.float32))


def make_rm_loss(rm: RewardModel):
    """Train-step loss: batch has ids [2b, s] (chosen rows then rejected rows) and last [2b]."""

    def loss_fn(params, batch, model):
        r, aux = rm.score(params, batch["input_ids"], batch["last"])
        b = r.shape[0] // 2
        loss, acc = bt_loss(r[:b], r[b:])
        return loss, {"metrics": {"bt_loss": loss, "pair_acc": acc, "margin": jnp.mean(r[:b] - r[b:])}}

    return loss_fn


# ------------------------------------------------------------------------------ encoding


def rm_text(prompt: str, completion: str) -> str:
    """The text the reward model reads: the prompt and the final part of the response."""

    return f"{prompt} {final_part(completion)}"


def encode_texts(tokenizer, texts: Sequence[str], max_len: int = 0):
    """-> ids [n, bucket] (right-padded, EOS appended, left-truncated to max_len), last [n]."""

    eos = tokenizer.eos_token_ids[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    seqs = []
    for t in texts:
        s = encode_prompt(tokenizer, t) + [eos]
        if max_len and len(s) > max_len:
            s = s[-max_len:]
        seqs.append(s)
    L = pow2_bucket(max(len(s) for s in seqs), 16)
    ids = np.full((len(seqs), L), pad, np.int32)
    last = np.zeros((len(seqs),), np.int32)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        last[i] = len(s) - 1
    return ids, last


def encode_pairs(tokenizer, pairs: Sequence[dict], max_len: int = 0):
    """Pairs (prompt, chosen, rejected) -> ids [2n, s] (chosen rows first), last [2n]."""
    texts = [rm_text(p["prompt"], p["chosen"]) for p in pairs] + [rm_text(p["prompt"], p["rejected"]) for p in pairs]
    return encode_texts(tokenizer, texts, max_len)


# ------------------------------------------------------------------------------ train / eval


class RewardScorer:
    """Raw RM scores of already-built RM texts (rm_text), in batches padded to few shapes.

    The scorer owns its compiled scoring function: whoever keeps the scorer keeps the compiles (one
    per batch / length bucket), and a new scorer compiles anew. `scorer(texts)` scores with the
    params it holds, `scorer(texts, params)` with others of the same shapes (e.g. during training).

        scorer = RewardScorer(rm, params, tokenizer, max_len=512)
        r = scorer([rm_text(prompt, response), ...])           # np.ndarray [n] float32
    """

    def __init__(self, rm: RewardModel, params, tokenizer, *, max_len: int = 0, batch: int = 128):
        self.rm, self.params, self.tokenizer = rm, params, tokenizer
        self.max_len, self.batch = max_len, batch
        self.compiled = jax.jit(lambda p, i, l: rm.score(p, i, l)[0])

    def __call__(self, texts: Sequence[str], params=None) -> np.ndarray:
        params = self.params if params is None else params
        out = []
        for s in range(0, len(texts), self.batch):
            ids, last = encode_texts(self.tokenizer, texts[s:s + self.batch], self.max_len)
            n = ids.shape[0]
            nb = pow2_bucket(n, 8)
            if nb > n:  # pad the batch to a bucket (fewer recompiles)
                ids = np.concatenate([ids, np.repeat(ids[:1], nb - n, 0)])
                last = np.concatenate([last, np.repeat(last[:1], nb - n, 0)])
            out.append(np.asarray(self.compiled(params, jnp.asarray(ids), jnp.asarray(last)))[:n])
        return np.concatenate(out) if out else np.zeros((0,), np.float32)


def score_texts(rm: RewardModel, params, tokenizer, texts: Sequence[str], batch: int = 128,
                max_len: int = 0) -> np.ndarray:
    """Raw RM scores of already-built RM texts (rm_text), once (compiles each time: keep a
    RewardScorer to score repeatedly)."""
    return RewardScorer(rm, params, tokenizer, max_len=max_len, batch=batch)(texts)


def pairwise_accuracy(rm: RewardModel, params, tokenizer, pairs: Sequence[dict], max_len: int = 0, *,
                      scorer: RewardScorer | None = None) -> dict:
    """Held-out pairwise accuracy (overall and per degenerate kind) and the mean scores. scorer: one
    to reuse (its compiles and its max_len), scoring with `params`."""
    scorer = scorer or RewardScorer(rm, params, tokenizer, max_len=max_len)
    rc = scorer([rm_text(p["prompt"], p["chosen"]) for p in pairs], params)
    rr = scorer([rm_text(p["prompt"], p["rejected"]) for p in pairs], params)
    win = rc > rr
    kinds: dict[str, list] = {}
    for p, w in zip(pairs, win):
        kinds.setdefault(p.get("kind", "all"), []).append(bool(w))
    return {"pair_acc": float(win.mean()), "per_kind": {k: float(np.mean(v)) for k, v in sorted(kinds.items())},
            "mean_chosen": float(rc.mean()), "mean_rejected": float(rr.mean()), "pairs": len(pairs)}


def train_reward_model(rm: RewardModel, params, tokenizer, pairs: Sequence[dict], *, steps: int = 200,
                       batch_pairs: int = 32, learning_rate: float = 1e-3, warmup_steps: int = 10,
                       weight_decay: float = 0.0, seed: int = 0, max_len: int = 0, eval_pairs=None,
                       eval_every: int = 0, log=None, progress: bool = False):
    """Bradley-Terry training on `pairs` (shuffled, `batch_pairs` a step). Returns (params, history)."""

    opt = train.optimizer_config(learning_rate=learning_rate, warmup_steps=warmup_steps, total_steps=steps,
                                 weight_decay=weight_decay, schedule="cosine", min_lr_ratio=0.1)
    tx = train.make_optimizer(opt)
    state = train.init_train_state(params, tx)
    step_fn = train.make_train_step(rm.model, make_rm_loss(rm), tx, router_bias_update_rate=0.0)
    n = len(pairs)
    if n < batch_pairs:
        raise ValueError(f"reward model: {n} pairs < batch_pairs {batch_pairs}")
    ids, last = encode_pairs(tokenizer, pairs, max_len)
    chosen_ids, rej_ids = ids[:n], ids[n:]
    chosen_last, rej_last = last[:n], last[n:]
    per_epoch = n // batch_pairs
    scorer = RewardScorer(rm, None, tokenizer, max_len=max_len)  # the held-out evals' compiles (params given each time)
    hist = []
    t0 = time.perf_counter()
    for step in tqdm(range(steps), desc="train-rm", disable=not progress, dynamic_ncols=True):
        epoch, i = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        sel = perm[i * batch_pairs:(i + 1) * batch_pairs]
        batch = {"input_ids": jnp.asarray(np.concatenate([chosen_ids[sel], rej_ids[sel]])),
                 "last": jnp.asarray(np.concatenate([chosen_last[sel], rej_last[sel]]))}
        state, m = step_fn(state, batch)
        if (step + 1) % 10 == 0 or step + 1 == steps:
            m = {k: float(v) for k, v in jax.device_get(m).items()}
            row = {"step": step + 1, "seconds": time.perf_counter() - t0, **{f"rm/{k}": v for k, v in m.items()}}
            if eval_pairs is not None and eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
                row["rm/heldout_pair_acc"] = pairwise_accuracy(rm, state.params, tokenizer, eval_pairs, max_len,
                                                               scorer=scorer)["pair_acc"]
            hist.append(row)
            if log is not None:
                log.scalars(step + 1, {k: v for k, v in row.items() if k != "step"})
    return state.params, hist


# ------------------------------------------------------------------------------ save / load


def save_reward_model(path: str, rm: RewardModel, params, tokenizer_dir: str = "", meta: dict | None = None) -> str:
    """Backbone as an HF checkpoint folder + reward_head.safetensors + reward_model.json."""

    os.makedirs(path, exist_ok=True)
    save_pretrained(params["backbone"], rm.cfg, path)
    save_file({"score.weight": np.asarray(params["head"]["w"], np.float32),
               "score.bias": np.asarray(params["head"]["b"], np.float32).reshape(1)}, os.path.join(path, HEAD_FILE))
    with open(os.path.join(path, META_FILE), "w") as f:
        json.dump(dict(meta or {}, kind="r1jax_reward_model", head=HEAD_FILE), f, indent=2)
    if tokenizer_dir:
        load_tokenizer(tokenizer_dir).save(path)
    return path


def load_reward_model(path: str):
    """-> (RewardModel, params, meta). Errors name the folder and the missing file."""

    for fn in (HEAD_FILE, META_FILE, "config.json"):
        if not os.path.exists(os.path.join(path, fn)):
            raise FileNotFoundError(f"reward model {path}: missing {fn} (made by `r1jax train-rm`)")
    model, backbone = from_pretrained(path)
    f = SafeTensorsFile(os.path.join(path, HEAD_FILE))
    w = np.asarray(f.get("score.weight"), np.float32)
    b = np.asarray(f.get("score.bias"), np.float32).reshape(())
    with open(os.path.join(path, META_FILE)) as fh:
        meta = json.load(fh)
    rm = RewardModel(model)
    return rm, {"backbone": backbone, "head": {"w": jnp.asarray(w), "b": jnp.asarray(b)}}, meta


def preference_reward_fn(path: str, prompt_style: str = "r1_zero", tokenizer=None):
    """fn(texts, records) -> list of sigmoid((r - mid) / scale) in [0, 1] (see module doc)."""
    rm, params, meta = load_reward_model(path)
    tok = tokenizer or load_tokenizer(path)
    mid = float(meta.get("mid", 0.0))
    scale = max(float(meta.get("scale", 1.0)), 1e-6)
    max_len = int(meta.get("max_len", 0))

    fmt = PromptFormat(prompt_style)
    scorer = RewardScorer(rm, params, tok, max_len=max_len)  # compiled once per bucket for fn's life

    def fn(texts, records):
        rm_texts = [rm_text(fmt.text(tok, r["problem"]), t)
                    for t, r in zip(texts, records)]
        r = scorer(rm_texts)
        return [float(1.0 / (1.0 + math.exp(-(x - mid) / scale))) for x in r]

    return fn
