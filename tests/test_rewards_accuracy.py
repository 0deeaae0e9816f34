"""Math accuracy reward: MATH-500 reference solutions, hostile LaTeX, equivalence unit cases."""
import json
import os
import random
import subprocess
import sys
import textwrap
import time

import pytest

from r1jax.rewards import accuracy_reward, accuracy_rewards, extract_answer
from r1jax.rewards.pool import get_pool


def _math500(shared_data):
    with open(shared_data / "math500_test.jsonl") as f:
        return [json.loads(line) for line in f]


def _derangement(n, seed=0):
    rng = random.Random(seed)
    perm = list(range(n))
    while True:
        rng.shuffle(perm)
        if all(perm[i] != i for i in range(n)):
            return perm


# --------------------------------------------------------------------------------------------
# MATH-500: every reference solution is right against its own answer, wrong against another's
# --------------------------------------------------------------------------------------------
def test_math500_reference_solutions_are_correct(shared_data):
    rows = _math500(shared_data)
    assert len(rows) == 500
    t0 = time.perf_counter()
    scores = accuracy_rewards([r["solution"] for r in rows], [r["answer"] for r in rows])
    dt = time.perf_counter() - t0
    bad = [(i, rows[i]["answer"]) for i, s in enumerate(scores) if s != 1.0]
    print(f"\nMATH-500 positives: {500 - len(bad)}/500 correct in {dt:.2f} s")
    assert len(bad) <= 2, f"judged wrong/skipped: {bad}"  # >= 99.5 %


def test_math500_shuffled_answers_are_wrong(shared_data):
    rows = _math500(shared_data)
    perm = _derangement(len(rows), seed=0)
    pairs = [
        (rows[i]["solution"], rows[j]["answer"])
        for i, j in enumerate(perm)
        if rows[i]["answer"].strip() != rows[j]["answer"].strip()
    ]
    assert len(pairs) >= 480
    t0 = time.perf_counter()
    scores = accuracy_rewards([p[0] for p in pairs], [p[1] for p in pairs])
    dt = time.perf_counter() - t0
    bad = [(pairs[k][1], extract_answer(pairs[k][0]), s) for k, s in enumerate(scores) if s != 0.0]
    print(f"\nMATH-500 negatives: {len(pairs) - len(bad)}/{len(pairs)} judged wrong in {dt:.2f} s")
    assert len(bad) <= int(0.005 * len(pairs)), f"judged right/skipped: {bad}"


# --------------------------------------------------------------------------------------------
# hostile input: bounded time, worker replaced, pool keeps working
# --------------------------------------------------------------------------------------------
def test_power_tower_returns_at_its_deadline():
    """sympy would compute 9^9^9^9 for many minutes: the task is cut at its 1.5 s deadline. The bound
    leaves room for a loaded 2-core machine (2.8 s seen with the other test worker busy) while still
    failing on a guard that does not fire."""
    pool = get_pool()
    assert accuracy_reward(r"\boxed{\frac{1}{2}}", "0.5") == 1.0  # pool warm: start-up is not timed
    restarts = pool.restarts
    t0 = time.perf_counter()
    r = accuracy_reward(r"The answer is \boxed{9^{9^{9^{9}}}}", "5")
    dt = time.perf_counter() - t0
    assert r == 0.0
    assert dt < 6.0, f"took {dt:.2f} s"
    assert pool.restarts == restarts + 1  # the stuck worker was killed and replaced
    assert accuracy_reward(r"\boxed{\frac{3}{4}}", "0.75") == 1.0  # and the pool still works


def test_batch_with_hostile_item_scores_the_rest():
    comps = [r"\boxed{\frac{2}{4}}", r"\boxed{9^{9^{9^{9}}}}", r"\boxed{\sqrt{2}/2}", r"\boxed{7}", "no answer"]
    golds = ["1/2", "3", r"\frac{\sqrt2}{2}", "8", r"\pi"]
    t0 = time.perf_counter()
    assert accuracy_rewards(comps, golds) == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert time.perf_counter() - t0 < 5.0


