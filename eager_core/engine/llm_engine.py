"""LLMEngine: the online engine. Requests join, stream and leave while others decode.

vLLM's three verbs are the whole interface:

    engine.add_request("a", "The capital of France is", SamplingParams(max_tokens=8))
    while engine.has_unfinished_requests():
        for out in engine.step():            # one output per request that changed this step
            print(out.request_id, out.outputs[0].text, out.finished)
    engine.abort_request("a")                # every block of the request is free on return

One step: admit what arrived -> scheduler plans and commits block writes -> model runner computes
logits -> each request's step controller decides per row (token, fork, finish) -> the engine
applies the decisions, checks stop conditions and returns the changed requests' outputs.
``LLM.generate / chat / eager / logits`` are loops over these same steps (``run_until_finished``).

Threads: ``add_request`` and ``abort_request`` may be called from any thread while one thread
drives ``step``. A request added during a step joins at the next one; an abort waits for the
running step to end, then frees the request's blocks before it returns. (An abort issued from a
callback inside ``step`` itself, such as ``on_token``, is applied at the end of that step.)

Determinism: a request's tokens depend only on its prompt, its parameters and its seed (its
sequences sample from their own streams), never on when it arrived or what else runs with it.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any, Callable, Iterable

import torch

from eager_core.cache.block_manager import BlockManager
from eager_core.errors import RequestError
from eager_core.engine.controller import Decision, StepController, decide_all, take_rows
from eager_core.engine.engine_args import EngineArgs
from eager_core.engine.intake import encode_prompt, plan_request, stop_reason
from eager_core.engine.loader import EngineParts, load_engine_parts
from eager_core.engine.logprobs import StepLogprobs, record_prompt_logprobs
from eager_core.engine.outputs import RequestOutput, request_output
from eager_core.engine.sequence import Request, Sequence
from eager_core.engine.stats import RunStats

TokenCallback = Callable[[Sequence, int], None]


class LLMEngine:
    """Accepts ``LLM``'s constructor arguments (see EngineArgs) and owns the model, pool and scheduler."""

    def __init__(self, ckpt: str | None = None, **kwargs: Any):
        args = kwargs.pop("engine_args", None) or EngineArgs(ckpt, **kwargs)
        self.args = args
        parts: EngineParts = load_engine_parts(args)
        self.config, self.tokenizer, self.model, self.tp = parts.config, parts.tokenizer, parts.model, parts.tp
        self.device, self.dtype, self.max_model_len = parts.device, args.torch_dtype, parts.max_model_len
        self.ckpt_dir, self.runner, self.scheduler, self.kv_pool = parts.ckpt_dir, parts.runner, parts.scheduler, parts.runner.kv_pool
        self.block_manager: BlockManager = parts.scheduler.bm
        self.stats = RunStats()
        self.on_token: TokenCallback | None = None   # called in the step thread for every new token
        self._seed_stream = random.Random(args.seed)
        self._arrivals = itertools.count()
        self._requests: dict[str, Request] = {}      # every unfinished request, queued ones included
        self._inbox: list[Request] = []               # added since the last step
        self._lock = threading.Lock()                 # guards _requests and _inbox
        self._step_lock = threading.RLock()           # held for a whole step, and by abort_request
        self._stepping = False
        self._deferred_aborts: list[str] = []

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> "LLMEngine":
        return cls(engine_args=args)

    # --- state ----------------------------------------------------------------------------------

    @property
    def kv_blocks_free(self) -> int:
        return self.block_manager.num_free

    @property
    def kv_blocks_total(self) -> int:
        return self.block_manager.num_blocks

    @property
    def kv_blocks_cached(self) -> int:
        """Free blocks that still hold a cached prompt prefix (counted in ``kv_blocks_free`` too)."""
        return self.block_manager.num_cached

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def get_num_unfinished_requests(self) -> int:
        return len(self._requests)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting) + len(self._inbox)

    def idle_problems(self) -> list[str]:
        """What is wrong with an engine that should be idle (no request left): leaked blocks,
        reference counts, queued work. Empty when clean."""
        problems = self.scheduler.idle_problems()
        if self._requests or self._inbox or self._deferred_aborts:
            problems.append(f"engine still holds {len(self._requests)} requests ({len(self._inbox)} not admitted)")
        return problems

    # --- adding and aborting (any thread) ---------------------------------------------------------

    def add_request(self, request_id: str, prompt: str | list[int] | dict, params: Any, *,
                    controller: StepController | None = None, controller_state: Any = None) -> None:
        """Queue a request; it joins the running batch at the next step.

        ``prompt``: text (encoded as ``LLM.generate`` encodes it), token ids, or vLLM's
        ``{"prompt_token_ids": [...], "prompt": text}``. ``params``: ``SamplingParams``, or
        ``EagerParams`` for one EAGer-init tree (the tree ``LLM.eager([prompt], params)`` returns).
        ``controller`` overrides the step controller that the params choose (see controller.py).
        """
        if not isinstance(request_id, str) or not request_id:
            raise RequestError(f"request_id={request_id!r}: expected a non-empty string")
        text, ids = encode_prompt(self.tokenizer, self.config.vocab_size, self.max_model_len, request_id, prompt)
        plan = plan_request(params, self.tokenizer, controller, controller_state)
        sampling, ctl, controller_state = plan.sampling, plan.controller, plan.controller_state
        if sampling.n > self.scheduler.max_num_seqs:
            # A family is never split, so n siblings must fit in one step's batch.
            raise RequestError(f"request {request_id!r}: SamplingParams.n={sampling.n} exceeds "
                               f"max_num_seqs={self.scheduler.max_num_seqs}")
        with self._lock:
            if request_id in self._requests:
                raise RequestError(f"request_id={request_id!r} is already in use by an unfinished request")
            seed = sampling.seed if sampling.seed is not None else self._seed_stream.getrandbits(63)
            req = Request(request_id, text, ids, sampling, seed, ctl, controller_state, score_only=plan.score_only)
            self._requests[request_id] = req
            self._inbox.append(req)

    def abort_request(self, request_id: str | Iterable[str]) -> None:
        """Drop requests (unknown or finished ids are ignored). Every block of each is free on return,
        and no output of it appears afterwards."""
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        with self._step_lock:
            if self._stepping:   # called from a callback inside step(): applied when the step ends
                self._deferred_aborts += ids
                return
            for rid in ids:
                self._abort_now(rid)

    def _abort_now(self, request_id: str) -> None:
        with self._lock:
            req = self._requests.pop(request_id, None)
            if req is None:
                return
            if req in self._inbox:
                self._inbox.remove(req)
                return
        self.runner.zero_blocks(self.scheduler.abort(req))

    # --- the step ---------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one step of every unfinished request; return the outputs of those that changed.

        The outputs are built under the step lock: an ``abort_request`` from another thread waits
        until they hold this step's state, so an aborted request never shows up as finished with
        "abort" (it was emitted that way when the outputs were built after the lock was released).
        """
        with self._step_lock:
            return [request_output(r, self.tokenizer) for r in self.step_requests()]

    def step_requests(self) -> list[Request]:
        """``step`` without building outputs: the changed requests themselves (for loops that
        read the results only at the end)."""
        with self._step_lock:
            t0 = time.perf_counter()
            self._stepping = True
            try:
                changed = self._step()
            finally:
                self._stepping = False
                aborted, self._deferred_aborts = self._deferred_aborts, []
                for rid in aborted:
                    self._abort_now(rid)
                self.stats.wall_s += time.perf_counter() - t0
            if aborted:
                changed = [r for r in changed if r.request_id not in aborted]
            return changed

    def _step(self) -> list[Request]:
        self._admit_inbox()
        if not self.scheduler.has_work():
            return []
        batch = self.scheduler.schedule()
        changed: dict[int, Request] = {id(r): r for r in batch.failed}
        stats = self.stats
        stats.prefill_tokens += batch.num_tokens - batch.num_decode
        stats.decode_steps += 1 if batch.num_decode else 0
        stats.cow_copies += len(batch.copies)
        stats.preemptions += batch.preempted
        stats.prefix_cache_hit_tokens += batch.cached_tokens
        if batch.items:
            out = self.runner.run(batch)
            self.scheduler.register_computed(batch)
            self._note_blocks()
            for seq, first, chunk in out.scores:
                self._score(seq, first, chunk, changed)
            seqs, rows = self.scheduler.fork_pending_siblings(out.seqs)   # n > 1: share the prompt's logits
            logits = take_rows(out.logits, rows)
            logits, seqs = self._drop_bad_rows(logits, seqs, changed)
            if seqs:
                self._decide(seqs, logits, changed)
            self._note_blocks()
        elif not batch.failed:
            raise RuntimeError("scheduler produced an empty step with work pending")  # a bug, not user error
        finished = [r for r in self.scheduler.running if r.is_finished]
        for req in finished:
            self.scheduler.remove(req)
        with self._lock:
            for req in finished + batch.failed:
                self._requests.pop(req.request_id, None)
        return list(changed.values())

    def _admit_inbox(self) -> None:
        with self._lock:
            arrived, self._inbox = self._inbox, []
        for req in arrived:
            req.arrival = next(self._arrivals)
            self.scheduler.add(req)
            self.stats.prompt_tokens += len(req.prompt_token_ids)

    def _score(self, seq: Sequence, first: int, chunk: torch.Tensor, changed: dict) -> None:
        """Prompt rows: a scoring request keeps every position's logits (and ends when the prompt
        is in); a request with ``prompt_logprobs`` keeps the records of the prompt tokens."""
        req = seq.request
        if req.prompt_logprobs is not None:
            record_prompt_logprobs(req, first, chunk, self.tokenizer)
        if not req.score_only:
            return
        req.prompt_logits.append(chunk)
        if not bool(torch.isfinite(chunk).all()):
            seq.dirty_kv = True
        if seq.num_computed == len(seq.token_ids):
            self.runner.zero_blocks(self.scheduler.finish(seq, "stop"))
            changed[id(req)] = req

    def _decide(self, seqs: list[Sequence], logits: torch.Tensor, changed: dict) -> None:
        """Each controller decides for its rows (one call per controller); then apply, in row order."""
        decisions = decide_all(seqs, logits)
        logprobs = StepLogprobs(seqs, logits, self.tokenizer)
        children: list[Sequence] = []
        for row, (seq, d) in enumerate(zip(seqs, decisions)):
            changed[id(seq.request)] = seq.request
            if isinstance(d, Decision):
                if d.token is None:
                    self._finish(seq, d.finish_reason or "stop")
                    continue
                if d.fork_token is not None:
                    child = self.scheduler.fork(seq, int(d.fork_token))
                    logprobs.record(child, row, int(d.fork_token))
                    seq.request.controller.on_fork(seq, child, d.note)
                    children.append(child)
                token = int(d.token)
            else:
                token = int(d)
            logprobs.record(seq, row, token)
            seq.token_ids.append(token)
            self._after_token(seq)
        for child in children:
            self._after_token(child)

    def _drop_bad_rows(self, logits: torch.Tensor, seqs: list[Sequence], changed: dict
                       ) -> tuple[torch.Tensor, list[Sequence]]:
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
                seq.dirty_kv = True
                self._finish(seq, "error")
                changed[id(seq.request)] = seq.request
            else:
                keep.append(i)
        return take_rows(logits, keep), [seqs[i] for i in keep]

    def _after_token(self, seq: Sequence) -> None:
        """Account the new token, stream it, and finish the sequence if it is done."""
        self.stats.generated_tokens += 1
        if self.on_token is not None:
            self.on_token(seq, seq.token_ids[-1])
        reason = stop_reason(seq, self.tokenizer, self.max_model_len)
        if reason is not None:
            self._finish(seq, reason)

    def _finish(self, seq: Sequence, reason: str) -> None:
        self.runner.zero_blocks(self.scheduler.finish(seq, reason))

    def _note_blocks(self) -> None:
        used = self.block_manager.num_used
        if used > self.stats.kv_blocks_peak:
            self.stats.note_blocks(used, sum(len(s.block_table) for r in self.scheduler.running for s in r.live_seqs))

    # --- the one offline loop ----------------------------------------------------------------------

    def run_until_finished(self, request_ids: list[str],
                           on_step: Callable[[RunStats], None] | None = None) -> list[RequestOutput]:
        """Step until every request in ``request_ids`` has finished; their final outputs, in order.

        Any exception (KeyboardInterrupt included) aborts those requests, so every block they held
        is back in the pool and the engine stays usable. A request that failed as a whole (it cannot
        fit in the pool) raises its RequestError after the others were aborted.
        """
        mine = set(request_ids)
        final: dict[str, Request] = {}
        try:
            while len(final) < len(mine):
                for req in self.step_requests():
                    if req.request_id in mine and req.is_finished:
                        if req.error is not None:
                            raise RequestError(req.error)
                        final[req.request_id] = req
                if on_step is not None:
                    on_step(self.stats)
                if len(final) < len(mine) and not self.scheduler.has_work() and not self._inbox:
                    missing = sorted(mine - set(final))
                    raise RequestError(f"requests {missing[:5]} were aborted before they finished")
        except BaseException:
            self.abort_request([r for r in request_ids if r not in final])
            raise
        return [request_output(final[r], self.tokenizer) for r in request_ids]
