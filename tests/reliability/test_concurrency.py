"""Several threads calling one LLM: every public call holds the instance's lock, so calls run one
after the other. Each thread gets exactly what it would get calling alone, the forward passes of
two calls never interleave, and a call that fails or is interrupted in one thread does not disturb
the others.
"""

from __future__ import annotations

import threading

import pytest
import torch
from reliability_helpers import assert_clean, eager_ids, token_ids

from eager_core import LLM, EagerParams, SamplingParams
from eager_core.errors import RequestError

PROMPTS_A = [[5, 6, 7, 8, 9], [11, 12, 13]]
PROMPTS_B = [[21, 22, 23], [31, 32, 33, 34]]
SAMPLED = SamplingParams(temperature=0.8, n=2, seed=7, max_tokens=12, ignore_eos=True)
EAGER = EagerParams(theta=0.5, max_sequences=4, max_tokens=8, dynamic_threshold=False, seed=3)
SCORED = [3, 1, 4, 1, 5, 9, 2, 6]
ROUNDS = 3


def _interrupt(seq, token):
    raise KeyboardInterrupt


@pytest.fixture
def llm(tiny_ckpt) -> LLM:
    return LLM(str(tiny_ckpt), num_kv_blocks=40, block_size=4)


def test_threads_get_the_outputs_of_sequential_calls_and_never_interleave(llm):
    expected = dict(generate=token_ids(llm.generate(prompt_token_ids=PROMPTS_A, params=SAMPLED)),
                    eager=eager_ids(llm.eager(PROMPTS_B, EAGER, method="eager-init")),
                    logits=llm.logits(SCORED))
    # Log which call every forward pass belongs to.
    current, log = threading.local(), []
    run = llm.llm_engine.runner.run

    def logged(*args, **kwargs):
        log.append(current.call)
        return run(*args, **kwargs)
    llm.llm_engine.runner.run = logged

    results, errors = {}, []
    start = threading.Barrier(3)

    def worker(name, call):
        try:
            start.wait()
            for i in range(ROUNDS):
                current.call = (name, i)
                results[(name, i)] = call(i)
        except BaseException as e:   # surfaced below; a thread must not die silently
            errors.append(e)

    def generator(i):
        if i == 1:   # a failing and an interrupted call in the middle: the others must not notice
            with pytest.raises(RequestError):
                llm.generate(prompt_token_ids=[[]], params=SAMPLED)
            current.call = ("generate-interrupted", i)   # its own label: it is a separate call
            with pytest.raises(KeyboardInterrupt):
                llm.generate(prompt_token_ids=PROMPTS_A, params=SAMPLED, on_token=_interrupt)
            current.call = ("generate", i)
        return token_ids(llm.generate(prompt_token_ids=PROMPTS_A, params=SAMPLED))

    threads = [threading.Thread(target=worker, args=("generate", generator)),
               threading.Thread(target=worker, args=("eager", lambda i: eager_ids(llm.eager(PROMPTS_B, EAGER)))),
               threading.Thread(target=worker, args=("logits", lambda i: llm.logits(SCORED)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i in range(ROUNDS):
        assert results[("generate", i)] == expected["generate"]
        assert results[("eager", i)] == expected["eager"]
        assert torch.equal(results[("logits", i)], expected["logits"])
    # Each call's forward passes form one contiguous run: no step of another call in between.
    runs = [call for k, call in enumerate(log) if k == 0 or log[k - 1] != call]
    assert len(runs) == len(set(runs)), runs
    assert {name for name, _ in runs} == {"generate", "generate-interrupted", "eager", "logits"}
    assert_clean(llm)