def test_fast_path_does_not_need_workers(monkeypatch):
    import r1jax.rewards.accuracy as acc

    def no_pool(*a, **k):
        raise AssertionError("plain numbers must be judged in-process, without the sympy workers")

    n = 20000
    comps = [f"<think>adding</think><answer>{i}</answer>" for i in range(n)]
    golds = [str(i if i % 3 else i + 1) for i in range(n)]
    monkeypatch.setattr(acc, "get_pool", no_pool)
    t0 = time.perf_counter()
    scores = accuracy_rewards(comps, golds)
    dt = time.perf_counter() - t0
    assert scores == [1.0 if i % 3 else 0.0 for i in range(n)]
    print(f"\n{n} integer comparisons in {dt:.2f} s")
    monkeypatch.undo()
    assert accuracy_reward(r"\boxed{5.0}", "5") == 1.0
    assert accuracy_reward(r"\boxed{-3}", "3") == 0.0


def test_workers_are_confined_when_root():
    pool = get_pool()
    accuracy_reward(r"\boxed{x+1}", "1+x")
    rep = pool.jail_report
    if os.geteuid() != 0:
        pytest.skip(f"not root: math workers run unconfined ({rep})")
    assert rep.get("unprivileged") is True, rep
    assert rep.get("netns") is True and rep.get("readonly_fs") is True, rep


