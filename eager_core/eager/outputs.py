"""EagerOutput: every sequence of a prompt, its branch tree, and exact token accounting."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from eager_core.io.tokenizer import Tokenizer
from eager_core.outputs import sequence_text
from eager_core.sequence import Request


@dataclass
class EagerSequence:
    text: str
    token_ids: list[int]             # the whole generated sequence, shared prefix included
    parent: int | None               # index (in EagerOutput.sequences) of the sequence it branched from
    branch_step: int                 # leading generated tokens shared with the parent (0 for a root)
    branch_entropy: float | None     # the entropy that triggered the branch
    finish_reason: str | None
    round: int                       # 0: EAGer-init (or parallel); r > 0: the r-th reallocation run
    entropies: list[float] = field(default_factory=list)   # per generated token (shared prefix included)
    error: str | None = None


@dataclass
class EagerOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    sequences: list[EagerSequence] = field(default_factory=list)
    branch_events: list[dict] = field(default_factory=list)
    generated_tokens: int = 0        # distinct generated positions: a shared prefix counts once
    saturated: bool = False          # EAGer-init reached the cap M for this prompt

    @property
    def num_sequences(self) -> int:
        return len(self.sequences)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["num_sequences"] = self.num_sequences
        return d


def build_output(requests: list[Request], tokenizer: Tokenizer, max_sequences: int) -> EagerOutput:
    """Merge the runs (rounds) of one prompt into one output; parents become list indices."""
    first = requests[0]
    out = EagerOutput(first.prompt, list(first.prompt_token_ids))
    index: dict[int, int] = {}
    for req in requests:
        for seq in sorted(req.seqs, key=lambda s: s.branch_id):
            index[seq.seq_id] = len(out.sequences)
            shared = seq.branch_step or 0
            out.sequences.append(EagerSequence(
                text=sequence_text(seq, tokenizer), token_ids=list(seq.generated_ids),
                parent=index[seq.parent.seq_id] if seq.parent is not None else None, branch_step=shared,
                branch_entropy=seq.branch_entropy, finish_reason=seq.finish_reason, round=req.state.get("round", 0),
                entropies=[round(e, 5) for e in seq.entropies], error=seq.error))
            out.generated_tokens += seq.num_generated - shared
        for ev in req.state.get("events", []):
            out.branch_events.append(dict(ev, parent=index[ev["parent"]], child=index[ev["child"]],
                                          round=req.state.get("round", 0),
                                          token_texts=[tokenizer.decode([t], skip_special_tokens=False)
                                                       for t in ev["tokens"]]))
    out.saturated = len(first.seqs) >= max_sequences
    return out
