"""A hypothesis state machine drives BlockManager and a real (tiny) KVPool against a plain model.

The model is, for every live sequence, the list of write ids it should read back at each of its
positions. Writing position p of a sequence stores a tensor that encodes a fresh write id in every
layer, k/v half and head dim of the slot, so reading it back identifies exactly which write (and
hence which sequence's history) the cache returned.

Steps are batched like the engine does them: ``prepare_write`` for every writer of the step, then
one ``copy_blocks`` of all copy-on-write pairs, then the writes. After every rule:
  * reference counts equal the number of table references (``bm.check``), free + used == total;
  * every table has exactly the blocks its length needs;
  * K/V read through every table equal that sequence's own model.
During a step: ``blocks_for_writes`` predicts exactly what the pool loses, every written slot lies
in a block whose count is 1 and that is not registered in the prefix cache (I4), and blocks still
shared after the step are byte-for-byte unchanged.

The prefix cache takes part: full blocks are registered under the chained hash of their write ids,
freed registered blocks wait as cached (and are evicted when the pool runs dry), and a new sequence
can take a registered prefix back; it must then read exactly the write ids that were registered.
"""

from __future__ import annotations

import torch
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from eager_core.cache.block_manager import BlockManager
from eager_core.cache.kv_pool import KVPool
from eager_core.model.config import ModelConfig

NUM_BLOCKS = 16
MAX_SEQS = 8
CFG = ModelConfig.from_hf(dict(model_type="llama", vocab_size=8, hidden_size=2, intermediate_size=4,
                               num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1,
                               max_position_embeddings=64, rms_norm_eps=1e-5))
# Every element of a slot [layers, 2, kv_heads, head_dim] gets its own offset, so a write id is
# recognisable in each layer and half: a copy that skipped a layer or swapped k/v would show.
_OFFSETS = torch.arange(CFG.num_layers * 2 * CFG.num_kv_heads * CFG.head_dim, dtype=torch.float32).view(
    CFG.num_layers, 2, CFG.num_kv_heads, CFG.head_dim)
_WIDTH = _OFFSETS.numel()


def encode(write_id: int) -> torch.Tensor:
    return write_id * _WIDTH + _OFFSETS   # exact in float32 while write_id * _WIDTH < 2**24


