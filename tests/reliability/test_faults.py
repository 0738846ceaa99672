"""Faults during generation: non-finite logits stop only their sequence; an interrupt anywhere in a
call leaves the engine clean and giving the same outputs as a fresh one.

Injections act on one engine instance (its model weights, its runner, its scheduler) or through
pytest's monkeypatch, so nothing leaks into other tests.
"""

from __future__ import annotations

import pytest
import torch
from reliability_helpers import assert_clean, eager_ids, token_ids

import eager_core.eager.eager_init as policy_module
from eager_core import EagerParams, SamplingParams
from eager_core.eager.eager_init import EagerInitController

POISON = 200   # a token id whose embedding row becomes NaN
PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13], [21, 22, 23, 24, 25, 26, 27]]
SAMPLED = SamplingParams(temperature=0.8, n=2, seed=7, max_tokens=12, ignore_eos=True)
# Branches at every step (no dynamic threshold), so EAGer-init gives 2**3 = 8 of the M = 16 sequences and
# method "eager" with a checker that never accepts runs a reallocation round: two rounds whatever the weights.
EAGER = EagerParams(theta=0.5, max_sequences=16, max_tokens=3, dynamic_threshold=False, seed=3)
NEVER = dict(answers=["x"] * len(PROMPTS), checker=lambda text, answer: False)


def _poison_embedding(llm) -> None:
    # The tiny model ties embeddings to the LM head: clone first, or every row's logit for POISON is NaN.
    llm.model.embed = llm.model.embed.clone()
    llm.model.embed[POISON] = float("nan")


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    """Outputs of a fresh engine with an ample pool: what every damaged engine must still give."""
    from eager_core import LLM
    llm = LLM(str(tiny_ckpt), num_kv_blocks=128, block_size=4)
    ref = dict(sampled=token_ids(llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED)),
               eager=eager_ids(llm.eager(PROMPTS, EAGER, method="eager", **NEVER)),
               eager_init=eager_ids(llm.eager(PROMPTS, EAGER, method="eager-init")))
    assert [len(seqs) for seqs in ref["eager"]] == [16] * 3 and [len(s) for s in ref["eager_init"]] == [8] * 3
    return ref


# --- non-finite logits -------------------------------------------------------------------------------------

def test_nan_from_a_poisoned_prompt_stops_only_that_sequence_and_does_not_reach_the_next_owner(make_llm, reference):
    llm = make_llm(num_kv_blocks=40)
    _poison_embedding(llm)
    outs = llm.generate(prompt_token_ids=[[POISON, 3, 4]] + PROMPTS, params=SAMPLED)
    bad = outs[0].outputs
    assert [(c.finish_reason, c.token_ids) for c in bad] == [("error", [])] * 2
    assert all("non-finite logits" in c.error for c in bad)
    assert token_ids(outs[1:]) == reference["sampled"]
    assert_clean(llm)
    # Its blocks (block 0 among them) went back to the pool holding NaN keys/values; the engine
    # zeroes them, or padded attention in later calls would turn every short sequence into NaN.
    assert token_ids(llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED)) == reference["sampled"]


def _corrupt_row(llm, request_index: int, branch: int, step: int, value: float) -> list[int]:
    """Wrap this engine's runner: the logits row of (request, branch) after ``step`` tokens gets ``value``."""
    run, hits = llm.llm_engine.runner.run, []

    def corrupted(batch):
        out = run(batch)
        out.logits = out.logits.clone()   # the model returns inference tensors
        for i, seq in enumerate(out.seqs):
            index = int(seq.request.request_id.rsplit("-", 1)[1])   # LLM names requests "<call>-<prompt index>"
            if (index, seq.branch_id, seq.num_generated) == (request_index, branch, step):
                out.logits[i, 17] = value
                if value == float("-inf"):
                    out.logits[i] = value
                hits.append(seq.seq_id)
        return out
    llm.llm_engine.runner.run = corrupted
    return hits


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "+inf", "all--inf"])
def test_non_finite_logits_mid_generation_stop_one_branch_the_rest_go_on(make_llm, reference, value):
    llm = make_llm(num_kv_blocks=40)
    hits = _corrupt_row(llm, request_index=1, branch=1, step=5, value=value)
    outs = llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED)
    assert len(hits) == 1
    broken = outs[1].outputs[1]
    assert broken.finish_reason == "error" and "position 8" in broken.error   # 3 prompt + 5 generated tokens
    assert broken.token_ids == reference["sampled"][1][1][:5]                  # what it had is kept
    ids = token_ids(outs)
    ids[1][1] = reference["sampled"][1][1]
    assert ids == reference["sampled"]                                         # its sibling and the others go on
    assert_clean(llm)


def test_non_finite_logits_in_eager_stop_that_branch_only(make_llm, reference):
    llm = make_llm(num_kv_blocks=40)
    _poison_embedding(llm)
    outs = llm.eager(PROMPTS + [[POISON, 1]], EAGER, method="eager-init")   # last: the others keep their seeds
    assert [s.finish_reason for s in outs[3].sequences] == ["error"]
    assert eager_ids(outs[:3]) == reference["eager_init"]
    assert_clean(llm)


