"""Log-probabilities of generated tokens, for requests that ask for them (``SamplingParams.logprobs``).

vLLM's meaning, so code written for it reads the same numbers: for every generated token, a dict
``{token_id: Logprob}`` of the top-``k`` tokens plus the chosen token when it is outside them; the
values are ``log_softmax`` of the raw logits (before temperature and filters, vLLM's default
``raw_logprobs``), ranks count from 1 = most likely. A fork's first token gets its record from the
same row as its parent's token (both were chosen from the same distribution).

Only rows that asked pay for it: one ``log_softmax`` and one ``topk`` over those rows per step.
"""

from __future__ import annotations

import torch

from eager_core.engine.controller import take_rows
from eager_core.engine.outputs import Logprob
from eager_core.engine.sequence import Sequence
from eager_core.io.tokenizer import Tokenizer


def logprob_record(lp: torch.Tensor, top_ids: list[int], top_values: list[float], token: int,
                   tokenizer: Tokenizer) -> dict[int, Logprob]:
    """``{token id: Logprob}`` of one position: the given top tokens (best first), plus ``token``
    when it is not among them; ``lp`` is that position's log-softmax row."""
    record = {tid: Logprob(v, r + 1, tokenizer.decode([tid], skip_special_tokens=False))
              for r, (tid, v) in enumerate(zip(top_ids, top_values))}
    if token not in record:
        chosen = float(lp[token])
        record[token] = Logprob(chosen, int((lp > chosen).sum()) + 1,
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
    lp = torch.log_softmax(logits[:n].float(), dim=-1).cpu()
    top = lp.topk(k, dim=-1) if k > 0 else None
    top_ids = top.indices.tolist() if top is not None else [[]] * n
    top_values = top.values.tolist() if top is not None else [[]] * n
    for j in range(n):
        req.prompt_logprobs.append(logprob_record(lp[j], top_ids[j], top_values[j], ids[first + j + 1], tokenizer))


class StepLogprobs:
    """The log-probabilities of this step's rows that want them, ready to record per chosen token."""

    def __init__(self, seqs: list[Sequence], logits: torch.Tensor, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        rows = [i for i, s in enumerate(seqs) if s.logprobs is not None]
        self.row_of = {i: j for j, i in enumerate(rows)}
        self.logprobs = None
        if rows:
            self.logprobs = torch.log_softmax(take_rows(logits, rows).float(), dim=-1).cpu()
            k = max(seqs[i].request.params.logprobs for i in rows)
            top = self.logprobs.topk(k, dim=-1) if k > 0 else None
            self.top_values = top.values.tolist() if top is not None else [[] for _ in rows]
            self.top_ids = top.indices.tolist() if top is not None else [[] for _ in rows]

    def record(self, seq: Sequence, row: int, token: int) -> None:
        """Append ``token``'s record, taken from logits row ``row``, to ``seq`` (if it wants one)."""
        j = self.row_of.get(row)
        if seq.logprobs is None or j is None:
            return
        lp, k = self.logprobs[j], seq.request.params.logprobs
        seq.logprobs.append(logprob_record(lp, self.top_ids[j][:k], self.top_values[j][:k], token, self.tokenizer))
        seq.cumulative_logprob += float(lp[token])
