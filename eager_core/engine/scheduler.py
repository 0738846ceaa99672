"""Continuous batching: which sequences run this step, what to evict when blocks run out, and
every change to a block table.

The scheduler is the only owner of KV blocks above the block manager: it allocates the slots of
each step's writes (copy-on-write included) and hands the runner a batch with slots, it forks and
frees sequences, and it drops aborted families. The runner only reads block tables.

Each step packs, within ``max_num_seqs`` sequences and ``max_num_batched_tokens`` tokens:
  1. one decode token for every running sequence of every running request,
  2. the next prefill chunk of running sequences that are still (re)computing their context,
  3. new requests from the waiting queue, first come first served, while their prompts fit.

A request and all its branches form a *family* that is admitted, preempted and finished as a unit.
When the pool cannot hold the step's writes, the most recently admitted family is preempted: its
blocks are freed and it goes back to the front of the queue to be recomputed later. Recompute
re-forks each branch from its parent at the split position, so a family costs what it cost before.
A family that cannot fit in the whole pool on its own fails (``request.error``), it never deadlocks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from eager_core.cache.block_manager import BlockManager
from eager_core.engine.sequence import Request, Sequence, SeqStatus


@dataclass
class ScheduledItem:
    seq: Sequence
    n: int                 # new tokens to feed: positions [seq.num_computed, seq.num_computed + n)
    slots: list[int]       # the KV slot each of those positions is written to (committed)


@dataclass
class ScheduledBatch:
    items: list[ScheduledItem]        # decodes (n == 1, context complete) first, then prefill chunks
    num_decode: int
    num_tokens: int
    copies: list[tuple[int, int]]     # copy-on-write (src, dst) blocks: copy before the forward pass
    preempted: int                    # families evicted while planning this step
    failed: list[Request]             # families dropped because they cannot fit (``request.error`` says why)
    cached_tokens: int = 0            # positions that admission took from the prefix cache instead


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int = 256, max_num_batched_tokens: int = 2048):
        self.bm = block_manager
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []       # in admission order: the last one is preempted first
        self.preemptions = 0
        self.next_seq_id = 0
        self.failed: list[Request] = []
        self.cached_tokens = 0

    def add(self, request: Request) -> None:
        """Queue a request (with its root sequence) at the back of the waiting queue."""
        request.new_sequence(self._seq_id(), list(request.prompt_token_ids))
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _seq_id(self) -> int:
        self.next_seq_id += 1
        return self.next_seq_id - 1

    # --- block commits outside the plan: forks, finishes, aborts ----------------------------------

    def fork(self, seq: Sequence, token: int | None) -> Sequence:
        """Start a branch sharing ``seq``'s KV blocks; it continues with ``token`` (if given).

        ``seq`` must be fully computed (its logits just came back). Costs no KV copy: the first
        write into the shared last block later copies that one block.
        """
        req = seq.request
        child = req.new_sequence(self._seq_id(), list(seq.token_ids), parent=seq, branch_position=len(seq.token_ids))
        child.block_table = self.bm.fork(seq.block_table)
        child.num_computed = seq.num_computed
        child.status = SeqStatus.RUNNING
        child.block_hashes = list(seq.block_hashes)
        if seq.logprobs is not None:   # the shared prefix's records; each then appends its own
            child.logprobs, child.cumulative_logprob = list(seq.logprobs), seq.cumulative_logprob
        if token is not None:
            child.token_ids.append(token)
        return child

    def fork_pending_siblings(self, seqs: list[Sequence]) -> tuple[list[Sequence], list[int]]:
        """n > 1: once the prompt is prefilled, fork its n - 1 siblings (sharing every block).

        Returns the rows to decide (each root followed by its new siblings) and, for each, the
        index in ``seqs`` whose logits it samples from: the siblings share their root's.
        """
        if not any(s.request.pending_forks for s in seqs):
            return seqs, list(range(len(seqs)))
        rows, out = [], []
        for i, seq in enumerate(seqs):
            rows.append(i)
            out.append(seq)
            req = seq.request
            while req.pending_forks and seq.num_generated == 0:
                req.pending_forks -= 1
                out.append(self.fork(seq, None))
                rows.append(i)
        return out, rows

    def finish(self, seq: Sequence, reason: str) -> list[int]:
        """Stop a sequence and drop its blocks (shared ones only lose a reference).

        Returns the blocks that went back to the pool if the sequence wrote non-finite K/V
        (``dirty_kv``): the caller zeroes them before anyone else can own them.
        """
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        return self._release(seq)

    def _release(self, seq: Sequence) -> list[int]:
        dying = []
        if seq.dirty_kv:   # non-finite K/V: never offered to another request, zeroed when free
            self.bm.uncache(seq.block_table)
            dying = [b for b in seq.block_table if self.bm.ref_count[b] == 1]
        self.bm.free(seq.block_table)
        return dying

    def remove(self, req: Request) -> None:
        """Drop a finished family (its sequences already freed their blocks)."""
        self.running.remove(req)

    def abort(self, req: Request) -> list[int]:
        """Drop a family wherever it is, freeing every block of every sequence; returns dirty blocks."""
        dying: list[int] = []
        for seq in req.seqs:
            dying += self._release(seq)
            if not seq.is_finished:
                seq.status, seq.finish_reason = SeqStatus.FINISHED, "abort"
        req.pending_forks = 0
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        return dying

    def idle_problems(self) -> list[str]:
        """With no request left: every block free with count 0, nothing queued or running."""
        bm, problems = self.bm, []
        if bm.num_free != bm.num_blocks:
            problems.append(f"{bm.num_blocks - bm.num_free} of {bm.num_blocks} KV blocks not back in the pool")
        counted = [b for b, c in enumerate(bm.ref_count) if c != 0]
        if counted:
            problems.append(f"blocks with a non-zero reference count: {counted[:10]}")
        if len(set(bm.free_list)) != len(bm.free_list):
            problems.append("a block is in the free list twice")
        if self.waiting or self.running:
            problems.append(f"scheduler still holds {len(self.waiting)} waiting and {len(self.running)} running requests")
        return problems

    # --- the plan of one step -----------------------------------------------------------------

    def schedule(self) -> ScheduledBatch:
        """Pick this step's work, preempting families until the pool can hold every planned write,
        then commit the writes: every item gets its slots, shared blocks their private copies."""
        preempted = self.preemptions
        while True:
            items = self._plan_running()
            need = self.bm.blocks_for_writes([(s.block_table, s.num_computed, s.num_computed + n) for s, n in items])
            if need <= self.bm.num_free or not self.running:
                break
            if len(self.running) == 1:
                req = self.running[0]
                self._fail(req, f"KV pool too small: request {req.request_id!r} with {len(req.live_seqs)} live "
                                f"sequences needs {need} more blocks but only {self.bm.num_free} of "
                                f"{self.bm.num_blocks} are free; raise num_kv_blocks")
                continue
            self._preempt(self.running.pop())
        items += self._admit(sum(n for _, n in items), len(items), need)
        # Decodes first, then prefill chunks (the model runner batches decodes together).
        items.sort(key=lambda item: not _is_decode(*item))
        copies: list[tuple[int, int]] = []
        scheduled = []
        for seq, n in items:
            slots, cow = self.bm.prepare_write(seq.block_table, seq.num_computed, seq.num_computed + n)
            copies += cow
            scheduled.append(ScheduledItem(seq, n, slots))
        failed, self.failed = self.failed, []
        cached, self.cached_tokens = self.cached_tokens, 0
        return ScheduledBatch(scheduled, sum(1 for seq, n in items if _is_decode(seq, n)),
                              sum(n for _, n in items), copies, self.preemptions - preempted, failed, cached)

    # --- the prefix cache ---------------------------------------------------------------------

    def _reuse_cached_prefix(self, seq: Sequence) -> None:
        """A sequence starting from nothing takes the longest cached run of its full blocks.

        At least its last token is always left to compute (its logits are what the step is for),
        so only blocks that end before it can be reused. Scoring requests compute every position.
        """
        if not self.bm.enable_caching or seq.request.wants_prompt_rows or seq.block_table or seq.num_computed:
            return
        bs, tokens = self.bm.block_size, seq.token_ids
        for j in range((len(tokens) - 1) // bs):
            block_tokens = tuple(tokens[j * bs:(j + 1) * bs])
            if j == len(seq.block_hashes):
                seq.block_hashes.append(self.bm.prefix_hash(seq.block_hashes[-1] if j else None, block_tokens))
            block = self.bm.lookup(seq.block_hashes[j], block_tokens)
            if block is None:
                break
            self.bm.acquire_cached(block)
            seq.block_table.append(block)
        seq.num_computed = len(seq.block_table) * bs
        self.cached_tokens += seq.num_computed

    def register_computed(self, batch: ScheduledBatch) -> None:
        """After the forward pass: offer every block that this step filled to the prefix cache."""
        if not self.bm.enable_caching:
            return
        bs = self.bm.block_size
        for item in batch.items:
            seq = item.seq
            start = seq.num_computed - item.n   # the runner has advanced num_computed already
            for j in range(start // bs, seq.num_computed // bs):
                while len(seq.block_hashes) <= j:
                    k = len(seq.block_hashes)
                    seq.block_hashes.append(self.bm.prefix_hash(seq.block_hashes[-1] if k else None,
                                                                tuple(seq.token_ids[k * bs:(k + 1) * bs])))
                self.bm.register(seq.block_table[j], seq.block_hashes[j], tuple(seq.token_ids[j * bs:(j + 1) * bs]))

    def _fail(self, req: Request, message: str) -> None:
        """A family that cannot fit in the whole pool on its own: drop it and report it, never wait for it."""
        live = req.live_seqs
        self.abort(req)
        for seq in live:
            seq.finish_reason, seq.error = "error", message
        req.error = message
        self.failed.append(req)

    def _plan_running(self) -> list[tuple[Sequence, int]]:
        items: list[tuple[Sequence, int]] = []
        budget = self.max_num_batched_tokens
        for req in self.running:
            for seq in req.live_seqs:
                if seq.status is SeqStatus.WAITING and not self._attach_recomputed(seq):
                    continue   # its parent has not recomputed the shared prefix yet
                todo = len(seq.token_ids) - seq.num_computed
                n = 1 if todo == 1 else min(todo, max(budget, 0))
                if n <= 0:
                    continue
                items.append((seq, n))
                budget -= n
        return items

    def _attach_recomputed(self, seq: Sequence) -> bool:
        """Bring a waiting sequence of a running family back: re-fork it from its parent if possible."""
        parent = seq.parent
        if parent is not None and not parent.is_finished:
            if parent.status is SeqStatus.WAITING or parent.num_computed < seq.branch_position:
                return False   # the shared prefix is not back in the cache yet
            seq.block_table = self.bm.fork(parent.block_table, seq.branch_position)
            seq.num_computed = seq.branch_position
        seq.status = SeqStatus.RUNNING   # (no live parent: recompute from scratch, from the cache if it can)
        if seq.parent is None or seq.parent.is_finished:
            self._reuse_cached_prefix(seq)
        return True

    def _admit(self, tokens: int, seqs: int, blocks_planned: int) -> list[tuple[Sequence, int]]:
        items: list[tuple[Sequence, int]] = []
        free = self.bm.num_free - blocks_planned
        while self.waiting:
            req = self.waiting[0]
            live = req.live_seqs
            need = family_blocks(req, self.bm.block_size)
            if need > self.bm.num_blocks:
                self._fail(req, f"KV pool too small: request {req.request_id!r} needs {need} blocks, the pool "
                                f"has {self.bm.num_blocks}; raise num_kv_blocks")
                continue
            root = live[0]
            n = min(len(root.token_ids) - root.num_computed, self.max_num_batched_tokens - tokens)
            family = len(live) + req.pending_forks
            # Beside other families, ask for one spare block per sequence so that the family's
            # next tokens do not preempt it straight away. Alone, it only needs to fit (a family
            # that grew past max_num_seqs through controller forks must still be able to come back).
            alone = not self.running
            if n <= 0 or need + (0 if alone else family) > free or (
                    not alone and seqs + family > self.max_num_seqs):
                break
            self.waiting.popleft()
            self.running.append(req)
            root.status = SeqStatus.RUNNING
            self._reuse_cached_prefix(root)
            n = min(len(root.token_ids) - root.num_computed, self.max_num_batched_tokens - tokens)
            items.append((root, n))
            tokens, seqs, free = tokens + n, seqs + family, free - need
        return items

    def _preempt(self, req: Request) -> None:
        for seq in req.live_seqs:
            self.bm.free(seq.block_table)
            seq.num_computed = 0
            seq.status = SeqStatus.WAITING
        self.preemptions += 1
        self.waiting.appendleft(req)



def _is_decode(seq: Sequence, n: int) -> bool:
    return n == 1 and seq.num_computed == len(seq.token_ids) - 1


def family_blocks(req: Request, block_size: int) -> int:
    """Blocks a family holds once every live sequence's tokens are back in the cache.

    Exact (no headroom), because it decides whether the family fits in the pool at all: a root, or
    a branch whose parent has finished, holds positions [0, len); a branch re-forked from a live
    parent shares the parent's full blocks below ``branch_position`` and owns the rest, including
    its copy of a partly shared block.
    """
    total = 0
    for seq in req.live_seqs:
        start = seq.branch_position if seq.parent is not None and not seq.parent.is_finished else 0
        total += -(-len(seq.token_ids) // block_size) - start // block_size
    return total
