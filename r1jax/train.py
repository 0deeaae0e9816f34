"""The compiled train step: a pure `train_step(state, batch) -> (state, metrics)` under one jax.jit.

    tx = make_optimizer(opt_cfg)                       # AdamW + clipping + schedule, masks
    state = init_train_state(params, tx)
    step = make_train_step(model, loss_fn, tx, grad_accum=2, router_bias_update_rate=1e-3)
    state, metrics = step(state, batch)

`loss_fn(params, batch, model) -> (loss, aux)` is any pure function; aux holds "metrics" (a dict
of scalars) and, for MoE models, "load" ([n_moe_layers, E] tokens per expert) and "mtp_load".
`lm_loss` (next-token cross entropy with a loss mask + MTP + sequence balance loss) is the SFT /
pretraining loss; r1jax.rl supplies the GRPO one.

The router bias (`e_score_correction_bias`) gets no gradient and no optimizer update: after the
optimizer step it moves by `update_router_bias(bias, load, rate)` (auxiliary-loss-free balancing).
With `grad_accum > 1` the batch's leading axis is split into micro-batches whose gradients are
accumulated by a `lax.scan` (`accumulate_gradients`). A loss normalised per micro-batch (a mean over
its tokens) reports its normaliser as aux["weight"] (e.g. the micro-batch's token count);
gradients, loss and metrics are then combined as sum_m w_m x_m / sum_m w_m, which is exactly the
whole batch's token mean however the tokens fall into micro-batches. Without aux["weight"] every
micro-batch weighs the same.

Shardings: pass `state_shardings` / `batch_sharding` (from r1jax.parallel) to compile the step
with explicit in/out shardings; the state is donated.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from r1jax import config as config_lib
from r1jax.model.logprobs import head_kernel, token_logprobs_from_hidden
from r1jax.model.moe import update_router_bias

BIAS_NAME = "e_score_correction_bias"


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray
    params: Any
    opt_state: Any


SCHEDULES = ("constant", "cosine", "linear")  # the learning-rate schedules make_schedule builds


def optimizer_config(**kw) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(dict(
        learning_rate=3e-4, schedule="cosine", warmup_steps=0, total_steps=1000, min_lr_ratio=0.1,
        b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
        moment_dtype="float32",  # Adam moments (and the update math) in this dtype, whatever the param dtype
    ))
    return config_lib.override(c, kw, "optimizer config")


def validate_optimizer(c, what: str = "optimizer config", prefix: str = "") -> None:
    """Fails naming the key (`prefix` + key: e.g. "optimizer.schedule") on a setting make_optimizer
    cannot build: an unknown schedule or moment dtype, a negative rate or step count."""
    config_lib.check_choice(what, prefix + "schedule", c.schedule, SCHEDULES)
    config_lib.check_choice(what, prefix + "moment_dtype", c.get("moment_dtype", "float32"), config_lib.DTYPES)
    for k in ("learning_rate", "warmup_steps", "weight_decay", "grad_clip", "eps"):
        if not c[k] >= 0:
            raise ValueError(f"{what}: {prefix}{k}={c[k]!r} must be >= 0")
    for k in ("b1", "b2"):
        if not 0 <= c[k] < 1:
            raise ValueError(f"{what}: {prefix}{k}={c[k]!r} must be in [0, 1)")


def make_schedule(c) -> optax.Schedule:
    if c.schedule == "constant":
        main = optax.constant_schedule(c.learning_rate)
    elif c.schedule == "cosine":
        main = optax.cosine_decay_schedule(c.learning_rate, max(c.total_steps - c.warmup_steps, 1), alpha=c.min_lr_ratio)
    elif c.schedule == "linear":
        main = optax.linear_schedule(c.learning_rate, c.learning_rate * c.min_lr_ratio,
                                     max(c.total_steps - c.warmup_steps, 1))
    else:
        raise ValueError(f"optimizer config: schedule={c.schedule!r} is not {' | '.join(SCHEDULES)}")
    if c.warmup_steps:
        return optax.join_schedules([optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps), main],
                                    [c.warmup_steps])
    return main


def _labels(params):
    """'frozen' for router biases, 'no_decay' for norms/biases/1-D, else 'decay'."""

    def lab(path, x):
        names = [getattr(p, "key", str(p)) for p in path]
        if names[-1] == BIAS_NAME:
            return "frozen"
        if names[-1] in ("bias", "weight") or x.ndim <= 1:
            return "no_decay"
        return "decay"

    return jax.tree_util.tree_map_with_path(lab, params)


def with_state_dtype(inner: optax.GradientTransformation, dtype) -> optax.GradientTransformation:
    """Runs `inner` on gradients/params cast to `dtype`, so its state (Adam mu and nu) is `dtype`.

    optax.adamw's `mu_dtype` covers only the first moment (nu follows the params), so bf16 params
    would get a bf16 second moment; this keeps both moments fp32. The returned updates are in
    `dtype`; `optax.apply_updates` casts the sum back to each param's dtype. A no-op for params
    already in `dtype`.
    """
    if dtype is None:
        return inner
    dtype = jnp.dtype(dtype)

    def cast(tree):
        return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def init(params):
        return inner.init(cast(params))

    def update(updates, state, params=None):
        return inner.update(cast(updates), state, None if params is None else cast(params))

    return optax.GradientTransformation(init, update)


def make_optimizer(c=None) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and a schedule; no decay on norms/biases; router bias frozen.

    Moments and update math in `c.moment_dtype` (fp32 by default, also for bf16 params)."""
    c = c or optimizer_config()
    sched = make_schedule(c)

    def adamw(wd):
        return optax.adamw(sched, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=wd)

    inner = optax.multi_transform(
        {"decay": adamw(c.weight_decay), "no_decay": adamw(0.0), "frozen": optax.set_to_zero()}, _labels)
    if c.grad_clip:
        inner = optax.chain(optax.clip_by_global_norm(c.grad_clip), inner)
    return with_state_dtype(inner, c.get("moment_dtype"))


