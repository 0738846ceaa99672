"""Forks, parallel sampling, preemption and statistics, end to end on a tiny random checkpoint.

Every comparison is against an independent computation: a branch's logits against a fresh
prefill of the same tokens (``LLM.logits``), a small pool's outputs against an ample pool's, a
request in a crowd against the same request alone.
"""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, RequestError, SamplingParams
from eager_core.engine import Engine
from eager_core.sequence import Request

BS = 4
STATS_KEYS = {"prompt_tokens", "generated_tokens", "decode_steps", "kv_blocks_peak", "kv_blocks_logical_peak",
              "cow_copies", "preemptions", "wall_s"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's matmuls gain nothing from threads, and on a shared 2-core machine two
    spinning threads made this file ~50x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_llm(ckpt, num_blocks: int, **kwargs) -> LLM:
    return LLM(str(ckpt), num_kv_blocks=num_blocks, block_size=BS, **kwargs)


def token_lists(outputs) -> list[list[list[int]]]:
    return [[c.token_ids for c in r.outputs] for r in outputs]


def guard_steps(llm: LLM, limit: int) -> None:
    """Fail instead of hanging if the scheduler livelocks (preempting and re-admitting forever)."""
    step = llm.engine.step

    def counted(policy):
        counted.n += 1
        assert counted.n <= limit, f"no completion after {limit} steps"
        step(policy)
    counted.n = 0
    llm.engine.step = counted


def assert_pool_empty(llm: LLM) -> None:
    bm = llm.block_manager
    assert bm.num_free == bm.num_blocks
    bm.check([])


def prompts_of(lengths: list[int], start: int = 3) -> list[list[int]]:
    return [[(start + 7 * i + 3 * j) % 250 for j in range(n)] for i, n in enumerate(lengths)]


def watch_preemptions(llm: LLM) -> list[tuple[int, int]]:
    """Check every preemption: the victim is the most recently admitted family, all of it goes, and
    no step copies more than one block per sequence. Returns (request id, finished sequences of
    the family) per preemption."""
    sched, bm, preempted = llm.scheduler, llm.block_manager, []
    admitted: dict[int, int] = {}   # request id -> admission counter
    schedule, preempt, run = sched.schedule, sched._preempt, llm.engine.runner.run

    def watched_schedule():
        batch = schedule()
        for req in sched.running:
            admitted.setdefault(req.request_id, len(admitted) + len(preempted))
        return batch

    def watched_preempt(req):
        assert all(admitted[req.request_id] > admitted[r.request_id] for r in sched.running)
        preempt(req)
        assert all(not s.block_table and s.num_computed == 0 for s in req.live_seqs)
        bm.check([s.block_table for r in sched.running for s in r.live_seqs])
        del admitted[req.request_id]
        preempted.append((req.request_id, sum(s.is_finished for s in req.seqs)))

    def watched_run(items, num_decode, all_logits=False):
        before = bm.cow_copies
        out = run(items, num_decode, all_logits)
        assert bm.cow_copies - before <= len(items)
        return out
    sched.schedule, sched._preempt, llm.engine.runner.run = watched_schedule, watched_preempt, watched_run
    return preempted


# --- a branch is a sequence like any other ---------------------------------------------------------


class ForkingGreedy:
    """Greedy; at chosen (branch_id, num_generated) points, forks the sequence with its runner-up
    token, or finishes it early (its branches live on). Records (sequence, tokens so far,
    next-token logits) for every row it sees."""

    def __init__(self, fork_at: set[tuple[int, int]], finish_at: set[tuple[int, int]]):
        self.fork_at, self.finish_at = fork_at, finish_at
        self.rows: list[tuple[object, list[int], torch.Tensor]] = []
        self.forks = 0

    def decide(self, engine: Engine, seqs, logits: torch.Tensor) -> list[int | None]:
        top2 = logits.topk(2, dim=-1).indices
        for i, seq in enumerate(seqs):
            self.rows.append((seq, list(seq.token_ids), logits[i].clone()))
            if (seq.branch_id, seq.num_generated) in self.fork_at:
                free = engine.bm.num_free
                child = engine.fork(seq, int(top2[i, 1]))
                # A fork costs metadata only: the same blocks, nothing taken from the pool.
                assert child.block_table == seq.block_table and engine.bm.num_free == free
                self.forks += 1
        tokens = top2[:, 0].tolist()
        for i, seq in enumerate(seqs):
            if (seq.branch_id, seq.num_generated) in self.finish_at:
                engine.finish(seq, "stop")
                tokens[i] = None
        return tokens


def run_forking(llm: LLM, prompts: list[list[int]], max_tokens: int) -> ForkingGreedy:
    # Prompts of 6, 8 and 5 tokens with blocks of 4: forks land mid-block and on block boundaries.
    # The root stops early, so a preempted family may have to recompute branches of a finished parent.
    policy = ForkingGreedy({(0, 0), (0, 2), (1, 3), (2, 4), (0, 5)}, {(0, 6)})
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    requests = [Request(100 + i, None, ids, params, seed=i) for i, ids in enumerate(prompts)]
    llm.run_requests(requests, policy)
    assert all(s.finish_reason == ("stop" if s.branch_id == 0 else "length") for r in requests for s in r.seqs)
    return policy


@pytest.mark.parametrize("num_blocks", [200, 22])
def test_forked_branch_logits_equal_a_fresh_sequence(tiny_ckpt, num_blocks):
    """With 22 blocks, families with nested branches are preempted and recomputed: branches are
    re-forked from their recomputed parent at the branch position (mid-block or not), and branches
    of a parent that has already finished are recomputed on their own."""
    llm = make_llm(tiny_ckpt, num_blocks)
    guard_steps(llm, 500)
    preempted = watch_preemptions(llm)
    refork_points: list[int] = []
    fork = llm.block_manager.fork

    def recording_fork(table, num_tokens=None):
        if num_tokens is not None:   # only the scheduler's re-fork shares a prefix of a table
            refork_points.append(num_tokens)
        return fork(table, num_tokens)
    llm.block_manager.fork = recording_fork
    policy = run_forking(llm, prompts_of([6, 8, 5]), max_tokens=9)
    assert policy.forks == 3 * 5
    stats = llm.last_stats
    assert stats["cow_copies"] > 0
    tight = num_blocks < 100
    assert (stats["preemptions"] > 0) == tight
    assert bool(refork_points) == tight and (not tight or any(p % BS for p in refork_points))
    assert not tight or any(finished for _, finished in preempted)
    assert_pool_empty(llm)
    assert sum(1 for r in policy.rows if r[0].parent is not None) > 30
    # Every recorded row (parents too: a branch's writes must never reach them) against a fresh
    # prefill of the same tokens. A row's tokens are a prefix of its sequence's final tokens, so
    # one prefill per sequence gives every row's reference.
    fresh = {}
    for seq, tokens, row in policy.rows:
        if seq.seq_id not in fresh:
            fresh[seq.seq_id] = llm.logits(seq.token_ids)
        assert seq.token_ids[:len(tokens)] == tokens
        ref = fresh[seq.seq_id][len(tokens) - 1]
        assert (row - ref).abs().max().item() < 1e-4, (seq, len(tokens))


# --- parallel sampling -------------------------------------------------------------------------------


def test_greedy_n4_gives_four_copies_of_n1_and_prefills_once(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 64)
    prompt = prompts_of([11])
    one = llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    four = llm.generate(prompt_token_ids=prompt,
                        params=SamplingParams(temperature=0, max_tokens=12, n=4, ignore_eos=True))
    assert [c.token_ids for c in four[0].outputs] == [one[0].outputs[0].token_ids] * 4
    assert llm.last_stats["prefill_tokens"] == 11          # the prompt went through the model once
    assert llm.last_stats["generated_tokens"] == 4 * 12


def test_seeded_sampling_does_not_depend_on_the_batch(tiny_ckpt):
    params = SamplingParams(temperature=1.0, top_p=0.95, max_tokens=14, n=3, seed=1234, ignore_eos=True)
    target = prompts_of([9], start=40)
    alone = make_llm(tiny_ckpt, 64).generate(prompt_token_ids=target, params=params)[0]
    # Beside prompts of other lengths, prefilled in small chunks, in another engine instance.
    others = prompts_of([3, 17, 30, 5], start=90)
    crowd = make_llm(tiny_ckpt, 200, max_num_batched_tokens=16).generate(
        prompt_token_ids=others[:2] + target + others[2:], params=params)[2]
    assert [c.token_ids for c in crowd.outputs] == [c.token_ids for c in alone.outputs]
    # The three branches draw from different streams, and the seed matters.
    assert len({tuple(c.token_ids) for c in alone.outputs}) == 3
    reseeded = make_llm(tiny_ckpt, 64).generate(
        prompt_token_ids=target, params=SamplingParams(temperature=1.0, top_p=0.95, max_tokens=14, n=3, seed=99,
                                                       ignore_eos=True))[0]
    assert [c.token_ids for c in reseeded.outputs] != [c.token_ids for c in alone.outputs]


def test_n8_stores_the_prompt_once(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 128)
    prompt = prompts_of([30])   # 8 blocks, the last one half full
    llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=4, n=8, ignore_eos=True))
    stats = llm.last_stats
    # Peak after the 3rd decode: 8 prompt blocks + 7 copies of the shared half-full block + 8 new
    # blocks for position 32; the 8 tables are 9 blocks long each.
    assert stats["kv_blocks_peak"] == 8 + 7 + 8
    assert stats["kv_blocks_logical_peak"] == 8 * 9
    assert 3 * stats["kv_blocks_peak"] < stats["kv_blocks_logical_peak"]
    assert stats["cow_copies"] == 7


