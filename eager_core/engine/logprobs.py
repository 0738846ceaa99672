"""Log-probabilities of generated tokens, for requests that ask for them (``SamplingParams.logprobs``).

vLLM's meaning, so code written for it reads the same numbers: for every generated token, a dict
``{token_id: Logprob}`` of the top-``k`` tokens plus the chosen token when it is outside them; the
values are log-softmax of the raw logits (before temperature and filters, vLLM's default
``raw_logprobs``), ranks count from 1 = most likely (equal logits: the lower id ranks first). A
fork's first token gets its record from the same row as its parent's token (both were chosen from
the same distribution).

Only rows that asked pay for it, and no full-vocabulary softmax is formed: one fused entropy-gate
pass over those rows (``ops.entropy_gate(..., return_topk=k)``) gives the top-k ids with their
log-probabilities and the log-normaliser. A chosen token outside the top k reads its own logit
minus that normaliser, and its rank is one comparison pass over its row (vLLM's rank: one plus the
number of strictly more likely tokens). k <= MAX_LOGPROBS (20) always fits the gate's list.
"""

from __future__ import annotations

import torch

from eager_core.engine.controller import take_rows
from eager_core.engine.outputs import Logprob
from eager_core.engine.sequence import Sequence
from eager_core.io.tokenizer import Tokenizer
from eager_core.ops import entropy_gate


class PositionLogprobs:
    """The top-``k`` log-probabilities of rows of logits, from one fused gate pass, plus what it
    takes to score any other token of those rows."""

    def __init__(self, logits: torch.Tensor, k: int):
        self.logits = logits
        res = entropy_gate(logits, float("inf"), top_k=max(k, 1), kind="full", return_topk=k)
        self.lse = res.logsumexp.cpu()
        self.top_ids = res.topk_ids.tolist()
        self.top_values = res.topk_logprobs.tolist()

    def record(self, j: int, k: int, token: int, tokenizer: Tokenizer) -> dict[int, Logprob]:
        """``{token id: Logprob}`` of row ``j``: its top ``k`` (best first), plus ``token`` when it is
        not among them. The top entries are padded with id -1 past the vocabulary: skipped."""
        record = {tid: Logprob(v, r + 1, tokenizer.decode([tid], skip_special_tokens=False))
                  for r, (tid, v) in enumerate(zip(self.top_ids[j][:k], self.top_values[j][:k])) if tid >= 0}
        if token not in record:
            row = self.logits[j]
            x = row[token]
            rank = int((row > x).sum()) + 1
            record[token] = Logprob(float(x.float().cpu()) - float(self.lse[j]), rank,
                                    tokenizer.decode([token], skip_special_tokens=False))
        return record


def record_prompt_logprobs(req, first: int, logits: torch.Tensor, tokenizer: Tokenizer) -> None:
    """Records of the prompt tokens predicted by positions ``first ..``: row j of ``logits`` is
    position ``first + j``, whose distribution is that of prompt token ``first + j + 1``."""
    k = req.params.prompt_logprobs
    ids = req.prompt_token_ids
    n = min(len(logits), len(ids) - 1 - first)   # the last position predicts a generated token
    if n <= 0:
        return
    pos = PositionLogprobs(logits[:n], k)
    for j in range(n):
        req.prompt_logprobs.append(pos.record(j, k, ids[first + j + 1], tokenizer))


class StepLogprobs:
    """The log-probabilities of this step's rows that want them, ready to record per chosen token."""

    def __init__(self, seqs: list[Sequence], logits: torch.Tensor, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        rows = [i for i, s in enumerate(seqs) if s.logprobs is not None]
        self.row_of = {i: j for j, i in enumerate(rows)}
        self.positions = None
        if rows:
            k = max(seqs[i].request.params.logprobs for i in rows)
            self.positions = PositionLogprobs(take_rows(logits, rows), k)

    def record(self, seq: Sequence, row: int, token: int) -> None:
        """Append ``token``'s record, taken from logits row ``row``, to ``seq`` (if it wants one)."""
        j = self.row_of.get(row)
        if seq.logprobs is None or j is None:
            return
        record = self.positions.record(j, seq.request.params.logprobs, token, self.tokenizer)
        seq.logprobs.append(record)
        seq.cumulative_logprob += record[token].logprob
