"""DeepSeekMoE: sigmoid router with group-limited top-k and a correction bias, shared + routed experts.

Router (DeepSeek-V3 §2.1.2):
    s = sigmoid(x W_r)                                 [tokens, E] (float32)
    choice = s + b   (b = e_score_correction_bias, no gradient)
    groups ranked by the sum of their top-2 `choice`; experts outside the best `topk_group`
    groups are excluded; top-k experts by `choice`
    weights = s[topk] (un-biased), / sum if norm_topk_prob, * routed_scaling_factor

Auxiliary-loss-free balancing: the forward pass returns the per-expert load (tokens routed to each
expert); `update_router_bias(bias, load, rate)` (bias += rate * sign(mean_load - load)) is applied
by the train step outside the gradient. The complementary sequence-wise balance loss
L = alpha * sum_i f_i P_i (per sequence, averaged) is returned too.

Routed experts are evaluated by one of the dispatches of identical math in r1jax.model.experts
("dense" | "ragged" | "grouped" | "blocked" | "cpu"), or with "ep" by expert parallelism with
shard_map over the mesh's `expert` axis (r1jax.model.moe_ep, which uses the same experts module).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax import backends
from r1jax.model.layers import MLP, compute_dtype, normal_init, param_dtype
from r1jax.model.moe_ep import experts_ep


def route(scores: jnp.ndarray, bias: jnp.ndarray, cfg) -> tuple[jnp.ndarray, jnp.ndarray]:
    """scores: [n, E] sigmoid scores, bias: [E] -> (topk_idx [n, k] int32, topk_weight [n, k] f32)."""
    n, e = scores.shape
    k = cfg.num_experts_per_tok
    choice = scores + jax.lax.stop_gradient(bias).astype(scores.dtype)
    if cfg.n_group > 1 and cfg.topk_group < cfg.n_group:
        g = choice.reshape(n, cfg.n_group, e // cfg.n_group)
        group_scores = jax.lax.top_k(g, 2)[0].sum(-1)  # [n, n_group]
        _, gidx = jax.lax.top_k(group_scores, cfg.topk_group)
        gmask = jnp.zeros((n, cfg.n_group), bool).at[jnp.arange(n)[:, None], gidx].set(True)
        emask = jnp.repeat(gmask, e // cfg.n_group, axis=1)
        choice = jnp.where(emask, choice, -jnp.inf)
    _, idx = jax.lax.top_k(choice, k)
    w = jnp.take_along_axis(scores, idx, axis=-1)
    if cfg.norm_topk_prob:
        w = w / (w.sum(-1, keepdims=True) + 1e-20)
    return idx.astype(jnp.int32), w * cfg.routed_scaling_factor


def update_router_bias(bias: jnp.ndarray, load: jnp.ndarray, rate: float) -> jnp.ndarray:
    """Auxiliary-loss-free balancing: bias += rate * sign(mean(load) - load). load: [..., E]."""
    load = load.astype(jnp.float32)
    return (bias + rate * jnp.sign(load.mean(-1, keepdims=True) - load)).astype(bias.dtype)


def sequence_balance_loss(scores, idx, token_mask, cfg) -> jnp.ndarray:
    """DeepSeek-V3's complementary sequence-wise balance loss (without alpha).

    scores: [b, s, E] sigmoid, idx: [b, s, k], token_mask: [b, s]. Per sequence:
    f_i = E / (k T) sum_t 1[i in topk_t], P_i = 1/T sum_t s_it / sum_j s_jt; L = sum_i f_i P_i.
    """
    e, k = scores.shape[-1], cfg.num_experts_per_tok
    m = token_mask.astype(jnp.float32)
    t = jnp.maximum(m.sum(-1), 1.0)  # [b]
    sel = jax.nn.one_hot(idx, e, dtype=jnp.float32).sum(-2) * m[..., None]  # [b, s, E]
    f = sel.sum(1) * e / (k * t[:, None])
    sn = scores / (scores.sum(-1, keepdims=True) + 1e-20) * m[..., None]
    p = sn.sum(1) / t[:, None]
    per_seq = (f * p).sum(-1)  # f carries no gradient (counts of a top-k)
    valid = (m.sum(-1) > 0).astype(jnp.float32)
    return (per_seq * valid).sum() / jnp.maximum(valid.sum(), 1.0)


def resolve_moe_impl(cfg) -> str:
    return backends.moe_dispatch() if cfg.moe_impl == "ragged" else cfg.moe_impl


class MoE(nn.Module):
    """x: [b, s, hidden] -> (y [b, s, hidden], aux {"load": [E], "balance_loss": scalar, "route": [b, s, k]
    int32, the chosen experts of each token}).

    `token_mask` [b, s] excludes padding from the load and the balance loss.
    `impl` overrides cfg.moe_impl ("dense" | "ragged" | "grouped" | "blocked" | "cpu" | "ep").
    """

    cfg: object
    impl: str | None = None

    @nn.compact
    def __call__(self, x, token_mask=None):
        cfg = self.cfg
        b, s, d = x.shape
        e, inter = cfg.n_routed_experts, cfg.moe_intermediate_size
        if token_mask is None:
            token_mask = jnp.ones((b, s), bool)
        w_router = self.param("gate", normal_init(cfg, ("embed", "exp")), (d, e), param_dtype(cfg))
        bias = self.param("e_score_correction_bias",
                          nn.with_logical_partitioning(nn.initializers.zeros, ("exp",)), (e,), jnp.float32)
        scores = jax.nn.sigmoid(jnp.einsum("bsd,de->bse", x.astype(jnp.float32), w_router.astype(jnp.float32)))
        idx, w = route(scores.reshape(-1, e), bias, cfg)
        load = jnp.bincount(idx.reshape(-1), weights=jnp.repeat(token_mask.reshape(-1), idx.shape[1]).astype(
            jnp.float32), length=e)
        bal = sequence_balance_loss(scores, idx.reshape(b, s, -1), token_mask, cfg)

        init = normal_init(cfg, ("exp", "embed", "mlp"))
        wg = self.param("experts_gate_proj", init, (e, d, inter), param_dtype(cfg))
        wu = self.param("experts_up_proj", init, (e, d, inter), param_dtype(cfg))
        wd = self.param("experts_down_proj", normal_init(cfg, ("exp", "mlp", "embed")), (e, inter, d),
                        param_dtype(cfg))
        dt = compute_dtype(cfg)
        wg, wu, wd = wg.astype(dt), wu.astype(dt), wd.astype(dt)
        impl = self.impl or resolve_moe_impl(cfg)
        xf = x.reshape(-1, d)
        if impl == "ep":
            # padding is not dispatched: it would take capacity from real tokens (and count as dropped)
            y, ep_stats = experts_ep(xf, idx, w, wg, wu, wd, cfg, valid=token_mask.reshape(-1))
        else:
            y = backends.expert_fn(impl)(xf, idx, w, wg, wu, wd)
            ep_stats = {}
        y = y.reshape(b, s, d)
        if cfg.n_shared_experts:
            y = y + MLP(cfg, inter * cfg.n_shared_experts, name="shared_experts")(x)
        aux = {"load": load, "balance_loss": bal, "route": idx.reshape(b, s, -1).astype(jnp.int32), **ep_stats}
        return y, aux