def blocks_needed(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class BlockManagerMachine(RuleBasedStateMachine):
    @initialize(block_size=st.sampled_from([2, 3, 4]))
    def setup(self, block_size: int) -> None:
        self.bs = block_size
        self.bm = BlockManager(NUM_BLOCKS, block_size, enable_caching=True)
        self.registered: list[list[int]] = []   # value lists whose full blocks were offered to the cache
        self.pool = KVPool(CFG, NUM_BLOCKS, block_size, torch.float32, torch.device("cpu"))
        self.pool.ensure_zeroed(NUM_BLOCKS - 1)   # the engine zeroes a block before its first write
        self.tables: dict[int, list[int]] = {}
        self.model: dict[int, list[int]] = {}   # seq -> write id expected at each position
        self.next_seq = 0
        self.next_write = 1                     # 0 is the pool's zero fill
        self._new([], [])                       # never empty (see ``free``), so every rule can run

    # --- helpers -----------------------------------------------------------------------------

    def _pick(self, index: int) -> int:
        return sorted(self.tables)[index % len(self.tables)]

    def _new(self, table: list[int], values: list[int]) -> None:
        self.tables[self.next_seq], self.model[self.next_seq] = table, values
        self.next_seq += 1

    def _block(self, block: int) -> torch.Tensor:
        return self.pool.kv[:, :, block * self.bs:(block + 1) * self.bs].clone()

    # --- rules ---------------------------------------------------------------------------------

    @precondition(lambda self: len(self.tables) < MAX_SEQS)
    @rule()
    def allocate(self) -> None:
        self._new([], [])

    @rule(picks=st.lists(st.tuples(st.integers(0, 99), st.integers(1, 6)), min_size=1, max_size=4))
    def step(self, picks: list[tuple[int, int]]) -> None:
        """Append chunks to some sequences in one batched step (prefill chunks and decodes)."""
        writes: dict[int, int] = {}
        for index, n in picks:
            writes.setdefault(self._pick(index), n)   # one chunk per sequence per step
        self._write_step(writes)

    @rule()
    def decode_all(self) -> None:
        """One token for every sequence at once: siblings race for the blocks they share."""
        self._write_step({s: 1 for s in self.tables})

    def _write_step(self, writes: dict[int, int]) -> None:
        plan = [(self.tables[s], len(self.model[s]), len(self.model[s]) + n) for s, n in writes.items()]
        predicted = self.bm.blocks_for_writes(plan)
        assert predicted <= sum(self.bm.blocks_for_write(*w) for w in plan)   # the sum over-counts
        if predicted > self.bm.num_free:
            return   # the scheduler would preempt instead; nothing may be touched
        free_before, cow_before = self.bm.num_free, self.bm.cow_copies
        shared_before = {b for b, c in enumerate(self.bm.ref_count) if c > 1}
        snapshot = {b: self._block(b) for b in shared_before}

        slots_of: dict[int, list[int]] = {}
        copies: list[tuple[int, int]] = []
        for (s, n), (table, start, end) in zip(writes.items(), plan):
            slots, cow = self.bm.prepare_write(table, start, end)
            assert len(slots) == n
            for src, dst in cow:
                assert src in shared_before, f"copied block {src} was not shared"
                assert self.bm.ref_count[src] >= 1 and self.bm.ref_count[dst] == 1
            slots_of[s] = slots
            copies += cow
        assert free_before - self.bm.num_free == predicted, "blocks_for_writes is not exact"
        assert self.bm.cow_copies - cow_before == len(copies)
        # I3: after prepare_write, everything about to be written is privately owned; I4: and not cached.
        for s, slots in slots_of.items():
            for slot in slots:
                assert self.bm.ref_count[slot // self.bs] == 1, f"seq {s} writes shared block {slot // self.bs}"
                assert slot // self.bs not in self.bm.hash_of, f"seq {s} writes registered block {slot // self.bs}"
                assert slot // self.bs in self.tables[s]

        self.pool.copy_blocks(copies)
        for s, slots in slots_of.items():
            for slot in slots:
                self.pool.kv[:, :, slot] = encode(self.next_write)
                self.model[s].append(self.next_write)
                self.next_write += 1
        for b in shared_before:
            if self.bm.ref_count[b] > 1:
                assert torch.equal(self._block(b), snapshot[b]), f"shared block {b} was written"

    @precondition(lambda self: len(self.tables) < MAX_SEQS)
    @rule(index=st.integers(0, 99))
    def fork_whole(self, index: int) -> None:
        parent = self._pick(index)
        free_before, counts_before = self.bm.num_free, list(self.bm.ref_count)
        child = self.bm.fork(self.tables[parent])
        # A fork allocates and copies nothing: it only bumps each shared block's count.
        assert self.bm.num_free == free_before
        assert child == self.tables[parent] and child is not self.tables[parent]
        for b in set(child):
            assert self.bm.ref_count[b] == counts_before[b] + 1
        self._new(child, list(self.model[parent]))

    @precondition(lambda self: len(self.tables) < MAX_SEQS)
    @rule(index=st.integers(0, 99), frac=st.floats(0, 1))
    def fork_truncated(self, index: int, frac: float) -> None:
        """Share only the first ``num_tokens`` positions (EAGer's re-fork at a branch position)."""
        parent = self._pick(index)
        num_tokens = int(frac * len(self.model[parent]))
        free_before = self.bm.num_free
        child = self.bm.fork(self.tables[parent], num_tokens)
        assert self.bm.num_free == free_before
        assert child == self.tables[parent][:blocks_needed(num_tokens, self.bs)]
        self._new(child, self.model[parent][:num_tokens])

    @rule(index=st.integers(0, 99), frac=st.floats(0, 1))
    def truncate(self, index: int, frac: float) -> None:
        s = self._pick(index)
        num_tokens = int(frac * len(self.model[s]))
        self.bm.truncate(self.tables[s], num_tokens)
        del self.model[s][num_tokens:]

    @precondition(lambda self: len(self.tables) > 1)
    @rule(index=st.integers(0, 99))
    def free(self, index: int) -> None:
        s = self._pick(index)
        table = self.tables.pop(s)
        del self.model[s]
        sole = [b for b in table if self.bm.ref_count[b] == 1]
        free_before = self.bm.num_free
        self.bm.free(table)
        assert table == []
        # Exactly the blocks this sequence held alone go back; shared ones only lose a reference.
        assert self.bm.num_free == free_before + len(sole)
        assert set(sole) <= set(self.bm.free_list) | set(self.bm.cached)

    def _hashes(self, values: list[int]) -> list[tuple[bytes, tuple]]:
        out, prev = [], None
        for j in range(len(values) // self.bs):
            tokens = tuple(values[j * self.bs:(j + 1) * self.bs])
            prev = self.bm.prefix_hash(prev, tokens)
            out.append((prev, tokens))
        return out

    @rule(index=st.integers(0, 99))
    def register(self, index: int) -> None:
        """Offer every full block of a sequence to the cache (the engine does it after each step)."""
        s = self._pick(index)
        for j, (h, tokens) in enumerate(self._hashes(self.model[s])):
            self.bm.register(self.tables[s][j], h, tokens)
            assert self.bm.lookup(h, tokens) is not None   # registered now, or an equal prefix already was
        self.registered.append(list(self.model[s]))

    @precondition(lambda self: self.registered and len(self.tables) < MAX_SEQS)
    @rule(pick=st.integers(0, 10**6))
    def reuse(self, pick: int) -> None:
        """A new sequence takes the longest still-cached run of a registered prefix."""
        values = self.registered[pick % len(self.registered)]
        table: list[int] = []
        for h, tokens in self._hashes(values):
            block = self.bm.lookup(h, tokens)
            if block is None:
                break
            free_before, was_cached = self.bm.num_free, block in self.bm.cached
            self.bm.acquire_cached(block)
            assert self.bm.num_free == free_before - was_cached   # a cached block leaves the free count
            table.append(block)
        self._new(table, list(values[:len(table) * self.bs]))

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def counts_match_tables(self) -> None:
        self.bm.check(list(self.tables.values()))
        used = sum(1 for c in self.bm.ref_count if c > 0)
        assert used == self.bm.num_used and used + self.bm.num_free == NUM_BLOCKS

    @invariant()
    def every_table_reads_its_own_values(self) -> None:
        for s, table in self.tables.items():
            values = self.model[s]
            assert len(table) == blocks_needed(len(values), self.bs), f"seq {s}: table length"
            if not values:
                continue
            pos = torch.arange(len(values))
            slots = torch.tensor(table)[pos // self.bs] * self.bs + pos % self.bs
            got = self.pool.kv[:, :, slots].permute(2, 0, 1, 3, 4)   # [positions, layers, 2, kvh, hd]
            want = torch.stack([encode(w) for w in values])
            assert torch.equal(got, want), f"seq {s} reads another sequence's K/V"


# Up to 80 examples x 80 steps; hypothesis ends some runs early: ~5000 rule applications per CI run.
BlockManagerMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=80, deadline=None)
TestBlockManagerState = BlockManagerMachine.TestCase
