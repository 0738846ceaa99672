"""A hypothesis state machine over the online engine: add / step / abort in any interleaving.

A small pool (so families are preempted and recomputed) and a tiny model. After every rule the
block manager's reference counts equal the references of the live block tables, nothing is both
free and used, and no block is held by a request that is gone. Every request that was never
aborted must end with exactly the tokens it gets when run alone offline (determinism under any
arrival pattern), and the engine must end idle with every block back in the pool.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eager_core import SamplingParams
from kv_helpers import make_llm, prompts_of

PARAMS = [SamplingParams(temperature=0, max_tokens=9, ignore_eos=True),
          SamplingParams(temperature=1.0, top_k=20, max_tokens=7, n=2, seed=11, ignore_eos=True),
          SamplingParams(temperature=0.7, max_tokens=5, n=3, seed=3, ignore_eos=True)]
PROMPTS = prompts_of([3, 6, 10, 13], start=20)


class OnlineEngineMachine(RuleBasedStateMachine):
    ckpt = None       # set by the test
    references: dict = {}

    def __init__(self):
        super().__init__()
        self.engine = make_llm(self.ckpt, 24, max_num_batched_tokens=12).llm_engine
        self.added: dict[str, tuple[int, int]] = {}   # request id -> (prompt index, params index)
        self.aborted: set[str] = set()
        self.last: dict[str, object] = {}
        self.count = 0

    @rule(prompt=st.integers(0, len(PROMPTS) - 1), params=st.integers(0, len(PARAMS) - 1))
    def add(self, prompt: int, params: int) -> None:
        rid = f"r{self.count}"
        self.count += 1
        self.engine.add_request(rid, PROMPTS[prompt], PARAMS[params])
        self.added[rid] = (prompt, params)

    @rule(times=st.integers(1, 4))
    def step(self, times: int) -> None:
        for _ in range(times):
            for out in self.engine.step():
                assert out.request_id not in self.aborted, "an output after its abort"
                self.last[out.request_id] = out

    @precondition(lambda self: self.added)
    @rule(pick=st.integers(0, 10**6))
    def abort(self, pick: int) -> None:
        rid = sorted(self.added)[pick % len(self.added)]
        self.engine.abort_request(rid)
        if not (rid in self.last and self.last[rid].finished):
            self.aborted.add(rid)

    @invariant()
    def counts_match_live_tables(self) -> None:
        sched, bm = self.engine.scheduler, self.engine.block_manager
        tables = [s.block_table for r in sched.running for s in r.live_seqs]
        assert all(not s.block_table for r in sched.waiting for s in r.seqs)   # queued families hold nothing
        bm.check(tables)
        live_ids = {r.request_id for r in sched.running} | {r.request_id for r in sched.waiting}
        assert not (live_ids & self.aborted)

    def teardown(self) -> None:
        for _ in range(400):
            if not self.engine.has_unfinished_requests():
                break
            self.step(1)
        assert self.engine.idle_problems() == []
        for rid, (p, k) in self.added.items():
            if rid in self.aborted:
                continue
            key = (p, k)
            if key not in self.references:
                out = make_llm(self.ckpt, 64).generate(prompt_token_ids=[PROMPTS[p]], params=PARAMS[k])[0]
                self.references[key] = [c.token_ids for c in out.outputs]
            assert [c.token_ids for c in self.last[rid].outputs] == self.references[key], rid


def test_add_step_abort_interleavings(tiny_ckpt):
    OnlineEngineMachine.ckpt = tiny_ckpt
    OnlineEngineMachine.references = {}
    OnlineEngineMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                                                     suppress_health_check=list(HealthCheck))
    OnlineEngineMachine.TestCase().runTest()
