"""Data-parallel EAGer: the prompts of one run spread over D processes, one global budget.

Every process passes the *whole* prompt list; prompt i runs on data-parallel rank ``i % D``
(strided, so a dataset sorted by difficulty still spreads evenly). The EAGer runner
(eager/runner.py) calls ``exchange`` once after EAGer-init and once after each reallocation round:
an all-gather of a few integers per prompt plus a token count. So every process sees the same
counts, the same ``allocate_extra`` result and the same stopping rule, and the total never exceeds
M x N. Seeds come from the prompt's global index, so the outputs equal a single process's (up to
floating-point differences between batch shapes, which greedy and tiny models do not show).

Errors: every collective here but the last is one object all-gather of (rank, error, payload). A rank
whose local work raises sends its error in the collective its peers are already waiting in (all
ranks are always at the same collective), then re-raises; the peers raise DistributedError naming
it. A rank that dies or hangs is caught by the process group timeout (model/process_group.py).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import torch.distributed as dist

from eager_core.model.process_group import DistributedError, collective, init_distributed
from eager_core.eager.outputs import EagerOutput
from eager_core.eager.params import EagerParams
from eager_core.eager.runner import run_eager
from eager_core.engine.stats import RunStats


class DataParallelShard:
    """Strided ownership of prompts over a process group, and the runner's per-round exchange."""

    def __init__(self, group: dist.ProcessGroup | None = None):
        self.group = group
        self.rank, self.size = dist.get_rank(group), dist.get_world_size(group)
        self.global_rank = dist.get_rank()
        self.exchanges = 0   # collectives so far; every rank must be at the same count

    def owns(self, index: int) -> bool:
        return index % self.size == self.rank

    def exchange(self, per_prompt: dict[int, Any], generated_tokens: int) -> tuple[dict[int, Any], int]:
        gathered = self._all_gather(None, (per_prompt, generated_tokens), "per-round exchange of EAGer counts")
        merged: dict[int, Any] = {}
        for facts, _ in gathered:
            merged.update(facts)
        return merged, sum(tokens for _, tokens in gathered)

    def fail(self, error: BaseException) -> None:
        """Tell the peers (waiting in their next all-gather) that this rank failed, so they raise too."""
        with contextlib.suppress(DistributedError):   # peers already gone: our own error is what matters
            self._all_gather(f"{type(error).__name__}: {error}", None, "error report")

    def collect(self, payload: Any) -> list | None:
        """Every rank's payload on data-parallel rank 0 (None elsewhere), after a status check.

        The status check is an all-gather like every other exchange, so a rank that failed just
        before it is still heard; the payload itself then travels only to rank 0.
        """
        self._all_gather(None, None, "final status check")
        out: list | None = [None] * self.size if self.rank == 0 else None
        with collective("data-parallel gathering of the outputs"):
            dist.gather_object(payload, out, dst=dist.get_global_rank(self.group, 0) if self.group else 0,
                               group=self.group)
        return out

    def _all_gather(self, error: str | None, payload: Any, what: str) -> list:
        """All-gather of (global rank, error, payload); raise DistributedError if another rank failed."""
        self.exchanges += 1
        out: list = [None] * self.size
        with collective(f"data-parallel {what} (collective {self.exchanges})"):
            dist.all_gather_object(out, (self.global_rank, error, payload), group=self.group)
        failed = [(r, e) for r, e, _ in out if e is not None]
        if failed and error is None:
            rank, message = failed[0]
            raise DistributedError(f"rank {self.global_rank}: stopping because rank {rank} failed: {message}")
        return [p for _, _, p in out]


def eager_data_parallel(llm, prompts: list, params: EagerParams | None = None, method: str = "eager-init",
                        answers: list | None = None,
                        checker: Callable[[str, str], bool] | None = None,
                        on_step: Callable[[RunStats], None] | None = None) -> list[EagerOutput] | None:
    """``llm.eager`` over the data-parallel group; every process calls it with the same arguments.

    Returns every prompt's output, in order, on data-parallel rank 0 and None elsewhere.
    ``llm.last_stats`` there becomes the whole call's statistics: token counts summed over ranks,
    peaks and wall time the maximum of any rank. With a tensor-parallel ``llm`` the group is its
    replicas' data-parallel group. In a process without torchrun's environment: ``llm.eager``.
    """
    params = params or EagerParams()
    group, size = _data_parallel_group(llm)
    if size == 1:
        return llm.eager(prompts, params, method, answers, checker, on_step=on_step)
    shard = DataParallelShard(group)
    try:
        outputs, stats = run_eager(llm.llm_engine, prompts, params, method, answers, checker, shard=shard,
                                   on_step=on_step)
        llm.last_stats = stats.as_dict()   # this rank's share; rank 0 gets the whole call's below
        local = (dict(zip([i for i in range(len(prompts)) if shard.owns(i)], outputs)), stats.as_dict())
    except Exception as e:
        shard.fail(e)
        raise
    gathered = shard.collect(local)
    if gathered is None:
        return None
    merged: dict[int, EagerOutput] = {}
    for outs, _ in gathered:
        merged.update(outs)
    llm.last_stats = combine_stats([stats for _, stats in gathered])
    return [merged[i] for i in range(len(prompts))]


def combine_stats(per_rank: list[dict]) -> dict:
    """One run's statistics from every rank's (``RunStats.alongside``): sums of counts, maxima of
    peaks and wall time."""
    total = RunStats.from_dict(per_rank[0])
    for stats in per_rank[1:]:
        total = total.alongside(RunStats.from_dict(stats))
    return total.as_dict()


def is_main_process() -> bool:
    """True where results are written: global rank 0, or a process that is not part of a group."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _data_parallel_group(llm) -> tuple[dist.ProcessGroup | None, int]:
    """(group, size): the whole world, or the replicas' group when the model is tensor parallel.

    A process started without torchrun's environment (WORLD_SIZE unset or 1) is a group of one.
    """
    tp = getattr(llm, "tp", None)
    if tp is not None:
        return tp.dp_group, tp.dp_size
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None, 1
        init_distributed(llm.device)
    return None, dist.get_world_size()
