"""Block manager edges, each with its exact expected state: empty writes, cost estimates of one
block, the prefix cache's LRU, withdrawing cached blocks, and the consistency check itself."""

from __future__ import annotations

import pytest

from eager_core.cache.block_manager import BlockManager

TOKENS = (1, 2, 3, 4)


def owned(bm: BlockManager, n_tokens: int) -> list[int]:
    table: list[int] = []
    bm.prepare_write(table, 0, n_tokens)
    return table


def test_sizes_must_be_positive():
    for blocks, size in ((0, 4), (4, 0), (-1, 4)):
        with pytest.raises(AssertionError):
            BlockManager(blocks, size)
    bm = BlockManager(1, 1)
    assert (bm.num_free, bm.num_used, bm.num_cached, bm.cow_copies, bm.evictions) == (1, 0, 0, 0, 0)
    assert bm.enable_caching is False


def test_an_empty_write_costs_nothing_and_changes_nothing():
    bm = BlockManager(8, 4)
    parent = owned(bm, 6)                      # blocks 0, 1; block 1 half full
    child = bm.fork(parent)
    for start in (2, 4, 6, 8):                 # mid-block and on a boundary, inside and at the end
        assert bm.blocks_for_write(child, start, start) == 0
        assert bm.blocks_for_writes([(child, start, start)]) == 0
        assert bm.prepare_write(child, start, start) == ([], [])
    assert child == parent and bm.num_free == 6 and bm.cow_copies == 0
    # an empty write in a step does not hide the writes after it
    assert bm.blocks_for_writes([(child, 2, 2), (child, 6, 7), (parent, 6, 7)]) == 1
    bm.check([parent, child])


def test_write_costs_count_only_the_blocks_written():
    bm = BlockManager(16, 4)
    private = owned(bm, 10)                     # 3 blocks of count 1
    assert bm.blocks_for_write(private, 5, 6) == 0   # in place
    assert bm.blocks_for_write(private, 10, 13) == 1   # the rest of block 2, then block 3 is new
    assert bm.blocks_for_write(private, 10, 12) == 0
    shared = bm.fork(private)                   # now every block has count 2
    assert bm.blocks_for_write(shared, 1, 2) == 1      # block 0 only, not block 1 after it
    assert bm.blocks_for_writes([(shared, 1, 2)]) == 1
    assert bm.blocks_for_write(shared, 3, 5) == 2      # blocks 0 and 1
    assert bm.blocks_for_writes([(shared, 3, 5), (private, 3, 5)]) == 2   # the last writer writes in place
    assert bm.blocks_for_write(shared, 9, 13) == 2     # copy of block 2, new block 3


def test_register_only_with_caching_on_and_the_first_block_stays():
    off = BlockManager(4, 4)
    t = owned(off, 4)
    off.register(t[0], b"h", TOKENS)
    assert off.lookup(b"h", TOKENS) is None and not off.hash_of
    bm = BlockManager(4, 4, enable_caching=True)
    a, b = owned(bm, 4), owned(bm, 4)
    bm.register(a[0], b"h", TOKENS)
    bm.register(b[0], b"h", TOKENS)             # same prefix elsewhere: the first one stays
    bm.register(a[0], b"other", TOKENS)         # a registered block keeps its hash
    assert bm.lookup(b"h", TOKENS) == a[0] and bm.hash_of == {a[0]: b"h"}
    assert bm.lookup(b"h", (1, 2, 3, 5)) is None   # same hash, other tokens: no hit
    with pytest.raises(AssertionError):
        bm.register(b[0], b"short", TOKENS[:3])   # only full blocks
    freed = b[0]
    bm.free(b)
    with pytest.raises(AssertionError):
        bm.register(freed, b"free", TOKENS)       # only owned blocks
    bm.check([a])


def test_prefix_hash_is_128_bits_and_chained():
    h1 = BlockManager.prefix_hash(None, TOKENS)
    assert len(h1) == 16
    assert BlockManager.prefix_hash(h1, TOKENS) != h1 != BlockManager.prefix_hash(None, (1, 2, 3, 5))
    assert BlockManager.prefix_hash(None, TOKENS) == h1


def test_cached_blocks_are_evicted_least_recently_used_first():
    bm = BlockManager(3, 2, enable_caching=True)
    tables = [owned(bm, 2) for _ in range(3)]
    for i, t in enumerate(tables):
        bm.register(t[0], bytes([i]), (i, i))
    for t in (tables[1], tables[0], tables[2]):   # released in this order: LRU is block of table 1
        bm.free(t)
    assert bm.num_free == 3 and bm.num_cached == 3 and bm.evictions == 0
    first = owned(bm, 2)
    assert first == [1] and bm.evictions == 1 and bm.lookup(bytes([1]), (1, 1)) is None
    second = owned(bm, 2)
    assert second == [0] and bm.evictions == 2
    assert bm.lookup(bytes([2]), (2, 2)) == 2   # the most recently released one is still there
    bm.check([first, second])


def test_taking_back_a_cached_block_removes_it_from_the_lru():
    bm = BlockManager(2, 2, enable_caching=True)
    t = owned(bm, 2)
    block = t[0]
    bm.register(block, b"x", (7, 7))
    bm.free(t)
    assert bm.num_cached == 1 and bm.num_free == 2
    bm.acquire_cached(block)                    # count 0 -> 1: out of the LRU, no longer free
    assert bm.ref_count[block] == 1 and bm.num_cached == 0 and bm.num_free == 1
    bm.check([[block]])
    bm.acquire_cached(block)                    # a second reference: count 2, still not in the LRU
    assert bm.ref_count[block] == 2 and bm.num_cached == 0 and bm.num_free == 1
    bm.check([[block], [block]])
    with pytest.raises(AssertionError):
        bm.acquire_cached(1)                    # not registered


def test_uncache_returns_a_cached_block_to_the_free_list():
    bm = BlockManager(3, 2, enable_caching=True)
    t, u = owned(bm, 2), owned(bm, 2)
    bm.register(t[0], b"t", (1, 1))
    bm.register(u[0], b"u", (2, 2))
    bm.free(t)                                  # block 0: cached, count 0
    bm.uncache([0, 1, 2])                       # block 1 is still owned (u); block 2 was never registered
    assert bm.hash_of == {} and bm.num_cached == 0 and bm.num_free == 2
    assert list(bm.free_list) == [2, 0]
    bm.check([u])


def test_check_catches_each_kind_of_inconsistency():
    bm = BlockManager(4, 2)
    t = owned(bm, 2)
    bm.check([t])
    with pytest.raises(AssertionError, match="reference counts"):
        bm.check([])
    bm.free_list.append(bm.free_list[0])
    with pytest.raises(AssertionError, match="twice"):
        bm.check([t])
    bm.free_list.pop()
    gone = bm.free_list.pop()                   # a count-0 block missing from the free list
    with pytest.raises(AssertionError, match="free list and counts disagree"):
        bm.check([t])
    bm.free_list.append(gone)
    bm.check([t])
