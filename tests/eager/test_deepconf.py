"""DeepConf and EAGer-DeepConf on a Markov model whose confidences are known exactly.

Token confidence (DeepConf): C = -mean of the top-20 log-probabilities. On the Markov model every
unlisted token has logit -30, so a step with one listed token (logit 30) has C = 19 * 60 / 20 = 57,
a 2-way step (two tokens at 10) C = 36 + ln 2, a 3-way step C = 34 + ln 3.
"""

from __future__ import annotations

import math

import pytest
import torch

from eager_core import LLM, EagerParams, RequestError
from eager_core.eager.deepconf import DEEPCONF, PRUNED, DeepConfState
from eager_core.eager.deepconf_params import DeepConfParams
from eager_core.eager.eager_deepconf import EAGER_DEEPCONF
from eager_core.eager.eager_init import percentile
from eager_core.eager.step_signals import confidence_from_topk, token_confidence
from eager_core.eager.trace_confidence import TraceConfidence
from markov_model import EOS, make_markov_checkpoint

C1, C2, C3 = 57.0, 36.0 + math.log(2), 34.0 + math.log(3)
SURE = {t: {t + 1: 30.0} for t in (20, 21, 22, 43)}
# prompt [1] -> {10, 11} (2-way). After 10: a sure path 20, 21, 22, 23, EOS. After 11: 3-way, 40, 2-way, 43, EOS.
SPLIT = {1: {10: 10.0, 11: 10.0}, 10: {20: 30.0}, **SURE, 23: {EOS: 30.0},
         11: {30: 10.0, 31: 10.0, 32: 10.0}, **{t: {40: 30.0} for t in (30, 31, 32)},
         40: {41: 10.0, 42: 10.0}, 41: {43: 30.0}, 42: {43: 30.0}, 44: {EOS: 30.0}}
# EAGer-DeepConf: top-1 is 10 (sure path, with a 2-way step after 20), top-2 is 11 (the unsure path)
TREE = {**SPLIT, 1: {10: 10.0, 11: 9.9}, 20: {21: 10.0, 22: 9.9}, 21: {23: 30.0}, 22: {23: 30.0}}
ALL = [1, 10, 11, 20, 21, 22, 23, 30, 31, 32, 40, 41, 42, 43, 44]


@pytest.fixture(scope="module")
def split_llm(tmp_path_factory):
    return LLM(str(make_markov_checkpoint(tmp_path_factory.mktemp("split"), SPLIT)), num_kv_blocks=256, block_size=4)


@pytest.fixture(scope="module")
def tree_llm(tmp_path_factory):
    return LLM(str(make_markov_checkpoint(tmp_path_factory.mktemp("tree"), TREE)), num_kv_blocks=256, block_size=4)


def confidence_table(llm) -> dict[int, float]:
    """The confidence of the step after each token (a Markov model: it depends on that token only)."""
    logp = torch.log_softmax(llm.logits(ALL).double(), dim=-1)
    return {t: float(-logp[i].topk(20).values.mean()) for i, t in enumerate(ALL)}


def step_confidences(table: dict[int, float], tokens: list[int], cut: bool) -> list[float]:
    """Per decided step: after the prompt [1], then after each token (a cut trace decided one more step)."""
    history = [1] + tokens if cut else [1] + tokens[:-1]
    return [table[t] for t in history]


def windows(confs: list[float], w: int) -> list[float]:
    return [sum(confs[i - w + 1:i + 1]) / w for i in range(w - 1, len(confs))]


def lowest(confs: list[float], w: int) -> float:
    return min(windows(confs, w)) if len(confs) >= w else sum(confs) / len(confs)


def deepconf(**kw) -> DeepConfParams:
    base = dict(max_sequences=8, warmup_traces=4, confidence_percentile=50.0, window_size=2, max_tokens=16,
                temperature=1.0, theta=0.5, dynamic_threshold=False, seed=3)
    return DeepConfParams(**{**base, **kw})


def test_the_model_has_the_designed_confidences(split_llm):
    table = confidence_table(split_llm)
    assert table[1] == pytest.approx(C2, abs=1e-2) and table[11] == pytest.approx(C3, abs=1e-2)
    assert table[10] == pytest.approx(C1, abs=1e-2) and table[40] == pytest.approx(C2, abs=1e-2)
    logits = split_llm.logits([1, 11])
    lse = torch.logsumexp(logits, dim=-1)
    assert token_confidence(logits, lse, 20).tolist() == pytest.approx([C2, C3], abs=1e-2)


