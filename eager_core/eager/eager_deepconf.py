"""EAGer-DeepConf as a step controller: branch on entropy as EAGer-init, prune branches whose
confidence collapses, and give their slots back to the same prompt.

Per step and row, after the step's signals (``step_signals``: entropy, top-2, token confidence):

1. the prompt's token share is spent -> ``Decision(None, finish_reason="budget")``;
2. the row's token confidence is added to its branch's ``TraceConfidence`` (a branch starts with a
   copy of its parent's: they share every step before the fork). If the window ending at this step
   is full and its mean is below the prompt's threshold (DeepConf's, from the warm-up round), the
   branch is pruned: ``Decision(None, finish_reason="pruned")``, no token appended;
3. otherwise exactly EAGer-init's rule (``EagerInitController.decide_row``): record the entropy,
   then fork (top-1 kept, top-2 to the child) or take the sampled token.

Freed slots: the cap of a prompt counts its sequences *minus its pruned ones*
(``DeepConfState.slots_used``), so a pruned branch lets a surviving branch of the same prompt fork
again at its next high-entropy step, while at most ``cap`` unpruned sequences ever exist. The
prompt's token cap (set by the runner: at most what parallel sampling could spend, M x max_tokens,
minus the warm-up's tokens) bounds the prune-and-branch cycles, so the budget holds in tokens too.
A pruned branch's slot is not refilled at once: a new branch needs a high-entropy step, as in
EAGer-init, and a prompt whose last live branch is pruned ends there.
"""

from __future__ import annotations

from typing import Any

from eager_core.eager.deepconf import PRUNED, DeepConfState
from eager_core.eager.eager_init import EagerInitController, StepForks
from eager_core.eager.step_signals import RowView
from eager_core.engine.controller import Decision
from eager_core.engine.sequence import Sequence


class EagerDeepConfController(EagerInitController):
    """EAGer-init plus confidence pruning; stateless (each request's state is a ``DeepConfState``)."""

    def decide_row(self, row: RowView, sampled: int, step: StepForks) -> int | Decision:
        st: DeepConfState = row.seq.request.controller_state
        if st.token_cap is not None and st.tokens >= st.token_cap:
            return Decision(None, finish_reason="budget")
        if st.observe(row.seq, row.confidence):
            return Decision(None, finish_reason=PRUNED)
        return super().decide_row(row, sampled, step)

    def on_fork(self, parent: Sequence, child: Sequence, note: Any) -> None:
        super().on_fork(parent, child, note)
        st: DeepConfState = parent.request.controller_state
        # The parent's statistics already hold this step's confidence; the child's first token comes
        # from the same distribution, so it shares that step too.
        st.traces[child.branch_id] = st.trace(parent.branch_id).copy()


EAGER_DEEPCONF = EagerDeepConfController()
