"""The public boundary under hostile input, one test per class of docs/reliability.md (round 2):
extreme numbers, wrong types, invalid Unicode, datasets at the edges, answer equivalence. Every
refusal is an EagerError subclass naming the field; every accepted extreme behaves as its limit."""

from __future__ import annotations

import json
import math

import pytest
from reliability_helpers import assert_clean, token_ids

from eager_core import LLM, EagerParams, SamplingParams
from eager_core.errors import ConfigError, EagerError, RequestError
from eager_core.eval.answers import canonical_answer, is_correct, to_number
from eager_core.eval.datasets import load_dataset_with_errors

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
PROMPT = [[5, 6, 7, 8]]


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4)


# --- 1. extreme numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [1e-30, 1e-300, 5e-324])
def test_a_tiny_positive_temperature_is_greedy(llm, t):
    greedy = token_ids(llm.generate(prompt_token_ids=PROMPT, params=GREEDY))
    tiny = llm.generate(prompt_token_ids=PROMPT, params=SamplingParams(temperature=t, max_tokens=6, seed=1,
                                                                       ignore_eos=True))
    assert token_ids(tiny) == greedy and tiny[0].outputs[0].finish_reason == "length"


def test_huge_values_behave_as_their_limits(tiny_ckpt):
    # temperature 1e308 ~ uniform, top_k past the vocabulary and past int64 = off, seeds of any size,
    # max_tokens past the context = stop at the context.
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4, max_model_len=40)
    out = llm.generate(prompt_token_ids=PROMPT, params=SamplingParams(
        temperature=1e308, top_k=2**80, seed=-(2**100), max_tokens=10**30, ignore_eos=True))[0].outputs[0]
    assert out.finish_reason == "length" and len(out.token_ids) == llm.max_model_len - 4
    tree = llm.eager([[5, 6, 7]], EagerParams(top_k_entropy=2**70, max_tokens=3, max_sequences=10**20,
                                              max_retries=10**18, seed=2**200, theta=1e300), method="eager-adapt")
    assert tree[0].num_sequences == 1   # theta 1e300: never branches
    assert_clean(llm)


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(top_p=float("nan")), "top_p"), (dict(min_p=float("inf")), "min_p"), (dict(top_p=1e-400), "top_p"),
    (dict(max_tokens=0), "max_tokens"), (dict(n=-(2**70)), "n"), (dict(logprobs=2**64), "logprobs"),
])
def test_non_finite_or_out_of_range_sampling_values_are_refused(kwargs, field):
    with pytest.raises(RequestError, match=rf"^SamplingParams\.{field}=.*expected"):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(theta=float("nan")), "theta"), (dict(theta=-float("inf")), "theta"), (dict(temperature=-1e-9), "temperature"),
    (dict(max_sequences=0), "max_sequences"), (dict(budget_tokens=0), "budget_tokens"),
    (dict(max_retries=-1), "max_retries"), (dict(top_k_entropy=0), "top_k_entropy"),
])
def test_non_finite_or_out_of_range_eager_values_are_refused(kwargs, field):
    with pytest.raises(RequestError, match=rf"^EagerParams\.{field}=.*expected"):
        EagerParams(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(num_kv_blocks=10**13), dict(num_kv_blocks=2**70),
                                    dict(num_kv_blocks=10**5, block_size=2**20)])
def test_a_pool_that_cannot_be_allocated_is_refused_before_allocation(tiny_ckpt, kwargs):
    with pytest.raises(ConfigError, match=r"num_kv_blocks=\d+ with block_size=\d+ needs .* GiB .* at most \d+ blocks fit"):
        LLM(str(tiny_ckpt), **kwargs)


def test_the_parallel_method_names_max_sequences_not_an_internal_limit(tiny_ckpt):
    small = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4, max_num_seqs=4)
    with pytest.raises(RequestError, match=r"^EagerParams\.max_sequences=5: .*max_num_seqs=4"):
        small.eager([[1, 2]], EagerParams(max_sequences=5, max_tokens=2), method="parallel")


