"""EagerOutput: every sequence of a prompt, its branch tree, and exact token accounting."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from eager_core.eager.eager_init import EagerState
from eager_core.engine.outputs import RequestOutput
from eager_core.io.tokenizer import Tokenizer


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


@dataclass
class RoundResult:
    """One EAGer run of one prompt: the engine's final output and the controller's record."""
    output: RequestOutput
    state: EagerState


def build_output(results: list[RoundResult], tokenizer: Tokenizer, max_sequences: int) -> EagerOutput:
    """Merge the runs (rounds) of one prompt into one output; parents become list indices.

    Within a run, output index == branch id (the engine orders outputs by branch id, and the
    controller names sequences by branch id), so a run's indices shift by the outputs before it.
    """
    first = results[0].output
    out = EagerOutput(first.prompt, list(first.prompt_token_ids))
    for res in results:
        offset, st = len(out.sequences), res.state
        for c in res.output.outputs:
            shared = c.branch_step or 0
            out.sequences.append(EagerSequence(
                text=c.text, token_ids=list(c.token_ids), parent=None if c.parent is None else offset + c.parent,
                branch_step=shared, branch_entropy=c.branch_entropy, finish_reason=c.finish_reason, round=st.round,
                entropies=[round(e, 5) for e in st.entropies.get(c.index, [])], error=c.error))
            out.generated_tokens += len(c.token_ids) - shared
        for ev in st.events:
            out.branch_events.append(dict(ev, parent=offset + ev["parent"], child=offset + ev["child"], round=st.round,
                                          token_texts=[tokenizer.decode([t], skip_special_tokens=False)
                                                       for t in ev["tokens"]]))
    out.saturated = len(first.outputs) >= max_sequences
    return out