def test_workers_exit_with_the_interpreter():
    code = textwrap.dedent(
        """
        from r1jax.rewards import accuracy_rewards
        from r1jax.rewards.pool import get_pool
        assert accuracy_rewards([r"\\boxed{\\frac12}"], ["0.5"]) == [1.0]
        print(" ".join(str(w.proc.pid) for w in get_pool()._workers), flush=True)
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert pids
    deadline = time.time() + 5
    while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.05)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not alive, f"workers left behind: {alive}"


# --------------------------------------------------------------------------------------------
# equivalence unit cases
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # fractions / decimals
        (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
        (r"\boxed{\frac12}", "0.5", 1.0),
        (r"\boxed{\dfrac{1}{2}}", "1/2", 1.0),
        (r"\boxed{\frac{1}{3}}", "0.5", 0.0),
        # nested braces
        (r"so \boxed{\frac{\sqrt{3}}{2}}.", r"\frac{\sqrt3}{2}", 1.0),
        (r"\boxed{\frac{a}{b}}", r"\frac{a}{b}", 1.0),
        (r"\boxed{\frac{a}{b}}", r"\frac{b}{a}", 0.0),
        # intervals
        (r"\boxed{[1, 2)}", "[1,2)", 1.0),
        (r"\boxed{(1, 2]}", "[1,2)", 0.0),
        (r"\boxed{(-\infty, 3)}", r"(-\infty,3)", 1.0),
        # sets
        (r"\boxed{\{3,1,2\}}", r"\{1,2,3\}", 1.0),
        (r"\boxed{\{1,2\}}", r"\{1,2,3\}", 0.0),
        # symbolic equality, units and text
        (r"\boxed{x^2+2x+1}", "(x+1)^2", 1.0),
        (r"\boxed{10 \text{ cm}}", "10", 1.0),
        (r"\boxed{\$32,\!348}", r"\$32,\!348", 1.0),
        (r"\boxed{1,000}", "1000", 1.0),
        (r"\boxed{\text{(B)}}", r"\text{(B)}", 1.0),
        (r"\boxed{\text{(C)}}", r"\text{(B)}", 0.0),
        # boxed variants
        (r"\boxed 5", "5", 1.0),
        (r"\fbox{5}", "5", 1.0),
        (r"first \boxed{4} then \boxed{5}", "5", 1.0),
        (r"first \boxed{4} then \boxed{5}", "4", 0.0),
        # <answer> is preferred over \boxed
        (r"\boxed{8} <answer>7</answer>", "7", 1.0),
        (r"<answer>7</answer> \boxed{8}", "8", 0.0),
        (r"<answer>6</answer><answer>7</answer>", "7", 1.0),
        (r"<answer>The answer is $\frac{3}{4}$.</answer>", "0.75", 1.0),
        (r"<answer>so \boxed{\frac{3}{4}}</answer>", "3/4", 1.0),
        # nothing to extract
        ("I do not know.", "5", 0.0),
        ("I do not know.", r"\frac{1}{2}", 0.0),
        ("", "5", 0.0),
    ],
)
def test_equivalence(completion, gold, expected):
    assert accuracy_reward(completion, gold) == expected


@pytest.mark.parametrize("gold", ["", "   ", "}{", r"\frac{"])
def test_unparseable_gold_is_skipped(gold):
    assert accuracy_reward(r"\boxed{5}", gold) is None
    assert accuracy_reward("no answer at all", gold) is None


@pytest.mark.parametrize(
    "completion, expected",
    [
        (r"x \boxed{\frac{a}{b}} y", r"\frac{a}{b}"),
        (r"\boxed{\left\{ 1, 2 \right\}}", r"\left\{ 1, 2 \right\}"),
        (r"\boxed{{1}+{2}}", "{1}+{2}"),
        (r"\boxed 42.", "42."),
        (r"$\boxed 7$", "7"),
        (r"\fbox{3}", "3"),
        (r"\boxed{unclosed", None),
        (r"\boxed{1} and \boxed{unclosed", "1"),
        (r"<answer> $x+1$ </answer>", "x+1"),
        (r"<think>a \boxed{1}</think><answer>2</answer>", "2"),
        ("<answer>\n</answer>", None),
        ("plain text", None),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_batched_length_mismatch_fails_early():
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        accuracy_rewards(["a", "b"], ["1"])


def test_worker_killed_while_idle_is_replaced_without_losing_a_task():
    pool = get_pool()
    assert accuracy_reward(r"\boxed{\frac{1}{2}}", "0.5") == 1.0
    for w in pool._workers:
        if w.ready:
            w.proc.kill()
            w.proc.wait()
    comps = [r"\boxed{\frac{1}{2}}", r"\boxed{\sqrt{4}}", r"\boxed{x+1}"]
    assert accuracy_rewards(comps, ["0.5", "2", "1+x"]) == [1.0, 1.0, 1.0]


# --------------------------------------------------------------------------------------------
# GSM8K-style numeric answers: units, currency, separators, lead-ins - and what must stay wrong
# --------------------------------------------------------------------------------------------
def _gsm8k(shared_data):
    with open(shared_data / "gsm8k_test.jsonl") as f:
        rows = [json.loads(line) for line in f]
    for r in rows:
        r["gold"] = r["answer"].rsplit("####", 1)[1].strip()  # as written: "18", "1,600", "-10"
        r["n"] = int(r["gold"].replace(",", ""))
    return rows


def _right_forms(n):
    """The gold n written as a model might write it: every one must score 1.0."""
    return [
        f"<answer>{n} dollars</answer>",
        f"<answer>{n} eggs</answer>",
        f"<answer>{n} cm</answer>",
        f"<answer>${n:,}</answer>",
        f"<answer>\\${n:,}.00</answer>",
        f"<answer>{n:,} eggs in total</answer>",
        f"<answer>{n}%</answer>",
        f"<answer>{n}.</answer>",
        f"<answer>**{n}**</answer>",
        f"<answer>The answer is {n}.</answer>",
        f"<answer>The final answer is ${n:,}$</answer>",
        f"<answer>She has 3 boxes of 6, so the answer is {n} eggs.</answer>",
        f"<think>3 * 6 = 18; so 17 + 1</think> The final answer is ${n}$. I hope it is correct.",
        f"<think>17 or 19?</think>\n**Answer:** {n:,}",
        f"Answer: {n} dollars",
        f"#### {n:,}",
        f"\\boxed{{{n} \\text{{ dollars}}}}",
        f"\\boxed{{\\${n:,}}}",
    ]


def _wrong_forms(n):
    """Wrong numbers, several numbers, substrings of the gold, garbage: every one must score 0.0."""
    return [
        f"<answer>{n + 1} dollars</answer>",
        f"<answer>${n - 1:,}</answer>",
        f"<answer>{n * 10 if n else 7}</answer>",  # the gold with a 0 appended
        f"<answer>1{abs(n)}</answer>",  # the gold with a digit prepended
        f"<answer>{n}.5</answer>",
        f"<answer>{n}5 eggs</answer>",
        f"<answer>{n},0000</answer>",  # a malformed thousands group
        f"<answer>{n} or {n + 1}</answer>",
        f"<answer>{n + 1} or {n}</answer>",
        f"<answer>between {n - 1} and {n + 1}</answer>",
        f"<answer>{n - 1}, {n}, {n + 1}</answer>",
        f"<answer>{n - 1},{n},{n + 1}</answer>",
        f"<answer>${n} and {n + 1} cents</answer>",
        f"<answer>{n} {n}</answer>",
        f"<answer>The answer is {n} or maybe {n + 2}.</answer>",
        f"<answer>The answer is {n - 1}.</answer> The answer is {n}.",  # the <answer> block decides
        f"<answer>{n} " + "eggs and more eggs " * 10 + "</answer>",  # long garbage around the gold
        f"<think>so the answer is {n}</think>",  # an answer inside the reasoning only
        f"<think>so the answer is {n}",  # unfinished reasoning
        f"The answer is {n}. To check: 3 * 6 = 18 and 2 + 2 = 4.",  # more numbers after the lead-in
        f"I think it is {n}.",  # no <answer>, no box, no lead-in: no answer
    ]


def test_gsm8k_numeric_answers_right_and_wrong(shared_data, monkeypatch):
    """Every GSM8K gold, written in 18 right ways (units, currency, separators, percent, trailing period,
    lead-ins inside and outside <answer>, bold, boxed) scores 1.0 against the gold as written ("1,600")
    and as the data pipeline gives it ("1600"); 21 wrong ways (wrong number, several numbers, substrings,
    garbage, no answer) score 0.0. All of it is decided in-process, without the math_verify workers."""
    import r1jax.rewards.accuracy as acc

    rows = _gsm8k(shared_data)
    assert len(rows) == 1319
    assert any("," in r["gold"] for r in rows) and any(r["n"] < 0 for r in rows)

    def no_pool(*a, **k):
        raise AssertionError("numeric GSM8K answers must be judged in-process")

    monkeypatch.setattr(acc, "get_pool", no_pool)
    comps, golds, want, what = [], [], [], []
    for r in rows:
        for form_set, expected in ((_right_forms(r["n"]), 1.0), (_wrong_forms(r["n"]), 0.0)):
            for k, c in enumerate(form_set):
                for g in (r["gold"], r["gold"].replace(",", "")):
                    comps.append(c)
                    golds.append(g)
                    want.append(expected)
                    what.append((expected, k))
    t0 = time.perf_counter()
    scores = accuracy_rewards(comps, golds)
    dt = time.perf_counter() - t0
    bad = [(what[i], golds[i], comps[i], s) for i, s in enumerate(scores) if s != want[i]]
    print(f"\nGSM8K numeric forms: {len(comps) - len(bad)}/{len(comps)} judged as expected in {dt:.2f} s")
    assert not bad, bad[:10]
    assert sum(w == 1.0 for w in want) == 1319 * 18 * 2 and sum(w == 0.0 for w in want) == 1319 * 21 * 2


def test_gsm8k_reference_solutions(shared_data):
    """A GSM8K reference solution ("... #### 1,600") is right against its own gold, wrong against another's."""
    rows = _gsm8k(shared_data)
    perm = _derangement(len(rows), seed=1)
    pairs = [(r["answer"], r["gold"], 1.0) for r in rows]
    pairs += [(rows[i]["answer"], rows[j]["gold"], 0.0) for i, j in enumerate(perm) if rows[i]["n"] != rows[j]["n"]]
    assert len(pairs) > 2500
    scores = accuracy_rewards([p[0] for p in pairs], [p[1] for p in pairs])
    bad = [(p[1], p[0][-40:], s) for p, s in zip(pairs, scores) if s != p[2]]
    assert not bad, bad[:10]


@pytest.mark.parametrize(
    "completion, gold, expected",
    [
        # the case, and units / currency / separators
        ("<answer>18 dollars</answer>", "18", 1.0),
        ("<answer>$1,234.50</answer>", "1234.5", 1.0),
        ("<answer>\\$1,234.50</answer>", "1,234.5", 1.0),
        ("<answer>1,000</answer>", "1000", 1.0),
        ("<answer>1000</answer>", "1,000", 1.0),
        ("<answer>1,000,000 grains</answer>", "1000000", 1.0),
        (r"<answer>$1\,000$</answer>", "1000", 1.0),
        (r"<answer>$32,\!348$</answer>", "32348", 1.0),
        ("<answer>1{,}000</answer>", "1000", 1.0),
        ("<answer>18.0 kg</answer>", "18", 1.0),
        ("<answer>18 cm^2</answer>", "18", 1.0),
        ("<answer>18 m²</answer>", "18", 1.0),
        ("<answer>18 km/h</answer>", "18", 1.0),
        (r"<answer>90^\circ</answer>", "90", 1.0),
        ("<answer>(18)</answer>", "18", 1.0),
        ("<answer>+18</answer>", "18", 1.0),
        # signs
        ("<answer>-$10</answer>", "-10", 1.0),
        ("<answer>\u221210 degrees</answer>", "-10", 1.0),
        ("<answer>a loss of -10 dollars</answer>", "-10", 1.0),
        ("<answer>$10</answer>", "-10", 0.0),
        ("<answer>18-year-old</answer>", "18", 1.0),
        # percent: the number of percent, or its hundredth (math_verify's reading), nothing else
        ("<answer>25%</answer>", "25", 1.0),
        (r"<answer>25\%</answer>", "0.25", 1.0),
        ("<answer>25 percent</answer>", "25", 1.0),
        ("<answer>25%</answer>", "2.5", 0.0),
        ("<answer>25</answer>", "0.25", 0.0),
        # lead-ins: the number after the last one decides, alone
        ("<answer>Answer: 18</answer>", "18", 1.0),
        ("<answer>The answer is 17. The answer is 18.</answer>", "18", 1.0),
        ("<answer>The answer is 17. The answer is 18.</answer>", "17", 0.0),
        ("<answer>17 18 19 - the answer is: 18</answer>", "18", 1.0),
        ("<answer>She sells 9 eggs for $18</answer>", "18", 0.0),
        ("<answer>18 dollars and 50 cents</answer>", "18", 0.0),
        ("The final answer is $18$. I hope it is correct.", "18", 1.0),
        ("<think>17?</think>\n**Final Answer:** **18**", "18", 1.0),
        ("<think>x</think> #### 18", "18", 1.0),
        ("<think>x</think><answer></answer> The answer is 18", "18", 0.0),  # an (empty) answer block decides
        ("<answer>17</answer> The answer is 18", "18", 0.0),
        ("The answer is 17. Check: 3 * 6 = 18", "18", 0.0),  # fallback: a plain number or nothing
        ("The answer is 18", r"\frac{1}{2}", 0.0),  # no fallback for golds that are not numbers
        # wrong numbers, substrings, several numbers
        ("<answer>17 dollars</answer>", "18", 0.0),
        ("<answer>18.5</answer>", "18", 0.0),
        ("<answer>180</answer>", "18", 0.0),
        ("<answer>118</answer>", "18", 0.0),
        ("<answer>1.8</answer>", "18", 0.0),
        ("<answer>18,000</answer>", "18", 0.0),
        ("<answer>1,0000</answer>", "10000", 0.0),
        ("<answer>1,0000</answer>", "1", 0.0),
        ("<answer>18,5</answer>", "18", 0.0),
        ("<answer>1.8.0</answer>", "1.8", 0.0),
        ("<answer>18 or 19</answer>", "18", 0.0),
        ("<answer>18 or 19</answer>", "19", 0.0),
        ("<answer>between 17 and 19</answer>", "18", 0.0),
        ("<answer>17, 18, 19</answer>", "18", 0.0),
        ("<answer>17,18,19</answer>", "18", 0.0),
        ("<answer>18, 18</answer>", "18", 0.0),
        ("<answer>$18$ or $19$</answer>", "18", 0.0),
        (r"<answer>18 \text{ or } 19</answer>", "18", 0.0),
        (r"<answer>18 \quad 19</answer>", "18", 0.0),
        ("<answer>18\n19</answer>", "18", 0.0),
        ("<answer>18 " + "x" * 200 + "</answer>", "18", 0.0),
        # expressions keep the math_verify path
        (r"<answer>\frac{36}{2}</answer>", "18", 1.0),
        ("<answer>x = 18</answer>", "18", 1.0),
        ("<answer>17-19</answer>", "18", 0.0),
        ("<answer>17-19</answer>", "-2", 1.0),
        ("<answer>18x^2</answer>", "18", 0.0),
        ("<answer>18!</answer>", "18", 0.0),
        (r"<answer>\{17, 18\}</answer>", "18", 0.0),
        (r"\boxed{18 \lor 19}", "18", 0.0),
    ],
)
def test_numeric_answer_forms(completion, gold, expected):
    assert accuracy_reward(completion, gold) == expected


def test_digits_spaced_one_token_at_a_time_are_one_number():
    """The toy tokenizer writes numbers a digit per token ("6 2"): one number, as before; two
    spaced groups are still one joined number (so "18 18" is 1818, not a hedge for 18)."""
    comps = ["<answer>6 2</answer>", "<answer>- 1 2</answer>", "<answer>18 18</answer>", "<answer>1 7 or 1 8</answer>",
             "<answer>6 3</answer>"]
    assert accuracy_rewards(comps, ["62", "-12", "18", "18", "62"]) == [1.0, 1.0, 0.0, 0.0, 0.0]
