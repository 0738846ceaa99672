"""RunStats: the statistics of a run, one typed record with explicit merge rules.

The engine counts into one ``RunStats`` as it steps. ``LLM`` gives each call a fresh one and
publishes ``as_dict()`` as ``llm.last_stats`` (its keys are a public contract). Two merges exist,
because two kinds of runs are combined:

    then(other)       runs one after another in one process (EAGer's reallocation rounds):
                      counts add up; the KV peaks are those of the run with the higher physical
                      peak (both peaks were taken at the same moment, so they stay paired)
    alongside(other)  runs at the same time in different processes (data parallel): counts add
                      up; peaks and wall time are the maximum of any process
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class RunStats:
    prompt_tokens: int = 0            # prompt tokens of the requests added
    generated_tokens: int = 0         # tokens appended by sampling or forks (a shared prefix counts once)
    decode_steps: int = 0             # steps that decoded at least one sequence
    prefill_tokens: int = 0           # tokens fed that were not single-token decodes (recompute included)
    kv_blocks_peak: int = 0           # most physical KV blocks in use at once
    kv_blocks_logical_peak: int = 0   # block-table entries at that moment (> peak when blocks are shared)
    cow_copies: int = 0               # blocks copied on write
    preemptions: int = 0              # families evicted and recomputed later
    prefix_cache_hit_tokens: int = 0  # prompt (or recompute) tokens served from cached blocks, not computed
    wall_s: float = 0.0               # seconds spent in engine steps
    rounds: int | None = None         # EAGer runs (EAGer-init + reallocation rounds); None for plain calls

    SUMMED = ("prompt_tokens", "generated_tokens", "decode_steps", "prefill_tokens", "cow_copies", "preemptions",
              "prefix_cache_hit_tokens")

    def note_blocks(self, used: int, logical: int) -> None:
        """Record the pool's use after a step; the logical count is kept for the physical peak."""
        if used > self.kv_blocks_peak:
            self.kv_blocks_peak, self.kv_blocks_logical_peak = used, logical

    def then(self, other: "RunStats") -> "RunStats":
        """This run followed by ``other`` in the same process."""
        out = RunStats(**{k: getattr(self, k) + getattr(other, k) for k in self.SUMMED})
        out.wall_s = self.wall_s + other.wall_s
        peak = other if other.kv_blocks_peak >= self.kv_blocks_peak else self
        out.kv_blocks_peak, out.kv_blocks_logical_peak = peak.kv_blocks_peak, peak.kv_blocks_logical_peak
        out.rounds = (self.rounds or 0) + (other.rounds or 1)
        return out

    def alongside(self, other: "RunStats") -> "RunStats":
        """This run and ``other`` at the same time in two processes."""
        out = RunStats(**{k: getattr(self, k) + getattr(other, k) for k in self.SUMMED})
        out.wall_s = max(self.wall_s, other.wall_s)
        out.kv_blocks_peak = max(self.kv_blocks_peak, other.kv_blocks_peak)
        out.kv_blocks_logical_peak = max(self.kv_blocks_logical_peak, other.kv_blocks_logical_peak)
        if self.rounds is not None or other.rounds is not None:
            out.rounds = max(self.rounds or 0, other.rounds or 0)
        return out

    def as_dict(self) -> dict:
        """``llm.last_stats``: every field, ``rounds`` only for EAGer calls."""
        d = asdict(self)
        if d["rounds"] is None:
            del d["rounds"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunStats":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
