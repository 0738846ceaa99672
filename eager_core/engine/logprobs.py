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

from eager_core.engine.outputs import Logprob
from eager_core.engine.sequence import Sequence
from eager_core.io.tokenizer import Tokenizer


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
    for j in range(n):
        token = ids[first + j + 1]
        chosen = float(lp[j, token])
        entry = {}
        if top is not None:
            for r, (tid, v) in enumerate(zip(top.indices[j].tolist(), top.values[j].tolist())):
                entry[tid] = Logprob(v, r + 1, tokenizer.decode([tid], skip_special_tokens=False))
        if token not in entry:
            entry[token] = Logprob(chosen, int((lp[j] > chosen).sum()) + 1,
                                   tokenizer.decode([token], skip_special_tokens=False))
        req.prompt_logprobs.append(entry)


class StepLogprobs:
    """The log-probabilities of this step's rows that want them, ready to record per chosen token."""

    def __init__(self, seqs: list[Sequence], logits: torch.Tensor, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        rows = [i for i, s in enumerate(seqs) if s.logprobs is not None]
        self.row_of = {i: j for j, i in enumerate(rows)}
        self.logprobs = None
        if rows:
            sub = logits if len(rows) == len(seqs) else logits[torch.tensor(rows, device=logits.device)]
            self.logprobs = torch.log_softmax(sub.float(), dim=-1).cpu()
            k = max(seqs[i].request.params.logprobs for i in rows)
            top = self.logprobs.topk(k, dim=-1) if k > 0 else None
            self.top_values = top.values.tolist() if top is not None else [[] for _ in rows]
            self.top_ids = top.indices.tolist() if top is not None else [[] for _ in rows]

    def record(self, seq: Sequence, row: int, token: int) -> None:
        """Append ``token``'s record, taken from logits row ``row``, to ``seq`` (if it wants one)."""
        j = self.row_of.get(row)
        if seq.logprobs is None or j is None:
            return
        lp = self.logprobs[j]
        chosen = float(lp[token])
        k = seq.request.params.logprobs
        entry = {tid: Logprob(v, r + 1, self._text(tid))
                 for r, (tid, v) in enumerate(zip(self.top_ids[j][:k], self.top_values[j][:k]))}
        if token not in entry:
            entry[token] = Logprob(chosen, int((lp > chosen).sum()) + 1, self._text(token))
        seq.logprobs.append(entry)
        seq.cumulative_logprob += chosen

    def _text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)