def init_train_state(params, tx) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


# ----------------------------------------------------------------------------------- losses


def cross_entropy(logits, targets, mask):
    """Per-token CE in float32. logits [b, s, V], targets/mask [b, s] -> (sum of loss, count)."""
    lf = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(lf, axis=-1)
    tgt = jnp.take_along_axis(lf, targets[..., None], axis=-1)[..., 0]
    m = mask.astype(jnp.float32)
    return ((lse - tgt) * m).sum(), m.sum()


def lm_loss(params, batch, model, *, mtp_weight=None, balance_alpha=None, chunk: int = 0):
    """Next-token cross entropy over `loss_mask`, + lambda * MTP loss + alpha * balance loss.

    batch: input_ids [b, s], targets [b, s] (= input_ids shifted left), loss_mask [b, s] (1 where
    the target is trained on), optional positions / segment_ids [b, s] for packed sequences.
    The MTP head at position i predicts targets[i + 1] (token i + 2) within the same segment.
    chunk > 0: the LM head runs `chunk` positions at a time (r1jax.model.logprobs): the full
    [b, s, vocab] logits are never built; the same loss.
    """

    cfg = model.cfg
    mtp_weight = cfg.mtp_loss_weight if mtp_weight is None else mtp_weight
    balance_alpha = cfg.aux_loss_alpha if balance_alpha is None else balance_alpha
    seg = batch.get("segment_ids")
    mo = model.apply({"params": params}, batch["input_ids"], batch.get("positions"), seg, output=True,
                     compute_mtp=bool(mtp_weight and cfg.num_nextn_predict_layers), head=chunk <= 0)
    out, aux = (mo.logits if chunk <= 0 else mo.hidden), mo.aux

    def ce_sum(x, targets, mask):  # x: logits [b, s, V] or (chunk > 0) final hidden states [b, s, d]
        if chunk <= 0:
            return cross_entropy(x, targets, mask)
        lp, _ = token_logprobs_from_hidden(x, head_kernel(params, cfg), targets, chunk=chunk)
        m = mask.astype(jnp.float32)
        return -(lp * m).sum(), m.sum()

    mask = batch["loss_mask"]
    s, n = ce_sum(out, batch["targets"], mask)
    ce = s / jnp.maximum(n, 1.0)
    loss = ce
    metrics = {"ce": ce, "tokens": n}
    mtp_out = aux.get("mtp_logits", aux.get("mtp_hidden"))
    if mtp_out is not None:
        t2 = jnp.concatenate([batch["targets"][:, 1:], jnp.zeros_like(batch["targets"][:, :1])], axis=1)
        m2 = jnp.concatenate([mask[:, 1:], jnp.zeros_like(mask[:, :1])], axis=1) * mask
        if seg is not None:
            same = jnp.concatenate([seg[:, 1:] == seg[:, :-1], jnp.zeros_like(seg[:, :1], bool)], axis=1)
            m2 = m2 * same
        s2, n2 = ce_sum(mtp_out, t2, m2)
        # DeepSeek-V3's L_MTP = -(1/T) sum_i log P: over the main loss's token count T, so that
        # micro-batches weighted by T accumulate to the big batch's gradient (mtp_ce, the
        # logged figure, is the mean over the MTP module's own positions)
        loss = loss + mtp_weight * s2 / jnp.maximum(n, 1.0)
        metrics["mtp_ce"] = s2 / jnp.maximum(n2, 1.0)
    if balance_alpha:
        loss = loss + balance_alpha * aux["balance_loss"]
    metrics["balance_loss"] = aux["balance_loss"]
    metrics["loss"] = loss
    out = {"metrics": metrics, "weight": n}  # the CE is a mean over n tokens: accumulate weighted by n
    for k in ("load", "mtp_load"):
        if k in aux:
            out[k] = aux[k]
    return loss, out


