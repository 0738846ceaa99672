"""Watchers of the NaN-isolation tests (test_nan_isolation.py, test_cuda_decode.py).

They wrap methods of one engine instance (never the classes), so they cannot leak into other tests.
"""

from __future__ import annotations

import torch

from eager_core import LLM


def poison_unreadable_slots(llm: LLM) -> list[torch.Tensor]:
    """Before every step, write NaN into every KV slot (all layers) that is not a computed position
    of a live sequence: free blocks, the scratch block, the unwritten tail of every last block.
    A step may read only computed positions (and those it writes itself first), so a correct engine
    gives the same logits as without the poison. Returns the list that collects each step's
    decision logits (on CPU)."""
    runner, sched, kv, bs = llm.llm_engine.runner, llm.scheduler, llm.kv_pool.kv, llm.kv_pool.block_size
    run, seen = runner.run, []

    def poisoned(batch):
        readable = torch.zeros(kv.shape[2], dtype=torch.bool)
        for req in sched.running:
            for seq in req.live_seqs:
                if seq.num_computed:
                    pos = torch.arange(seq.num_computed)
                    readable[torch.tensor(seq.block_table)[pos // bs] * bs + pos % bs] = True
        with torch.inference_mode():
            kv[:, :, ~readable.to(kv.device)] = float("nan")
        out = run(batch)
        seen.append(out.logits.float().cpu().clone())
        return out
    runner.run = poisoned
    return seen


def record_logits(llm: LLM) -> list[torch.Tensor]:
    """Collect each step's decision logits (on CPU)."""
    run, seen = llm.llm_engine.runner.run, []

    def recorded(batch):
        out = run(batch)
        seen.append(out.logits.float().cpu().clone())
        return out
    llm.llm_engine.runner.run = recorded
    return seen
