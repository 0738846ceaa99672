"""EAGer's branching rules on a model whose next-token distributions are known exactly."""

from __future__ import annotations

import math

import pytest

from eager_core import LLM, EagerParams, RequestError
from eager_core.eager.eager_init import percentile
from markov_model import EOS, THINK_END, make_markov_checkpoint, topk_entropy

FOUR = {10: 10.0, 11: 9.9, 12: 9.8, 13: 9.7}    # top-20 entropy ~1.386 (ln 4)
THREE = {30: 10.0, 31: 9.9, 32: 9.8}             # ~1.098 (ln 3)
H4, H3 = topk_entropy(list(FOUR.values()) + [-30.0] * 16), topk_entropy(list(THREE.values()) + [-30.0] * 17)
# prompt [1] -> {10..13} -> 20 -> {30..32} -> 40 -> EOS : five generated tokens, two uncertain steps
CHAIN = {1: FOUR, **{t: {20: 30.0} for t in FOUR}, 20: THREE, **{t: {40: 30.0} for t in THREE}, 40: {EOS: 30.0}}
# the same with "</think>" after the first uncertain step
THINK = {1: FOUR, **{t: {THINK_END: 30.0} for t in FOUR}, THINK_END: {20: 30.0}, 20: THREE,
         **{t: {40: 30.0} for t in THREE}, 40: {EOS: 30.0}}


@pytest.fixture(scope="module")
def chain_llm(tmp_path_factory):
    return LLM(str(make_markov_checkpoint(tmp_path_factory.mktemp("chain"), CHAIN)), num_kv_blocks=64, block_size=4)


def run(llm, **kw):
    params = EagerParams(**{**dict(theta=0.9, max_sequences=8, max_tokens=16, dynamic_threshold=False), **kw})
    return llm.eager([[1]], params, method="eager-init")[0]


def test_markov_model_has_the_designed_entropies(chain_llm):
    from eager_core.ops import entropy_gate
    logits = chain_llm.logits([1, 10, 20])
    gate = entropy_gate(logits, 0.9)
    assert gate.entropy_topk.tolist() == pytest.approx([H4, 0.0, H3], abs=1e-3)
    assert gate.top2_ids[0].tolist() == [10, 11] and gate.top2_ids[2].tolist() == [30, 31]


def test_branches_appear_exactly_where_entropy_exceeds_theta(chain_llm):
    out = run(chain_llm)
    # step 0 (H4 > 0.9): 1 -> 2 sequences; step 2 (H3 > 0.9): each of the 2 branches -> 4
    assert out.num_sequences == 4
    assert sorted(e["step"] for e in out.branch_events) == [0, 2, 2]
    assert all(e["entropy"] == pytest.approx(H4 if e["step"] == 0 else H3, abs=1e-3) for e in out.branch_events)
    for seq in out.sequences:
        assert len(seq.token_ids) == 5 and seq.token_ids[1] == 20 and seq.token_ids[3:] == [40, EOS]
        assert seq.finish_reason == "stop"
        if seq.parent is not None:
            parent = out.sequences[seq.parent]
            k = seq.branch_step
            # the child shares the parent's tokens up to the branch, then takes the second most likely
            assert seq.token_ids[:k] == parent.token_ids[:k]
            event = next(e for e in out.branch_events if e["child"] == out.sequences.index(seq))
            assert parent.token_ids[k] == event["tokens"][0] and seq.token_ids[k] == event["tokens"][1]
    root = out.sequences[0]
    assert root.token_ids[0] == 10 and root.token_ids[2] == 30      # the parent keeps the most likely tokens
    # exact accounting: distinct generated positions (shared prefixes once)
    prefixes = {tuple(s.token_ids[:i + 1]) for s in out.sequences for i in range(len(s.token_ids))}
    assert out.generated_tokens == len(prefixes) == 5 + 5 + 3 + 3


def test_no_branch_below_theta(chain_llm):
    out = run(chain_llm, theta=1.2)      # only the 4-way step (1.386) exceeds it
    assert out.num_sequences == 2 and [e["step"] for e in out.branch_events] == [0]
    out = run(chain_llm, theta=1.5)
    assert out.num_sequences == 1 and not out.branch_events


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_at_most_m_sequences(chain_llm, cap):
    out = run(chain_llm, max_sequences=cap)
    assert out.num_sequences == cap


def test_no_branch_window(chain_llm):
    # window 1: step 1 has no branch, so the prompt stops branching before step 2
    assert run(chain_llm, no_branch_window=1).num_sequences == 2
    assert run(chain_llm, no_branch_window=2).num_sequences == 4


def test_dynamic_threshold_is_max_of_theta_and_p99_seen(chain_llm):
    # seen before step 2: [H4, 0, 0] (two sequences at step 1) -> p99 = 0.98 * H4 > H3: no second branch
    out = run(chain_llm, dynamic_threshold=True)
    assert out.num_sequences == 2
    assert percentile([0.0, 0.0, H4], 99.0) == pytest.approx(0.98 * H4)
    assert percentile([], 99.0) == -math.inf


def test_no_branching_after_think_end(tmp_path):
    llm = LLM(str(make_markov_checkpoint(tmp_path, THINK)), num_kv_blocks=64, block_size=4)
    out = run(llm)                          # branches at step 0 only: step 3 comes after </think>
    assert out.num_sequences == 2
    assert all(THINK_END in s.token_ids for s in out.sequences)
    assert run(llm, think_only=False).num_sequences == 4


def test_parallel_gives_m_sequences_without_branch_events(chain_llm):
    out = chain_llm.eager([[1]], EagerParams(max_sequences=5, max_tokens=16), method="parallel")[0]
    assert out.num_sequences == 5 and not out.branch_events
    assert all(s.parent is None or s.branch_step == 0 for s in out.sequences)
    assert out.generated_tokens == 5 * 5


def test_eager_requires_answers(chain_llm):
    with pytest.raises(RequestError, match="answers"):
        chain_llm.eager([[1]], EagerParams(), method="eager")
    with pytest.raises(RequestError, match="method"):
        chain_llm.eager([[1]], EagerParams(), method="beam")


@pytest.mark.parametrize("kw", [dict(theta=float("inf")), dict(theta=float("nan")), dict(max_sequences=0),
                                dict(entropy="renyi"), dict(temperature=-1.0)])
def test_invalid_eager_params_are_named(kw):
    with pytest.raises(RequestError, match=next(iter(kw))):
        EagerParams(**kw)
