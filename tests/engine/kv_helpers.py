"""Helpers shared by the engine's KV-cache tests: tiny engines, guards and watchers.

The watchers wrap methods of one engine instance (never the classes), so they cannot leak into
other tests.
"""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM

BS = 4
STATS_KEYS = {"prompt_tokens", "generated_tokens", "decode_steps", "kv_blocks_peak", "kv_blocks_logical_peak",
              "cow_copies", "preemptions", "wall_s"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # imported by the test modules, where autouse applies
    """The tiny model's matmuls gain nothing from threads, and on a shared 2-core machine two
    spinning threads made these tests ~50x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_llm(ckpt, num_blocks: int, **kwargs) -> LLM:
    return LLM(str(ckpt), num_kv_blocks=num_blocks, block_size=BS, **kwargs)


def token_lists(outputs) -> list[list[list[int]]]:
    return [[c.token_ids for c in r.outputs] for r in outputs]


def guard_steps(llm: LLM, limit: int) -> None:
    """Fail instead of hanging if the scheduler livelocks (preempting and re-admitting forever)."""
    step = llm.llm_engine.step_requests

    def counted():
        counted.n += 1
        assert counted.n <= limit, f"no completion after {limit} steps"
        return step()
    counted.n = 0
    llm.llm_engine.step_requests = counted


def assert_pool_empty(llm: LLM) -> None:
    bm = llm.block_manager
    assert bm.num_free == bm.num_blocks
    bm.check([])


def prompts_of(lengths: list[int], start: int = 3) -> list[list[int]]:
    return [[(start + 7 * i + 3 * j) % 250 for j in range(n)] for i, n in enumerate(lengths)]


def watch_preemptions(llm: LLM) -> list[tuple[int, int]]:
    """Check every preemption: the victim is the most recently admitted family, all of it goes, and
    no step copies more than one block per sequence. Returns (request id, finished sequences of
    the family) per preemption."""
    sched, bm, preempted = llm.scheduler, llm.block_manager, []
    admitted: dict[int, int] = {}   # request id -> admission counter
    schedule, preempt, run = sched.schedule, sched._preempt, llm.llm_engine.runner.run

    def watched_schedule():
        batch = schedule()
        for req in sched.running:
            admitted.setdefault(req.request_id, len(admitted) + len(preempted))
        return batch

    def watched_preempt(req):
        assert all(admitted[req.request_id] > admitted[r.request_id] for r in sched.running)
        preempt(req)
        assert all(not s.block_table and s.num_computed == 0 for s in req.live_seqs)
        bm.check([s.block_table for r in sched.running for s in r.live_seqs])
        del admitted[req.request_id]
        preempted.append((req.request_id, sum(s.is_finished for s in req.seqs)))

    def watched_run(batch):
        assert len(batch.copies) <= len(batch.items)
        return run(batch)
    sched.schedule, sched._preempt, llm.llm_engine.runner.run = watched_schedule, watched_preempt, watched_run
    return preempted