# -------------------------------------------------------------------------------- the step


def apply_router_bias_update(params, load, mtp_load, rate):
    """Moves every router's correction bias by the sign rule (outside the gradient): each leaf named
    BIAS_NAME by the load of its stack, `load` [n_moe, E] under "moe_layers", `mtp_load` [E] under
    "mtp". A bias whose load is None (or rate 0) stays; every other leaf is returned as it is."""
    if not rate:
        return params
    loads = {"moe_layers": load, "mtp": mtp_load}

    def update(path, x):
        keys = [getattr(k, "key", None) for k in path]
        ld = loads.get(keys[0])
        if keys[-1] != BIAS_NAME or ld is None:
            return x
        return update_router_bias(x, ld, rate)

    return jax.tree_util.tree_map_with_path(update, params)


def _split_micro(batch, n):
    def f(x):
        if x.shape[0] % n:
            raise ValueError(f"batch dim {x.shape[0]} is not divisible by grad_accum={n}")
        return x.reshape((n, x.shape[0] // n) + x.shape[1:])

    return jax.tree.map(f, batch)


def _weighted(grad_fn, params, mb):
    """One micro-batch's (grads, loss, metrics) times its weight w = aux["weight"] (1 without), the
    counts (load, mtp_load) as they are, and w."""
    (l, a), g = grad_fn(params, mb)
    a = dict(a)
    w = jnp.asarray(a.pop("weight", 1.0), jnp.float32)
    scale = lambda t: jax.tree.map(lambda x: (x * w).astype(x.dtype), t)  # noqa: E731
    return scale(g), l * w, scale(a["metrics"]), {k: v for k, v in a.items() if k != "metrics"}, w


def _apply(state: TrainState, grads, loss, aux, *, tx, router_bias_update_rate: float):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = apply_router_bias_update(params, aux.get("load"), aux.get("mtp_load"), router_bias_update_rate)
    metrics = dict(aux["metrics"])
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["loss"] = loss
    if "load" in aux:
        ld = aux["load"].astype(jnp.float32)
        metrics["max_load_ratio"] = (ld.max(-1) / jnp.maximum(ld.mean(-1), 1e-9)).mean()
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def _normalise(acc):
    grads, loss, metrics, rest, wsum = acc
    inv = 1.0 / jnp.maximum(wsum, 1e-30)
    grads = jax.tree.map(lambda g: (g * inv).astype(g.dtype), grads)
    return grads, loss * inv, dict(rest, metrics=jax.tree.map(lambda m: m * inv, metrics))


def accumulate_gradients(grad_fn: Callable, params, batch, n: int):
    """Gradient accumulation over `n` micro-batches -> (loss, aux, grads).

    grad_fn(params, micro_batch) -> ((loss, aux), grads), e.g. `jax.value_and_grad(loss, has_aux=True)`.
    n == 1: grad_fn on the whole batch (its aux as it is). n > 1: every leaf of `batch` is split along
    its leading axis into n micro-batches (which must divide it), a `lax.scan` runs grad_fn on each,
    and grads, loss and aux["metrics"] are combined as sum_m w_m x_m / sum_m w_m with w_m =
    aux["weight"] (1 without); the other aux entries (the expert loads) are summed and "weight" is
    dropped. The memory is one micro-batch's activations plus one set of gradient accumulators."""
    if n == 1:
        (loss, aux), grads = grad_fn(params, batch)
        return loss, aux, grads
    micro = _split_micro(batch, n)

    def body(acc, mb):
        return jax.tree.map(jnp.add, acc, _weighted(grad_fn, params, mb)), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(lambda p, b: _weighted(grad_fn, p, b), params, first))
    acc, _ = jax.lax.scan(body, zeros, micro)
    grads, loss, aux = _normalise(acc)
    return loss, aux, grads


def train_step(state: TrainState, batch, *, model, loss_fn: Callable, tx, grad_accum: int = 1,
               router_bias_update_rate: float = 0.0):
    """Pure step: gradients (accumulated over micro-batches), optimizer update, router-bias update."""
    grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, model), has_aux=True)
    loss, aux, grads = accumulate_gradients(grad_fn, state.params, batch, grad_accum)
    return _apply(state, grads, loss, aux, tx=tx, router_bias_update_rate=router_bias_update_rate)


