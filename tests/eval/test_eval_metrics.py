"""Metric functions on hand-made cases, checked against the paper's definitions."""

import itertools
from fractions import Fraction

import pytest

from eager_core.eval.metrics import (cons_at_k, majority_vote, mean_sequences,
                                     mean_unbiased_pass_at_k, pass_at_k, pass_ratio, summarize,
                                     unbiased_pass_at_k)

T, F = True, False


def test_pass_at_k_counts_prompts_with_any_correct():
    assert pass_at_k([[F, T], [F, F], [T]]) == pytest.approx(2 / 3)
    # A prompt that got no sequences at all is wrong, not skipped.
    assert pass_at_k([[T], []]) == 0.5


def test_pass_ratio_is_mean_of_per_prompt_fractions():
    # Not the pooled fraction (3/7): each prompt weighs the same.
    assert pass_ratio([[T, F], [F, F, F, T], [T]]) == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert pass_ratio([[T, T], []]) == 0.5


def test_majority_vote_tie_goes_to_first_seen():
    assert majority_vote(["3", "5", "5", "3"]) == 0
    assert majority_vote(["5", "3", "3", "5"]) == 0
    assert majority_vote(["7", "5", "3", "3", "5"]) == 1  # 5 and 3 tie at 2; 5 came first


def test_majority_vote_ignores_none_and_groups_equal_numbers():
    assert majority_vote(["5", None, "3", None, "3"]) == 2
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    # "1,234" and "1234.0" are one answer with two votes; "7" has one.
    assert majority_vote(["7", "1,234", "1234.0"]) == 1
    assert majority_vote(["7", "1,234", "1234.0"], key=lambda s: s) == 0


def test_cons_at_k_uses_flag_of_voted_answer():
    answers = [["3", "5", "5"],        # majority 5 (correct)
               ["8", "8", "9"],        # majority 8 (wrong) though 9 is correct
               ["4", "6"],             # tie, first seen 4 is correct
               [None, None]]           # nothing extracted: wrong
    flags = [[F, T, T], [F, F, T], [T, F], [F, F]]
    assert cons_at_k(answers, flags) == pytest.approx(2 / 4)
    assert pass_at_k(flags) == pytest.approx(3 / 4)


def test_cons_at_k_tie_broken_against_correct_answer():
    assert cons_at_k([["6", "4"]], [[F, T]]) == 0.0


def test_k_of_one_metrics_agree():
    flags = [[T], [F], [T], [F]]
    answers = [["1"], ["2"], ["3"], [None]]
    assert pass_at_k(flags) == pass_ratio(flags) == cons_at_k(answers, flags) == 0.5
    assert mean_unbiased_pass_at_k(flags, 1) == 0.5
    assert mean_sequences([1, 1, 1, 1]) == 1.0


def _brute_force_pass_at_k(n: int, c: int, k: int) -> Fraction:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(samples[i] for i in subset) for subset in subsets)
    return Fraction(hits, len(subsets))


def test_unbiased_pass_at_k_matches_brute_force():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = float(_brute_force_pass_at_k(n, c, k))
                assert unbiased_pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_unbiased_pass_at_k_rejects_undefined_cases():
    for n, c, k in [(3, 1, 4), (3, 4, 1), (3, -1, 1), (3, 1, 0)]:
        with pytest.raises(ValueError):
            unbiased_pass_at_k(n, c, k)
    assert mean_unbiased_pass_at_k([[T, F, F], [T]], 2) is None


def test_empty_and_mismatched_inputs_raise():
    for fn in (pass_at_k, pass_ratio, mean_sequences):
        with pytest.raises(ValueError):
            fn([])
    with pytest.raises(ValueError):
        cons_at_k([["1"]], [[T], [F]])
    with pytest.raises(ValueError):
        cons_at_k([["1", "2"]], [[T]])


def test_summarize_reports_every_metric():
    flags = [[T, F, F, F], [F, F], [F, T, T]]
    answers = [["1", "2", "2", None], ["x", None], ["4", "5", "5"]]
    out = summarize(flags, answers, generated_tokens=[40, 10, 30], ks=(1, 2, 3),
                    wall_s=4.0, kv_blocks_peak=17)
    assert out["n_prompts"] == 3
    assert out["pass_at_k"] == pytest.approx(2 / 3)
    assert out["cons_at_k"] == pytest.approx(1 / 3)  # prompt 1 votes "2" (wrong), prompt 3 "5"
    assert out["pass_ratio"] == pytest.approx((0.25 + 0 + 2 / 3) / 3)
    assert out["mean_sequences"] == pytest.approx(3.0)
    assert out["num_tokens"] == 80
    assert out["tokens_per_s"] == pytest.approx(20.0)
    assert out["wall_s"] == 4.0 and out["kv_blocks_peak"] == 17
    assert out["unbiased_pass_at_1"] == pytest.approx((1 / 4 + 0 + 2 / 3) / 3)
    assert out["unbiased_pass_at_2"] == pytest.approx((1 / 2 + 0 + 1.0) / 3)
    assert out["unbiased_pass_at_3"] is None  # prompt 2 has only 2 sequences


def test_summarize_total_tokens_and_missing_optionals():
    out = summarize([[T]], [["1"]], generated_tokens=12)
    assert out["num_tokens"] == 12 and out["tokens_per_s"] is None and out["wall_s"] is None
    out = summarize([[T]], [["1"]], generated_tokens=12, wall_s=2.0, tokens_per_s=99.0)
    assert out["tokens_per_s"] == 99.0  # a measured rate is passed through, not recomputed
    with pytest.raises(ValueError):
        summarize([[T], [F]], [["1"], ["2"]], generated_tokens=[5])
