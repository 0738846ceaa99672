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
"""

from __future__ import annotations

from collections import deque


class BlockManager:
    """Allocates fixed-size KV blocks to block tables (plain ``list[int]`` owned by sequences)."""

    def __init__(self, num_blocks: int, block_size: int):
        assert num_blocks > 0 and block_size > 0
        self.num_blocks, self.block_size = num_blocks, block_size
        self.ref_count = [0] * num_blocks
        self.free_list: deque[int] = deque(range(num_blocks))
        self.cow_copies = 0  # copies made since construction (statistics)

    # --- counts ---------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        return len(self.free_list)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free_list)

    def _take(self) -> int:
        block = self.free_list.popleft()
        assert self.ref_count[block] == 0, f"free block {block} has count {self.ref_count[block]}"
        self.ref_count[block] = 1
        return block

    def _release(self, block: int) -> None:
        assert self.ref_count[block] > 0, f"releasing block {block} whose count is already 0"
        self.ref_count[block] -= 1
        if self.ref_count[block] == 0:
            self.free_list.append(block)

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
        """Assert I1 and I2 against the given live tables (tests and debug runs)."""
        counts = [0] * self.num_blocks
        for table in tables:
            for block in table:
                counts[block] += 1
        assert counts == self.ref_count, "reference counts differ from table references"
        free = set(self.free_list)
        assert len(free) == len(self.free_list), "a block is in the free list twice"
        assert all((c == 0) == (b in free) for b, c in enumerate(counts)), "free list and counts disagree"
