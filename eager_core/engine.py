"""The step loop: schedule -> run the model -> decide tokens (and forks) -> finish sequences.

What happens to the logits is the *policy*'s business (plain sampling here, entropy-gated
branching in eager/policy.py). The engine gives a policy two verbs: return one token per row,
and ``fork(seq, token)`` to start a branch that shares the sequence's whole KV cache.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

import torch

from eager_core.cache.block_manager import BlockManager
from eager_core.io.tokenizer import Tokenizer
from eager_core.model_runner import ModelRunner
from eager_core.sampler import sample
from eager_core.scheduler import Scheduler
from eager_core.sequence import Request, Sequence, SeqStatus

TokenCallback = Callable[[Sequence, int], None]


class Policy(Protocol):
    def decide(self, engine: "Engine", seqs: list[Sequence], logits: torch.Tensor) -> list[int | None]:
        """One next token per row of ``logits`` (row i belongs to ``seqs[i]``).

        May call ``engine.fork(seq, token)`` to branch, or ``engine.finish(seq, reason)`` and return
        None for that row to stop a sequence without a new token.
        """


class SamplingPolicy:
    """Plain sampling with each request's SamplingParams (batched, one uniform per row)."""

    def decide(self, engine: "Engine", seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
        return sample_rows(seqs, logits)


def sample_rows(seqs: list[Sequence], logits: torch.Tensor, temperature: float | None = None) -> list[int]:
    """Sample each row with its request's parameters (or a shared temperature) and its own stream."""
    params = [s.request.params for s in seqs]
    temps = [p.temperature if temperature is None else temperature for p in params]
    if all(t <= 0 for t in temps):
        return logits.argmax(dim=-1).tolist()   # all greedy: no filters, no draws from the streams
    t = torch.tensor(temps, dtype=torch.float32)
    top_k = torch.tensor([p.top_k for p in params], dtype=torch.long)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
    min_p = torch.tensor([p.min_p for p in params], dtype=torch.float32)
    u = torch.tensor([s.rng.random() for s in seqs], dtype=torch.float64)
    dev = logits.device
    return sample(logits, t.to(dev), top_k.to(dev), top_p.to(dev), min_p.to(dev), u.to(dev)).tolist()


class Engine:
    def __init__(self, runner: ModelRunner, scheduler: Scheduler, tokenizer: Tokenizer, max_model_len: int):
        self.runner, self.scheduler, self.tokenizer = runner, scheduler, tokenizer
        self.bm: BlockManager = runner.bm
        self.max_model_len = max_model_len
        self.next_seq_id = 0
        self.requests: list[Request] = []
        self.on_token: TokenCallback | None = None
        self._forked: list[Sequence] = []
        self.reset_stats()

    # --- requests --------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        request.new_sequence(self._seq_id(), list(request.prompt_token_ids))
        self.requests.append(request)
        self.scheduler.add(request)

    def _seq_id(self) -> int:
        self.next_seq_id += 1
        return self.next_seq_id - 1

    def fork(self, seq: Sequence, token: int | None) -> Sequence:
        """Start a branch sharing ``seq``'s KV blocks; it continues with ``token`` (if given).

        Must be called while ``seq`` is fully computed (during ``decide``). Costs no KV copy: the
        first write into the shared last block later copies that one block.
        """
        req = seq.request
        child = req.new_sequence(self._seq_id(), list(seq.token_ids), parent=seq, branch_position=len(seq.token_ids))
        child.block_table = self.bm.fork(seq.block_table)
        child.num_computed = seq.num_computed
        child.status = SeqStatus.RUNNING
        if token is not None:
            child.token_ids.append(token)
            self._forked.append(child)
        return child

    # --- the loop ------------------------------------------------------------------------------

    def reset_stats(self) -> None:
        self.stats = dict(prompt_tokens=0, generated_tokens=0, decode_steps=0, prefill_tokens=0,
                          kv_blocks_peak=0, kv_blocks_logical_peak=0, cow_copies=0, preemptions=0, wall_s=0.0)
        self._cow_base, self._preempt_base = self.bm.cow_copies, self.scheduler.preemptions

    def run(self, policy: Policy) -> None:
        """Step until every request has finished."""
        t0 = time.perf_counter()
        try:
            while self.scheduler.has_work():
                self.step(policy)
        finally:
            self.stats["wall_s"] += time.perf_counter() - t0
            self.stats["cow_copies"] = self.bm.cow_copies - self._cow_base
            self.stats["preemptions"] = self.scheduler.preemptions - self._preempt_base

    def step(self, policy: Policy) -> None:
        batch = self.scheduler.schedule()
        if not batch.items:
            raise RuntimeError("scheduler produced an empty step with work pending")  # a bug, not user error
        num_decode = sum(1 for s, n in batch.items if n == 1 and s.num_computed == len(s.token_ids) - 1)
        self.stats["prefill_tokens"] += batch.num_tokens - num_decode
        if num_decode:
            self.stats["decode_steps"] += 1
        logits, seqs = self.runner.run(batch.items, num_decode)
        self._track_blocks()
        seqs, logits = self._expand_pending_forks(seqs, logits)
        logits, seqs = self._drop_bad_rows(logits, seqs)
        if seqs:
            tokens = policy.decide(self, seqs, logits)
            for seq, token in zip(seqs, tokens):
                if token is None:
                    assert seq.is_finished, "a policy returned no token for a live sequence"
                    continue
                seq.token_ids.append(int(token))
                self._after_token(seq)
        for child in self._forked:
            self._after_token(child)
        self._forked.clear()
        self._track_blocks()
        for req in [r for r in self.scheduler.running if r.is_finished]:
            self.scheduler.finish(req)

    def _expand_pending_forks(self, seqs: list[Sequence], logits: torch.Tensor) -> tuple[list[Sequence], torch.Tensor]:
        """n > 1: the prompt was prefilled once; fork n-1 siblings that sample from the same logits."""
        if not any(s.request.pending_forks for s in seqs):
            return seqs, logits
        rows, out = [], []
        for i, seq in enumerate(seqs):
            rows.append(i)
            out.append(seq)
            req = seq.request
            while req.pending_forks and seq.num_generated == 0:
                req.pending_forks -= 1
                out.append(self.fork(seq, None))
                rows.append(i)
        return out, logits[torch.tensor(rows, device=logits.device)]

    def _drop_bad_rows(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[torch.Tensor, list[Sequence]]:
        """A NaN or +inf in a row (or no finite value at all) stops that sequence with finish_reason
        'error'; the others go on.

        The blocks such a sequence gives back to the pool are zeroed, so that its non-finite
        keys/values cannot reach the next owner of a block (masked padding multiplies a value by a
        probability of 0, and 0 * NaN is NaN).
        """
        # One reduction: a row's max is NaN if any entry is, +inf if any is, -inf if all are.
        bad = ~torch.isfinite(logits.amax(dim=-1))
        if not bool(bad.any()):
            return logits, seqs
        keep = []
        for i, seq in enumerate(seqs):
            if bool(bad[i]):
                seq.error = "non-finite logits (NaN or inf) at position %d" % len(seq.token_ids)
                dying = [b for b in seq.block_table if self.bm.ref_count[b] == 1]   # freed by finish()
                self.finish(seq, "error")
                self.runner.kv_pool.zero_blocks(dying)
            else:
                keep.append(i)
        return logits[torch.tensor(keep, dtype=torch.long, device=logits.device)], [seqs[i] for i in keep]

    def _after_token(self, seq: Sequence) -> None:
        """Account the new token, stream it, and finish the sequence if it is done."""
        self.stats["generated_tokens"] += 1
        token = seq.token_ids[-1]
        params = seq.request.params
        if self.on_token is not None:
            self.on_token(seq, token)
        if not params.ignore_eos and token in self.tokenizer.eos_token_ids:
            self.finish(seq, "stop")
        elif params.stop_token_ids and token in params.stop_token_ids:
            self.finish(seq, "stop")
        elif params.stop and self._hit_stop_string(seq):
            self.finish(seq, "stop")
        elif seq.num_generated >= params.max_tokens or len(seq.token_ids) >= self.max_model_len:
            self.finish(seq, "length")

    def _hit_stop_string(self, seq: Sequence) -> bool:
        text = self.tokenizer.decode(seq.generated_ids)
        hits = [text.find(s) for s in seq.request.params.stop if s in text]
        if hits:
            seq.extra["text"] = text[:min(hits)]   # the output excludes the stop string
        return bool(hits)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Stop a sequence and return its blocks (shared ones only lose a reference)."""
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        self.bm.free(seq.block_table)

    def _track_blocks(self) -> None:
        used = self.bm.num_used
        if used > self.stats["kv_blocks_peak"]:
            self.stats["kv_blocks_peak"] = used
            self.stats["kv_blocks_logical_peak"] = sum(
                len(s.block_table) for r in self.scheduler.running for s in r.live_seqs)

    def abort(self) -> None:
        """Drop every request and return every block to the pool (after an interrupt)."""
        self.scheduler.abort_all()
        self._forked.clear()
        self.requests.clear()
