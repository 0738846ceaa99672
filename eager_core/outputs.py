"""What ``LLM.generate`` returns, named as in vLLM."""

from __future__ import annotations

from dataclasses import dataclass, field

from eager_core.io.tokenizer import Tokenizer
from eager_core.sequence import Request, Sequence


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None     # "stop", "length" or "error"
    error: str | None = None


@dataclass
class RequestOutput:
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return all(o.finish_reason is not None for o in self.outputs)


def sequence_text(seq: Sequence, tokenizer: Tokenizer) -> str:
    """The generated text, cut before a stop string when one ended the sequence."""
    return seq.extra.get("text", tokenizer.decode(seq.generated_ids))


def request_output(req: Request, tokenizer: Tokenizer) -> RequestOutput:
    out = RequestOutput(req.request_id, req.prompt, list(req.prompt_token_ids))
    for i, seq in enumerate(sorted(req.seqs, key=lambda s: s.branch_id)):
        out.outputs.append(CompletionOutput(i, sequence_text(seq, tokenizer), list(seq.generated_ids),
                                            seq.finish_reason, seq.error))
    return out
