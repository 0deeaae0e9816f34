"""Rollout engine: greedy parity with transformers, cache size, sampler/trainer log-prob agreement,
top-p/top-k frequencies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import r1jax
from r1jax import config as config_lib
from r1jax.generate import engine
from r1jax.generate.sampling import filter_logits, sample
from r1jax.model import Transformer, init_cache, init_params
from r1jax.rl.grpo import token_logprobs

from hf_models import make_hf_model

jax.config.update("jax_default_matmul_precision", "highest")


def _prompts(seed=0, lens=(5, 11, 3, 8)):
    rs = np.random.RandomState(seed)
    return [list(rs.randint(2, 97, n)) for n in lens]


@pytest.mark.parametrize("kind,kw", [("deepseek_v3", {}), ("qwen2", {}), ("llama", {})])
def test_greedy_matches_transformers(kind, kw, tmp_path):
    import torch

    hf = make_hf_model(kind, str(tmp_path), **kw)
    model, params = r1jax.from_pretrained(tmp_path)
    prompts = _prompts()
    out = r1jax.generate(model, params, prompts, max_new_tokens=64, temperature=0.0)
    for p, toks in zip(prompts, out.tokens):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([p]), max_new_tokens=64, min_new_tokens=64, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(p):].tolist()
        assert toks == ref
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
    for temp in (1.0, 0.7):
        out = r1jax.generate(model, params, prompts, max_new_tokens=12, temperature=temp, top_p=0.9, seed=3, n=2)
        for j, (toks, lps) in enumerate(zip(out.tokens, out.logprobs)):
            seq = prompts[out.prompt_index[j]] + toks
            ids = jnp.asarray([seq])
            logits = model.apply({"params": params}, ids) / temp
            ref = token_logprobs(logits[:, :-1], ids[:, 1:])[0, len(seq) - len(toks) - 1:]
            np.testing.assert_allclose(lps, np.asarray(ref), atol=1e-5)


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
    before = engine.compile_count()
    r1jax.generate(model, params, _prompts(5, (6, 9)), max_new_tokens=8, temperature=0.0)  # same buckets
    assert engine.compile_count() == before


def test_top_k_top_p_frequencies_match_renormalized_distribution():
    logits = jnp.log(jnp.asarray([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]]))
    n = 20000
    rngs = jax.random.split(jax.random.PRNGKey(0), n)
    p = np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    for top_p, top_k, keep in ((0.75, 0, 3), (1.0, 2, 2), (0.9, 3, 3), (0.5, 0, 2)):
        toks, _ = jax.vmap(lambda r: sample(logits, r, 1.0, top_p, top_k))(rngs)
        freq = np.bincount(np.asarray(toks)[:, 0], minlength=6) / n
        expect = np.r_[p[:keep] / p[:keep].sum(), np.zeros(6 - keep)]
        # 5 sigma of a binomial proportion: a wrong nucleus (e.g. dropping the crossing token) fails
        assert np.all(np.abs(freq - expect) <= 5 * np.sqrt(expect * (1 - expect) / n) + 1e-9), (top_p, top_k, freq)
    kept = np.isfinite(np.asarray(filter_logits(logits, 0.75, 0))) & (np.asarray(filter_logits(logits, 0.75)) > -1e29)
    assert kept.sum() == 3
