"""EAGer's per-step decision: sample, or keep the top-1 token and fork a branch with the top-2.

Called by the engine once per step with the logits of every live sequence of every prompt. One
call to ``ops.entropy_gate`` gives all rows' entropies, top-2 tokens and threshold decisions;
the Python loop afterwards only applies the per-prompt rules (cap M, window, ``</think>``,
token budget), which need counters the kernel does not have.

Per-prompt state lives in ``request.state`` (set up by ``init_request``):
    cap            most sequences this prompt may have in this run (live + finished)
    theta          the base threshold of this run
    branching      False once the prompt went ``no_branch_window`` steps without a branch
    quiet_steps    consecutive steps without a branch
    seen           sorted entropies of every token chosen so far (dynamic threshold)
    token_cap      generated tokens this prompt may still add (budget_tokens), or None
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING

import torch

from eager_core.eager.params import EagerParams
from eager_core.engine import sample_rows
from eager_core.ops import entropy_gate
from eager_core.sequence import Request, Sequence

if TYPE_CHECKING:
    from eager_core.engine import Engine


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_values:
        return -math.inf
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def init_request(req: Request, cap: int, theta: float, token_cap: int | None = None, branching: bool = True) -> None:
    req.state.update(cap=cap, theta=theta, branching=branching, quiet_steps=0, seen=[], token_cap=token_cap,
                     tokens=0, events=[])


class EagerPolicy:
    """Entropy-gated branching (``branching=True``) or plain temperature sampling with entropies recorded."""

    def __init__(self, params: EagerParams, think_end_id: int | None):
        self.params = params
        self.think_end_id = think_end_id if params.think_only else None

    def _threshold(self, req: Request) -> float:
        theta = req.state["theta"]
        if self.params.dynamic_threshold:
            theta = max(theta, percentile(req.state["seen"], 99.0))
        return theta

    def _may_branch(self, seq: Sequence) -> bool:
        st = seq.request.state
        if not st["branching"] or len(seq.request.seqs) >= st["cap"]:
            return False
        if self.think_end_id is not None and self.think_end_id in seq.generated_ids:
            return False   # the reasoning section is over
        return st["token_cap"] is None or st["tokens"] + 2 <= st["token_cap"]

    def decide(self, engine: "Engine", seqs: list[Sequence], logits: torch.Tensor) -> list[int | None]:
        p = self.params
        thresholds = torch.tensor([self._threshold(s.request) for s in seqs], dtype=torch.float32)
        gate = entropy_gate(logits, thresholds.to(logits.device), top_k=p.top_k_entropy, kind=p.entropy)
        chosen = gate.entropy_topk if p.entropy == "topk" else gate.entropy
        entropy = chosen.tolist()
        branch = gate.branch.tolist()
        top2 = gate.top2_ids.tolist()
        sampled = sample_rows(seqs, logits, temperature=p.temperature)
        tokens: list[int | None] = []
        branched_requests: set[int] = set()
        for i, seq in enumerate(seqs):
            st = seq.request.state
            if st["token_cap"] is not None and st["tokens"] >= st["token_cap"]:
                engine.finish(seq, "budget")   # this prompt's share of budget_tokens is spent
                tokens.append(None)
                continue
            if branch[i] and top2[i][1] >= 0 and self._may_branch(seq):
                child = engine.fork(seq, top2[i][1])
                child.entropies = seq.entropies + [entropy[i]]
                child.branch_entropy = entropy[i]
                child.extra["round"] = seq.extra.get("round", 0)
                st["events"].append(dict(parent=seq.seq_id, child=child.seq_id, step=seq.num_generated,
                                         entropy=entropy[i], threshold=float(thresholds[i]),
                                         tokens=[top2[i][0], top2[i][1]]))
                st["tokens"] += 1   # the child's first token; the parent's is counted below
                branched_requests.add(seq.request.request_id)
                tokens.append(top2[i][0])
            else:
                tokens.append(sampled[i])
            st["tokens"] += 1
            seq.entropies.append(entropy[i])
            bisect.insort(st["seen"], entropy[i])
        self._update_windows(seqs, branched_requests)
        return tokens

    def _update_windows(self, seqs: list[Sequence], branched: set[int]) -> None:
        """A prompt that goes ``no_branch_window`` steps without branching stops branching for good."""
        for req in {s.request.request_id: s.request for s in seqs}.values():
            st = req.state
            if req.request_id in branched:
                st["quiet_steps"] = 0
            else:
                st["quiet_steps"] += 1
                if st["quiet_steps"] >= self.params.no_branch_window:
                    st["branching"] = False