class AccumStep:
    """The update over a list of micro-batches whose number changes from call to call (packed GRPO:
    r1jax.rl.packed), compiled once: `zeros` makes the accumulators, `accumulate(acc, params, mb)` adds
    a micro-batch's weighted gradients, loss and metrics (one program for every micro-batch of the same
    shapes, compiled at the first call whatever the count) and
    `finish(state, acc)` divides by the summed weights and applies the optimizer and the router-bias
    update (a second program). The same sums as train_step's scan, in a Python loop:

        step = AccumStep(model, loss_fn, tx, router_bias_update_rate=1e-3)
        state, metrics = step(state, [mb0, mb1, mb2])

    `grad_sharding` (the params' shardings, on a mesh) pins the accumulated gradients there; `context`
    is entered around every call (a mesh's use_mesh)."""

    def __init__(self, model, loss_fn: Callable, tx, *, router_bias_update_rate: float = 0.0, grad_sharding=None,
                 state_shardings=None, context=None):

        grad_fn = jax.value_and_grad(lambda p, b: loss_fn(p, b, model), has_aux=True)
        self._context = context or contextlib.nullcontext

        def accumulate(acc, params, mb):
            new = jax.tree.map(jnp.add, acc, _weighted(grad_fn, params, mb))
            if grad_sharding is not None:
                new = (jax.lax.with_sharding_constraint(new[0], grad_sharding),) + tuple(new[1:])
            return new

        def zeros(params, mb):
            shapes = jax.eval_shape(lambda p, b: _weighted(grad_fn, p, b), params, mb)
            z = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            if grad_sharding is not None:
                z = (jax.lax.with_sharding_constraint(z[0], grad_sharding),) + tuple(z[1:])
            return z

        def finish(state, acc):
            grads, loss, aux = _normalise(acc)
            return _apply(state, grads, loss, aux, tx=tx, router_bias_update_rate=router_bias_update_rate)

        kw = {}
        if state_shardings is not None:
            kw = {"out_shardings": (state_shardings, None)}
        self.zeros = jax.jit(zeros)
        self.accumulate = jax.jit(accumulate, donate_argnums=(0,))
        self.finish = jax.jit(finish, donate_argnums=(0,), **kw)

    def __call__(self, state: TrainState, micro_batches):
        if not micro_batches:
            raise ValueError("AccumStep: no micro-batches")
        with self._context():
            acc = self.zeros(state.params, micro_batches[0])
            for mb in micro_batches:
                acc = self.accumulate(acc, state.params, mb)
            return self.finish(state, acc)

    def trace_counts(self) -> dict:
        """How many programs each part compiled (a test asserts one each across changing lengths)."""
        return {k: getattr(self, k)._cache_size() for k in ("zeros", "accumulate", "finish")}


def make_train_step(model, loss_fn: Callable, tx, *, grad_accum: int = 1, router_bias_update_rate: float = 0.0,
                    state_shardings=None, batch_sharding=None, donate: bool = True):
    """`jax.jit` of `train_step` with the state donated and, if given, explicit in/out shardings."""
    fn = functools.partial(train_step, model=model, loss_fn=loss_fn, tx=tx, grad_accum=grad_accum,
                               router_bias_update_rate=router_bias_update_rate)
    kw = {}
    if state_shardings is not None:
        kw["in_shardings"] = (state_shardings, batch_sharding)
        kw["out_shardings"] = (state_shardings, None)
    return jax.jit(lambda s, b: fn(s, b), donate_argnums=(0,) if donate else (), **kw)
