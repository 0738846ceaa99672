"""Forks, parallel sampling, continuous batching and statistics, end to end on a tiny random checkpoint.

Every comparison is against an independent computation: a branch's logits against a fresh
prefill of the same tokens (``LLM.logits``), a crowd's outputs against the same request alone,
``n`` samples against ``n = 1``.
"""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, Decision, SamplingParams
from kv_helpers import (BS, STATS_KEYS, assert_pool_empty, guard_steps, make_llm, prompts_of, token_lists,
                        watch_preemptions)
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)


# --- a branch is a sequence like any other ---------------------------------------------------------


class ForkingGreedy:
    """A step controller (the public per-step interface): greedy; at chosen (branch_id,
    num_generated) points, forks the sequence with its runner-up token, or finishes it early (its
    branches live on). Records (sequence, tokens so far, next-token logits) for every row it sees."""

    def __init__(self, fork_at: set[tuple[int, int]], finish_at: set[tuple[int, int]], bm):
        self.fork_at, self.finish_at, self.bm = fork_at, finish_at, bm
        self.rows: list[tuple[object, list[int], torch.Tensor]] = []
        self.forks = 0

    def decide(self, seqs, logits: torch.Tensor) -> list:
        top2 = logits.topk(2, dim=-1).indices
        decisions = []
        for i, seq in enumerate(seqs):
            self.rows.append((seq, list(seq.token_ids), logits[i].clone()))
            key = (seq.branch_id, seq.num_generated)
            if key in self.finish_at:
                decisions.append(Decision(None, finish_reason="stop"))
            elif key in self.fork_at:
                decisions.append(Decision(int(top2[i, 0]), fork_token=int(top2[i, 1]), note=key))
            else:
                decisions.append(int(top2[i, 0]))
        return decisions

    def on_fork(self, parent, child, note) -> None:
        # A fork costs metadata only: the same blocks, each now shared (nothing taken from the pool).
        assert note == (parent.branch_id, parent.num_generated)
        assert child.block_table == parent.block_table and all(self.bm.ref_count[b] >= 2 for b in child.block_table)
        assert child.token_ids[:-1] == parent.token_ids   # forked before the parent's own token
        self.forks += 1


def run_forking(llm: LLM, prompts: list[list[int]], max_tokens: int) -> ForkingGreedy:
    # Prompts of 6, 8 and 5 tokens with blocks of 4: forks land mid-block and on block boundaries.
    # The root stops early, so a preempted family may have to recompute branches of a finished parent.
    engine = llm.llm_engine
    policy = ForkingGreedy({(0, 0), (0, 2), (1, 3), (2, 4), (0, 5)}, {(0, 6)}, engine.block_manager)
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    ids = [f"fork-{i}" for i in range(len(prompts))]
    engine.stats = type(engine.stats)()
    for rid, prompt in zip(ids, prompts):
        engine.add_request(rid, prompt, params, controller=policy)
    outs = engine.run_until_finished(ids)
    llm.last_stats = engine.stats.as_dict()
    assert all(c.finish_reason == ("stop" if c.index == 0 else "length") for r in outs for c in r.outputs)
    return policy


@pytest.mark.parametrize("num_blocks", [200, 22])
def test_forked_branch_logits_equal_a_fresh_sequence(tiny_ckpt, num_blocks):
    """With 22 blocks, families with nested branches are preempted and recomputed: branches are
    re-forked from their recomputed parent at the branch position (mid-block or not), and branches
    of a parent that has already finished are recomputed on their own."""
    llm = make_llm(tiny_ckpt, num_blocks)
    guard_steps(llm, 500)
    preempted = watch_preemptions(llm)
    refork_points: list[int] = []
    fork = llm.block_manager.fork

    def recording_fork(table, num_tokens=None):
        if num_tokens is not None:   # only the scheduler's re-fork shares a prefix of a table
            refork_points.append(num_tokens)
        return fork(table, num_tokens)
    llm.block_manager.fork = recording_fork
    policy = run_forking(llm, prompts_of([6, 8, 5]), max_tokens=9)
    assert policy.forks == 3 * 5
    stats = llm.last_stats
    assert stats["cow_copies"] > 0
    tight = num_blocks < 100
    assert (stats["preemptions"] > 0) == tight
    assert bool(refork_points) == tight and (not tight or any(p % BS for p in refork_points))
    assert not tight or any(finished for _, finished in preempted)
    assert_pool_empty(llm)
    assert sum(1 for r in policy.rows if r[0].parent is not None) > 30
    # Every recorded row (parents too: a branch's writes must never reach them) against a fresh
    # prefill of the same tokens. A row's tokens are a prefix of its sequence's final tokens, so
    # one prefill per sequence gives every row's reference.
    fresh = {}
    for seq, tokens, row in policy.rows:
        if seq.seq_id not in fresh:
            fresh[seq.seq_id] = llm.logits(seq.token_ids)
        assert seq.token_ids[:len(tokens)] == tokens
        ref = fresh[seq.seq_id][len(tokens) - 1]
        assert (row - ref).abs().max().item() < 1e-4, (seq, len(tokens))


# --- parallel sampling -------------------------------------------------------------------------------


