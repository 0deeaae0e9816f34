"""Rollout engine: greedy parity with transformers, cache size, sampler/trainer log-prob agreement,
top-p/top-k frequencies."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib
from r1jax.backends import cpu_compile
from r1jax.generation import programs
from r1jax.generation.sampling import filter_logits, sample
from r1jax.model import Transformer, init_cache, init_params
from r1jax.model.logprobs import token_logprobs_reference

from hf_models import make_hf_model
from numerics import assert_close, first_disagreement

jax.config.update("jax_default_matmul_precision", "highest")


def _prompts(seed=0, lens=(5, 11, 3, 8)):
    rs = np.random.RandomState(seed)
    return [list(rs.randint(2, 97, n)) for n in lens]


@pytest.mark.parametrize("kind,kw", [("deepseek_v3", {}), ("qwen2", {}), ("llama", {})])
def test_greedy_matches_transformers(kind, kw, tmp_path):
    """64 greedy tokens per prompt equal transformers' greedy tokens, with the same log-probs.

    Two implementations' logits differ by float error (~1e-6 of their scale here), so where the
    reference's top-2 logits are a near-tie (qwen2 has a step with a gap of 2e-5 of the scale) another
    machine may pick the other token: the sequences may part there only (numerics.first_disagreement:
    the gap must be < 1e-5 of the logits' scale; a wrong model's first wrong token is no such tie),
    and are compared up to that step."""
    import torch

    hf = make_hf_model(kind, str(tmp_path), **kw)
    model, params = r1jax.from_pretrained(tmp_path)
    prompts = _prompts()
    out = r1jax.generate(model, params, prompts, max_new_tokens=64, temperature=0.0, eos_id=())  # no stop
    compared = 0
    for i, (p, toks, lps) in enumerate(zip(prompts, out.tokens, out.logprobs)):
        with torch.no_grad():
            r = hf.generate(torch.tensor([p]), max_new_tokens=64, min_new_tokens=64, do_sample=False,
                            eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        ref = r.sequences[0, len(p):].tolist()
        logits = torch.stack(r.logits)[:, 0].float().numpy()  # [64, vocab]: the logits that chose ref[t]
        n = first_disagreement(toks, ref, logits, rtol=1e-5, err_msg=f"{kind} prompt {i}")
        compared += n
        # the sampler's log-probs of the agreeing tokens are transformers' log_softmax
        ref_lp = torch.log_softmax(torch.from_numpy(logits), -1).numpy()[np.arange(n), ref[:n]]
        assert_close(lps[:n], ref_lp, rtol=1e-5, err_msg=f"{kind} prompt {i} log-probs")
    assert compared >= len(prompts) * 64 // 2, compared  # a parting at a near-tie is rare, not the rule
    assert out.finish_reason == ["length"] * 4


def test_latent_cache_bytes_per_token_per_layer():
    cfg = config_lib.tiny_moe()
    cache = init_cache(cfg, batch=2, max_len=32, dtype=jnp.bfloat16)
    n_layers = cfg.num_hidden_layers
    total = sum(x.nbytes for x in jax.tree.leaves(cache))
    assert total / (2 * 32 * n_layers) == (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2
    v3 = config_lib.deepseek_v3_671b()
    shapes = jax.eval_shape(lambda: init_cache(v3, 1, 8, jnp.bfloat16))
    per = sum(np.prod(s.shape) * 2 for s in jax.tree.leaves(shapes)) / (8 * 61)
    assert per == 576 * 2  # versus 128 heads x (192 + 128) x 2 bytes for a full K/V cache


def test_sampler_logprobs_equal_training_forward():
    cfg = config_lib.tiny_moe()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(2))
    prompts = _prompts(1)
    forward = jax.jit(lambda ids: model.apply({"params": params}, ids))
    for temp in (1.0, 0.7):
        out = r1jax.generate(model, params, prompts, max_new_tokens=12, temperature=temp, top_p=0.9, seed=3, n=2)
        # every prompt + completion, right-padded into one batch (causal: padding after a sequence
        # does not change its logits), scored by one training forward pass
        seqs = [prompts[out.prompt_index[j]] + toks for j, toks in enumerate(out.tokens)]
        width = max(len(x) for x in seqs)
        ids = jnp.asarray([x + [0] * (width - len(x)) for x in seqs])
        lp_all = token_logprobs_reference(forward(ids)[:, :-1], ids[:, 1:], temperature=temp)
        for j, (toks, lps) in enumerate(zip(out.tokens, out.logprobs)):
            start = len(seqs[j]) - len(toks) - 1
            assert_close(lps, np.asarray(lp_all[j, start:start + len(toks)]), rtol=1e-5, err_msg=f"T={temp} seq {j}")


def test_n_samples_share_prefill_and_are_reproducible():
    cfg = config_lib.tiny_qwen2()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    a = r1jax.generate(model, params, _prompts(2), max_new_tokens=10, temperature=1.0, seed=7, n=3)
    b = r1jax.generate(model, params, _prompts(2), max_new_tokens=10, temperature=1.0, seed=7, n=3)
    assert a.tokens == b.tokens and len(a.tokens) == 12
    assert a.prompt_index == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert len({tuple(t) for t in a.tokens[:3]}) > 1  # the 3 samples of prompt 0 differ


def test_stops_at_eos_per_sequence():
    cfg = config_lib.tiny_qwen2()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    greedy = r1jax.generate(model, params, _prompts(3), max_new_tokens=20, temperature=0.0)
    # make a greedy token that first appears at position j >= 1 of some sequence the EOS
    i, j = next((i, j) for i, t in enumerate(greedy.tokens) for j in range(1, 20) if t[j] not in t[:j])
    eos = greedy.tokens[i][j]
    out = r1jax.generate(model, params, _prompts(3), max_new_tokens=20, temperature=0.0, eos_id=eos)
    assert out.tokens[i] == greedy.tokens[i][: j + 1] and out.finish_reason[i] == "eos"
    for t, r in zip(out.tokens, out.finish_reason):
        assert (r == "eos") == (eos in t) and (r == "length") == (len(t) == 20)
        if eos in t:
            assert t.index(eos) == len(t) - 1


def test_recompiles_are_bucketed():
    cfg = config_lib.tiny_qwen2()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    r1jax.generate(model, params, _prompts(4, (3, 4)), max_new_tokens=8, temperature=0.0)
    before = programs.compile_count()
    r1jax.generate(model, params, _prompts(5, (6, 9)), max_new_tokens=8, temperature=0.0)  # same buckets
    assert programs.compile_count() == before


def test_top_k_top_p_frequencies_match_renormalized_distribution():
    logits = jnp.log(jnp.asarray([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]))
    n = 20000
    rngs = jax.random.split(jax.random.PRNGKey(0), n)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    for top_p, top_k, keep in ((1.0, 0, 6), (0.75, 0, 3), (1.0, 2, 2), (0.9, 3, 3), (0.5, 0, 2)):
        toks, _ = jax.vmap(lambda r: sample(logits, r, 1.0, top_p, top_k))(rngs)
        freq = np.bincount(np.asarray(toks)[:, 0], minlength=6) / n
        expect = np.r_[p[:keep] / p[:keep].sum(), np.zeros(6 - keep)]
        # 5 sigma of a binomial proportion: a wrong nucleus (e.g. dropping the crossing token) fails
        assert np.all(np.abs(freq - expect) <= 5 * np.sqrt(expect * (1 - expect) / n) + 1e-9), (top_p, top_k, freq)
    kept = np.isfinite(np.asarray(filter_logits(logits, 0.75, 0))) & (np.asarray(filter_logits(logits, 0.75)) > -1e29)
    assert kept.sum() == 3


def test_inverse_cdf_draw_matches_distribution_across_blocks():
    """The blocked inverse-CDF draw over a vocabulary of several blocks (with a partial last block
    and zero-probability entries) has the frequencies of the distribution: chi-square at a fixed seed."""
    from r1jax.generation.sampling import categorical_inverse_cdf

    rs = np.random.RandomState(0)
    v = 300  # blocks of 128: 3 blocks, the last one partial
    p = rs.gamma(0.5, size=v)
    p[rs.rand(v) < 0.3] = 0.0  # filtered tokens (e.g. outside top-p)
    p[200:260] = 0.0  # a whole empty stretch across a block boundary
    n = 200000
    rows = jnp.asarray(np.tile(p, (8, 1)), jnp.float32)  # 8 rows per draw, unnormalized
    draws = jax.vmap(lambda r: categorical_inverse_cdf(rows, r))(jax.random.split(jax.random.PRNGKey(3), n // 8))
    freq = np.bincount(np.asarray(draws).reshape(-1), minlength=v)
    assert freq[p == 0].sum() == 0, "a zero-probability token was drawn"
    expect = n * p / p.sum()
    big = expect >= 5
    chi2 = ((freq[big] - expect[big]) ** 2 / expect[big]).sum()
    dof = big.sum() - 1
    assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)  # ~6 sigma of the chi-square; a draw shifted by one index fails
    # a row whose mass sits in one token always returns it, and a leading zero block is skipped
    one = np.zeros((2, v), np.float32)
    one[0, 299] = 1.0
    one[1, 130] = 2.0
    toks = categorical_inverse_cdf(jnp.asarray(one), jax.random.PRNGKey(0))
    assert np.asarray(toks).tolist() == [299, 130]


@pytest.mark.parametrize("preset", ["tiny_moe", "tiny_qwen2"])
def test_unstacked_layers_give_the_stacked_models_samples(preset):
    """generate with per-layer params and caches (the CPU default) samples exactly what the
    stacked (nn.scan) model samples, with the same log-probs: greedy and at T=1 from one seed."""
    cfg = getattr(config_lib, preset)()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(5))
    prompts = _prompts(4)
    for temp in (0.0, 1.0):
        a = r1jax.generate(model, params, prompts, max_new_tokens=16, temperature=temp, seed=2, n=2,
                           unstack_layers=False)
        b = r1jax.generate(model, params, prompts, max_new_tokens=16, temperature=temp, seed=2, n=2,
                           unstack_layers=True)
        # exact tokens from two programs: safe here, the greedy top-2 logit gaps are >= 1.4e-3 of the
        # logits' scale and a T=1 draw flips only if its uniform lands within ~1e-6 of a CDF step
        assert a.tokens == b.tokens
        for x, y in zip(a.logprobs, b.logprobs):
            assert_close(x, y, rtol=1e-5, err_msg=f"T={temp}")
    # the unstacked params are the stacked layers' slices
    from r1jax.model import unstack_layers

    u = unstack_layers(params, cfg)
    stack = "moe_layers" if "moe_layers" in params else "dense_layers"
    n = jax.tree.leaves(params[stack])[0].shape[0]
    for i in range(n):
        jax.tree.map(lambda s, l, i=i: np.testing.assert_array_equal(np.asarray(s[i]), np.asarray(l)), params[stack],
                     u[f"{stack}_{i}"])
    with pytest.raises(KeyError, match="dense_layers"):
        unstack_layers({"embed_tokens": params["embed_tokens"]}, cfg)


def test_decode_attention_over_a_cache_prefix_equals_the_whole_cache():
    """over_cache_prefix picks the smallest of L, L/2, L/4, L/8 slots that holds every query and
    gives what attention over all L slots gives (MLA absorbed and GQA), for maxima in each bucket."""
    from r1jax.model.attention import attend, cache_mask, over_cache_prefix
    from r1jax.model.mla import absorbed_attention

    rs = np.random.RandomState(0)
    f = lambda *s: jnp.asarray(rs.randn(*s).astype(np.float32))  # noqa: E731
    b, h, nope, rope_d, r, vd, L = 3, 4, 8, 4, 16, 8, 128
    q_nope, q_rope, latent = f(b, 1, h, nope), f(b, 1, h, rope_d), f(b, L, r + rope_d)
    w_uk, w_uv = f(r, h, nope), f(r, h, vd)
    q, k, v = f(b, 1, h, 8), f(b, L, 2, 8), f(b, L, 2, 8)
    mla = lambda pos, t: absorbed_attention(q_nope, q_rope, latent[:, :t], cache_mask(pos, t), w_uk, w_uv, 0.3, r)  # noqa: E731
    gqa = lambda pos, t: attend(q, k[:, :t], v[:, :t], cache_mask(pos, t), 0.3, num_kv_groups=2)  # noqa: E731
    used = []
    for top in (3, 15, 16, 40, 70, 127):  # buckets 16, 16, 32, 64, 128, 128
        pos = jnp.asarray([[top], [0], [top // 2]], jnp.int32)
        for fn in (mla, gqa):
            whole = fn(pos, L)
            got = jax.jit(lambda p, fn=fn: over_cache_prefix(lambda t: fn(p, t), L, p))(pos)
            assert_close(got, whole, rtol=1e-5, err_msg=f"top={top} {'mla' if fn is mla else 'gqa'}")
            sizes = []
            over_cache_prefix(lambda t: sizes.append(t) or fn(pos, t), L, pos)
            used.append(sizes)
    assert used[0] == [16, 32, 64, 128]  # the branches traced: at most 4, down to L/8
    assert over_cache_prefix(lambda t: jnp.float32(t), 16, jnp.zeros((1, 1), jnp.int32)) == 16  # too short to split


@pytest.mark.parametrize("preset", ["tiny_moe", "tiny_qwen2"])
def test_prefill_logits_at_one_position_per_row(preset):
    """Transformer(..., logits_at=[b]) gives the full forward's logits at those positions only
    ([b, 1, vocab]) and writes the same cache (what generate's prefill uses)."""
    cfg = getattr(config_lib, preset)()
    params = init_params(cfg, jax.random.PRNGKey(3))
    model = Transformer(cfg, mode="prefill")
    ids = jnp.asarray(np.random.RandomState(1).randint(2, cfg.vocab_size, (3, 12)), jnp.int32)
    at = jnp.asarray([11, 0, 6], jnp.int32)
    cache = init_cache(cfg, 3, 16)
    full, _, c_full, _ = model.apply({"params": params}, ids, cache=cache)
    some, _, c_some, _ = model.apply({"params": params}, ids, cache=cache, logits_at=at)
    assert some.shape == (3, 1, cfg.vocab_size)
    assert_close(some[:, 0], full[jnp.arange(3), at], rtol=1e-5)
    # (two programs: equal up to float order; a cache row not written or misplaced is O(1) off)
    jax.tree.map(lambda a, b: assert_close(a, b, rtol=1e-6, err_msg="cache"), c_some, c_full)


def test_decode_compiler_options_and_their_fallback():
    """The decode program's XLA:CPU options are used when the jaxlib knows them; an unknown option
    falls back to the plain program (same result) instead of failing generation."""
    f = lambda x: jnp.tanh(x) @ x.T  # noqa: E731
    x = jnp.asarray(np.random.RandomState(0).randn(8, 8).astype(np.float32))
    ref = np.asarray(jax.jit(f)(x))
    for opts in (cpu_compile.CPU_DECODE_COMPILER_OPTIONS, {"xla_r1jax_no_such_option": True}, None):
        assert_close(cpu_compile.jit_with_cpu_options(f, opts)(x), ref, rtol=1e-5, err_msg=str(opts))
    bad = cpu_compile.jit_with_cpu_options(lambda x: x.reshape(3, -1), {"xla_r1jax_no_such_option": True})
    with pytest.raises(TypeError):  # other errors are not swallowed
        bad(x)


def test_generation_stops_on_the_checkpoints_eos_set_by_default(tmp_path):
    """EOS ids from config.json and generation_config.json (a list, as Instruct models have) end a
    sequence by default; eos_id=() runs to max_new_tokens."""
    make_hf_model("qwen2", str(tmp_path))
    model0, params = r1jax.from_pretrained(tmp_path)
    prompts = _prompts(4)
    free = r1jax.generate(model0, params, prompts, max_new_tokens=16, temperature=0.0, eos_id=())
    assert all(len(t) == 16 for t in free.tokens)
    # two EOS ids that the free run emits at different steps (one from each file)
    e1, e2 = free.tokens[0][5], free.tokens[1][9]
    assert e1 != e2
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["eos_token_id"] = int(e1)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [int(e2), int(e1)]}))
    model, params = r1jax.from_pretrained(tmp_path)
    assert model.cfg.eos_token_id == (int(e1), int(e2))
    out = r1jax.generate(model, params, prompts, max_new_tokens=16, temperature=0.0)
    for toks, ref, why in zip(out.tokens, free.tokens, out.finish_reason):
        stop = next((i for i, t in enumerate(ref) if t in (e1, e2)), None)
        if stop is None:
            assert toks == ref and why == "length"
        else:
            assert toks == ref[:stop + 1] and why == "eos"
    assert out.finish_reason[0] == out.finish_reason[1] == "eos"