@pytest.mark.parametrize("vocab,k", [(5000, 20), (5000, 1), (7, 20), (5000, 32)])
def test_confidence_from_the_gate_list_equals_the_topk_path(vocab, k):
    # The controllers read the confidence off the gate's one pass; it must equal the plain definition.
    from eager_core.ops import entropy_gate
    logits = torch.randn(6, vocab, generator=torch.Generator().manual_seed(vocab + k)) * 3
    logits[0, : vocab // 2] = float("-inf")
    res = entropy_gate(logits, 1.0, top_k=20, return_topk=k)
    fused = confidence_from_topk(res.topk_logprobs, k, vocab)
    plain = token_confidence(logits, torch.logsumexp(logits.double(), -1).float(), k)
    assert torch.allclose(fused, plain, atol=1e-5), (fused, plain)


def test_trace_confidence_is_the_sliding_window_of_the_official_code():
    confs = [5.0, 1.0, 4.0, 2.0, 8.0]
    trace = TraceConfidence(2)
    groups = [trace.add(c) for c in confs]
    assert groups == [None, 3.0, 2.5, 3.0, 5.0]
    assert trace.lowest_group_confidence() == 2.5 and trace.group_confidence() == 5.0
    short = TraceConfidence(10)
    for c in confs:
        short.add(c)
    assert short.lowest_group_confidence() == pytest.approx(4.0)   # shorter than a window: the mean
    assert TraceConfidence(3).lowest_group_confidence() is None
    twin = trace.copy()
    twin.add(0.0)
    assert trace.confs == confs and twin.group_confidence() == 4.0 and twin.confs == confs + [0.0]


@pytest.mark.parametrize("w", [2, 3, 4])
def test_deepconf_cuts_each_final_trace_at_its_first_window_below_the_warmup_threshold(split_llm, w):
    # Unsure-path windows below the sure path's lowest: w=2 at step 1, w=3 at step 2, w=4 at step 3.
    table = confidence_table(split_llm)
    params = deepconf(window_size=w)
    outs = split_llm.eager([[1]] * 6, params, method="deepconf")
    cuts = 0
    for out in outs:
        assert out.num_sequences == params.max_sequences and out.warmup_traces == 4
        warm, final = out.sequences[:4], out.sequences[4:]
        assert all(s.finish_reason == "stop" and s.round == 0 for s in warm)        # warm-ups are never cut
        lows = [lowest(step_confidences(table, s.token_ids, False), w) for s in warm]
        assert out.confidence_threshold == pytest.approx(percentile(sorted(lows), 50.0), abs=1e-3)
        for s, low in zip(out.sequences, out.lowest_group_confidence):
            cut = s.finish_reason == PRUNED
            assert low == pytest.approx(lowest(step_confidences(table, s.token_ids, cut), w), abs=1e-3)
        for s in final:
            assert s.round == 1
            # the oracle: the first full window whose mean is below s, over the path the trace took
            cut = s.finish_reason == PRUNED
            below = [i for i, g in enumerate(windows(step_confidences(table, s.token_ids, cut), w))
                     if g < out.confidence_threshold - 1e-6]
            if cut:
                cuts += 1
                assert below and len(s.token_ids) == below[0] + w - 1   # stopped at that step, no token appended
            else:
                assert not below and s.token_ids[-1] == EOS
    assert cuts > 0   # the seeds give both paths in warm-up and final traces


def test_deepconf_on_the_unsure_path_is_cut_after_one_token(split_llm):
    # A sure-path warm-up sets s = (C2 + C1) / 2; the unsure path's first window (C2 + C3) / 2 is below it.
    outs = split_llm.eager([[1]] * 6, deepconf(), method="deepconf")
    for out in outs:
        for s in out.sequences[4:]:
            if s.token_ids[0] == 11 and out.confidence_threshold > (C2 + C3) / 2 + 1e-3:
                assert s.finish_reason == PRUNED and s.token_ids == [11]


def test_deepconf_budget_and_exact_accounting(split_llm):
    params = deepconf(max_sequences=5, warmup_traces=2)
    outs = split_llm.eager([[1]] * 4, params, method="deepconf")
    stats = split_llm.last_stats
    assert all(o.num_sequences == 5 for o in outs)
    assert all(len(s.token_ids) <= params.max_tokens for o in outs for s in o.sequences)
    assert sum(o.generated_tokens for o in outs) == stats["generated_tokens"]
    assert stats["rounds"] == 2
    capped = split_llm.eager([[1]] * 4, deepconf(budget_tokens=40), method="deepconf")
    assert sum(o.generated_tokens for o in capped) == split_llm.last_stats["generated_tokens"] <= 40
    assert any(s.finish_reason == "budget" for o in capped for s in o.sequences)


def test_warmup_traces_are_parallels_first_samples(split_llm):
    params = deepconf(warmup_traces=3)
    conf = split_llm.eager([[1]], params, method="deepconf")[0]
    par = split_llm.eager([[1]], EagerParams(**{k: v for k, v in params.to_dict().items()
                                                if k in EagerParams.__dataclass_fields__}), method="parallel")[0]
    assert [s.token_ids for s in conf.sequences[:3]] == [s.token_ids for s in par.sequences[:3]]


def test_eager_deepconf_prunes_the_collapsing_branch_and_gives_its_slot_back(tree_llm):
    # Greedy warm-up: the sure path, lowest window (C2 + C1) / 2 = s. The tree (cap M - W = 2): the root
    # branches at step 0 (child: 11, the unsure path), the child's window at step 1 is (C2 + C3) / 2 < s:
    # pruned with one token. Its slot lets the root branch again at step 2 (the 2-way step after 20).
    params = deepconf(max_sequences=3, warmup_traces=1, temperature=0.0)
    table = confidence_table(tree_llm)
    out = tree_llm.eager([[1]], params, method="eager-deepconf")[0]
    assert out.confidence_threshold == pytest.approx((table[1] + table[10]) / 2, abs=1e-3)
    warm, root, pruned, late = out.sequences
    assert warm.token_ids == [10, 20, 21, 23, EOS] and warm.round == 0
    assert root.token_ids == [10, 20, 21, 23, EOS] and root.finish_reason == "stop"   # at s exactly: kept
    assert pruned.token_ids == [11] and pruned.finish_reason == PRUNED and pruned.branch_step == 0
    assert late.token_ids == [10, 20, 22, 23, EOS] and late.branch_step == 2 and late.finish_reason == "stop"
    assert [(e["step"], e["tokens"]) for e in out.branch_events] == [(0, [10, 11]), (2, [21, 22])]
    assert out.generated_tokens == 5 + 5 + 1 + 3 == tree_llm.last_stats["generated_tokens"]
    # EAGer-init with the same cap cannot branch a second time
    init = tree_llm.eager([[1]], EagerParams(max_sequences=2, theta=0.5, dynamic_threshold=False,
                                              temperature=0.0, max_tokens=16), method="eager-init")[0]
    assert init.num_sequences == 2 and [e["step"] for e in init.branch_events] == [0]


def test_eager_deepconf_never_exceeds_its_budget(tree_llm, split_llm):
    for llm in (tree_llm, split_llm):
        for m in (2, 4, 6):
            params = deepconf(max_sequences=m, warmup_traces=1, theta=0.3, max_tokens=8)
            for out in llm.eager([[1]] * 3, params, method="eager-deepconf"):
                unpruned = [s for s in out.sequences if s.finish_reason != PRUNED]
                assert len(unpruned) <= m
                assert out.generated_tokens <= m * params.max_tokens


def test_controllers_cut_where_a_hand_set_threshold_says(tree_llm):
    # Straight on the engine: the controllers with a given threshold (40: between the paths' windows).
    engine = tree_llm.llm_engine
    params = deepconf(max_sequences=4, warmup_traces=1, temperature=0.0)
    st = DeepConfState(params, None, cap=4, theta=0.5, branching=True, conf_threshold=40.0)
    engine.add_request("t", [1], params.sampling_params(), controller=EAGER_DEEPCONF, controller_state=st)
    out = engine.run_until_finished(["t"])[0]
    reasons = [(c.token_ids, c.finish_reason) for c in out.outputs]
    assert ([11], PRUNED) in reasons and st.pruned == {1}
    st2 = DeepConfState(params, None, cap=4, theta=0.5, branching=False, conf_threshold=100.0)
    engine.add_request("u", [1], params.sampling_params(n=2), controller=DEEPCONF, controller_state=st2)
    out = engine.run_until_finished(["u"])[0]
    assert [(c.token_ids, c.finish_reason) for c in out.outputs] == [([10], PRUNED)] * 2   # window 2 full at step 1
    assert engine.idle_problems() == []


@pytest.mark.parametrize("kw", [dict(warmup_traces=0), dict(confidence_percentile=101.0), dict(window_size=0),
                                dict(top_k_confidence=0), dict(confidence_percentile=float("nan"))])
def test_invalid_deepconf_params_are_named(kw):
    with pytest.raises(RequestError, match=next(iter(kw))):
        DeepConfParams(**kw)


def test_plain_eager_params_get_deepconf_defaults(split_llm):
    out = split_llm.eager([[1]], EagerParams(max_sequences=5, max_tokens=8), method="deepconf")[0]
    assert out.warmup_traces == DeepConfParams().warmup_traces and out.num_sequences == 5