def test_nan_in_a_chunked_prefill_does_not_reach_decoding_sequences(make_llm):
    good = [[11, 12, 13], [21, 22]]
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    expected = token_ids(make_llm(num_kv_blocks=16).generate(prompt_token_ids=good, params=params))
    llm = make_llm(num_kv_blocks=16, max_num_batched_tokens=16)
    llm.logits(list(range(3, 3 + 14 * 4)))   # takes and frees blocks 0..13: the free list is now 14, 15, 0, ...
    _poison_embedding(llm)
    outs = llm.generate(prompt_token_ids=good + [[POISON] + list(range(3, 30))], params=params)
    assert outs[2].outputs[0].finish_reason == "error"
    assert token_ids(outs[:2]) == expected


# --- interrupts -------------------------------------------------------------------------------------------------

class Boom(Exception):
    """A bug in a user callback: handled like an interrupt, and propagated unchanged."""


def _raise_on_call(k: int, exc: type[BaseException] = KeyboardInterrupt):
    calls = [0]

    def maybe_raise(*_):
        calls[0] += 1
        if calls[0] == k:
            raise exc()
    return maybe_raise


def _wrap_raising(obj, name: str, k: int, after: bool = False) -> None:
    """Make ``obj.name`` (an instance attribute) raise KeyboardInterrupt on its k-th call."""
    real, tick = getattr(obj, name), _raise_on_call(k)

    def wrapped(*args, **kwargs):
        if not after:
            tick()
        out = real(*args, **kwargs)
        if after:
            tick()
        return out
    setattr(obj, name, wrapped)


GENERATE_FAULTS = {
    "on_token-first": lambda llm: dict(on_token=_raise_on_call(1)),
    "on_token-mid": lambda llm: dict(on_token=_raise_on_call(23)),
    "on_token-bug": lambda llm: dict(on_token=_raise_on_call(40, Boom)),
    "model-forward": lambda llm: _wrap_raising(llm.model, "forward", 6),        # after slots and CoW copies
    "after-preemption": lambda llm: _wrap_raising(llm.scheduler, "_preempt", 1, after=True),
    "block-copy": lambda llm: _wrap_raising(llm.kv_pool, "copy_blocks", 3),
}


@pytest.mark.parametrize("fault", list(GENERATE_FAULTS))
def test_interrupted_generate_frees_every_block_and_the_next_call_is_unchanged(make_llm, reference, fault):
    llm = make_llm(num_kv_blocks=14)   # three families of 2 need 30 blocks: preemptions happen
    kwargs = GENERATE_FAULTS[fault](llm) or {}
    with pytest.raises(Boom if fault == "on_token-bug" else KeyboardInterrupt):
        llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED, **kwargs)
    assert_clean(llm)
    for attr in ("forward", "_preempt", "copy_blocks"):   # drop the injection, keep the damaged state
        for obj in (llm.model, llm.scheduler, llm.kv_pool):
            vars(obj).pop(attr, None)
    outs = llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED)
    assert token_ids(outs) == reference["sampled"] and llm.last_stats["preemptions"] > 0
    assert_clean(llm)


@pytest.mark.parametrize("where", ["entropy-gate", "reallocation-round", "checker"])
def test_interrupted_eager_frees_every_block_and_the_next_call_is_unchanged(make_llm, reference, monkeypatch, where):
    llm = make_llm(num_kv_blocks=48)
    checker = NEVER["checker"]
    if where == "entropy-gate":   # inside the policy's kernel call, in round 0
        real_gate, tick = policy_module.entropy_gate, _raise_on_call(2)
        monkeypatch.setattr(policy_module, "entropy_gate", lambda *a, **k: (tick(), real_gate(*a, **k))[1])
    elif where == "reallocation-round":   # inside the policy, once a reallocation run has started
        real_decide = EagerInitController.decide

        def decide(self, seqs, logits):
            if any(s.request.controller_state.round > 0 for s in seqs):
                raise KeyboardInterrupt
            return real_decide(self, seqs, logits)
        monkeypatch.setattr(EagerInitController, "decide", decide)
    else:                          # the user's answer checker, between rounds
        def checker(text, answer):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        llm.eager(PROMPTS, EAGER, method="eager", answers=NEVER["answers"], checker=checker)
    assert_clean(llm)
    monkeypatch.undo()
    assert eager_ids(llm.eager(PROMPTS, EAGER, method="eager", **NEVER)) == reference["eager"]
    assert_clean(llm)


def test_interrupted_logits_call_frees_its_blocks(make_llm):
    llm = make_llm(num_kv_blocks=16)
    expected = llm.logits([3, 4, 5, 6, 7])
    _wrap_raising(llm.model, "forward", 1)
    with pytest.raises(KeyboardInterrupt):
        llm.logits([3, 4, 5, 6, 7])
    assert_clean(llm)
    del llm.model.forward
    assert torch.equal(llm.logits([3, 4, 5, 6, 7]), expected)
