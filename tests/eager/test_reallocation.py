"""Reallocation with exact expectations: every allocation and every run below is derived by hand.

budget.py is pure arithmetic, so its answers are written out (lower bounds included: an allocator
that returns zeros, or stops short of the saved budget, fails). The runs use the Markov model of
test_eager_policy.py at temperature 0, where every tree is known in advance:

    [1]  -> {10 (best), 11, 12, 13}  (H4 = 1.386) -> 20 -> {30 (best), 31, 32} (H3 = 1.099) -> 40 -> EOS
    [20] -> {30, 31, 32}  (H3)                    -> 40 -> EOS
    [55] -> EOS

A sequence of [1] is 5 tokens; a branch takes the second-best token at an uncertain step, so [1]
grows to 2 sequences at step 0 and to 4 at step 2 (when theta is below both entropies and the cap
allows). The controller counts a prompt's tokens as it decides: a sequence whose prompt has spent
its token share finishes with "budget"; a fork needs room for its first token.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eager_core import LLM, EagerParams
from eager_core.eager.budget import allocate_extra, saved_budget, select_prompts, split_tokens
from markov_model import EOS, make_markov_checkpoint
from test_eager_policy import CHAIN

# --- budget.py ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method,counts,m,saturated,solved,expected", [
    # eager-adapt: only saturated prompts, floor(saved / n) each, the first ones one more, cap 3M
    ("eager-adapt", [4, 1, 1, 2], 4, [True, False, False, False], None, [8, 0, 0, 0]),    # saved 8
    ("eager-adapt", [4, 4, 1, 1], 4, [True, True, False, False], None, [3, 3, 0, 0]),     # saved 6
    ("eager-adapt", [4, 4, 1, 1, 1], 4, [True, True, False, False, False], None, [5, 4, 0, 0, 0]),  # 9: 4 + 1
    ("eager-adapt", [2] + [1] * 7, 2, [True] + [False] * 7, None, [6] + [0] * 7),          # 7 > cap 3M = 6
    ("eager-adapt", [2, 2], 2, [True, True], None, [0, 0]),                                # nothing saved
    ("eager-adapt", [1, 1], 2, [False, False], None, [0, 0]),                              # nobody saturated
    # eager: unsolved prompts, saturated ones first (then by index), cap M
    ("eager", [4, 1, 1, 2], 4, [True, False, False, False], [False, True, False, False], [3, 0, 3, 2]),
    ("eager", [4, 1, 1, 1], 4, [True, False, False, False], [False] * 4, [3, 2, 2, 2]),    # 9: 2 + 1 to the first
    ("eager", [1, 1, 5], 5, [False, False, True], [False] * 3, [3, 2, 3]),                 # 8: ranks 2, 0, 1
    ("eager", [1, 1, 1, 1], 2, [False] * 4, [False, True, True, True], [2, 0, 0, 0]),      # 4 > cap M = 2
    ("eager", [1, 1], 3, [False, False], [True, True], [0, 0]),                            # all solved
    # the other methods never reallocate
    ("eager-init", [1, 1], 3, [False, False], None, [0, 0]),
    ("parallel", [3, 3], 3, [True, True], None, [0, 0]),
])
def test_allocation_by_hand(method, counts, m, saturated, solved, expected):
    assert allocate_extra(method, counts, m, saturated, solved) == expected


def test_saved_budget_and_selection():
    assert saved_budget([4, 1, 1, 2], 4) == 8
    assert saved_budget([3, 3], 3) == 0
    assert saved_budget([5, 5], 4) == 0   # never negative
    assert select_prompts("eager", [False, True, False, True], [False, False, True, False]) == [1, 3, 0]
    assert select_prompts("eager-adapt", [False, True, False, True], None) == [1, 3]
    assert select_prompts("eager-init", [True], [False]) == select_prompts("parallel", [True], None) == []
    with pytest.raises(AssertionError):
        select_prompts("eager", [True], None)   # "eager" needs labels


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8).flatmap(lambda m: st.tuples(
    st.just(m), st.lists(st.integers(1, m), min_size=1, max_size=12))), st.data())
def test_allocation_spends_all_it_may(m_counts, data):
    """The lower bound: the selected prompts get min(saved, cap * n) in all, spread within 1, the
    earlier ranks first; the rest get nothing."""
    m, counts = m_counts
    saturated = [c >= m for c in counts]
    solved = data.draw(st.lists(st.booleans(), min_size=len(counts), max_size=len(counts)))
    saved = m * len(counts) - sum(counts)
    for method, cap in (("eager", m), ("eager-adapt", 3 * m)):
        extra = allocate_extra(method, counts, m, saturated, solved)
        ranked = select_prompts(method, saturated, solved)
        assert sum(extra) == min(saved, cap * len(ranked))
        assert all(extra[i] == 0 for i in range(len(counts)) if i not in ranked)
        got = [extra[i] for i in ranked]
        assert got == sorted(got, reverse=True) and (not got or got[0] - got[-1] <= 1)


@pytest.mark.parametrize("total,weights,expected", [
    (10, [1, 1, 1], [4, 3, 3]),
    (101, [5, 0, 3], [64, 0, 37]),     # 63 + 37 = 100; the leftover goes to the heaviest
    (5, [1, 2, 1], [1, 3, 1]),         # 1 + 2 + 1 = 4; the leftover goes to weight 2
    (7, [1, 1, 1, 1], [2, 2, 2, 1]),   # ties: the first ones
    (3, [0, 0], [0, 0]),
    (3, [], []),
    (0, [2, 1], [0, 0]),
])
def test_split_tokens_by_hand(total, weights, expected):
    assert split_tokens(total, weights) == expected


# --- the runner ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    chain = {**CHAIN, 55: {EOS: 30.0}}
    return LLM(str(make_markov_checkpoint(tmp_path_factory.mktemp("realloc"), chain)), num_kv_blocks=128, block_size=4)


def params(**kw) -> EagerParams:
    return EagerParams(**{**dict(theta=0.9, max_tokens=16, dynamic_threshold=False, temperature=0.0, seed=1), **kw})


NEVER = dict(checker=lambda text, answer: False)
PROMPTS = [[1], [55], [1], [55]]


def rounds(out) -> list[int]:
    return [s.round for s in out.sequences]


def test_eager_gives_each_unsolved_prompt_its_exact_share(llm):
    # M = 3: EAGer-init gives [3, 1, 3, 1] (step 0: 2, step 2: capped at 3), saving 12 - 8 = 4; all four
    # prompts are unsolved, so each gets 1 (saturated ones first), and a run capped at 1 is one sequence.
    outs = llm.eager(PROMPTS, params(max_sequences=3), method="eager", answers=["x"] * 4, **NEVER)
    assert [rounds(o) for o in outs] == [[0, 0, 0, 1], [0, 1], [0, 0, 0, 1], [0, 1]]
    assert [o.saturated for o in outs] == [True, False, True, False]
    # tokens: [1] tree 5 + 5 + 3 (a step-2 branch shares 2), then 5; [55]: 1, then 1
    assert [o.generated_tokens for o in outs] == [18, 2, 18, 2]
    assert llm.last_stats["generated_tokens"] == 40 and llm.last_stats["rounds"] == 2


def test_eager_adapt_gives_the_saturated_prompts_everything_with_their_theta(llm):
    # The 4 saved sequences go to the two saturated prompts, 2 each; their retry keeps theta (0.9) and
    # branches at step 0 only (cap 2).
    outs = llm.eager(PROMPTS, params(max_sequences=3), method="eager-adapt")
    assert [rounds(o) for o in outs] == [[0, 0, 0, 1, 1], [0], [0, 0, 0, 1, 1], [0]]
    later = [e for e in outs[0].branch_events if e["round"] == 1]
    assert [e["step"] for e in later] == [0] and later[0]["threshold"] == pytest.approx(0.9, abs=1e-6)
    assert llm.last_stats["generated_tokens"] == 2 * (13 + 10) + 2


def test_theta_decays_only_for_unsaturated_prompts(llm):
    # M = 4: [1] saturates (4 sequences), each [20] gets 2; saved 16 - 10 = 6 -> [2, 2, 1, 1] by rank.
    # Retry 1: [1] keeps theta 0.9, the unsaturated [20] runs at 0.9 * 0.8 = 0.72; both branch once.
    outs = llm.eager([[1], [20], [20], [20]], params(max_sequences=4), method="eager", answers=["x"] * 4, **NEVER)
    assert [rounds(o) for o in outs] == [[0, 0, 0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1], [0, 0, 1]]
    thresholds = [[e["threshold"] for e in o.branch_events if e["round"] == 1] for o in outs]
    assert thresholds == [[pytest.approx(0.9, abs=1e-6)], [pytest.approx(0.72, abs=1e-6)], [], []]


@pytest.mark.parametrize("max_retries,sequences", [(0, 1), (1, 3), (2, 7), (3, 8), (5, 8)])
def test_theta_decays_per_retry_until_max_retries_or_the_allotment(llm, max_retries, sequences):
    # theta 1.5 is above both entropies: EAGer-init gives 1 sequence, saving 7 of M = 8.
    # retry 1: theta 1.5 * 0.8 = 1.2 < H4 only -> 2 sequences (5 left)
    # retry 2: 1.5 * 0.64 = 0.96 < H3 too -> 4 (1 left); retry 3: capped at 1 -> 1 (0 left): done.
    out = llm.eager([[1]], params(theta=1.5, max_sequences=8, max_retries=max_retries), method="eager",
                    answers=["x"], **NEVER)[0]
    assert out.num_sequences == sequences
    assert rounds(out) == [0, 1, 1, 2, 2, 2, 2, 3][:sequences]
    events = [(e["round"], e["step"], round(e["threshold"], 6)) for e in out.branch_events]
    assert events == [(1, 0, 1.2), (2, 0, 0.96), (2, 2, 0.96), (2, 2, 0.96)][:{0: 0, 1: 1}.get(max_retries, 4)]
    assert llm.last_stats["rounds"] == 1 + min(max_retries, 3)


def test_a_prompt_solved_in_a_retry_gets_no_more_rounds(llm):
    # The answer is the second-best first token (11): retry 1 (theta 1.2) branches to it, so the
    # prompt is solved with 5 of its 7 extra sequences unused, and no retry 2 runs.
    answer = llm.tokenizer.decode([11])
    out = llm.eager([[1]], params(theta=1.5, max_sequences=8), method="eager", answers=[answer],
                    checker=lambda text, gold: gold in text)[0]
    assert [(s.round, s.token_ids) for s in out.sequences] == [
        (0, [10, 20, 30, 40, EOS]), (1, [10, 20, 30, 40, EOS]), (1, [11, 20, 30, 40, EOS])]
    assert llm.last_stats["rounds"] == 2


def finish_reasons(out) -> list[str]:
    return [s.finish_reason for s in out.sequences]


@pytest.mark.parametrize("method,expected", [
    # shares split_tokens(7, [1] * 4) = [2, 2, 2, 1]
    ("parallel", [2, 2, 2, 1]),     # M = 4 samples; the rows past a prompt's share end "budget"
    ("eager-init", [2, 1, 2, 1]),   # [1]: the root's token and the fork's; [55] stops after 1
])
def test_budget_tokens_is_spent_to_the_token(llm, method, expected):
    outs = llm.eager(PROMPTS, params(max_sequences=4, budget_tokens=7), method=method)
    assert [o.generated_tokens for o in outs] == expected
    assert llm.last_stats["generated_tokens"] == sum(expected)
    assert finish_reasons(outs[0]) == ["budget"] * (4 if method == "parallel" else 2)
    if method == "parallel":   # [55]: two rows stop on EOS within its share of 2, two get nothing
        assert finish_reasons(outs[1]) == ["stop", "stop", "budget", "budget"]
        assert [s.token_ids for s in outs[0].sequences] == [[10], [10], [], []]


def test_budget_tokens_left_after_eager_init_go_to_the_retries(llm):
    # budget 22, M = 2: shares [6, 6, 5, 5]. EAGer-init: [1] with 6 tokens is 10/11, 20, 20, 30, 30,
    # then "budget" (6); [55] 1; [1] with 5 stops the branch one token earlier (5); [55] 1: 13 in all.
    # The saved 2 sequences go to the saturated [1]s; the 9 tokens left split [5, 4]: one greedy
    # sequence of 5 (ends on EOS) and one of 4 (ends "budget"). Total: exactly 22.
    outs = llm.eager(PROMPTS, params(max_sequences=2, budget_tokens=22), method="eager-adapt")
    assert [[(s.round, s.token_ids, s.finish_reason) for s in o.sequences] for o in outs] == [
        [(0, [10, 20, 30], "budget"), (0, [11, 20, 30], "budget"), (1, [10, 20, 30, 40, EOS], "stop")],
        [(0, [EOS], "stop")],
        [(0, [10, 20, 30], "budget"), (0, [11, 20], "budget"), (1, [10, 20, 30, 40], "budget")],
        [(0, [EOS], "stop")]]
    assert [o.generated_tokens for o in outs] == [11, 1, 9, 1]
    assert llm.last_stats["generated_tokens"] == 22
