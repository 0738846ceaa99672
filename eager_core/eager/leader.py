"""Run single-process code (an evaluation harness) on rank 0 while every other rank serves its EAGer calls.

Code written for one process (resume checks, result files, plots) runs unchanged on global rank
0 only, so exactly one process reads and writes the results folder. It receives a stand-in for
its ``LLM`` whose ``eager`` first announces the call to every other rank (one object broadcast of
the call's arguments), then runs it data-parallel (data_parallel.py); the other ranks loop on
those announcements and take their share of each call. With a tensor-parallel model the
announcement reaches every rank of every replica, so each replica's ranks make the same calls.

    results = run_data_parallel(llm, lambda llm: run_eval(llm, config, out_dir))   # None off rank 0

When the leader's code raises, the followers are told (they raise DistributedError naming the
error); when the leader dies, their wait fails as its connection drops. Between two calls the
leader may work alone for long (datasets, metrics, plots): announcements travel on a gloo group of
their own whose timeout is ``EAGER_CORE_DIST_IDLE_TIMEOUT`` seconds (default one day), not the
collective timeout.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch.distributed as dist

from eager_core.model.process_group import DistributedError, collective, init_distributed, positive_seconds
from eager_core.eager.data_parallel import eager_data_parallel
from eager_core.eager.params import EagerParams

T = TypeVar("T")
_EAGER, _STOP = "eager", "stop"
IDLE_TIMEOUT_ENV = "EAGER_CORE_DIST_IDLE_TIMEOUT"


class DataParallelLLM:
    """Rank 0's stand-in for an ``LLM``: ``eager`` runs over all ranks; everything else is the LLM's own."""

    def __init__(self, llm, control: dist.ProcessGroup):
        self._llm, self._control = llm, control
        self.calls = 0
        self.in_call = False   # a failure inside a call already reached every rank (data_parallel.py)

    def eager(self, prompts: list, params: EagerParams | None = None, method: str = "eager-init",
              answers: list | None = None, checker: Callable[[str, str], bool] | None = None,
              on_step: Callable[[Any], None] | None = None) -> list:
        """Like ``LLM.eager``; ``checker`` must be picklable (a module-level function) to reach the other ranks.
        ``on_step`` sees this rank's own steps."""
        args = (prompts, params or EagerParams(), method, answers, checker)
        _announce(self._control, (_EAGER, args))
        self.calls += 1
        self.in_call = True
        outputs = eager_data_parallel(self._llm, *args, on_step=on_step)
        self.in_call = False
        return outputs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)


def run_data_parallel(llm, main: Callable[[Any], T]) -> T | None:
    """``main(stand-in)`` on global rank 0 and its result; on other ranks, serve its calls and return None.

    In a process started without torchrun (or a world of one) this is just ``main(llm)``.
    """
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return main(llm)
        init_distributed(llm.device)
    if dist.get_world_size() == 1:
        return main(llm)
    with collective("creating the announcement group"):   # collective: every rank creates it
        control = dist.new_group(backend="gloo", timeout=timedelta(seconds=_idle_timeout()))
    if dist.get_rank() != 0:
        follow(llm, control)
        return None
    leader = DataParallelLLM(llm, control)
    try:
        result = main(leader)
    except BaseException as e:
        if not leader.in_call:   # else the followers already raised, and nobody would receive this
            try:
                _announce(control, (_STOP, f"{type(e).__name__}: {e}"))
            except DistributedError:
                pass   # the followers are gone already; the leader's own error is the one to report
        raise
    _announce(control, (_STOP, None))
    return result


def follow(llm, control: dist.ProcessGroup) -> int:
    """Take part in every call rank 0 announces until it stops; return the number of calls served."""
    served = 0
    while True:
        kind, payload = _receive(control)
        if kind == _STOP:
            if payload is not None:
                raise DistributedError(f"rank {dist.get_rank()}: stopping because rank 0 failed: {payload}")
            return served
        eager_data_parallel(llm, *payload)
        served += 1


def _announce(control: dist.ProcessGroup, message: tuple) -> None:
    box = [message]
    with collective("announcing a call to the other ranks"):
        dist.broadcast_object_list(box, src=0, group=control)


def _receive(control: dist.ProcessGroup) -> tuple:
    box: list = [None]
    with collective("waiting for rank 0's next call"):
        dist.broadcast_object_list(box, src=0, group=control)
    return box[0]


def _idle_timeout() -> float:
    return positive_seconds(IDLE_TIMEOUT_ENV, 86400.0)