# --- a pool smaller than the work ---------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_small_pool_preempts_and_still_gives_the_ample_pool_outputs(tiny_ckpt, temperature):
    prompts = prompts_of([5, 9, 13, 17, 6, 11, 3, 20])
    params = SamplingParams(temperature=temperature, max_tokens=12, n=2, seed=7, ignore_eos=True)
    ample = make_llm(tiny_ckpt, 400)
    ref = ample.generate(prompt_token_ids=prompts, params=params)
    assert ample.last_stats["preemptions"] == 0
    small_blocks = ample.last_stats["kv_blocks_peak"] // 4
    # The largest family (20-token prompt, 2 x 12 tokens) needs 5 shared + 2 x 3 own blocks.
    assert small_blocks >= 11
    small = make_llm(tiny_ckpt, small_blocks)
    guard_steps(small, 1000)
    preempted = watch_preemptions(small)
    out = small.generate(prompt_token_ids=prompts, params=params)
    assert len(preempted) == small.last_stats["preemptions"]
    assert token_lists(out) == token_lists(ref)
    assert all(c.finish_reason == "length" for r in out for c in r.outputs)
    assert small.last_stats["preemptions"] > 0
    assert small.last_stats["kv_blocks_peak"] <= small_blocks
    assert_pool_empty(small)


