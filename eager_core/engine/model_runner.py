"""From a scheduled batch to logits: packed inputs, copy-on-write copies, one forward pass.

The runner owns the model and the KV tensor, not the blocks: the scheduler has already given every
fed position its slot and listed the copy-on-write pairs of the step (engine/scheduler.py). The
runner copies those blocks in one operation, then runs one forward over the packed tokens and
returns logits only for the rows that need them:

- decision rows: one per sequence whose context is complete after the step (it chooses a token);
- score rows: every prompt position fed for the first time, for requests that want prompt rows:
  ``score_only`` ones (``LLMEngine`` scoring, ``LLM.logits``) and ``SamplingParams.prompt_logprobs``.

A decode-only step can instead go through ``DecodeGraphs`` (decode_graphs.py): same inputs, padded
to a static shape and replayed as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eager_core.cache.kv_pool import KVPool
from eager_core.engine.decode_graphs import DecodeGraphs
from eager_core.engine.scheduler import ScheduledBatch
from eager_core.engine.sequence import Sequence
from eager_core.model.attention import AttentionMetadata, PrefillChunk, context_slots
from eager_core.model.transformer import Transformer
from eager_core.ops.paged_attention import use_paged_kernel, use_paged_prefill


@dataclass
class StepLogits:
    logits: torch.Tensor                          # [len(seqs), V] float32: the decision rows
    seqs: list[Sequence]                          # whose context is complete: each chooses a token
    scores: list[tuple[Sequence, int, torch.Tensor]]   # (sequence, first prompt position, its rows' logits)


class ModelRunner:
    def __init__(self, model: Transformer, kv_pool: KVPool, graphs: DecodeGraphs | None = None):
        self.model, self.kv_pool = model, kv_pool
        self.device = model.device
        self.block_size = kv_pool.block_size
        self.graphs = graphs

    def _slots_of(self, table: list[int], length: int) -> torch.Tensor:
        """Slot of every position [0, length) of a sequence, as a tensor."""
        bs = self.block_size
        pos = torch.arange(length)
        return torch.tensor(table, dtype=torch.long)[pos // bs] * bs + pos % bs

    def zero_blocks(self, blocks: list[int]) -> None:
        """Wipe freed blocks that held non-finite K/V (see LLMEngine: bad rows)."""
        self.kv_pool.zero_blocks(blocks)

    def run(self, batch: ScheduledBatch) -> StepLogits:
        """Feed every item's next tokens; afterwards each sequence's ``num_computed`` has advanced by its n."""
        items, num_decode = batch.items, batch.num_decode
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        decide_rows: list[int] = []
        score_rows: list[int] = []
        sampled: list[Sequence] = []
        scored: list[tuple[Sequence, int, int]] = []
        prefills: list[PrefillChunk] = []
        paged_prefill = use_paged_prefill(self.device, self.kv_pool.kv.dtype, self.kv_pool.kv.shape[-1])
        for idx, item in enumerate(items):
            seq, n, start = item.seq, item.n, item.seq.num_computed
            offset = len(input_ids)
            input_ids += seq.token_ids[start:start + n]
            positions += range(start, start + n)
            slot_mapping += item.slots
            if idx >= num_decode:
                chunk = PrefillChunk(offset, n, start + n, self._slots_of(seq.block_table, start + n).to(self.device))
                if paged_prefill:   # once per step, not per layer: each query's table row and context length
                    table = torch.tensor(seq.block_table[:-(-(start + n) // self.block_size)], dtype=torch.long)
                    chunk.kernel_tables = table.expand(n, -1).contiguous()
                    chunk.kernel_lens = torch.arange(start + 1, start + n + 1)
                prefills.append(chunk)
            req = seq.request
            if req.wants_prompt_rows and seq.branch_id == 0 and start + n > req.prompt_positions_scored:
                first = max(start, req.prompt_positions_scored)   # a recompute does not repeat them
                last = min(start + n, len(req.prompt_token_ids))
                if last > first:
                    score_rows += range(offset + first - start, offset + last - start)
                    scored.append((seq, first, last - first))
                    req.prompt_positions_scored = last
            if not req.score_only and start + n == len(seq.token_ids):
                decide_rows.append(offset + n - 1)
                sampled.append(seq)
        # Blocks used for the first time are zeroed (the pool is not zero-filled up front), then every
        # copy-on-write of the step happens before the forward pass writes anything.
        if slot_mapping:
            self.kv_pool.ensure_zeroed(max(slot_mapping) // self.block_size)
        self.kv_pool.copy_blocks(batch.copies)
        graphs = self.graphs
        if (graphs is not None and num_decode == len(items) and not scored
                and graphs.fits(num_decode, max(positions) + 1)):
            seqs = [it.seq for it in items]
            logits = graphs.run(input_ids, positions, slot_mapping, [s.block_table for s in seqs],
                                [p + 1 for p in positions])
            for seq in seqs:
                seq.num_computed += 1
            return StepLogits(logits, sampled, [])
        meta = AttentionMetadata(slot_mapping=torch.tensor(slot_mapping, dtype=torch.long, device=self.device),
                                 num_decode=num_decode, prefills=prefills)
        if prefills and paged_prefill:
            meta.paged_kernel, meta.block_size = True, self.block_size
        if num_decode:
            decoding = [it.seq for it in items[:num_decode]]
            tables, ctx = self._decode_tables(decoding)
            if use_paged_kernel(self.device, self.kv_pool.kv.dtype):   # the kernel reads through the tables
                meta.decode_tables, meta.decode_context_lens, meta.block_size = tables, ctx, self.block_size
            else:
                meta.decode_slots, meta.decode_mask = self._decode_gather(tables, ctx)
        logits = self.model.forward(
            torch.tensor(input_ids, dtype=torch.long, device=self.device),
            torch.tensor(positions, dtype=torch.long, device=self.device),
            meta, self.kv_pool.kv, torch.tensor(decide_rows + score_rows, dtype=torch.long, device=self.device))
        for it in items:
            it.seq.num_computed += it.n
        scores, row = [], len(decide_rows)
        for seq, first, n in scored:
            scores.append((seq, first, logits[row:row + n]))
            row += n
        return StepLogits(logits[:len(decide_rows)] if scored else logits, sampled, scores)

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