# --- 2. wrong types ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=True), "temperature"), (dict(temperature="0.5"), "temperature"), (dict(top_k=2.0), "top_k"),
    (dict(max_tokens=True), "max_tokens"), (dict(n="2"), "n"), (dict(seed=1.0), "seed"),
    (dict(stop=5), "stop"), (dict(stop=[""]), "stop"), (dict(stop={"a": 1}), "stop"),
    (dict(stop_token_ids="12"), "stop_token_ids"), (dict(stop_token_ids=[True]), "stop_token_ids"),
    (dict(ignore_eos="no"), "ignore_eos"), (dict(ignore_eos=1), "ignore_eos"), (dict(logprobs=1.0), "logprobs"),
])
def test_sampling_params_of_the_wrong_type(kwargs, field):
    with pytest.raises(RequestError, match=rf"^SamplingParams\.{field}="):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(theta=True), "theta"), (dict(temperature=False), "temperature"), (dict(max_sequences="8"), "max_sequences"),
    (dict(dynamic_threshold="yes"), "dynamic_threshold"), (dict(think_only=0), "think_only"),
    (dict(entropy=["topk"]), "entropy"), (dict(seed=None), "seed"), (dict(budget_tokens=1.5), "budget_tokens"),
])
def test_eager_params_of_the_wrong_type(kwargs, field):
    with pytest.raises(RequestError, match=rf"^EagerParams\.{field}="):
        EagerParams(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(dtype=True), "dtype"), (dict(block_size=4.0), "block_size"), (dict(num_kv_blocks="8"), "num_kv_blocks"),
    (dict(seed="0"), "seed"), (dict(max_num_seqs=True), "max_num_seqs"), (dict(enforce_eager="no"), "enforce_eager"),
    (dict(enable_prefix_caching=1), "enable_prefix_caching"), (dict(device=0), "device"),
    (dict(device="tpu"), "device"), (dict(max_model_len=1.5), "max_model_len"),
])
def test_llm_arguments_of_the_wrong_type_fail_before_loading(tiny_ckpt, kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        LLM(str(tiny_ckpt), **kwargs)
    with pytest.raises(ConfigError, match="ckpt is a int"):
        LLM(5)


@pytest.mark.parametrize("call, needle", [
    (lambda llm: llm.generate(prompt_token_ids=PROMPT, params=GREEDY, on_token=5), "on_token"),
    (lambda llm: llm.chat("hello"), "messages"),
    (lambda llm: llm.chat([{"role": "user", "content": 5}]), "messages"),
    (lambda llm: llm.eager([[1, 2]], EagerParams(max_tokens=2), method="eager", answers="12", checker=str), "answers"),
    (lambda llm: llm.eager([[1, 2]], EagerParams(max_tokens=2), method="eager", answers=["1"], checker=5), "checker"),
    (lambda llm: llm.eager([[1, 2]], EagerParams(max_tokens=2), on_step="x"), "on_step"),
    (lambda llm: llm.eager([[1, 2]], EagerParams(max_tokens=2), method=None), "method"),
    (lambda llm: llm.eager({"a": 1}, EagerParams(max_tokens=2)), "prompts"),
    (lambda llm: llm.logits("123"), "token_ids"),
    (lambda llm: llm.generate(prompt_token_ids=[[1, True]], params=GREEDY), "token ids"),
])
def test_calls_with_wrong_types_fail_before_any_work(llm, call, needle):
    with pytest.raises(RequestError, match=needle):
        call(llm)
    assert_clean(llm)


# --- 3. text that is not valid Unicode ----------------------------------------------------------------------

def test_lone_surrogates_are_replaced_not_a_crash(llm):
    out = llm.generate(["a\ud800b\udcff"], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))[0]
    assert out.prompt == "a\ufffdb\ufffd"
    assert out.prompt_token_ids == llm.tokenizer.encode("a\ufffdb\ufffd", add_special_tokens=True)
    assert llm.chat([{"role": "user", "content": "x\ud83d"}], SamplingParams(max_tokens=1))[0].outputs
    assert llm.eager(["q\udc80"], EagerParams(max_tokens=2))[0].num_sequences >= 1


# --- 5. datasets at the edges -------------------------------------------------------------------------------

def test_a_dataset_keeps_its_good_lines_and_names_each_bad_one(tmp_path):
    huge = "9" * 5000
    lines = ['{"question": "big?", "answer": ' + huge + "}",
             '{"question": "nan?", "answer": NaN}',
             '{"question": "far?", "answer": 1e400}',
             '{"question": "cut?", "answ',
             '{"question": "ok?", "answer": "#### 1,234"}']
    raw = b"\xef\xbb\xbf" + "\n".join(lines).encode() + b'\n{"question": "\xff", "answer": "1"}\n'
    path = tmp_path / "edge.jsonl"
    path.write_bytes(raw)
    loaded = load_dataset_with_errors(str(path))
    answers = {p.question: p.answer for p in loaded.problems}
    assert answers == {"big?": huge, "far?": "1e400", "ok?": "1234"}   # the written form is kept
    reasons = {s.line: s.reason for s in loaded.skipped}
    assert set(reasons) == {2, 4, 6}
    assert "NaN" in reasons[2] and "column" in reasons[4] and "UTF-8" in reasons[6]


# --- 6. answer equivalence ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, gold", [
    ("The answer is 1.5e3", "1500"), ("answer: 1500", "1.5 \\times 10^{3}"), ("answer: 1,500", "1.5E+3"),
    ("The answer is 3/4", "0.75"), ("answer: \\frac{3}{4}", "0.750"), ("answer: 12,345,678", "12345678"),
    ("answer: " + "9" * 5000, "9" * 5000), ("answer: 1e-3", "0.001"), ("answer: 2.5 × 10^2", "250"),
])
def test_equal_numbers_in_other_notations_are_correct(pred, gold):
    assert is_correct(pred, gold)


@pytest.mark.parametrize("pred, gold", [("answer: 1.5e3", "1501"), ("answer: " + "9" * 5000, "9" * 4999 + "8"),
                                        ("answer: 1e400000000", "1"), ("answer: 3/4", "0.7501")])
def test_different_numbers_stay_different(pred, gold):
    assert not is_correct(pred, gold)


def test_number_parsing_is_exact_and_bounded():
    assert to_number("1e400000000") is None          # would not fit in memory: compared as text
    assert to_number("1.5e3") == 1500 and to_number("1e-3") == to_number("0.001")
    assert canonical_answer("1,500") == canonical_answer("1.5e3") == "1500"
    assert canonical_answer("9" * 5000) == "9" * 5000   # past Python's int-to-str limit
    assert math.isclose(float(to_number("2.5 \\times 10^{-2}")), 0.025)


def test_every_refusal_is_an_eager_error():
    assert issubclass(RequestError, EagerError) and issubclass(ConfigError, EagerError)


def test_unknown_fields_are_named_request_errors_not_type_errors():
    with pytest.raises(RequestError, match="SamplingParams has no field repetition_penalty"):
        SamplingParams(repetition_penalty=1.1)
    with pytest.raises(RequestError, match="EagerParams has no field thetaa"):
        EagerParams(thetaa=1.0)
    with pytest.raises(RequestError, match="at most"):
        SamplingParams(*range(20))