def test_recomputed_family_shares_its_prompt_again(tiny_ckpt):
    """Two n=4 families with 30-token prompts in 24 blocks: the second is preempted after it has
    forked. Recomputed without re-forking, its 4 copies of the prompt would need 36 blocks."""
    prompts = prompts_of([30, 30], start=11)
    params = SamplingParams(temperature=0, max_tokens=6, n=4, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 200).generate(prompt_token_ids=prompts, params=params)
    small = make_llm(tiny_ckpt, 24)
    guard_steps(small, 200)
    out = small.generate(prompt_token_ids=prompts, params=params)
    assert token_lists(out) == token_lists(ref)
    assert small.last_stats["preemptions"] > 0


def family_peak_blocks(prompt_len: int, max_tokens: int, n: int) -> int:
    """Blocks n lockstep siblings forked after the prompt hold at their end: the prompt's full blocks
    once, and each sibling's own blocks up to position prompt_len + max_tokens - 2 (a sequence's last
    token is never fed back). Holds for max_tokens >= 2 or n == 1."""
    last = -(-(prompt_len + max_tokens - 1) // BS)
    return prompt_len // BS + n * (last - prompt_len // BS)


@pytest.mark.parametrize("prompt_len,max_tokens,n", [(4, 1, 1), (9, 8, 1), (3, 2, 2), (3, 4, 2), (5, 4, 3),
                                                     (9, 4, 2), (8, 5, 2)])
def test_a_pool_of_exactly_one_family_serves_many_requests(tiny_ckpt, prompt_len, max_tokens, n):
    """The exact need is enough (no deadlock, no spurious error); one block less is a RequestError."""
    prompts = prompts_of([prompt_len] * 3)
    params = SamplingParams(temperature=1.0, seed=3, max_tokens=max_tokens, n=n, ignore_eos=True)
    exact = family_peak_blocks(prompt_len, max_tokens, n)
    ref = make_llm(tiny_ckpt, 100).generate(prompt_token_ids=prompts, params=params)
    tight = make_llm(tiny_ckpt, exact)
    guard_steps(tight, 300)
    assert token_lists(tight.generate(prompt_token_ids=prompts, params=params)) == token_lists(ref)
    assert tight.last_stats["kv_blocks_peak"] == exact
    assert_pool_empty(tight)
    if exact == 1:
        return
    too_small = make_llm(tiny_ckpt, exact - 1)
    guard_steps(too_small, 300)
    with pytest.raises(RequestError, match="KV pool too small"):
        too_small.generate(prompt_token_ids=prompts, params=params)
    assert_pool_empty(too_small)   # the error returned every block; the engine is usable again
    short = SamplingParams(temperature=1.0, seed=3, max_tokens=1, n=n, ignore_eos=True)
    assert token_lists(too_small.generate(prompt_token_ids=prompts, params=short)) == [
        [c[:1] for c in r] for r in token_lists(ref)]


def test_family_larger_than_the_pool_is_an_error_not_a_hang(tiny_ckpt):
    # One sequence fits in 4 blocks (12 + 4 - 1 positions); a family of four needs 3 + 4 x 1.
    llm = make_llm(tiny_ckpt, 5)
    guard_steps(llm, 100)
    prompt = prompts_of([12])
    llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    with pytest.raises(RequestError, match="KV pool too small"):
        llm.generate(prompt_token_ids=prompt, params=SamplingParams(temperature=0, max_tokens=4, n=4,
                                                                    ignore_eos=True))
    assert_pool_empty(llm)


def test_n_above_max_num_seqs_is_refused(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 32, max_num_seqs=2)
    guard_steps(llm, 50)
    with pytest.raises(RequestError, match="max_num_seqs"):
        llm.generate(prompt_token_ids=[[1, 2, 3]], params=SamplingParams(n=3))
    assert_pool_empty(llm)


# --- continuous batching ---------------------------------------------------------------------------


def record_batches(llm: LLM) -> list[list[tuple[int, int]]]:
    """Record every step's (seq_id, new tokens) items as the model runner receives them."""
    batches: list[list[tuple[int, int]]] = []
    run = llm.engine.runner.run

    def recorded(items, num_decode, all_logits=False):
        batches.append([(s.seq_id, n) for s, n in items])
        return run(items, num_decode, all_logits)
    llm.engine.runner.run = recorded
    return batches


def test_every_running_sequence_decodes_in_one_step(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 128)
    prompts = prompts_of([4, 9, 15, 2, 7])
    llm.generate(prompt_token_ids=prompts, params=SamplingParams(temperature=0, max_tokens=10, n=2, ignore_eos=True))
    stats = llm.last_stats
    # One prefill step samples the first token of all ten sequences; nine packed decodes follow.
    assert stats["decode_steps"] == 9
    assert stats["prompt_tokens"] == stats["prefill_tokens"] == sum(map(len, prompts))
    assert stats["generated_tokens"] == 5 * 2 * 10


def test_batch_limits_and_chunked_prefill_keep_outputs(tiny_ckpt):
    prompts = prompts_of([30, 3, 18, 9, 25])
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=5, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 128).generate(prompt_token_ids=prompts, params=params)
    llm = make_llm(tiny_ckpt, 128, max_num_seqs=3, max_num_batched_tokens=8)
    batches = record_batches(llm)
    assert token_lists(llm.generate(prompt_token_ids=prompts, params=params)) == token_lists(ref)
    assert all(len(b) <= 3 for b in batches)
    assert all(sum(n for _, n in b) <= 8 for b in batches)
    assert max(n for b in batches for _, n in b) == 8             # long prompts went in chunks
    # Continuous batching: some step decodes one request while another one prefills.
    assert any(any(n == 1 for _, n in b) and any(n > 1 for _, n in b) for b in batches)


def test_stats_have_every_key_and_count_copy_on_write(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 64)
    params = SamplingParams(temperature=0, max_tokens=5, n=3, ignore_eos=True)
    llm.generate(prompt_token_ids=[list(range(10, 16))], params=params)   # 6 tokens: fork mid-block
    mid = dict(llm.last_stats)
    assert STATS_KEYS <= set(mid)
    assert mid["cow_copies"] == 2           # three writers of one shared block: two copies
    assert mid["prompt_tokens"] == 6 and mid["generated_tokens"] == 15 and mid["decode_steps"] == 4
    assert mid["preemptions"] == 0 and mid["wall_s"] > 0
    llm.generate(prompt_token_ids=[list(range(10, 18))], params=params)   # 8 tokens: on a boundary
    assert llm.last_stats["cow_copies"] == 0   # stats are per call, and a full block is never copied
    assert llm.last_stats["prompt_tokens"] == 8
