"""Format reward, language-consistency reward, reward registry and weighted combination."""
import math

import pytest

from r1jax.rewards import (
    REWARDS,
    combine_rewards,
    get_reward,
    format_reward,
    language_consistency_reward,
    register_language,
)
from r1jax.rewards.language import chain_of_thought, words


# --------------------------------------------------------------------------------------------
# format: R1-Zero template
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>2+2 is 4</think><answer>4</answer>", 1.0),
        ("<think>\n2+2 is 4\n</think>\n<answer>\n4\n</answer>", 1.0),
        ("  \n<think> a </think>  \n\t <answer> 4 </answer> \n\n", 1.0),
        ("<think>a</think><answer>4</answer> trailing words", 0.0),
        ("preamble <think>a</think><answer>4</answer>", 0.0),
        ("<think>a</think> between <answer>4</answer>", 0.0),
        ("<answer>4</answer><think>a</think>", 0.0),
        ("<think>a</think>", 0.0),
        ("<answer>4</answer>", 0.0),
        ("<think>a</think><answer>   </answer>", 0.0),
        ("<think>  </think><answer>4</answer>", 0.0),
        ("<think>a</think><think>b</think><answer>4</answer>", 0.0),
        ("<think>a<think>b</think><answer>4</answer>", 0.0),
        ("<think>a</think><answer>4</answer><answer>5</answer>", 0.0),
        ("<think>a</think><answer>4</answer></answer>", 0.0),
        ("<think>a</think><answer>4", 0.0),
        ("", 0.0),
    ],
)
def test_format_r1_zero(completion, expected):
    assert format_reward(completion) == expected
    assert format_reward(completion, template="r1_zero") == expected


def test_format_r1_zero_think_in_prompt():
    assert format_reward("2+2 is 4\n</think>\n<answer>4</answer>", think_in_prompt=True) == 1.0
    # the prompt already opened the block: opening it again is a repeated tag
    assert format_reward("<think>2+2</think><answer>4</answer>", think_in_prompt=True) == 0.0
    assert format_reward("</think><answer>4</answer>", think_in_prompt=True) == 0.0  # empty reasoning
    assert format_reward("2+2 is 4 <answer>4</answer>", think_in_prompt=True) == 0.0


# --------------------------------------------------------------------------------------------
# format: R1 chat template
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>reasoning</think>The answer is 4.", 1.0),
        ("<think>\nreasoning\n</think>\n\n**Answer**: $\\boxed{4}$", 1.0),
        ("<think>reasoning</think><answer>4</answer>", 1.0),
        ("<think>reasoning</think>   \n", 0.0),  # empty answer
        ("<think>reasoning</think>", 0.0),
        ("The answer is 4.", 0.0),
        ("hello <think>reasoning</think> 4", 0.0),
        ("<think>a</think> 4 <think>b</think> 5", 0.0),
        ("<think>a</think> 4 </think>", 0.0),
    ],
)
def test_format_r1(completion, expected):
    assert format_reward(completion, template="r1") == expected


def test_format_r1_think_in_prompt_and_bad_template():
    assert format_reward("reasoning\n</think>\nThe answer is 4.", "r1", think_in_prompt=True) == 1.0
    assert format_reward("reasoning, no close. The answer is 4.", "r1", think_in_prompt=True) == 0.0
    with pytest.raises(ValueError, match="unknown template 'r2'"):
        format_reward("x", template="r2")


# --------------------------------------------------------------------------------------------
# language consistency
# --------------------------------------------------------------------------------------------
def test_language_en_and_zh_shares():
    assert language_consistency_reward("<think>First add the two numbers.</think>", "en") == 1.0
    assert language_consistency_reward("<think>先把两个数相加</think><answer>4</answer>", "zh") == 1.0
    # 4 English words + 4 CJK characters -> 50 % each
    mixed = "<think>add the two numbers 两个数字</think><answer>4</answer>"
    assert language_consistency_reward(mixed, "en") == pytest.approx(0.5)
    assert language_consistency_reward(mixed, "zh") == pytest.approx(0.5)
    # digits, punctuation and math do not count as words
    assert language_consistency_reward("<think>x = 3 + 4 = 7, so x is 7.</think>", "en") == 1.0
    # Latin letters with accents are Latin script; Cyrillic is not
    assert language_consistency_reward("<think>café naïve привет мир</think>", "en") == pytest.approx(0.5)


def test_language_only_the_chain_of_thought_counts():
    c = "<think>think in English</think><answer>答案是四</answer>"
    assert language_consistency_reward(c, "en") == 1.0
    # prompt opened the think block: CoT is everything before </think>
    assert language_consistency_reward("reason here</think> 答案", "en") == 1.0
    # unclosed block: everything after <think>
    assert chain_of_thought("<think>still thinking") == "still thinking"
    assert chain_of_thought("no tags at all") == "no tags at all"


def test_language_no_words_scores_zero_and_unknown_language_fails():
    assert language_consistency_reward("<think></think><answer>4</answer>", "en") == 0.0
    assert language_consistency_reward("<think>1 + 2 = 3</think>", "zh") == 0.0
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        language_consistency_reward("<think>hi</think>", "xx")


