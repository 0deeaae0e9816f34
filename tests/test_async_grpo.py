"""Asynchronous GRPO's parts: in-flight weight updates in the continuous engine (a request in
progress goes on with the new weights, each token's version recorded)."""

import jax
import numpy as np
import pytest

from r1jax import config as config_lib, generate
from r1jax.model import Transformer, init_params


@pytest.fixture(scope="module")
def two_policies():
    cfg = config_lib.get_preset("tiny_qwen2")
    return Transformer(cfg), init_params(cfg, jax.random.PRNGKey(0)), init_params(cfg, jax.random.PRNGKey(1))


def test_weights_updated_in_the_middle_of_requests(two_policies):
    """6 requests through 2 rows; the source hands version 1 at the second segment boundary. The
    requests in progress then carry versions 0..0 1..1 and equal the version-0 run up to the switch;
    the requests admitted after it are exactly the version-1 run's."""
    model, pa, pb = two_policies
    rs = np.random.RandomState(0)
    prompts = [list(rs.randint(3, 60, 5)) for _ in range(6)]
    kw = dict(max_new_tokens=[6, 14, 9, 11, 4, 8], temperature=1.0, seed=2, n=1, eos_id=(), engine="continuous",
              slots=2)
    ref_a = generate(model, pa, prompts, **kw)
    ref_b = generate(model, pb, prompts, **kw)
    calls = []

    def source():
        calls.append(1)
        return (1, pb) if len(calls) >= 2 else None

    got = generate(model, pa, prompts, weight_source=source, **kw)
    assert got.stats["weight_swaps"] == 1 and got.versions is not None
    mixed = switched_after = 0
    for i, (t, v) in enumerate(zip(got.tokens, got.versions)):
        assert len(v) == len(t) and v == sorted(v) and set(v) <= {0, 1}
        k = v.count(0)  # tokens drawn by version 0
        assert t[:k] == ref_a.tokens[i][:k]
        np.testing.assert_allclose(got.logprobs[i][:k], ref_a.logprobs[i][:k], rtol=1e-5, atol=1e-6)
        if k == 0:
            assert t == ref_b.tokens[i]  # admitted after the swap: the new weights' own request
            switched_after += 1
        elif k < len(t):
            mixed += 1  # in progress at the swap: kept its cache, went on with the new weights
    assert mixed >= 1 and switched_after >= 1
    with pytest.raises(ValueError, match="continuous"):
        generate(model, pa, prompts, weight_source=source, max_new_tokens=4, engine="static")
