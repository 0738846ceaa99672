"""EAGer-init as a step controller: sample, or keep the top-1 token and fork a branch with the top-2.

The engine calls ``EAGER_INIT.decide`` once per step with the logits of every live sequence of
every EAGer request. ``step_signals`` (one call to ``ops.entropy_gate`` per entropy setting) gives
all rows' entropies, top-2 tokens and threshold decisions; the Python loop afterwards only applies the
per-prompt rules (cap M, window, ``</think>``, token budget), which need counters the kernel does
not have. The controller itself is stateless, so one instance serves every request (and batches
them all into one kernel call); each request's state is an ``EagerState`` in
``request.controller_state``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from eager_core.eager.params import EagerParams
from eager_core.eager.step_signals import RowView, step_signals
from eager_core.engine.controller import Decision
from eager_core.engine.sampler import sample_rows
from eager_core.engine.sequence import Request, Sequence
from eager_core.ops import entropy_gate


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_values:
        return -math.inf
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


@dataclass
class EagerState:
    """One EAGer request (one prompt in one round): its limits, counters and record.

    ``entropies[b]`` and the ``events`` name sequences by branch id, which is also their index in
    the request's outputs (branch ids are given out in order: 0 for the root, then one per fork).
    """
    params: EagerParams
    think_end_id: int | None         # no branching after this token (params.think_only), if the model has it
    cap: int                          # most sequences this prompt may have in this run (live + finished)
    theta: float                      # the base threshold of this run
    token_cap: int | None = None      # generated tokens this prompt may still add (budget_tokens)
    branching: bool = True            # False for the parallel baseline, and once the window closed
    round: int = 0                    # 0: EAGer-init (or parallel); r > 0: the r-th reallocation run
    prompt_index: int = 0
    quiet_steps: int = 0              # consecutive steps without a branch
    tokens: int = 0                   # generated tokens so far (a fork's first token included)
    seen: list[float] = field(default_factory=list)             # sorted entropies so far (dynamic threshold)
    entropies: dict[int, list[float]] = field(default_factory=dict)   # branch id -> entropy per generated token
    events: list[dict] = field(default_factory=list)            # one per branch, in order

    def threshold(self) -> float:
        if self.params.dynamic_threshold:
            return max(self.theta, percentile(self.seen, 99.0))
        return self.theta

    def slots_used(self, request: Request) -> int:
        """Sequences that count against ``cap``: all of them, live and finished (a pruning state frees some)."""
        return len(request.seqs)


@dataclass
class StepForks:
    """What one ``decide`` call has decided so far, per request (applied only after it returns)."""
    forks: dict[int, int] = field(default_factory=dict)   # id(state) -> forks decided this step
    branched: set[int] = field(default_factory=set)        # id(state) of the requests that branched


class EagerInitController:
    """Entropy-gated branching (``state.branching``) or plain sampling with entropies recorded.

    ``decide`` computes the step's signals once for all rows (``step_signals``: one fused gate
    call per entropy setting) and one batched sampling call, then ``decide_row`` applies the
    per-prompt rules row by row. A controller built on EAGer-init (EAGer-DeepConf) overrides
    ``decide_row`` and keeps the rest.
    """

    def decide(self, seqs: list[Sequence], logits: torch.Tensor) -> list[int | Decision]:
        # The gate is looked up in this module at call time, so a fault can be injected into it (tests).
        signals = step_signals(seqs, logits, entropy_gate)
        sampled = sample_rows(seqs, logits)   # each request's SamplingParams carry its temperature
        step = StepForks()
        decisions = [self.decide_row(signals.row(i, seq), sampled[i], step) for i, seq in enumerate(seqs)]
        self._update_windows(seqs, step.branched)
        return decisions

    def decide_row(self, row: RowView, sampled: int, step: "StepForks") -> int | Decision:
        """One row: finish on the token budget, else record its entropy, then branch or take the sample."""
        seq = row.seq
        st: EagerState = seq.request.controller_state
        if st.token_cap is not None and st.tokens >= st.token_cap:
            return Decision(None, finish_reason="budget")   # this prompt's share is spent
        st.entropies.setdefault(seq.branch_id, []).append(row.entropy)
        bisect.insort(st.seen, row.entropy)
        st.tokens += 1
        if row.branch and row.top2_ids[1] >= 0 and self._may_branch(seq, st, step.forks.get(id(st), 0)):
            st.tokens += 1   # the child's first token
            step.branched.add(id(st))
            step.forks[id(st)] = step.forks.get(id(st), 0) + 1
            return Decision(row.top2_ids[0], fork_token=row.top2_ids[1], note=dict(
                step=seq.num_generated, entropy=row.entropy, threshold=row.threshold, tokens=list(row.top2_ids)))
        return sampled

    def on_fork(self, parent: Sequence, child: Sequence, note: Any) -> None:
        st: EagerState = parent.request.controller_state
        st.entropies[child.branch_id] = list(st.entropies[parent.branch_id])
        child.branch_entropy = note["entropy"]
        st.events.append(dict(note, parent=parent.branch_id, child=child.branch_id))

    @staticmethod
    def _may_branch(seq: Sequence, st: EagerState, pending: int) -> bool:
        if not st.branching or st.slots_used(seq.request) + pending >= st.cap:
            return False
        if st.think_end_id is not None and st.think_end_id in seq.generated_ids:
            return False   # the reasoning section is over
        # The parent's token is counted already; the child's must fit too.
        return st.token_cap is None or st.tokens + 1 <= st.token_cap

    @staticmethod
    def _update_windows(seqs: list[Sequence], branched: set[int]) -> None:
        """A prompt that goes ``no_branch_window`` steps without branching stops branching for good."""
        for st in {id(s.request.controller_state): s.request.controller_state for s in seqs}.values():
            if id(st) in branched:
                st.quiet_steps = 0
            else:
                st.quiet_steps += 1
                if st.quiet_steps >= st.params.no_branch_window:
                    st.branching = False


EAGER_INIT = EagerInitController()   # stateless: every EAGer request shares it (one kernel call per step)
