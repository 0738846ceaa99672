"""A KV pool smaller than the work: preemption of whole families, recompute with re-forked
branches, exact pool sizes, and the errors for work that can never fit.

Outputs under pressure are compared with those of an ample pool, token for token.
"""

from __future__ import annotations

import pytest

from eager_core import RequestError, SamplingParams
from kv_helpers import BS, assert_pool_empty, guard_steps, make_llm, prompts_of, token_lists, watch_preemptions
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_small_pool_preempts_and_still_gives_the_ample_pool_outputs(tiny_ckpt, temperature):
    prompts = prompts_of([5, 9, 13, 17, 6, 11, 3, 20])
    params = SamplingParams(temperature=temperature, max_tokens=12, n=2, seed=7, ignore_eos=True)
    ample = make_llm(tiny_ckpt, 400)
    ref = ample.generate(prompt_token_ids=prompts, params=params)
    assert ample.last_stats["preemptions"] == 0
    small_blocks = ample.last_stats["kv_blocks_peak"] // 4
    # The largest family (20-token prompt, 2 x 12 tokens) needs 5 shared + 2 x 3 own blocks.
    assert small_blocks >= 11
    small = make_llm(tiny_ckpt, small_blocks)
    guard_steps(small, 1000)
    preempted = watch_preemptions(small)
    out = small.generate(prompt_token_ids=prompts, params=params)
    assert len(preempted) == small.last_stats["preemptions"]
    assert token_lists(out) == token_lists(ref)
    assert all(c.finish_reason == "length" for r in out for c in r.outputs)
    assert small.last_stats["preemptions"] > 0
    assert small.last_stats["kv_blocks_peak"] <= small_blocks
    assert_pool_empty(small)


def test_recomputed_family_shares_its_prompt_again(tiny_ckpt):
    """Two n=4 families with 30-token prompts in 24 blocks: the second is preempted after it has
    forked. Recomputed without re-forking, its 4 copies of the prompt would need 36 blocks."""
    prompts = prompts_of([30, 30], start=11)
    params = SamplingParams(temperature=0, max_tokens=6, n=4, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 200).generate(prompt_token_ids=prompts, params=params)
    small = make_llm(tiny_ckpt, 24)
    guard_steps(small, 200)
    out = small.generate(prompt_token_ids=prompts, params=params)
    assert token_lists(out) == token_lists(ref)
    assert small.last_stats["preemptions"] > 0


def family_peak_blocks(prompt_len: int, max_tokens: int, n: int) -> int:
    """Blocks n lockstep siblings forked after the prompt hold at their end: the prompt's full blocks
    once, and each sibling's own blocks up to position prompt_len + max_tokens - 2 (a sequence's last
    token is never fed back). Holds for max_tokens >= 2 or n == 1."""
    last = -(-(prompt_len + max_tokens - 1) // BS)
    return prompt_len // BS + n * (last - prompt_len // BS)


@pytest.mark.parametrize("prompt_len,max_tokens,n", [(4, 1, 1), (9, 8, 1), (3, 2, 2), (3, 4, 2), (5, 4, 3),
                                                     (9, 4, 2), (8, 5, 2)])
def test_a_pool_of_exactly_one_family_serves_many_requests(tiny_ckpt, prompt_len, max_tokens, n):
    """The exact need is enough (no deadlock, no spurious error); one block less is a RequestError."""
    prompts = prompts_of([prompt_len] * 3)
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=max_tokens, n=n, ignore_eos=True)
    exact = family_peak_blocks(prompt_len, max_tokens, n)
    ref = make_llm(tiny_ckpt, 100).generate(prompt_token_ids=prompts, params=params)
    tight = make_llm(tiny_ckpt, exact)
    guard_steps(tight, 300)
    assert token_lists(tight.generate(prompt_token_ids=prompts, params=params)) == token_lists(ref)
    assert tight.last_stats["kv_blocks_peak"] == exact
    assert_pool_empty(tight)
    if exact == 1:
        return
    too_small = make_llm(tiny_ckpt, exact - 1)
    guard_steps(too_small, 300)
    with pytest.raises(RequestError, match="KV pool too small"):
        too_small.generate(prompt_token_ids=prompts, params=params)
    assert_pool_empty(too_small)   # the error returned every block; the engine is usable again
    short = SamplingParams(temperature=1.0, seed=3, max_tokens=1, n=n, ignore_eos=True)
    assert token_lists(too_small.generate(prompt_token_ids=prompts, params=short)) == [
        [c[:1] for c in r] for r in token_lists(ref)]


def test_family_larger_than_the_pool_is_an_error_not_a_hang(tiny_ckpt):
    # One sequence fits in 4 blocks (12 + 4 - 1 positions); a family of four needs 3 + 4 x 1.
    llm = make_llm(tiny_ckpt, 5)
    guard_steps(llm, 100)
    prompt = prompts_of([12])
    llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    with pytest.raises(RequestError, match="KV pool too small"):
        llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=4, n=4,
                                                                    ignore_eos=True))
    assert_pool_empty(llm)


def test_n_above_max_num_seqs_is_refused(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 32, max_num_seqs=2)
    guard_steps(llm, 50)
    with pytest.raises(RequestError, match="max_num_seqs"):
        llm.generate(prompt_token_ids=[[1, 2, 3]], params=SamplingParams(n=3))
    assert_pool_empty(llm)
