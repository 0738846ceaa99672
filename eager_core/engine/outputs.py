"""What the engine returns, named as in vLLM: ``RequestOutput`` with one ``CompletionOutput`` per sequence.

Outputs are cumulative: ``LLMEngine.step`` returns, for every request that changed, its whole text
and tokens so far (a streaming client takes the difference itself). For a request whose
controller branches (EAGer), each output also says where it came from: ``parent`` (the index of the
output it branched from), ``branch_step`` (generated tokens shared with it) and ``branch_entropy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from eager_core.engine.sequence import Request, Sequence
from eager_core.io.tokenizer import Tokenizer


@dataclass
class Logprob:
    """One token's log-probability (untempered, over the whole vocabulary), as vLLM reports it."""
    logprob: float
    rank: int                        # 1 = the most likely token
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None     # "stop", "length", "budget", "abort", "error", or None while running
    error: str | None = None
    parent: int | None = None             # index of the output this one branched from (None: a root)
    branch_step: int | None = None        # generated tokens shared with the parent
    branch_entropy: float | None = None   # the entropy that created the branch
    logprobs: list[dict[int, Logprob]] | None = None   # per generated token (SamplingParams.logprobs)
    cumulative_logprob: float | None = None            # sum of the chosen tokens' log-probabilities

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False
    prompt_logits: torch.Tensor | None = None   # scoring requests: float32 [len(prompt), vocab]
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None   # SamplingParams.prompt_logprobs


def sequence_text(seq: Sequence, tokenizer: Tokenizer) -> str:
    """The generated text, cut before a stop string when one ended the sequence.

    A finished sequence's text is decoded once and kept: ``LLMEngine.step`` reports a request's
    every output each step it changes, and re-decoding its finished branches would cost O(length)
    per step for nothing. (A running sequence is decoded whole each time it is reported.)
    """
    if seq.stop_text is not None:
        return seq.stop_text
    if seq.is_finished:
        if seq.final_text is None:
            seq.final_text = tokenizer.decode(seq.generated_ids)
        return seq.final_text
    return tokenizer.decode(seq.generated_ids)


def request_output(req: Request, tokenizer: Tokenizer) -> RequestOutput:
    """The request's outputs so far, ordered by branch id (parents before their branches)."""
    out = RequestOutput(req.request_id, req.prompt, list(req.prompt_token_ids), finished=req.is_finished)
    seqs = sorted(req.seqs, key=lambda s: s.branch_id)
    index = {s.seq_id: i for i, s in enumerate(seqs)}
    for i, seq in enumerate([] if req.score_only else seqs):
        parent = index.get(seq.parent.seq_id) if seq.parent is not None else None
        out.outputs.append(CompletionOutput(i, sequence_text(seq, tokenizer), list(seq.generated_ids),
                                            seq.finish_reason, seq.error, parent, seq.branch_step,
                                            seq.branch_entropy, _copy(seq.logprobs),
                                            None if seq.logprobs is None else seq.cumulative_logprob))
    if req.prompt_logprobs is not None:
        out.prompt_logprobs = list(req.prompt_logprobs)
    if req.score_only and out.finished and req.prompt_logits:
        out.prompt_logits = torch.cat(req.prompt_logits)
    return out


def _copy(logprobs: list | None) -> list | None:
    return None if logprobs is None else list(logprobs)