def test_register_language_toy_vocabularies():
    vocab_a = {"blip", "blop", "zig"}
    vocab_b = {"foo", "bar", "baz"}
    register_language("toy_a", lambda w: w in vocab_a)
    register_language("toy_b", lambda w: w in vocab_b)
    c = "<think>blip blop foo zig</think><answer>3</answer>"
    assert language_consistency_reward(c, "toy_a") == pytest.approx(0.75)
    assert language_consistency_reward(c, "toy_b") == pytest.approx(0.25)
    # a custom tokenizer: tokens with digits, split on whitespace
    register_language("toy_tok", lambda w: w.startswith("t"), tokenizer=str.split)
    assert language_consistency_reward("<think>t1 t2 x3 t4</think>", "toy_tok") == pytest.approx(0.75)
    with pytest.raises(TypeError):
        register_language("bad", "not callable")


def test_words_splitter():
    assert words("Hello, 世界! x=3") == ["Hello", "世", "界", "x"]
    assert words("don't") == ["don", "t"]


# --------------------------------------------------------------------------------------------
# registry and weighted combination
# --------------------------------------------------------------------------------------------
def test_registry_names_the_builtin_rewards():
    import ml_collections

    assert {"accuracy", "format", "language", "code", "preference"} <= set(REWARDS)
    c = ml_collections.ConfigDict(dict(format_template="r1_zero", language="en"))
    fmt = get_reward("format")
    assert fmt(["<think>a</think><answer>1</answer>", "x"], [{}, {}], config=c) == [1.0, 0.0]
    # a record's "language" wins over the config's default
    assert get_reward("language")(["<think>abc</think>", "<think>中</think>", "<think>中</think>"],
                                  [{}, {}, {"language": "zh"}], config=c) == [1.0, 0.0, 1.0]
    assert get_reward("accuracy")(["<answer>3</answer>", "<answer>4</answer>"], [{"answer": 3}, {"answer": "3"}],
                                  config=c) == [1.0, 0.0]
    with pytest.raises(KeyError, match="unknown reward"):
        get_reward("no_such_reward")


def test_combine_rewards_weighted_sum_and_means():
    scores = {"accuracy": [1.0, 0.0, None, 1.0], "format": [1.0, 1.0, 1.0, 0.0], "language": [0.5, 1.0, 1.0, 0.0]}
    weights = {"accuracy": 1.0, "format": 0.5, "language": 0.0}
    total, means = combine_rewards(scores, weights)
    assert total == [1.5, 0.5, None, 1.0]  # None: a weighted reward is unknown -> skip the sample
    assert means["accuracy"] == pytest.approx(2 / 3)
    assert means["format"] == pytest.approx(0.75)
    assert means["language"] == pytest.approx(0.625)  # logged even with weight 0
    # a None in a weight-0 reward does not void the sample
    total, means = combine_rewards({"a": [1.0], "b": [None]}, {"a": 2.0, "b": 0.0})
    assert total == [2.0] and math.isnan(means["b"])
    total, means = combine_rewards({"a": []}, {"a": 1.0})
    assert total == [] and math.isnan(means["a"])


def test_combine_rewards_fails_early_on_bad_config():
    with pytest.raises(KeyError, match="'code'"):
        combine_rewards({"accuracy": [1.0]}, {"accuracy": 1.0, "code": 1.0})
    with pytest.raises(KeyError, match="'format'"):
        combine_rewards({"accuracy": [1.0], "format": [1.0]}, {"accuracy": 1.0})
    with pytest.raises(ValueError, match="differ in length"):
        combine_rewards({"accuracy": [1.0], "format": [1.0, 0.0]}, {"accuracy": 1.0, "format": 1.0})


def test_registry_custom_rewards(tmp_path, monkeypatch):
    import ml_collections

    from r1jax.rewards import compute_rewards, register_reward

    (tmp_path / "my_rewards_mod.py").write_text("def n_chars(texts, records):\n    return [float(len(t)) for t in texts]\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    @register_reward("test_scaled")
    def scaled(texts, records, *, config, step=None):  # gets the config and the step
        return [config.k * (step or 0) for _ in texts]

    try:
        c = ml_collections.ConfigDict(dict(rewards={"test_scaled": 1.0, "my_rewards_mod:n_chars": 0.5}, k=3.0))
        scores, totals = compute_rewards(c, ["ab", "abcd"], [{}, {}], step=2)
        assert scores == {"test_scaled": [6.0, 6.0], "my_rewards_mod:n_chars": [2.0, 4.0]}
        assert totals == [7.0, 8.0]
        assert register_reward("test_scaled", scaled) is scaled  # the same function again: fine
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_scaled", lambda texts, records: [])
        with pytest.raises(ValueError, match="dot"):
            register_reward("a.b", scaled)
    finally:
        from r1jax.rewards.registry import REWARDS

        REWARDS.pop("test_scaled", None)
        import sys

        sys.modules.pop("my_rewards_mod", None)
