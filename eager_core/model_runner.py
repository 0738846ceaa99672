"""From a scheduled batch to logits: slots, copy-on-write, packed inputs, one forward pass.

The runner owns the model, the KV pool and the block manager. For each scheduled
(sequence, n) it reserves slots for positions [num_computed, num_computed + n) (copy-on-write
happens here), copies every CoW block of the step in one operation, then runs one forward over
the packed tokens. Logits come back only for sequences whose context is complete after the step.

A decode-only step can instead go through ``DecodeGraphs`` (decode_graphs.py): same inputs, padded
to a static shape and replayed as a CUDA graph.
"""

from __future__ import annotations

import torch

from eager_core.cache.block_manager import BlockManager
from eager_core.cache.kv_pool import KVPool
from eager_core.decode_graphs import DecodeGraphs
from eager_core.model.attention import AttentionMetadata, PrefillChunk, context_slots
from eager_core.model.transformer import Transformer
from eager_core.ops.paged_attention import use_paged_kernel
from eager_core.sequence import Sequence


class ModelRunner:
    def __init__(self, model: Transformer, kv_pool: KVPool, block_manager: BlockManager,
                 graphs: DecodeGraphs | None = None):
        self.model, self.kv_pool, self.bm = model, kv_pool, block_manager
        self.device = model.device
        self.block_size = block_manager.block_size
        self.graphs = graphs

    def _slots_of(self, table: list[int], length: int) -> torch.Tensor:
        """Slot of every position [0, length) of a sequence, as a tensor."""
        bs = self.block_size
        pos = torch.arange(length)
        return torch.tensor(table, dtype=torch.long)[pos // bs] * bs + pos % bs

    def run(self, items: list[tuple[Sequence, int]], num_decode: int, all_logits: bool = False
            ) -> tuple[torch.Tensor, list[Sequence]]:
        """Feed every item's next tokens; return (logits [S, V], the S sequences they belong to).

        The first ``num_decode`` items are single-token decodes. With ``all_logits`` every fed
        position gets a logits row (scoring); otherwise only sequences whose context is complete.
        Afterwards each sequence's ``num_computed`` has advanced by its n.
        """
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        copies: list[tuple[int, int]] = []
        logits_rows: list[int] = []
        sampled: list[Sequence] = []
        prefills: list[PrefillChunk] = []
        for idx, (seq, n) in enumerate(items):
            start = seq.num_computed
            slots, cow = self.bm.prepare_write(seq.block_table, start, start + n)
            copies += cow
            offset = len(input_ids)
            input_ids += seq.token_ids[start:start + n]
            positions += range(start, start + n)
            slot_mapping += slots
            if idx >= num_decode:
                prefills.append(PrefillChunk(offset, n, start + n, self._slots_of(seq.block_table, start + n).to(self.device)))
            if all_logits:
                logits_rows += range(offset, offset + n)
            if start + n == len(seq.token_ids):
                if not all_logits:
                    logits_rows.append(offset + n - 1)
                sampled.append(seq)
        # Every copy-on-write of the step happens before the forward pass writes anything.
        self.kv_pool.copy_blocks(copies)
        graphs = self.graphs
        if (graphs is not None and num_decode == len(items) and not all_logits
                and graphs.fits(num_decode, max(positions) + 1)):
            seqs = [s for s, _ in items]
            logits = graphs.run(input_ids, positions, slot_mapping, [s.block_table for s in seqs],
                                [p + 1 for p in positions])
            for seq in seqs:
                seq.num_computed += 1
            return logits, sampled
        meta = AttentionMetadata(slot_mapping=torch.tensor(slot_mapping, dtype=torch.long, device=self.device),
                                 num_decode=num_decode, prefills=prefills)
        if num_decode:
            decoding = [s for s, _ in items[:num_decode]]
            tables, ctx = self._decode_tables(decoding)
            if use_paged_kernel(self.device, self.kv_pool.kv.dtype):   # the kernel reads through the tables
                meta.decode_tables, meta.decode_context_lens, meta.block_size = tables, ctx, self.block_size
            else:
                meta.decode_slots, meta.decode_mask = self._decode_gather(tables, ctx)
        logits = self.model.forward(
            torch.tensor(input_ids, dtype=torch.long, device=self.device),
            torch.tensor(positions, dtype=torch.long, device=self.device),
            meta, self.kv_pool.kv, torch.tensor(logits_rows, dtype=torch.long, device=self.device))
        for seq, n in items:
            seq.num_computed += n
        return logits, sampled

    @staticmethod
    def _decode_tables(seqs: list[Sequence]) -> tuple[torch.Tensor, torch.Tensor]:
        """Block tables [B, width] (zero-padded past each table's end) and context lengths [B] of
        the decoding sequences, the new token included."""
        width = max(len(s.block_table) for s in seqs)
        tables = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in seqs], dtype=torch.long)
        return tables, torch.tensor([s.num_computed + 1 for s in seqs], dtype=torch.long)

    def _decode_gather(self, tables: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Slots [B, C] of every decoding sequence's context and its mask (None when no row is padded)."""
        C = int(ctx.max())
        slots, mask = context_slots(tables, ctx, self.block_size, C)
        if bool((ctx == C).all()):   # equal lengths (one sequence, or n samples of a prompt): no padding
            return slots.to(self.device), None
        return slots.to(self.device), mask[:, None, None, :].to(self.device)
