"""Block manager and KV pool, example by example: what a fork costs, when copy-on-write fires,
and that every illegal count transition is refused (the state machine covers the random mixes)."""

from __future__ import annotations

import pytest
import torch

from eager_core.cache.block_manager import BlockManager
from eager_core.cache.kv_pool import KVPool
from eager_core.model.config import ModelConfig

CFG = ModelConfig.from_hf(dict(model_type="llama", vocab_size=8, hidden_size=4, intermediate_size=4,
                               num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                               max_position_embeddings=64, rms_norm_eps=1e-5))


def test_fork_shares_every_block_and_allocates_nothing():
    bm = BlockManager(8, 4)
    parent: list[int] = []
    bm.prepare_write(parent, 0, 10)            # 3 blocks, the last one half full
    child = bm.fork(parent)
    assert child == parent and bm.num_free == 5
    assert [bm.ref_count[b] for b in parent] == [2, 2, 2]
    bm.check([parent, child])


def test_mid_block_fork_costs_one_copy_per_branch_and_the_last_writer_writes_in_place():
    bm = BlockManager(8, 4)
    root: list[int] = []
    bm.prepare_write(root, 0, 6)                # blocks [a, b], b holds positions 4, 5
    branches = [bm.fork(root) for _ in range(3)]
    tables = [root] + branches
    shared_tail = root[1]
    writes = [(t, 6, 7) for t in tables]
    assert bm.blocks_for_writes(writes) == 3    # four writers of a block with count 4: three copies
    assert sum(bm.blocks_for_write(*w) for w in writes) == 4
    copies = [bm.prepare_write(t, 6, 7)[1] for t in tables]
    assert [len(c) for c in copies] == [1, 1, 1, 0]
    assert all(src == shared_tail for c in copies for src, _ in c)
    assert tables[-1][1] == shared_tail and bm.ref_count[shared_tail] == 1
    assert bm.cow_copies == 3 and bm.num_free == 8 - 2 - 3
    bm.check(tables)


def test_block_boundary_fork_needs_no_copy():
    bm = BlockManager(8, 4)
    root: list[int] = []
    bm.prepare_write(root, 0, 8)
    child = bm.fork(root)
    for t in (root, child):
        _, cow = bm.prepare_write(t, 8, 9)
        assert cow == []
    assert root[:2] == child[:2] and root[2] != child[2] and bm.cow_copies == 0


def test_truncated_fork_then_rewrite_copies_the_shared_partial_block():
    bm = BlockManager(8, 4)
    parent: list[int] = []
    bm.prepare_write(parent, 0, 11)
    child = bm.fork(parent, 5)                  # shares positions 0..4: blocks 0 and 1
    assert child == parent[:2]
    slots, cow = bm.prepare_write(child, 5, 6)  # position 5 lives in the shared block 1
    assert cow == [(parent[1], child[1])] and slots == [child[1] * 4 + 1]
    bm.check([parent, child])


def test_free_returns_only_unshared_blocks():
    bm = BlockManager(6, 2)
    a: list[int] = []
    bm.prepare_write(a, 0, 4)
    b = bm.fork(a, 2)
    bm.free(a)
    assert a == [] and bm.num_free == 5 and bm.ref_count[b[0]] == 1
    bm.free(b)
    assert bm.num_free == 6
    bm.check([])


def test_illegal_transitions_are_asserted():
    bm = BlockManager(4, 2)
    t: list[int] = []
    bm.prepare_write(t, 0, 2)
    stale = list(t)
    bm.free(t)
    with pytest.raises(AssertionError):
        bm.free(stale)                          # double free
    with pytest.raises(AssertionError):
        bm.fork(stale)                          # forking a freed block
    with pytest.raises(AssertionError):
        bm.prepare_write([], 4, 5)              # a write that would leave a hole
    with pytest.raises(AssertionError):
        bm.check([stale])                       # a table naming a free block


def test_copy_blocks_copies_every_layer_and_both_halves_in_one_call():
    pool = KVPool(CFG, 5, 3, torch.float32, torch.device("cpu"))
    pool.kv.copy_(torch.randn_like(pool.kv))
    before = pool.kv.clone()
    pool.copy_blocks([(1, 4), (3, 0)])
    def blk(t, b):
        return t[:, :, b * 3:(b + 1) * 3]
    assert torch.equal(blk(pool.kv, 4), blk(before, 1)) and torch.equal(blk(pool.kv, 0), blk(before, 3))
    for b in (1, 2, 3):
        assert torch.equal(blk(pool.kv, b), blk(before, b))
    pool.copy_blocks([])                        # a step without copies is a no-op
    assert torch.equal(blk(pool.kv, 4), blk(before, 1))


def test_the_pool_zeroes_blocks_on_first_use_only(tiny_ckpt):
    """The KV pool is not zero-filled at allocation (its pages would all be resident at start);
    every block is zeroed before its first write, and the high-water mark only moves forward."""
    from eager_core import LLM, SamplingParams

    llm = LLM(str(tiny_ckpt), num_kv_blocks=200, block_size=4)
    pool = llm.kv_pool
    bs = pool.block_size
    assert pool.zeroed_blocks == 0
    assert pool.kv[:, :, pool.scratch_block * bs:].abs().sum() == 0          # the scratch block is zeroed at once
    llm.generate(prompt_token_ids=[[1, 2, 3, 4, 5, 6, 7]], params=SamplingParams(temperature=0, max_tokens=3))
    used = pool.zeroed_blocks
    assert 3 <= used < 200                                                  # what the request touched, not the pool
    pool.kv[:, :, used * bs:pool.scratch_block * bs] = float("nan")          # stand-in for uninitialised memory
    out = llm.generate(prompt_token_ids=[[9, 8, 7], [1, 2]] * 20, params=SamplingParams(temperature=0, max_tokens=12))
    assert all(c.finish_reason != "error" for o in out for c in o.outputs)   # fresh blocks were zeroed first
    assert pool.zeroed_blocks > used
