"""Decode steps with static shapes, replayed as CUDA graphs.

Why: a decode step of a small model on a GPU is hundreds of tiny kernels (about 20 per layer), and
launching them from Python costs more than running them. A CUDA graph records the launches of one
step once and replays them with a single call. A graph is frozen: the same kernels, the same
shapes, the same buffers. So a decode step is made *static*:

- the batch is padded up to a bucket (1, 2, 4, 8, then multiples of 16), the context up to a
  multiple of ``context_step`` tokens (a multiple of the block size);
- every per-step input (token ids, positions, slot mapping, block tables, context lengths) is
  copied into one long int64 buffer that the graph reads; the gather slots and the attention mask
  are computed *inside* the graph from the block tables, so no [B, C] tensor crosses the bus;
- padding rows read and write only the pool's scratch block (``KVPool.scratch_block``), which no
  sequence ever owns, so a padded row can never touch a real sequence's cache.

One graph is captured lazily per (batch bucket, context bucket) and kept; all graphs share one
memory pool. Steps that do not fit (prefill, a batch or context past the largest bucket) run the
ordinary packed forward. With ``capture=False`` the same static step runs without a graph, which
is how the CPU test suite checks the padding logic (tests/engine/test_decode_graphs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eager_core.cache.kv_pool import KVPool
from eager_core.model.attention import AttentionMetadata, context_slots
from eager_core.model.transformer import Transformer

_HEADER = 4   # per-row scalars in the input buffer: token id, position, slot, context length


def batch_buckets(max_batch: int) -> list[int]:
    """Padded batch sizes: 1, 2, 4, 8, then every multiple of 16 up to ``max_batch``."""
    sizes = [b for b in (1, 2, 4, 8) if b <= max_batch] + list(range(16, max_batch + 1, 16))
    if sizes[-1] < max_batch:
        sizes.append(max_batch)
    return sizes


@dataclass
class _StaticStep:
    """One (padded batch B, padded context C) shape, the key of ``DecodeGraphs.steps``."""
    inputs: torch.Tensor     # [B * (4 + C / block_size)] int64: the header columns, then block tables
    logits: torch.Tensor     # [B, V] float32, written by every run
    graph: "torch.cuda.CUDAGraph | None"


class DecodeGraphs:
    """Runs decode-only steps at padded, static shapes (captured as CUDA graphs when ``capture``)."""

    def __init__(self, model: Transformer, kv_pool: KVPool, max_batch: int = 128, max_context: int = 4096,
                 context_step: int = 256, capture: bool = True):
        if capture and model.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA model (use capture=False to run static steps elsewhere)")
        bs = kv_pool.block_size
        self.model, self.kv_pool, self.block_size, self.capture = model, kv_pool, bs, capture
        self.context_step = -(-context_step // bs) * bs
        self.max_context = -(-max_context // self.context_step) * self.context_step
        self.buckets = batch_buckets(max_batch)
        self.steps: dict[tuple[int, int], _StaticStep] = {}
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.replays = 0

    def fits(self, batch: int, context: int) -> bool:
        return batch <= self.buckets[-1] and context <= self.max_context

    def run(self, token_ids: list[int], positions: list[int], slots: list[int], tables: list[list[int]],
            context_lens: list[int]) -> torch.Tensor:
        """Logits [B, V] of one decode token per row; row i's context is ``context_lens[i]`` tokens
        (its new token included) read through ``tables[i]``. The new K/V go to ``slots``."""
        B, C = len(token_ids), max(context_lens)
        Bp = next(b for b in self.buckets if b >= B)
        Cp = -(-C // self.context_step) * self.context_step
        step = self.steps.get((Bp, Cp)) or self._build(Bp, Cp)
        step.inputs.copy_(self._pack(Bp, Cp, token_ids, positions, slots, tables, context_lens))
        if step.graph is not None:
            step.graph.replay()
            self.replays += 1
        else:
            self._forward(step.inputs, Bp, Cp, out=step.logits)
        # A copy: the next replay of any graph may reuse this memory (they share one pool).
        return step.logits[:B].clone()

    # --- the static step -------------------------------------------------------------------------

    def _pack(self, Bp: int, Cp: int, token_ids: list[int], positions: list[int], slots: list[int],
              tables: list[list[int]], context_lens: list[int]) -> torch.Tensor:
        """The host-side input buffer: real rows, then padding rows pointing at the scratch block.

        Built as Python lists and converted once: per-row tensor writes cost ~10 us each (0.7 ms
        at 64 rows, against 0.1 ms this way), host time that a replayed step cannot hide.
        """
        nb = Cp // self.block_size
        scratch = self.kv_pool.scratch_block
        rows = []
        for i in range(len(token_ids)):   # unused table entries repeat the row's first block
            table = tables[i][:nb]
            rows.append([token_ids[i], positions[i], slots[i], context_lens[i]] + table + [table[0]] * (nb - len(table)))
        padding = [0, 0, scratch * self.block_size, 1] + [scratch] * nb
        rows += [padding] * (Bp - len(rows))
        return torch.tensor(rows, dtype=torch.long).flatten()

    def _forward(self, inputs: torch.Tensor, Bp: int, Cp: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Everything a graph records: unpack, build the gather slots and mask, run the model."""
        rows = inputs.view(Bp, -1)
        ids, pos, slot, ctx, tables = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], rows[:, _HEADER:]
        ctx_slots, mask = context_slots(tables, ctx, self.block_size, Cp)   # [B, C] each
        meta = AttentionMetadata(slot_mapping=slot, num_decode=Bp, decode_slots=ctx_slots,
                                 decode_mask=mask[:, None, None, :])
        logits = self.model.forward(ids, pos, meta, self.kv_pool.kv, torch.arange(Bp, device=inputs.device))
        if out is None:
            return logits
        out.copy_(logits)
        return out

    def _build(self, Bp: int, Cp: int) -> _StaticStep:
        dev = self.model.device
        inputs = self._pack(Bp, Cp, [], [], [], [], []).to(dev)   # every row padding
        graph = None
        if not self.capture:
            logits = torch.empty(Bp, self.model.cfg.vocab_size, dtype=torch.float32, device=dev)
        else:
            # Warm up on a side stream (lazy cuBLAS/attention setup must not happen during capture).
            # Every row is padding here, so these runs write only the scratch block.
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._forward(inputs, Bp, Cp)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                logits = self._forward(inputs, Bp, Cp)
        step = _StaticStep(inputs, logits, graph)
        self.steps[(Bp, Cp)] = step
        return step
