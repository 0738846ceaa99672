"""Automatic prefix caching: a shared prompt prefix is computed once, and nothing about a request's
output changes (every comparison is against the same engine with caching off)."""

from __future__ import annotations

import pytest

from eager_core import EagerParams, SamplingParams
from eager_core.cache.block_manager import BlockManager
from kv_helpers import BS, assert_pool_empty, make_llm, prompts_of, token_lists
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)

SYSTEM = list(range(30, 30 + 4 * BS + 2))   # 4 full blocks and 2 tokens of a 5th
QUESTIONS = [[7, 8, 9], [11, 12], [13, 14, 15, 16, 17]]
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
SEEDED = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=8, n=3, seed=21, ignore_eos=True)


def both(ckpt, blocks: int = 64, **kwargs):
    return make_llm(ckpt, blocks, **kwargs), make_llm(ckpt, blocks, enable_prefix_caching=False, **kwargs)


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded-n3"])
def test_shared_system_prompt_is_computed_once_and_outputs_do_not_change(tiny_ckpt, params):
    cached, plain = both(tiny_ckpt)
    prompts = [SYSTEM + q for q in QUESTIONS]
    for llm in (cached, plain):   # a first call fills the cache with the system prompt's blocks
        llm.generate(prompt_token_ids=[SYSTEM + [1, 2]], params=GREEDY)
    out = cached.generate(prompt_token_ids=prompts, params=params)
    assert token_lists(out) == token_lists(plain.generate(prompt_token_ids=prompts, params=params))
    stats, off = cached.last_stats, plain.last_stats
    # Each prompt reuses the 4 full system blocks; the 5th (partly question) is computed.
    assert stats["prefix_cache_hit_tokens"] == 3 * 4 * BS and off["prefix_cache_hit_tokens"] == 0
    assert stats["prefill_tokens"] == off["prefill_tokens"] - 3 * 4 * BS
    assert_pool_empty(cached)   # cached blocks count as free


def test_a_prompt_that_is_all_cached_still_computes_its_last_token(tiny_ckpt):
    cached, plain = both(tiny_ckpt)
    prompt = SYSTEM[:3 * BS]   # exactly three full blocks
    for _ in range(2):
        a = cached.generate(prompt_token_ids=[prompt], params=GREEDY)
    assert token_lists(a) == token_lists(plain.generate(prompt_token_ids=[prompt], params=GREEDY))
    assert cached.last_stats["prefix_cache_hit_tokens"] == 2 * BS   # the block holding the last token is recomputed


def test_eager_reallocation_rounds_hit_the_cache_and_trees_do_not_change(tiny_ckpt):
    cached, plain = both(tiny_ckpt, 256)
    prompts = [SYSTEM + q for q in QUESTIONS]
    # Branches at every step: 2**3 = 8 of M = 16 sequences, so the saved budget runs reallocation rounds.
    params = EagerParams(theta=0.5, max_sequences=16, max_tokens=3, dynamic_threshold=False, seed=2)
    never = dict(answers=["x"] * 3, checker=lambda text, answer: False)
    a = cached.eager(prompts, params, method="eager", **never)
    b = plain.eager(prompts, params, method="eager", **never)
    assert [[s.token_ids for s in o.sequences] for o in a] == [[s.token_ids for s in o.sequences] for o in b]
    assert cached.last_stats["rounds"] > 1
    # Round 0 shares the system prompt between prompts; every later round reuses whole prompts.
    assert cached.last_stats["prefix_cache_hit_tokens"] > 3 * 4 * BS


def test_a_small_pool_evicts_cached_blocks_and_never_fails_because_of_them(tiny_ckpt):
    cached, plain = both(tiny_ckpt, 14)
    prompts = prompts_of([9, 13, 6, 11, 15, 7, 12], start=60)   # together far more than 14 blocks
    for p in prompts + prompts[:3]:
        a = cached.generate(prompt_token_ids=[p], params=SEEDED)
        assert token_lists(a) == token_lists(plain.generate(prompt_token_ids=[p], params=SEEDED))
    bm = cached.block_manager
    assert bm.evictions > 0 and bm.num_cached > 0
    assert_pool_empty(cached)


def test_a_hash_collision_cannot_alias_another_prompt(tiny_ckpt, monkeypatch):
    monkeypatch.setattr(BlockManager, "prefix_hash", staticmethod(lambda previous, tokens: b"same"))
    cached, plain = both(tiny_ckpt)
    first, second = [SYSTEM + [1, 2]], [[t + 1 for t in SYSTEM] + [1, 2]]   # every block differs
    cached.generate(prompt_token_ids=first, params=GREEDY)
    out = cached.generate(prompt_token_ids=second, params=GREEDY)
    assert token_lists(out) == token_lists(plain.generate(prompt_token_ids=second, params=GREEDY))
    assert cached.last_stats["prefix_cache_hit_tokens"] == 0   # the block's own tokens are compared


def test_non_finite_blocks_are_never_offered_again(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 64)
    llm.model.embed = llm.model.embed.clone()
    llm.model.embed[200] = float("nan")
    poisoned = [200] + SYSTEM
    assert llm.generate(prompt_token_ids=[poisoned], params=GREEDY)[0].outputs[0].finish_reason == "error"
    llm.generate(prompt_token_ids=[poisoned], params=GREEDY)
    assert llm.last_stats["prefix_cache_hit_tokens"] == 0
    assert llm.block_manager.num_cached == 0
