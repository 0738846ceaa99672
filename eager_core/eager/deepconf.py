"""DeepConf (online) as a step controller: sample every row, stop a trace when its confidence drops.

One request per prompt and round, ``n`` traces each (one prefill, the engine forks the rest), all
driven by the shared ``DEEPCONF`` controller. Per step and row:

1. the prompt's token share is spent -> ``Decision(None, finish_reason="budget")``;
2. the row's token confidence (``step_signals``: -mean of the top-k log-probabilities) is added to
   its trace's ``TraceConfidence``; if the state has a threshold (the final round) and the window
   ending at this step is full and its mean is below the threshold, the trace stops here:
   ``Decision(None, finish_reason="pruned")``, no token appended (the official patched vLLM forces
   EOS instead, which costs one more token);
3. otherwise the row takes its sampled token, and its entropy is recorded as EAGer-init does.

The warm-up round runs the same controller with ``conf_threshold=None``: it only records. The
rounds themselves (warm-up, threshold, final traces) are in ``confidence_runner.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from eager_core.eager.eager_init import EagerState
from eager_core.eager.step_signals import step_signals
from eager_core.eager.trace_confidence import TraceConfidence
from eager_core.engine.controller import Decision
from eager_core.engine.sampler import sample_rows
from eager_core.engine.sequence import Request, Sequence

PRUNED = "pruned"   # the finish reason of a trace stopped (or a branch pruned) for low confidence


@dataclass
class DeepConfState(EagerState):
    """An ``EagerState`` (its params a ``DeepConfParams``) plus each trace's confidence statistics.

    ``traces`` is keyed by branch id, like ``entropies``. ``pruned`` holds the branch ids stopped for
    low confidence; they no longer count against ``cap`` (``slots_used``), which is how
    EAGer-DeepConf gives a pruned branch's slot back to its prompt.
    """
    conf_threshold: float | None = None   # None: record only (the warm-up round)
    traces: dict[int, TraceConfidence] = field(default_factory=dict)
    pruned: set[int] = field(default_factory=set)

    def trace(self, branch_id: int) -> TraceConfidence:
        if branch_id not in self.traces:
            self.traces[branch_id] = TraceConfidence(self.params.window_size)
        return self.traces[branch_id]

    def observe(self, seq: Sequence, confidence: float) -> bool:
        """Add this step's confidence to the row's trace; True if the trace must stop here."""
        group = self.trace(seq.branch_id).add(confidence)
        if self.conf_threshold is None or group is None or group >= self.conf_threshold:
            return False
        self.pruned.add(seq.branch_id)
        return True

    def slots_used(self, request: Request) -> int:
        return len(request.seqs) - len(self.pruned)


class DeepConfController:
    """Sampling with DeepConf's online stop; stateless (each request's state is a ``DeepConfState``)."""

    def decide(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int | Decision]:
        signals = step_signals(seqs, logits)
        sampled = sample_rows(seqs, logits)
        decisions: list[int | Decision] = []
        for i, seq in enumerate(seqs):
            st: DeepConfState = seq.request.controller_state
            if st.token_cap is not None and st.tokens >= st.token_cap:
                decisions.append(Decision(None, finish_reason="budget"))
            elif st.observe(seq, signals.confidence[i]):
                decisions.append(Decision(None, finish_reason=PRUNED))
            else:
                st.entropies.setdefault(seq.branch_id, []).append(signals.entropy[i])
                st.tokens += 1
                decisions.append(sampled[i])
        return decisions

    def on_fork(self, parent: Sequence, child: Sequence, note: Any) -> None:
        pass   # never forks: the n traces of a request are the engine's forks of the prompt


DEEPCONF = DeepConfController()
