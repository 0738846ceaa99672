"""Metrics: the edges the paper's definitions leave to us, each pinned by an exact value.

Empty input is a ValueError naming the metric (never a ZeroDivisionError or a number); votes skip
what cannot vote; the weighted vote adds weights per answer; the table labels are fixed strings.
"""

from __future__ import annotations

import pytest

from eager_core.eval.metrics import (METRIC_LABELS, cons_at_k, majority_vote, mean_sequences,
                                     mean_unbiased_pass_at_k, pass_at_k, pass_ratio, summarize, weighted_vote)

T, F = True, False


@pytest.mark.parametrize("name,call", [
    ("pass_at_k", lambda: pass_at_k([])),
    ("pass_ratio", lambda: pass_ratio([])),
    ("cons_at_k", lambda: cons_at_k([], [])),
    ("mean_unbiased_pass_at_k", lambda: mean_unbiased_pass_at_k([], 1)),
    ("mean_sequences", lambda: mean_sequences([])),
    ("pass_at_k", lambda: summarize([], [])),
])
def test_no_prompts_is_an_error_naming_the_metric(name, call):
    with pytest.raises(ValueError, match=rf"^{name}: need at least one prompt"):
        call()


def test_mismatched_lengths_name_what_differs():
    with pytest.raises(ValueError, match=r"cons_at_k: 1 prompts of answers but 2 of correctness flags"):
        cons_at_k([["1"]], [[T], [F]])
    with pytest.raises(ValueError, match=r"cons_at_k: prompt 0 has 2 answers but 1 correctness flags"):
        cons_at_k([["1", "2"]], [[T]])
    with pytest.raises(ValueError, match=r"weighted_vote: 2 answers but 1 weights"):
        weighted_vote(["1", "2"], [1.0])
    with pytest.raises(ValueError, match=r"summarize: 1 token counts for 2 prompts"):
        summarize([[T], [F]], [["1"], ["2"]], generated_tokens=[5])


def test_weighted_vote_adds_the_weights_of_each_answer():
    assert weighted_vote(["1", "2", "2"], [3.0, 2.0, 2.0]) == 1      # "2": 4 beats "1": 3
    assert weighted_vote(["1", "2", "2"], [5.0, 2.0, 2.0]) == 0      # "1": 5 beats 4
    assert weighted_vote(["2", "1", "2"], [1.0, 3.0, 1.0]) == 1      # "1": 3 beats "2": 2
    assert weighted_vote(["5", "3", "3", "5"], [1.0, 1.0, 1.0, 1.0]) == 0   # tie: first seen
    assert weighted_vote(["1,234", "7", "1234.0"], [1.0, 1.5, 1.0]) == 0   # one answer by value: 2 > 1.5
    assert weighted_vote(["1,234", "7", "1234.0"], [1.0, 1.5, 1.0], key=lambda s: s) == 1


def test_weighted_vote_skips_what_cannot_vote():
    assert weighted_vote([None, "4", "4"], [9.0, 1.0, 1.0]) == 1     # a None answer does not vote
    assert weighted_vote(["9", "4", "9"], [None, 1.0, None]) == 1    # nor does a None weight
    assert weighted_vote([None, None], [1.0, 1.0]) is None
    assert weighted_vote([], []) is None


def test_majority_vote_returns_the_first_index_of_the_winner():
    assert majority_vote([None, "4", "3", "4"]) == 1
    assert majority_vote(["3", None, "4", "4", "3", "4"]) == 2


def test_pass_ratio_counts_truthy_flags_per_prompt():
    assert pass_ratio([[1, 0, 0, 0], [0, 0]]) == pytest.approx(0.125)


def test_summarize_defaults():
    out = summarize([[T, F]], [["1", "2"]])
    assert out == dict(n_prompts=1, pass_at_k=1.0, cons_at_k=1.0, pass_ratio=0.5, mean_sequences=2.0,
                       num_tokens=None, unbiased_pass_at_1=0.5, wall_s=None, tokens_per_s=None, kv_blocks_peak=None)


def test_metric_labels_are_the_papers():
    assert METRIC_LABELS == {"pass_at_k": "Pass@k", "cons_at_k": "Cons@k", "pass_ratio": "PR",
                             "num_tokens": "#T", "mean_sequences": "#S"}
