"""The online engine (LLMEngine): requests that join, stream and leave while others decode.

Every check compares with an independent computation: a request's tokens against the same request
run offline alone (``LLM.generate`` / ``LLM.eager``), in a separate engine instance.
"""

from __future__ import annotations

import threading

import pytest

from eager_core import LLM, EagerParams, LLMEngine, RequestError, SamplingParams
from kv_helpers import BS, assert_pool_empty, make_llm, prompts_of
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
SEEDED = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=10, n=3, seed=77, ignore_eos=True)
EAGER = EagerParams(theta=0.5, max_sequences=6, max_tokens=8, dynamic_threshold=False, seed=5)


def offline(ckpt, prompt, params) -> list[list[int]]:
    """The request alone, through the offline API of a fresh engine."""
    return [c.token_ids for c in make_llm(ckpt, 64).generate(prompt_token_ids=[prompt], params=params)[0].outputs]


def drain(engine: LLMEngine, limit: int = 500) -> dict[str, list]:
    """Step until idle; the last output seen per request (each must end up finished)."""
    last = {}
    for _ in range(limit):
        if not engine.has_unfinished_requests():
            break
        for out in engine.step():
            last[out.request_id] = out
    assert not engine.has_unfinished_requests(), "no completion"
    return last


def test_staggered_arrivals_equal_offline_outputs(tiny_ckpt):
    prompts = prompts_of([5, 9, 3, 14, 7, 6])
    params = [GREEDY, SEEDED, GREEDY, SEEDED, GREEDY, SEEDED]
    engine = make_llm(tiny_ckpt, 40, max_num_batched_tokens=8).llm_engine   # small: chunks and preemptions
    arrivals = {0: [0], 2: [1], 3: [2], 7: [3, 4], 11: [5]}                  # step -> prompts added before it
    last, step = {}, 0
    while step <= max(arrivals) or engine.has_unfinished_requests():
        for i in arrivals.get(step, []):
            engine.add_request(f"req-{i}", prompts[i], params[i])
        for out in engine.step():
            assert out.request_id.startswith("req-")            # the caller's id, unchanged
            prev = last.get(out.request_id)
            if prev is not None:                                 # cumulative: what was there stays
                for a, b in zip(prev.outputs, out.outputs):
                    assert b.token_ids[:len(a.token_ids)] == a.token_ids
            last[out.request_id] = out
        step += 1
        assert step < 400
    assert all(out.finished for out in last.values()) and len(last) == len(prompts)
    for i, (p, sp) in enumerate(zip(prompts, params)):
        assert [c.token_ids for c in last[f"req-{i}"].outputs] == offline(tiny_ckpt, p, sp), i
    assert engine.idle_problems() == []


def test_step_reports_only_requests_that_changed(tiny_ckpt):
    engine = make_llm(tiny_ckpt, 32).llm_engine
    assert engine.step() == [] and not engine.has_unfinished_requests()
    engine.add_request("short", [1, 2, 3], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    engine.add_request("long", [4, 5], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))
    seen = [sorted(o.request_id for o in engine.step()) for _ in range(6)]
    assert seen[:2] == [["long", "short"]] * 2 and seen[2:] == [["long"]] * 4
    assert not engine.has_unfinished_requests() and engine.kv_blocks_free == engine.kv_blocks_total


def test_abort_mid_flight_frees_every_block_and_neighbours_are_unchanged(tiny_ckpt):
    prompts = prompts_of([6, 11, 4])
    engine = make_llm(tiny_ckpt, 64).llm_engine
    engine.add_request("a", prompts[0], SEEDED)
    engine.add_request("victim", prompts[1], SamplingParams(temperature=1.0, n=4, max_tokens=30, seed=1,
                                                            ignore_eos=True))
    engine.add_request("c", prompts[2], GREEDY)
    for _ in range(4):
        engine.step()
    held = engine.kv_blocks_total - engine.kv_blocks_free
    engine.abort_request("victim")
    freed = engine.kv_blocks_free - (engine.kv_blocks_total - held)
    assert freed >= 4   # its four branches' private blocks at least, all back before the call returned
    live = [s.block_table for r in engine.scheduler.running for s in r.live_seqs]
    engine.block_manager.check(live)   # every count equals the references of the remaining tables
    engine.abort_request(["victim", "never-added"])   # idempotent, unknown ids ignored
    last = drain(engine)
    assert "victim" not in last
    assert [c.token_ids for c in last["a"].outputs] == offline(tiny_ckpt, prompts[0], SEEDED)
    assert [c.token_ids for c in last["c"].outputs] == offline(tiny_ckpt, prompts[2], GREEDY)
    assert engine.idle_problems() == []


