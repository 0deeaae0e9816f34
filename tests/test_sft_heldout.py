"""r1jax.sft.heldout: teacher-forced held-out CE / token accuracy / exact match of completions,
against a numpy recomputation from the model's logits."""

import jax
import numpy as np

from r1jax import config as config_lib
from r1jax.model import Transformer, init_params
from r1jax.sft.heldout import example_rows, heldout_metrics


def _numpy_metrics(model, params, examples, seq_len, skip):
    ce_sum, right, toks, exact = 0.0, 0, 0, []
    for p, c in examples:
        ids = (list(p) + list(c))[:seq_len]
        logits = np.asarray(model.apply({"params": params}, np.asarray([ids], np.int32)), np.float64)[0]
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        ok = True
        for t in range(len(p) - 1 + skip, len(ids) - 1):
            ce_sum += lse[t] - logits[t, ids[t + 1]]
            hit = int(np.argmax(logits[t]) == ids[t + 1])
            right += hit
            toks += 1
            ok &= bool(hit)
        exact.append(ok)
    return ce_sum / toks, right / toks, float(np.mean(exact))


def test_heldout_metrics_match_numpy():
    cfg = config_lib.tiny_qwen2()
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.RandomState(0)
    examples = [(rng.randint(1, 90, rng.randint(2, 6)).tolist(), rng.randint(1, 90, rng.randint(1, 9)).tolist())
                for _ in range(11)]
    # make three completions exactly what greedy decoding gives (exact = 1 for those)
    for i in range(3):
        p, c = examples[i]
        seq = list(p)
        for _ in range(4):
            seq.append(int(np.argmax(np.asarray(model.apply({"params": params}, np.asarray([seq], np.int32)))[0, -1])))
        examples[i] = (p, seq[len(p):])
    for skip in (0, 1):
        got = heldout_metrics(model, params, examples, seq_len=16, batch_size=4, skip=skip)
        ce, acc, ex = _numpy_metrics(model, params, examples, 16, skip)
        np.testing.assert_allclose(got["ce"], ce, rtol=1e-5)
        np.testing.assert_allclose(got["token_acc"], acc, rtol=1e-6)
        assert got["exact"] == ex and got["examples"] == 11
        assert ex >= 3 / 11  # the greedy completions


def test_example_rows_masks_completion_after_skip():
    rows = example_rows([([5, 6, 7], [8, 9, 10])], seq_len=8, skip=1)
    assert rows["input_ids"][0].tolist() == [5, 6, 7, 8, 9, 10, 0, 0]
    assert rows["targets"][0, :5].tolist() == [6, 7, 8, 9, 10]
    # target index t predicts token t + 1: completion tokens 8, 9, 10 sit at targets 2, 3, 4; skip 1 drops 8
    assert rows["loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
