"""What a step controller of the EAGer layer sees of each row, computed once per step for all its rows.

The engine hands a controller ``decide(seqs, logits)`` (engine/controller.py). The EAGer-layer
controllers (EAGer-init, DeepConf, EAGer-DeepConf) all need the same per-row numbers, so they get
them from one call, ``step_signals(seqs, logits)``:

    entropy          the entropy the row's params branch on ("topk": top-K renormalised, else full)
    entropy_topk     top-K renormalised entropy (nats, untempered logits)
    entropy_full     whole-vocabulary entropy
    top2_ids         the two most likely tokens, and top2_logprobs their log-probabilities
    branch           entropy > the row's threshold (``state.threshold()``), as the fused gate decided
    confidence       DeepConf's token confidence: minus the mean log-probability of the top-k tokens
                     (k = params.top_k_confidence; None for rows whose params do not ask for it)

The entropies, top-2, branch flags and the confidence all come from one ``ops.entropy_gate`` call
per entropy setting (normally one per step): the gate returns the top-k log-probabilities it keeps
during its pass anyway (``return_topk``), so the confidence costs no second pass over the logits
(for k above the gate's list, ``MAX_RETURN_TOPK``, one ``topk`` minus the gate's log-normaliser).
``StepSignals.row(i, seq)`` adds what the state knows about the row's trace and its prompt's budget
(``RowView``). Running trace statistics of confidence (group confidence, lowest group confidence)
live in ``trace_confidence.py``.

Rows are read through ``seq.request.controller_state``, an ``EagerState`` (or a subclass) whose
``params`` is an ``EagerParams`` (or a subclass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from eager_core.engine.controller import take_rows
from eager_core.engine.sequence import Sequence
from eager_core.ops import entropy_gate
from eager_core.ops.entropy_gate import MAX_RETURN_TOPK
from eager_core.ops.entropy_result import EntropyGateResult

# A -inf log-probability among the top-k (a vocabulary with fewer than k finite logits) would make
# the confidence infinite and every later window mean NaN. exp(-1e4) is 0 in float32 already, so
# the floor changes nothing for a row whose top-k tokens all have a representable probability.
LOGPROB_FLOOR = -1.0e4


@dataclass(frozen=True)
class RowView:
    """One row of one step, as a controller sees it."""
    seq: Sequence
    entropy: float
    entropy_topk: float
    entropy_full: float
    top2_ids: tuple[int, int]
    top2_logprobs: tuple[float, float]
    branch: bool
    threshold: float
    confidence: float | None
    num_generated: int        # the trace so far (a branch: its shared prefix included)
    slots_used: int           # the prompt's sequences that count against its cap (state.slots_used)
    cap: int                  # most sequences of this prompt in this run
    tokens: int               # the prompt's generated tokens so far in this run
    token_cap: int | None     # the prompt's token share (None: no token budget)


@dataclass
class StepSignals:
    """Per-row lists (row i belongs to ``seqs[i]``); see the module docstring."""
    entropy: list[float]
    entropy_topk: list[float]
    entropy_full: list[float]
    top2_ids: list[list[int]]
    top2_logprobs: list[list[float]]
    branch: list[bool]
    thresholds: list[float]
    confidence: list[float | None]

    def row(self, i: int, seq: Sequence) -> RowView:
        st = seq.request.controller_state
        return RowView(seq, self.entropy[i], self.entropy_topk[i], self.entropy_full[i], tuple(self.top2_ids[i]),
                       tuple(self.top2_logprobs[i]), self.branch[i], self.thresholds[i], self.confidence[i],
                       seq.num_generated, st.slots_used(seq.request), st.cap, st.tokens, st.token_cap)


def token_confidence(logits: torch.Tensor, logsumexp: torch.Tensor, k: int) -> torch.Tensor:
    """[B] DeepConf token confidence of each row: -mean of the top-k log-probabilities (untempered).
    The path for k > MAX_RETURN_TOPK; below it ``confidence_from_topk`` reads the gate's list."""
    top = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values.float()
    return -(top - logsumexp.unsqueeze(-1)).clamp_min(LOGPROB_FLOOR).mean(-1)


def confidence_from_topk(topk_logprobs: torch.Tensor, k: int, vocab: int) -> torch.Tensor:
    """[B] the same confidence from the gate's best-first top-k log-probabilities ([B, >= k])."""
    return -topk_logprobs[:, :min(k, vocab)].clamp_min(LOGPROB_FLOOR).mean(-1)


def step_signals(seqs: list[Sequence], logits: torch.Tensor,
                 gate: Callable[..., EntropyGateResult] = entropy_gate) -> StepSignals:
    """The signals of every row of one ``decide`` call (one ``gate`` call per entropy setting)."""
    n = len(seqs)
    states = [s.request.controller_state for s in seqs]
    groups: dict[tuple[int, str, int | None], list[int]] = {}
    for i, st in enumerate(states):
        p = st.params
        groups.setdefault((p.top_k_entropy, p.entropy, getattr(p, "top_k_confidence", None)), []).append(i)
    # As the kernel sees them (float32), which is also what the branch events record.
    thresholds = torch.tensor([st.threshold() for st in states], dtype=torch.float32).tolist()
    sig = StepSignals([0.0] * n, [0.0] * n, [0.0] * n, [[-1, -1]] * n, [[0.0, 0.0]] * n, [False] * n,
                      thresholds, [None] * n)
    vocab = logits.shape[-1]
    for (top_k, kind, conf_k), rows in groups.items():
        sub = take_rows(logits, rows)
        th = torch.tensor([thresholds[i] for i in rows], dtype=torch.float32, device=logits.device)
        fused = conf_k is not None and conf_k <= MAX_RETURN_TOPK
        res = gate(sub, th, top_k=min(top_k, vocab), kind=kind,   # past the vocabulary: the full entropy
                   return_topk=conf_k if fused else 0)
        topk, full = res.entropy_topk.tolist(), res.entropy.tolist()
        conf = None
        if conf_k is not None:
            conf = (confidence_from_topk(res.topk_logprobs, conf_k, vocab) if fused
                    else token_confidence(sub, res.logsumexp, conf_k)).tolist()
        for j, (i, ids, lps, b) in enumerate(zip(rows, res.top2_ids.tolist(), res.top2_logprobs.tolist(),
                                                 res.branch.tolist())):
            sig.entropy[i] = topk[j] if kind == "topk" else full[j]
            sig.entropy_topk[i], sig.entropy_full[i] = topk[j], full[j]
            sig.top2_ids[i], sig.top2_logprobs[i], sig.branch[i] = ids, lps, b
            if conf is not None:
                sig.confidence[i] = conf[j]
    return sig