def test_abort_before_admission_and_from_a_callback(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 32)
    engine = llm.llm_engine
    engine.add_request("queued", [1, 2, 3], GREEDY)
    engine.abort_request("queued")                       # never admitted: nothing ran
    assert engine.step() == [] and engine.idle_problems() == []
    engine.add_request("self", [1, 2, 3], GREEDY)
    engine.add_request("other", [4, 5, 6], GREEDY)
    engine.on_token = lambda seq, tok: engine.abort_request("self") if seq.num_generated == 3 else None
    outs = drain(engine)
    engine.on_token = None
    assert outs["self"].outputs[0].finish_reason is None   # its last output came before the abort
    assert len(outs["self"].outputs[0].token_ids) < 3
    assert outs["other"].outputs[0].token_ids == offline(tiny_ckpt, [4, 5, 6], GREEDY)[0]
    assert engine.idle_problems() == []


def test_an_abort_from_another_thread_waits_until_the_step_has_built_its_outputs(tiny_ckpt, monkeypatch):
    """The race the threaded test below once hit: step() built its outputs after releasing the step
    lock, so an abort landing in between showed the request finished with "abort". Here the abort
    is started exactly then, from inside the output building: it must wait for the step."""
    from eager_core.engine import llm_engine

    engine = make_llm(tiny_ckpt, 96).llm_engine
    engine.add_request("r", [5, 6, 7], SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    build, aborter = llm_engine.request_output, []

    def build_during_an_abort(req, tokenizer):
        if not aborter:
            aborter.append(threading.Thread(target=engine.abort_request, args=("r",)))
            aborter[0].start()
            aborter[0].join(0.3)   # with the lock held by step() it cannot finish yet
        return build(req, tokenizer)

    monkeypatch.setattr(llm_engine, "request_output", build_during_an_abort)
    out = engine.step()
    aborter[0].join(10)
    assert [o.finished for o in out] == [False] and out[0].outputs[0].finish_reason is None
    assert not aborter[0].is_alive() and not engine.has_unfinished_requests() and engine.step() == []
    assert engine.idle_problems() == []


def test_add_and_abort_from_other_threads_while_one_thread_steps(tiny_ckpt):
    engine = make_llm(tiny_ckpt, 96).llm_engine
    prompts = prompts_of([4, 7, 5, 9, 3, 8, 6, 10], start=30)
    keep = {f"k{i}": (p, GREEDY if i % 2 else SEEDED) for i, p in enumerate(prompts)}
    stop, last, errors = threading.Event(), {}, []

    def stepper():
        try:
            while not stop.is_set() or engine.has_unfinished_requests():
                for out in engine.step():
                    last[out.request_id] = out
        except BaseException as e:   # surfaced below
            errors.append(e)

    def producer():
        try:
            for rid, (p, sp) in keep.items():
                engine.add_request(rid, p, sp)
                engine.add_request(rid + "-x", p, SamplingParams(temperature=1.0, n=2, max_tokens=40, ignore_eos=True))
                threading.Event().wait(0.002)
                engine.abort_request(rid + "-x")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=stepper)
    t.start()
    producers = [threading.Thread(target=producer)]
    for p in producers:
        p.start()
    for p in producers:
        p.join(60)
    stop.set()
    t.join(120)
    assert not t.is_alive() and not errors
    for rid, (p, sp) in keep.items():
        assert last[rid].finished and [c.token_ids for c in last[rid].outputs] == offline(tiny_ckpt, p, sp), rid
    ended = {r: [c.finish_reason for c in out.outputs] for r, out in last.items() if "-x" in r and out.finished}
    assert all(reason == "length" for reasons in ended.values() for reason in reasons), ended
    assert engine.idle_problems() == []


