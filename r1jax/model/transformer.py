"""The decoder: DeepSeek-V3 (MLA + dense-first-k + DeepSeekMoE + MTP) and dense Qwen2/Llama, one code path.

    model = Transformer(cfg)
    logits = model.apply({"params": params}, input_ids)                    # [batch, seq, vocab]
    out = model.apply({"params": params}, input_ids, output=True)          # ModelOutput(logits, hidden, cache, aux)

What a call returns (one rule): the logits array for a plain call (mode="train", `output=False`,
the default); a `ModelOutput` for everything else, i.e. with `output=True` or in a cache mode
(`mode="prefill"` / `"decode"`, whose new cache must come back). A cache mode returns a
ModelOutput whatever `output` says. `head=False` (no LM head: logits None) needs `output=True`.
The plain call is the public entry point (README); everything that wants more than logits (the
aux losses and routes, the hidden states, the cache) reads the named fields of one type.

Layers run under `nn.scan` in two stacks ("dense_layers": the first `first_k_dense_replace`
layers, or all layers of a dense model; "moe_layers": the rest), so compile time and memory do
not grow with depth (`scan_layers=False`, or a CPU stack of <= 8 layers, unrolls the scan: same
params); `remat_policy` wraps the scanned block in `nn.remat`.

Cache mode (generation): `cache` is the pytree of `init_cache(cfg, batch, max_len)` with a
leading layer axis per stack; `mode="prefill"` writes the prompt (which starts at slot 0) and
`mode="decode"` attends over the cache (absorbed MLA). `positions` [batch, seq] are the slots.
These modes take a cache and return a ModelOutput whose `cache` is the new one and whose
aux["route"] [n_moe, batch, seq, k] holds the experts each token chose (the rollout engine
records them for the sampler/trainer agreement).

Unstacked layers (`Transformer(cfg, unstacked=True)`, generation on CPU): each layer is its own
module `<stack>_<i>` taking the params of `unstack_layers(params)` (a copy of each layer's slice,
made once) and its own cache (`init_cache(..., unstacked=True)`: a tuple of per-layer caches
per stack). Same math as the stacked model; it exists because XLA:CPU copies
each layer's weights out of the stacked [n, ...] arrays on every use, which in a decode loop
re-copies all the weights at every generated token (small_moe: ~20% of a decode step).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from r1jax import backends
from r1jax.config import is_moe, num_dense_layers, num_moe_layers
from r1jax.model.attention import GQAttention, init_gqa_cache
from r1jax.model.layers import MLP, LMHead, compute_dtype, normal_init, param_dtype, rms_norm
from r1jax.model.mla import MLA, init_mla_cache
from r1jax.model.moe import MoE

REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

MODES = ("train", "prefill", "decode")


class ModelOutput(NamedTuple):
    """What `Transformer.__call__` returns with `output=True` and in the cache modes (module doc).

    logits: [batch, seq, vocab] in the compute dtype ([batch, 1, vocab] with `logits_at`), the LM
        head applied to `hidden`; None with `head=False`.
    hidden: [batch, seq, hidden] (or [batch, 1, hidden] with `logits_at`): the FINAL-NORMED hidden
        states, i.e. the last layer's output after the final RMSNorm ("norm"), exactly the LM
        head's input (logits = head(hidden)). Always set. The chunked log-probs
        (r1jax.model.logprobs) apply the head to it themselves (`head=False`).
    cache: the new KV cache (same pytree as the one passed) in the cache modes; None in "train".
    aux: a dict of
        "pre_norm_hidden" [batch, seq, hidden]: the last layer's output BEFORE the final norm
            (every position, whatever `logits_at`; the MTP module's input, the reward model's
            features);
        "balance_loss" []: the MoE layers' mean sequence-wise balance loss (0 for a dense model);
        MoE models: "load" [n_moe, E] f32 tokens per expert (the tokens of `token_mask`), "route"
            [n_moe, batch, seq, k] int the experts each token chose, and with moe_impl="ep"
            "ep_dropped" [n_moe] (assignments over capacity);
        mode="train" with the MTP module computed (`compute_mtp`, default: whenever the config has
            one): "mtp_logits" [batch, seq, vocab] (position i predicts token i + 2), or with
            `head=False` "mtp_hidden" [batch, seq, hidden] (the MTP block's output after its own
            final norm, the head's input), and "mtp_load" [E] when the MTP block is MoE.
    """

    logits: Any
    hidden: Any
    cache: Any
    aux: dict


class Block(nn.Module):
    """Pre-norm decoder layer. x: [b, s, hidden] -> (x, (new_cache, aux))."""

    cfg: object
    moe: bool
    mode: str = "train"
    absorb: bool = False
    moe_impl: str | None = None

    @nn.compact
    def __call__(self, x, positions, segment_ids, token_mask, cache):
        cfg = self.cfg
        h = rms_norm(cfg, cfg.hidden_size, "input_layernorm")(x)
        if cfg.model_type == "deepseek_v3":
            a, new_cache = MLA(cfg, mode=self.mode, absorb=self.absorb, name="self_attn")(h, positions, segment_ids,
                                                                                          cache)
        else:
            a, new_cache = GQAttention(cfg, mode=self.mode, name="self_attn")(h, positions, segment_ids, cache)
        x = x + a
        h = rms_norm(cfg, cfg.hidden_size, "post_attention_layernorm")(x)
        if self.moe:
            m, aux = MoE(cfg, impl=self.moe_impl, name="mlp")(h, token_mask)
        else:
            m, aux = MLP(cfg, cfg.intermediate_size, name="mlp")(h), {}
        x = x + m
        x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
        return x, (new_cache, aux)


def _unroll(cfg, n: int) -> int:
    """Unroll factor of a stack's nn.scan (the params keep their stacked [n, ...] layout either way):
    fully unrolled when `scan_layers` is False or the backend asks for it (r1jax.backends.unroll_layers)."""

    if not cfg.scan_layers or backends.unroll_layers(n):
        return max(n, 1)
    return 1


def _stack(cfg, moe: bool, n: int, mode: str, absorb: bool, moe_impl, name: str):
    cls = Block
    if cfg.remat_policy != "none":
        cls = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)

    scanned = nn.scan(
        cls,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0),
        length=n,
        unroll=_unroll(cfg, n),
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return scanned(cfg, moe, mode, absorb, moe_impl, name=name)


class MTP(nn.Module):
    """DeepSeek-V3 multi-token prediction, depth 1.

    h: [b, s, hidden] (main model's last hidden state, before the final norm), next_emb: [b, s,
    hidden] (embedding of token i+1 at position i) -> h' = Block(eh_proj([enorm(next_emb) ;
    hnorm(h)])), normed by its own `shared_head_norm`; the caller applies the shared LM head.
    Position i of the MTP output predicts token i+2.
    """

    cfg: object
    moe_impl: str | None = None

    @nn.compact
    def __call__(self, h, next_emb, positions, segment_ids, token_mask):
        cfg = self.cfg
        e = rms_norm(cfg, cfg.hidden_size, "enorm")(next_emb)
        hh = rms_norm(cfg, cfg.hidden_size, "hnorm")(h)
        x = nn.DenseGeneral(cfg.hidden_size, use_bias=False, dtype=compute_dtype(cfg), param_dtype=param_dtype(cfg),
                            kernel_init=normal_init(cfg, ("mtp_in", "embed")), name="eh_proj")(
            jnp.concatenate([e, hh], axis=-1))
        moe = is_moe(cfg) and cfg.num_hidden_layers >= cfg.first_k_dense_replace
        x, (_, aux) = Block(cfg, moe=moe, moe_impl=self.moe_impl, name="block")(x, positions, segment_ids,
                                                                                token_mask, None)
        return rms_norm(cfg, cfg.hidden_size, "shared_head_norm")(x), aux


class Transformer(nn.Module):
    """input_ids: [batch, seq] int -> logits [batch, seq, vocab], or a ModelOutput (module doc)."""

    cfg: object
    mode: str = "train"  # train | prefill | decode
    absorb: bool = False  # MLA absorbed path without a cache (tests)
    moe_impl: str | None = None  # override cfg.moe_impl
    unstacked: bool = False  # per-layer modules and params (see unstack_layers), per-layer caches

    def __post_init__(self):
        # The config is what r1jax.config.make_config returns: validated and frozen (hashable, so the
        # module can be a static jit argument / cache key). A hand-built ConfigDict is refused rather
        # than frozen here, where a setting that make_config would refuse could slip through.
        if not isinstance(self.cfg, ml_collections.FrozenConfigDict):
            raise TypeError(f"Transformer(cfg): cfg is a {type(self.cfg).__name__}; make model configs with "
                            "r1jax.config.make_config / a preset / from_hf_config (validated, frozen), or change "
                            "one with r1jax.config.replace(cfg, key=value)")
        super().__post_init__()

    @nn.compact
    def __call__(self, input_ids, positions=None, segment_ids=None, *, token_mask=None, cache=None, output=False,
                 compute_mtp=None, logits_at=None, head=True):
        """-> logits [batch, seq, vocab] for a plain train-mode call; a ModelOutput with
        `output=True` or in a cache mode (then `cache`, from init_cache, is required).

        logits_at: optional [batch] int, one position per row: the logits (and ModelOutput.hidden)
        are then computed at that position only ([batch, 1, vocab]). Generation's prefill needs only
        each prompt's last position; small_moe, 32 prompts of 128 tokens: 3.7 s with the head over
        every position (a [4096, 32000] logits array), 1.7 s with it at the last ones.

        token_mask: [batch, seq] bool, the real (non-padding) tokens: only they count in the MoE
        expert load and balance loss (default: every token, or segment_ids > 0).
        compute_mtp: run the MTP module (mode="train", ModelOutput only); default: when the config
        has one.
        head=False (with output=True): skip the LM head: ModelOutput.logits is None (and the MTP
        module's head input is aux["mtp_hidden"]), for a caller that applies the LM head itself to
        ModelOutput.hidden a block at a time (r1jax.model.logprobs)."""
        cfg = self.cfg
        if self.mode not in MODES:
            raise ValueError(f"Transformer: mode={self.mode!r} is not {' | '.join(MODES)}")
        cache_mode = self.mode != "train"
        if cache_mode != (cache is not None):
            raise ValueError(f"Transformer: mode={self.mode!r} " + ("needs a cache (init_cache)" if cache_mode else
                                                                    "takes no cache (prefill / decode do)"))
        if not (head or output or cache_mode):
            raise ValueError("Transformer: head=False returns no logits: pass output=True and read ModelOutput.hidden")
        b, s = input_ids.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        if token_mask is None:
            token_mask = jnp.ones((b, s), bool) if segment_ids is None else segment_ids > 0
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=compute_dtype(cfg), param_dtype=param_dtype(cfg),
                         embedding_init=normal_init(cfg, ("vocab", "embed")), name="embed_tokens")
        x = embed(input_ids)
        x = nn.with_logical_constraint(x, ("batch", "seq", "embed"))
        n_dense, n_moe = num_dense_layers(cfg), num_moe_layers(cfg)
        new_cache, loads, routes, ep_dropped, bal = {}, None, None, None, jnp.zeros((), jnp.float32)
        cache = cache or {}

        def run_stack(x, moe, n, name):
            if not self.unstacked:
                return _stack(cfg, moe, n, self.mode, self.absorb, self.moe_impl, name)(
                    x, positions, segment_ids, token_mask, cache.get(name))
            layer_cache = cache.get(name)
            caches, auxes = [], []
            for i in range(n):
                x, (c, a) = Block(cfg, moe, self.mode, self.absorb, self.moe_impl, name=f"{name}_{i}")(
                    x, positions, segment_ids, token_mask, None if layer_cache is None else layer_cache[i])
                caches.append(c)
                auxes.append(a)
            aux = jax.tree.map(lambda *v: jnp.stack(v), *auxes)  # [n, ...] as the scan stacks it
            return x, (None if layer_cache is None else tuple(caches), aux)

        if n_dense:
            x, (c, _) = run_stack(x, False, n_dense, "dense_layers")
            new_cache["dense_layers"] = c
        if n_moe:
            x, (c, aux) = run_stack(x, True, n_moe, "moe_layers")
            new_cache["moe_layers"] = c
            loads = aux["load"]  # [n_moe, E]
            routes = aux["route"]  # [n_moe, b, s, k]
            ep_dropped = aux.get("ep_dropped")  # [n_moe] with moe_impl="ep"
            bal = aux["balance_loss"].mean()
        pre_norm = x  # [b, s, d], the last layer's output
        if logits_at is not None:
            x = jnp.take_along_axis(x, logits_at[:, None, None].astype(jnp.int32), axis=1)  # [b, 1, d]
        hidden = rms_norm(cfg, cfg.hidden_size, "norm")(x)  # final-normed: the LM head's input
        lm_head = self._head(embed)
        skip_head = not head and not self.is_initializing()  # (init creates the head's params)
        logits = None if skip_head else lm_head(hidden)
        if not (output or cache_mode):
            return logits
        aux = {"pre_norm_hidden": pre_norm, "balance_loss": bal}
        if loads is not None:
            aux["load"] = loads
            aux["route"] = routes
            if ep_dropped is not None:
                aux["ep_dropped"] = ep_dropped
        if not cache_mode and cfg.num_nextn_predict_layers and (compute_mtp is None or compute_mtp):
            # (init_params initialises with output=True, so the MTP params exist)
            next_ids = jnp.concatenate([input_ids[:, 1:], jnp.zeros((b, 1), input_ids.dtype)], axis=1)
            hm, maux = MTP(cfg, moe_impl=self.moe_impl, name="mtp")(pre_norm, embed(next_ids), positions,
                                                                    segment_ids, token_mask)
            if skip_head:
                aux["mtp_hidden"] = hm
            else:
                aux["mtp_logits"] = lm_head(hm)
            if "load" in maux:
                aux["mtp_load"] = maux["load"]
        return ModelOutput(logits=logits, hidden=hidden, cache=new_cache if cache_mode else None, aux=aux)

    def _head(self, embed):
        cfg = self.cfg
        if cfg.tie_word_embeddings:
            return lambda x: embed.attend(x)
        return LMHead(cfg, name="lm_head")


def _layer_stacks(cfg):
    return [(name, n) for name, n in (("dense_layers", num_dense_layers(cfg)), ("moe_layers", num_moe_layers(cfg)))
            if n]


def init_cache(cfg, batch: int, max_len: int, dtype=None, unstacked: bool = False) -> dict:
    """Empty KV cache pytree: MLA latent [n, b, L, kv_lora + rope] or GQA {k, v} [n, b, L, kvh, hd] per stack
    (unstacked: a tuple of n per-layer caches [b, L, ...] per stack, for Transformer(unstacked=True))."""
    dtype = dtype or compute_dtype(cfg)
    out = {}
    for name, n in _layer_stacks(cfg):
        if cfg.model_type == "deepseek_v3":
            one = init_mla_cache(cfg, batch, max_len, dtype)
        else:
            one = init_gqa_cache(cfg, batch, max_len, dtype)
        if unstacked:
            out[name] = tuple(jax.tree.map(jnp.copy, one) for _ in range(n))
        else:
            out[name] = jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), one)
    return out


def unstack_layers(params: dict, cfg) -> dict:
    """Stacked params {"dense_layers": tree [n, ...], "moe_layers": ...} -> the params of
    Transformer(cfg, unstacked=True): {"dense_layers_0": tree, ...}, each layer's slice (a copy
    under jit). The other params are shared as they are."""
    out = {k: v for k, v in params.items() if k not in ("dense_layers", "moe_layers")}
    for name, n in _layer_stacks(cfg):
        if name not in params:
            raise KeyError(f"unstack_layers: params have no {name!r} (keys: {sorted(params)})")
        for i in range(n):
            out[f"{name}_{i}"] = jax.tree.map(lambda a, i=i: a[i], params[name])
    return out

