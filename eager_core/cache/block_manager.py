"""Physical KV blocks, reference counts, forks and copy-on-write.

A *block* holds the keys/values of ``block_size`` consecutive positions (all layers). A sequence
owns a *block table*: ``table[j]`` is the physical block holding its positions
``j*block_size .. (j+1)*block_size - 1``. Forking a sequence copies its table (a few integers) and
bumps each block's reference count; no KV data moves.

Invariants (asserted on every transition, checked by tests/cache/test_block_manager_state.py):
  I1  ``ref_count[b]`` equals the number of table entries, over all live tables, that name b.
  I2  a block is in the free list iff its count is 0; free + used == num_blocks.
  I3  a block whose count is above one is never written. ``prepare_write`` gives the writer a private
      copy first (copy-on-write) and returns the (src, dst) pairs, which the caller copies in one
      batched operation *before* the step's forward pass writes anything.

Why I3 is enough: positions are append-only, so a shared block can only be written by appending
into its unfilled tail (the last block of a forked table) or by re-writing positions a branch
replaces after a truncated fork. Both go through ``prepare_write``.

Prefix cache (``enable_caching``): a *full* block can be registered under the hash of its
contents, chained through every block before it (``prefix_hash``), so the same hash means the same
tokens at the same positions after the same prefix. When its count drops to 0 a registered block is
not wiped: it waits in an LRU of cached blocks, still counted as free, until a new request with the
same prefix takes it back (``acquire_cached``) or the pool needs a block and evicts the least
recently used one. The life cycle of a block:

    free -> owned (count 1) -> shared (count > 1, forks) -> cached (count 0, registered) -> evicted (free)
                                                          (or: owned again by a request with the same prefix)
  I4  a registered block is never written: ``prepare_write`` unregisters a block it is about to
      write in place (its content changes), and copies it when shared, as for any shared block.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque


class BlockManager:
    """Allocates fixed-size KV blocks to block tables (plain ``list[int]`` owned by sequences)."""

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = False):
        assert num_blocks > 0 and block_size > 0
        self.num_blocks, self.block_size = num_blocks, block_size
        self.enable_caching = enable_caching
        self.ref_count = [0] * num_blocks
        self.free_list: deque[int] = deque(range(num_blocks))
        self.cached: OrderedDict[int, None] = OrderedDict()   # count-0 registered blocks, LRU first
        self.hash_of: dict[int, bytes] = {}    # registered block -> its prefix hash
        self.tokens_of: dict[int, tuple] = {}  # registered block -> its own tokens (checked on every hit)
        self.block_of: dict[bytes, int] = {}   # prefix hash -> registered block
        self.cow_copies = 0  # copies made since construction (statistics)
        self.evictions = 0

    # --- counts ---------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        """Blocks a write can take: never used, or cached and evictable."""
        return len(self.free_list) + len(self.cached)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        return len(self.cached)

    def _take(self) -> int:
        if self.free_list:
            block = self.free_list.popleft()
        else:   # every free block holds a cached prefix: evict the least recently used one
            block, _ = self.cached.popitem(last=False)
            self._unregister(block)
            self.evictions += 1
        assert self.ref_count[block] == 0, f"free block {block} has count {self.ref_count[block]}"
        self.ref_count[block] = 1
        return block

    def _release(self, block: int) -> None:
        assert self.ref_count[block] > 0, f"releasing block {block} whose count is already 0"
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            if block in self.hash_of:
                self.cached[block] = None   # most recently used at the end
            else:
                self.free_list.append(block)

    # --- the prefix cache -----------------------------------------------------------------

    @staticmethod
    def prefix_hash(previous: bytes | None, tokens: tuple) -> bytes:
        """The hash of a full block: its tokens, chained to the hash of the block before it.

        128-bit BLAKE2b rather than Python's 64-bit ``hash``: a false hit would silently give a
        request another prompt's keys/values, so the odds must be negligible even over billions
        of blocks (birthday bound ~2**-64 at 2**32 blocks), not merely small.
        """
        h = hashlib.blake2b(previous or b"", digest_size=16)
        h.update(array("q", tokens).tobytes())
        return h.digest()

    def register(self, block: int, block_hash: bytes, tokens: tuple) -> None:
        """Offer a full, computed, owned block to the cache (a no-op when caching is off, or when
        another block already holds the same prefix: the first one stays)."""
        if not self.enable_caching or block in self.hash_of or block_hash in self.block_of:
            return
        assert self.ref_count[block] > 0 and len(tokens) == self.block_size
        self.hash_of[block], self.tokens_of[block], self.block_of[block_hash] = block_hash, tokens, block

    def lookup(self, block_hash: bytes, tokens: tuple) -> int | None:
        """The registered block holding this prefix, if any. The block's own tokens are compared,
        so a false hit needs equal tokens *and* a 128-bit collision of the prefix hash."""
        block = self.block_of.get(block_hash)
        return block if block is not None and self.tokens_of[block] == tokens else None

    def acquire_cached(self, block: int) -> None:
        """Take one more reference to a registered block (from the cached LRU if nobody held it)."""
        assert block in self.hash_of, f"block {block} is not registered"
        if self.ref_count[block] == 0:
            del self.cached[block]
        self.ref_count[block] += 1

    def uncache(self, blocks: list[int]) -> None:
        """Withdraw blocks from the cache (their content is no longer trusted, e.g. non-finite)."""
        for block in blocks:
            if block in self.hash_of:
                self._unregister(block)
                if block in self.cached:
                    del self.cached[block]
                    self.free_list.append(block)

    def _unregister(self, block: int) -> None:
        del self.block_of[self.hash_of.pop(block)]
        del self.tokens_of[block]

    # --- planning -------------------------------------------------------------------------

    def blocks_for_write(self, table: list[int], start: int, end: int) -> int:
        """Blocks a write of positions [start, end) would take from the pool (new blocks + CoW copies)."""
        if end <= start:
            return 0
        bs = self.block_size
        first, last = start // bs, (end - 1) // bs
        new = max(0, last + 1 - len(table))
        shared = sum(1 for j in range(first, min(last + 1, len(table))) if self.ref_count[table[j]] > 1)
        return new + shared

    def blocks_for_writes(self, writes: list[tuple[list[int], int, int]]) -> int:
        """Blocks a whole step of writes ``(table, start, end)`` takes from the pool, exactly.

        Summing ``blocks_for_write`` over a step over-counts: a block shared by ``c`` tables and
        written through ``k`` of them is copied ``min(k, c - 1)`` times, not ``k``, because once the
        other writers have taken their copies the last one owns the block and writes in place.
        The scheduler relies on this being exact, or a family that fits would be refused.
        """
        bs = self.block_size
        new = 0
        writers: dict[int, int] = {}
        for table, start, end in writes:
            if end <= start:
                continue
            first, last = start // bs, (end - 1) // bs
            new += max(0, last + 1 - len(table))
            for j in range(first, min(last + 1, len(table))):
                if self.ref_count[table[j]] > 1:
                    writers[table[j]] = writers.get(table[j], 0) + 1
        return new + sum(min(k, self.ref_count[b] - 1) for b, k in writers.items())

    # --- transitions ----------------------------------------------------------------------

    def prepare_write(self, table: list[int], start: int, end: int) -> tuple[list[int], list[tuple[int, int]]]:
        """Make positions [start, end) of ``table`` writable; return (slots, copy-on-write pairs).

        Blocks are appended for positions past the table's end; shared blocks in the range are
        replaced by private copies. The caller must check ``blocks_for_write`` fits ``num_free``.
        """
        bs = self.block_size
        assert start <= len(table) * bs, f"write at {start} leaves a hole after {len(table)} blocks"
        copies: list[tuple[int, int]] = []
        for j in range(start // bs, (end - 1) // bs + 1 if end > start else start // bs):
            if j == len(table):
                table.append(self._take())
            elif self.ref_count[table[j]] > 1:
                src, dst = table[j], self._take()
                self._release(src)          # still > 0: the other owners keep it
                assert self.ref_count[src] >= 1
                table[j] = dst
                copies.append((src, dst))
            elif table[j] in self.hash_of:  # I4: written in place, so it no longer holds that prefix
                self._unregister(table[j])
        self.cow_copies += len(copies)
        slots = [table[p // bs] * bs + p % bs for p in range(start, end)]
        return slots, copies

    def fork(self, table: list[int], num_tokens: int | None = None) -> list[int]:
        """Return a child table sharing the blocks that hold the first ``num_tokens`` positions.

        With ``num_tokens=None`` the child shares the whole table. Nothing is copied or allocated:
        each shared block's count goes up by one. A later write into a shared block copies it.
        """
        n_blocks = len(table) if num_tokens is None else -(-num_tokens // self.block_size)
        assert n_blocks <= len(table), f"fork of {num_tokens} tokens from a table of {len(table)} blocks"
        child = table[:n_blocks]
        for block in child:
            assert self.ref_count[block] > 0, f"forking from free block {block}"
            self.ref_count[block] += 1
        return child

    def free(self, table: list[int]) -> None:
        """Drop every reference of ``table`` and empty it; blocks at count 0 return to the pool."""
        for block in table:
            self._release(block)
        table.clear()

    def truncate(self, table: list[int], num_tokens: int) -> None:
        """Keep only the blocks that hold the first ``num_tokens`` positions."""
        keep = -(-num_tokens // self.block_size)
        for block in table[keep:]:
            self._release(block)
        del table[keep:]

    def check(self, tables: list[list[int]]) -> None:
        """Assert I1, I2 and the cache's bookkeeping against the given live tables (tests, debug runs)."""
        counts = [0] * self.num_blocks
        for table in tables:
            for block in table:
                counts[block] += 1
        assert counts == self.ref_count, "reference counts differ from table references"
        free = set(self.free_list)
        assert len(free) == len(self.free_list), "a block is in the free list twice"
        assert not free & set(self.cached), "a block is both free and cached"
        assert all((c == 0) == (b in free or b in self.cached) for b, c in enumerate(counts)), \
            "free list and counts disagree"
        assert all(b in self.hash_of for b in self.cached), "an unregistered block is cached"
        assert {self.block_of[h] for h in self.block_of} == set(self.hash_of), "hash maps disagree"
        assert all(self.block_of[h] == b for b, h in self.hash_of.items()), "hash maps disagree"