def test_online_eager_request_equals_llm_eager(tiny_ckpt):
    prompt = prompts_of([7], start=50)[0]
    ref = make_llm(tiny_ckpt, 128).eager([prompt], EAGER, method="eager-init")[0]
    assert ref.num_sequences > 2   # it did branch
    engine = make_llm(tiny_ckpt, 128).llm_engine
    engine.add_request("plain", prompts_of([5])[0], GREEDY)   # a neighbour in the same steps
    engine.add_request("tree", prompt, EAGER)
    out = drain(engine)["tree"]
    assert [c.token_ids for c in out.outputs] == [s.token_ids for s in ref.sequences]
    assert [c.parent for c in out.outputs] == [s.parent for s in ref.sequences]
    assert [c.branch_step or 0 for c in out.outputs] == [s.branch_step for s in ref.sequences]
    assert [c.branch_entropy for c in out.outputs] == [s.branch_entropy for s in ref.sequences]
    assert out.outputs[0].parent is None and all(c.parent is not None for c in out.outputs[1:])
    assert engine.idle_problems() == []


def test_engine_takes_llm_arguments_and_checks_its_requests(tiny_ckpt):
    engine = LLMEngine(str(tiny_ckpt), num_kv_blocks=8, block_size=BS, max_num_seqs=2)
    assert (engine.kv_blocks_free, engine.kv_blocks_total) == (8, 8)
    llm = LLM(str(tiny_ckpt), num_kv_blocks=8, block_size=BS)
    assert isinstance(llm.llm_engine, LLMEngine)
    engine.add_request("x", "hi", GREEDY)   # text: encoded as LLM.generate encodes it
    assert engine.step()[0].prompt_token_ids == llm.tokenizer.encode("hi", add_special_tokens=True)
    with pytest.raises(RequestError, match="already in use"):
        engine.add_request("x", [1, 2], GREEDY)
    for bad_id in (7, "", None):
        with pytest.raises(RequestError, match="request_id"):
            engine.add_request(bad_id, [1, 2], GREEDY)
    with pytest.raises(RequestError, match="expected SamplingParams or EagerParams"):
        engine.add_request("y", [1, 2], dict(temperature=0))
    with pytest.raises(RequestError, match="max_num_seqs"):
        engine.add_request("y", [1, 2], SamplingParams(n=3))
    with pytest.raises(RequestError, match="token ids"):
        engine.add_request("y", [1, 10**6], GREEDY)
    engine.abort_request("x")
    engine.add_request("x", [1, 2], GREEDY)   # a finished or aborted id can be used again
    drain(engine)
    assert engine.idle_problems() == []


def test_a_family_that_cannot_fit_fails_alone_online(tiny_ckpt):
    engine = make_llm(tiny_ckpt, 5).llm_engine   # 5 blocks of 4: a 12-token prompt with n=4 cannot fit
    engine.add_request("big", prompts_of([12])[0], SamplingParams(temperature=0, max_tokens=4, n=4, ignore_eos=True))
    engine.add_request("small", [1, 2, 3], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    last = drain(engine)
    assert last["big"].finished and all(c.finish_reason == "error" and "KV pool too small" in c.error
                                        for c in last["big"].outputs)
    assert last["small"].outputs[0].token_ids == offline(tiny_ckpt, [1, 2, 3], SamplingParams(
        temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert engine.idle_problems() == []


def test_scoring_request_gives_every_position(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 16)
    ref = llm.logits([3, 4, 5, 6, 7, 8, 9])
    assert ref.shape == (7, llm.config.vocab_size)
    assert_pool_empty(llm)
