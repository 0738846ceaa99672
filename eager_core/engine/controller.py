"""The per-step controller: what each live sequence does with its next-token logits.

This is the public hook for per-step decision making (plain sampling, EAGer's entropy-gated
branching, and later confidence-based pruning). Every request has one controller; each step the
engine groups the rows whose logits came back by controller and calls

    controller.decide(seqs, logits) -> one decision per row

where ``logits`` is float32 ``[len(seqs), vocab]`` and row i belongs to ``seqs[i]``. A decision is

    an int t                         continue: append token t
    Decision(t)                      the same
    Decision(t, fork_token=u)        append t, and start a branch that shares the sequence's whole
                                     KV cache (a copy-on-write fork: no copy, no prefill) and
                                     continues with u. The engine then calls
                                     ``controller.on_fork(parent, child, decision.note)``
    Decision(None, finish_reason=r)  stop the sequence now, without a new token ("budget", ...)

Rules a controller can rely on: ``decide`` sees every row of its requests that is ready to choose a
token, once per step, all of its rows in one call (so a fused kernel can serve the whole batch);
the engine applies the decisions after ``decide`` returns, in row order (forks are made before the
parent's token is appended, so a child starts from exactly the context the parent was decided on);
the scheduler makes sure every fork fits (a family never grows past what the pool can hold: the
family is preempted and recomputed instead). A controller must not touch block tables or the pool.
Per-request state belongs in ``request.controller_state`` (set by whoever adds the request).

A new controller is one file with one class; the engine needs no change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from eager_core.engine.sampler import sample_rows
from eager_core.engine.sequence import Sequence


@dataclass(frozen=True)
class Decision:
    token: int | None
    fork_token: int | None = None
    finish_reason: str | None = None
    note: Any = None   # handed back to ``on_fork`` with the child (e.g. why it branched)


@runtime_checkable
class StepController(Protocol):
    def decide(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int | Decision]:
        """One decision per row of ``logits`` (see the module docstring)."""

    def on_fork(self, parent: Sequence, child: Sequence, note: Any) -> None:
        """Called once per fork, right after the child exists and before the parent's token is appended."""


class SamplingController:
    """Plain sampling with each request's SamplingParams (batched, one uniform per row)."""

    def decide(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int | Decision]:
        return sample_rows(seqs, logits)

    def on_fork(self, parent: Sequence, child: Sequence, note: Any) -> None:  # never forks
        pass


def take_rows(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """``logits[rows]``, without a copy when ``rows`` is every row in order (the common case)."""
    if rows == list(range(len(logits))):
        return logits
    return logits[torch.tensor(rows, dtype=torch.long, device=logits.device)]


def decide_all(seqs: list[Sequence], logits: torch.Tensor) -> list[int | Decision]:
    """Every row's decision: one ``decide`` call per controller, over all of its rows at once."""
    groups: dict[int, list[int]] = {}
    for i, seq in enumerate(seqs):
        groups.setdefault(id(seq.request.controller), []).append(i)
    decisions: list[int | Decision] = [0] * len(seqs)
    for rows in groups.values():
        picked = seqs[rows[0]].request.controller.decide([seqs[i] for i in rows], take_rows(logits, rows))
        for i, d in zip(rows, picked):
            decisions[i] = d
    return decisions


SAMPLING = SamplingController()   # stateless: every plain request shares it (one batched call a step)
