"""Requests, sequences and branch families.

A *request* is one prompt. It owns a *family* of sequences: the root, plus every branch forked from
it (``n > 1`` samples, or EAGer's entropy-triggered branches). Each sequence remembers its parent
and where it split off, so the family's tree can be printed, and so a preempted family can be
recomputed with its prefixes shared again.

Token bookkeeping of a sequence (the engine's invariant):
    token_ids      prompt + generated tokens; the last one may not have been fed to the model yet
    num_computed   leading tokens whose keys/values are in the KV cache
    num_computed == len(token_ids) - 1  -> ready to decode one token
    num_computed <  len(token_ids) - 1  -> (re)prefilling, possibly in chunks

Randomness: a sequence samples from its own ``random.Random`` seeded by (request seed, branch id),
so its tokens do not depend on which other sequences share a batch, and runs are reproducible.

Who writes what: the scheduler owns ``block_table``, ``num_computed`` and ``status`` (it commits
every block write); the engine appends tokens and sets ``finish_reason`` / ``stop_text``; the
request's step controller owns ``controller_state`` and the per-token ``entropies``.
"""

from __future__ import annotations

import random
from enum import Enum
from typing import TYPE_CHECKING, Any

from eager_core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from eager_core.engine.controller import StepController


class SeqStatus(Enum):
    WAITING = "waiting"      # no KV in the cache (new, or preempted)
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """One branch of generation. ``block_table`` is changed only through the scheduler."""

    def __init__(self, seq_id: int, request: "Request", branch_id: int, token_ids: list[int],
                 parent: "Sequence | None" = None, branch_position: int | None = None):
        self.seq_id = seq_id
        self.request = request
        self.branch_id = branch_id
        self.token_ids = token_ids
        self.parent = parent
        # Leading tokens shared with the parent (prompt included); None for a root.
        self.branch_position = branch_position
        self.block_table: list[int] = []
        self.num_computed = 0
        self.status = SeqStatus.WAITING
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.rng = random.Random(f"{request.seed}:{branch_id}")
        self.entropies: list[float] = []          # per generated token, filled by an entropy controller
        self.branch_entropy: float | None = None  # the entropy that created this branch
        self.stop_text: str | None = None         # the output text cut before the stop string that ended it
        self.final_text: str | None = None        # the text once finished, decoded once (outputs.py)
        self.dirty_kv = False                     # wrote non-finite K/V: its blocks are zeroed when freed
        # Per generated token {token id: Logprob} when the request asks for logprobs (else None).
        self.logprobs: list[dict] | None = [] if request.params.logprobs is not None else None
        self.cumulative_logprob = 0.0
        # Prefix hashes of its first full blocks (prefix cache). Tokens are append-only, so a hash,
        # once computed, stays true for this sequence and for every branch forked after it.
        self.block_hashes: list[bytes] = []

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.request.prompt_token_ids)

    @property
    def generated_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_generated(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def branch_step(self) -> int | None:
        """Generated tokens this branch shares with its parent."""
        return None if self.branch_position is None else self.branch_position - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    def __repr__(self) -> str:
        return f"Sequence(id={self.seq_id}, req={self.request.request_id}, branch={self.branch_id}, len={len(self.token_ids)})"


class Request:
    """A prompt and its family of sequences. The family is scheduled, preempted and finished as one.

    ``controller`` decides each step what the family's sequences do (sample, fork, finish);
    ``controller_state`` is its per-request state (a dataclass of the controller's, e.g. EAGer's
    counters). With ``score_only`` the request computes the logits of every prompt position
    (``prompt_logits``) and generates nothing.
    """

    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params: SamplingParams,
                 seed: int, controller: "StepController | None" = None, controller_state: Any = None,
                 score_only: bool = False):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.seed = seed
        self.controller = controller
        self.controller_state = controller_state
        self.score_only = score_only
        # Prompt positions need logits rows (all of them, computed here: never from the prefix cache).
        self.wants_prompt_rows = score_only or params.prompt_logprobs is not None
        self.error: str | None = None      # why the whole family failed (e.g. it cannot fit in the pool)
        self.prompt_logits: list = []       # score_only: logits chunks of the prompt positions, in order
        # SamplingParams.prompt_logprobs: one record per prompt token (None for the first), filled
        # while the prompt is prefilled (never again on a recompute after preemption).
        self.prompt_logprobs: list | None = [None] if params.prompt_logprobs is not None else None
        self.prompt_positions_scored = 0    # leading prompt positions whose logits were taken (either kind)
        self.seqs: list[Sequence] = []
        self.next_branch_id = 0
        self.pending_forks = 0 if score_only else params.n - 1   # n > 1: forked once the prefill is done
        self.arrival = 0                    # admission order, set by the engine (preemption picks the last)

    def new_sequence(self, seq_id: int, token_ids: list[int], parent: Sequence | None = None,
                     branch_position: int | None = None) -> Sequence:
        seq = Sequence(seq_id, self, self.next_branch_id, token_ids, parent, branch_position)
        self.next_branch_id += 1
        self.seqs.append(seq)
        return seq

    @property
    def live_seqs(self) -> list[Sequence]:
        return [s for s in self.seqs if not s.is_finished]

    @property
    def is_finished(self) -> bool:
        return all(s.is_finished for s in self.seqs) and self.pending_forks == 0