def test_greedy_n4_gives_four_copies_of_n1_and_prefills_once(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 64, enable_prefix_caching=False)   # (with it, the second call reuses 8 tokens)
    prompt = prompts_of([11])
    one = llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    four = llm.generate(prompt_token_ids=prompt,
                        params=SamplingParams(temperature=0, max_tokens=12, n=4, ignore_eos=True))
    assert [c.token_ids for c in four[0].outputs] == [one[0].outputs[0].token_ids] * 4
    assert llm.last_stats["prefill_tokens"] == 11          # the prompt went through the model once
    assert llm.last_stats["generated_tokens"] == 4 * 12


def test_seeded_sampling_does_not_depend_on_the_batch(tiny_ckpt):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=14, n=3, seed=1234, ignore_eos=True)
    target = prompts_of([9], start=40)
    alone = make_llm(tiny_ckpt, 64).generate(prompt_token_ids=target, params=params)[0]
    # Beside prompts of other lengths, prefilled in small chunks, in another engine instance.
    others = prompts_of([3, 17, 30, 5], start=90)
    crowd = make_llm(tiny_ckpt, 200, max_num_batched_tokens=16).generate(
        prompt_token_ids=others[:2] + target + others[2:], params=params)[2]
    assert [c.token_ids for c in crowd.outputs] == [c.token_ids for c in alone.outputs]
    # The three branches draw from different streams, and the seed matters.
    assert len({tuple(c.token_ids) for c in alone.outputs}) == 3
    reseeded = make_llm(tiny_ckpt, 64).generate(
        prompt_token_ids=target, params=SamplingParams(temperature=1.0, top_p=0.95, max_tokens=14, n=3, seed=99,
                                                       ignore_eos=True))[0]
    assert [c.token_ids for c in reseeded.outputs] != [c.token_ids for c in alone.outputs]


def test_n8_stores_the_prompt_once(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 128)
    prompt = prompts_of([30])   # 8 blocks, the last one half full
    llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=4, n=8, ignore_eos=True))
    stats = llm.last_stats
    # Peak after the 3rd decode: 8 prompt blocks + 7 copies of the shared half-full block + 8 new
    # blocks for position 32; the 8 tables are 9 blocks long each.
    assert stats["kv_blocks_peak"] == 8 + 7 + 8
    assert stats["kv_blocks_logical_peak"] == 8 * 9
    assert 3 * stats["kv_blocks_peak"] < stats["kv_blocks_logical_peak"]
    assert stats["cow_copies"] == 7


# --- continuous batching ---------------------------------------------------------------------------


def record_batches(llm: LLM) -> list[list[tuple[int, int]]]:
    """Record every step's (seq_id, new tokens) items as the model runner receives them."""
    batches: list[list[tuple[int, int]]] = []
    run = llm.llm_engine.runner.run

    def recorded(batch):
        batches.append([(it.seq.seq_id, it.n) for it in batch.items])
        return run(batch)
    llm.llm_engine.runner.run = recorded
    return batches


def test_every_running_sequence_decodes_in_one_step(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 128)
    prompts = prompts_of([4, 9, 15, 2, 7])
    llm.generate(prompt_token_ids=prompts, params=SamplingParams(temperature=0, max_tokens=10, n=2, ignore_eos=True))
    stats = llm.last_stats
    # One prefill step samples the first token of all ten sequences; nine packed decodes follow.
    assert stats["decode_steps"] == 9
    assert stats["prompt_tokens"] == stats["prefill_tokens"] == sum(map(len, prompts))
    assert stats["generated_tokens"] == 5 * 2 * 10


def test_batch_limits_and_chunked_prefill_keep_outputs(tiny_ckpt):
    prompts = prompts_of([30, 3, 18, 9, 25])
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=5, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 128).generate(prompt_token_ids=prompts, params=params)
    llm = make_llm(tiny_ckpt, 128, max_num_seqs=3, max_num_batched_tokens=8)
    batches = record_batches(llm)
    assert token_lists(llm.generate(prompt_token_ids=prompts, params=params)) == token_lists(ref)
    assert all(len(b) <= 3 for b in batches)
    assert all(sum(n for _, n in b) <= 8 for b in batches)
    assert max(n for b in batches for _, n in b) == 8             # long prompts went in chunks
    # Continuous batching: some step decodes one request while another one prefills.
    assert any(any(n == 1 for _, n in b) and any(n > 1 for _, n in b) for b in batches)


def test_stats_have_every_key_and_count_copy_on_write(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 64)
    params = SamplingParams(temperature=0, max_tokens=5, n=3, ignore_eos=True)
    llm.generate(prompt_token_ids=[list(range(10, 16))], params=params)   # 6 tokens: fork mid-block
    mid = dict(llm.last_stats)
    assert STATS_KEYS <= set(mid)
    assert mid["cow_copies"] == 2           # three writers of one shared block: two copies
    assert mid["prompt_tokens"] == 6 and mid["generated_tokens"] == 15 and mid["decode_steps"] == 4
    assert mid["preemptions"] == 0 and mid["wall_s"] > 0
    llm.generate(prompt_token_ids=[list(range(10, 18))], params=params)   # 8 tokens: on a boundary
    assert llm.last_stats["cow_copies"] == 0   # stats are per call, and a full block is never copied
    assert llm.last_stats["prompt_tokens"] == 8
