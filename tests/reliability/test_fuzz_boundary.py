"""Fuzzers of the public boundary: random values *and* types for every field of SamplingParams,
EagerParams and LLM's keywords, random bytes as prompts. The outcome is a valid result or an
EagerError subclass, never another exception and never a hang; afterwards the engine still gives
a fresh engine's outputs. (The CLI fuzzer is in test_fuzz_cli.py.)"""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from reliability_helpers import assert_clean, token_ids

from eager_core import LLM, EagerParams, SamplingParams
from eager_core.errors import EagerError

# Anything a caller might pass: edge numbers, wrong types, containers, text, nested junk.
EDGE_NUMBERS = st.sampled_from([0, 1, -1, 2, 2**31, 2**63, 2**64, 2**80, -(2**70), 0.0, -0.0, 1e-300, 5e-324, 0.5,
                                1.0, 1e308, -1e308, math.inf, -math.inf, math.nan, 0.999999, 1.0000001])
ANY = st.one_of(EDGE_NUMBERS, st.booleans(), st.none(), st.text(max_size=5), st.integers(), st.floats(),
                st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=3)), max_size=3),
                st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.binary(max_size=3))
LLM_FIELDS = ["dtype", "device", "block_size", "num_kv_blocks", "seed", "max_num_seqs", "max_num_batched_tokens",
              "max_model_len", "enforce_eager", "enable_prefix_caching"]
# Valid values of each field: most examples must get past validation and run, or a check that
# lets a bad value through would only be met in the few examples with no other bad field.
VALID_SAMPLING = {"temperature": st.sampled_from([0.0, 1e-300, 0.7, 1.0, 1e308]), "top_k": st.sampled_from([0, 1, 5, 2**80]),
                  "top_p": st.sampled_from([1e-9, 0.5, 1.0]), "min_p": st.sampled_from([0.0, 0.3, 1.0]),
                  "max_tokens": st.integers(1, 10**30), "n": st.integers(1, 3), "seed": st.integers(-(2**90), 2**90),
                  "stop": st.sampled_from([None, "a", ["x", "."]]), "stop_token_ids": st.sampled_from([None, [], [3]]),
                  "ignore_eos": st.booleans(), "logprobs": st.sampled_from([None, 0, 20])}
VALID_EAGER = {"theta": st.sampled_from([-1e300, 0.0, 0.5, 2.2, 1e300]), "max_sequences": st.integers(1, 10**20),
               "temperature": st.sampled_from([0.0, 0.6, 1e300]), "top_k_entropy": st.integers(1, 2**70),
               "entropy": st.sampled_from(["topk", "full"]), "max_tokens": st.integers(1, 10**20),
               "no_branch_window": st.integers(1, 10**20), "dynamic_threshold": st.booleans(),
               "think_only": st.booleans(), "seed": st.integers(-(2**90), 2**90),
               "budget_tokens": st.sampled_from([None, 1, 7, 10**20]), "max_retries": st.integers(0, 10**18)}


def fields_of(valid: dict) -> st.SearchStrategy:
    """Some fields with valid values, and at most one of them replaced by anything at all."""
    return st.tuples(st.fixed_dictionaries({}, optional=valid), st.none() | st.tuples(st.sampled_from(sorted(valid)), ANY)
                     ).map(lambda t: {**t[0], **({t[1][0]: t[1][1]} if t[1] else {})})


SETTINGS = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None,
                    suppress_health_check=list(HealthCheck), database=None, derandomize="FUZZ_EXAMPLES" not in os.environ)
# Runs are kept short whatever the fuzzer picks: a cap on tokens applied after construction.
SHORT = 3


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(str(tiny_ckpt), num_kv_blocks=96, block_size=4, max_num_seqs=16)


@pytest.fixture(scope="module")
def reference(llm):
    return token_ids(llm.generate(prompt_token_ids=[[3, 4, 5]], params=SamplingParams(temperature=0.7, seed=9,
                                                                                     max_tokens=5, n=2)))


def _after(llm, reference) -> None:
    assert_clean(llm)
    again = llm.generate(prompt_token_ids=[[3, 4, 5]], params=SamplingParams(temperature=0.7, seed=9, max_tokens=5, n=2))
    assert token_ids(again) == reference


@SETTINGS
@given(fields=fields_of(VALID_SAMPLING),
       prompt=st.one_of(st.just("hi there"), st.just([3, 4, 5]), st.text(max_size=12), st.binary(max_size=12),
                        st.lists(st.integers(-5, 400), max_size=6)))
def test_sampling_params_and_prompts(llm, reference, fields, prompt):
    try:
        params = SamplingParams(**fields)
        # What got past validation has the documented types (a str is not a bool, True not a number).
        assert type(params.ignore_eos) is bool and all(type(getattr(params, f)) in (int, float) for f in
                                                        ("temperature", "top_p", "min_p"))
        assert all(type(getattr(params, f)) is int for f in ("top_k", "max_tokens", "n"))
        params.max_tokens = min(params.max_tokens, SHORT)
        params.n = min(params.n, 4)
        if isinstance(prompt, bytes):   # bytes as a caller would decode them
            prompt = prompt.decode("utf-8", "surrogateescape")
        if isinstance(prompt, str):
            outs = llm.generate([prompt], params)
        else:
            outs = llm.generate(prompt_token_ids=[prompt], params=params)
        assert len(outs) == 1 and all(c.finish_reason in ("stop", "length") for c in outs[0].outputs)
    except EagerError:
        pass
    _after(llm, reference)


@SETTINGS
@given(fields=fields_of(VALID_EAGER),
       method=st.sampled_from(["parallel", "eager-init", "eager-adapt", "eager", "beam", 3]),
       answers=st.one_of(st.none(), st.just(["7"]), st.just(["7"]), st.text(max_size=3), st.integers()),
       checker=st.sampled_from([None, lambda text, answer: answer in text, 5, "f"]))
def test_eager_params_and_call_arguments(llm, reference, fields, method, answers, checker):
    try:
        params = EagerParams(**fields)
        assert type(params.dynamic_threshold) is bool and type(params.think_only) is bool
        assert all(type(getattr(params, f)) is int for f in ("max_sequences", "max_tokens", "top_k_entropy", "seed"))
        params.max_tokens = min(params.max_tokens, SHORT)
        params.max_sequences = min(params.max_sequences, 4)
        outs = llm.eager([[7, 8, 9]], params, method=method, answers=answers, checker=checker)
        assert len(outs) == 1 and 1 <= outs[0].num_sequences
    except EagerError:
        pass
    _after(llm, reference)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(fields=st.dictionaries(st.sampled_from(LLM_FIELDS), ANY, max_size=3))
def test_llm_keywords(tiny_ckpt, fields):
    try:
        fields.setdefault("num_kv_blocks", 16)
        if isinstance(fields.get("num_kv_blocks"), int) and fields["num_kv_blocks"] > 4096:
            fields["num_kv_blocks"] = 4096   # a valid size this machine can hold (refusals are tested elsewhere)
        llm = LLM(str(tiny_ckpt), **fields)
        out = llm.generate(prompt_token_ids=[[1, 2, 3]], params=SamplingParams(temperature=0, max_tokens=2))
        assert out[0].outputs[0].finish_reason in ("stop", "length")
    except EagerError:   # a refused argument, or a pool too small for the request: both say so
        return
