"""Bad input through the public entry points (``LLM(...)``, ``generate``, ``eager``): a clear error, or
for ``max_tokens`` beyond the context a clean stop. docs/reliability.md lists every row of the table
with its test; rows the loader tests already cover (tests/io) are only checked here end to end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from reliability_helpers import assert_clean, token_ids
from safetensors.torch import load_file, save_file

from eager_core import LLM, EagerParams, SamplingParams
from eager_core.errors import CheckpointError, ConfigError, RequestError
from eager_core.eval.datasets import load_dataset_with_errors

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


@pytest.fixture
def ckpt_copy(tiny_ckpt, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_ckpt, tmp_path / "ckpt"))


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _edit_weights(folder: Path, edit) -> None:
    weights = load_file(str(folder / "model.safetensors"))
    edit(weights)
    save_file(weights, str(folder / "model.safetensors"))


# --- checkpoint rows ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type, archs", [("gpt_neox", ["GPTNeoXForCausalLM"]), ("mamba", None),
                                               (None, "LlamaForCausalLM")])
def test_unknown_architecture_names_config_and_supported_types(ckpt_copy, model_type, archs):
    _edit_config(ckpt_copy, model_type=model_type, architectures=archs)
    with pytest.raises(ConfigError, match=r"config\.json: unsupported architecture .*supported model types: llama"):
        LLM(str(ckpt_copy))


def test_missing_tensor_is_named_with_its_expected_shape(ckpt_copy):
    _edit_weights(ckpt_copy, lambda w: w.pop("model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.down_proj\.weight' "
                                              r"\(expected shape \[64, 128\]\)"):
        LLM(str(ckpt_copy))


def test_tensor_of_the_wrong_shape(ckpt_copy):
    _edit_weights(ckpt_copy, lambda w: w.update({"model.norm.weight": torch.ones(63)}))
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' has shape \[63\], expected \[64\]"):
        LLM(str(ckpt_copy))


def test_config_disagreeing_with_the_weights_is_a_shape_error(ckpt_copy):
    _edit_config(ckpt_copy, intermediate_size=96)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[128, 64\], "
                                              r"expected \[96, 64\]"):
        LLM(str(ckpt_copy))


def test_tensor_of_a_non_floating_dtype(ckpt_copy):
    _edit_weights(ckpt_copy, lambda w: w.update({"model.norm.weight": torch.ones(64, dtype=torch.int32)}))
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' has dtype torch\.int32, expected a floating"):
        LLM(str(ckpt_copy))


def _truncate_weights(folder: Path) -> None:
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[:-100])


def _index_with_missing_shard(folder: Path) -> None:
    names = load_file(str(folder / "model.safetensors")).keys()
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: "model-00001-of-00002.safetensors" for n in names}}))


# The loader tests (tests/io) cover each of these in detail; here: LLM(...) surfaces them unchanged.
@pytest.mark.parametrize("damage, error, message", [
    (lambda f: shutil.rmtree(f), CheckpointError, r"ckpt does not exist"),
    (lambda f: [p.unlink() for p in f.iterdir()], CheckpointError, r"ckpt is empty"),
    (lambda f: (f / "config.json").write_text('{"model_type": "llama", "hidden'), ConfigError, r"truncated"),
    (_truncate_weights, CheckpointError, r"model\.safetensors: corrupt safetensors file"),
    (_index_with_missing_shard, CheckpointError, r"shard model-00001-of-00002\.safetensors .* is missing"),
    (lambda f: (f / "tokenizer.json").unlink(), CheckpointError, r"tokenizer\.json is missing"),
], ids=["missing-folder", "empty-folder", "truncated-config", "truncated-weights", "missing-shard",
        "missing-tokenizer"])
def test_loader_errors_reach_the_llm_caller(ckpt_copy, damage, error, message):
    damage(ckpt_copy)
    with pytest.raises(error, match=message):
        LLM(str(ckpt_copy))


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_num_seqs=0), "max_num_seqs"), (dict(max_num_batched_tokens=-1), "max_num_batched_tokens"),
    (dict(max_model_len=1), "max_model_len"), (dict(device="tpu:7"), "device"), (dict(dtype="int8"), "dtype"),
    (dict(block_size=0), "block_size"), (dict(num_kv_blocks=0), "num_kv_blocks")])
def test_invalid_engine_arguments_are_config_errors(tiny_ckpt, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        LLM(str(tiny_ckpt), **kwargs)


# --- request rows ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4, max_model_len=20)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate("", GREEDY), r"prompts\[0\] is empty"),
    (lambda m: m.generate(["fine", ""], GREEDY), r"prompts\[1\] is empty"),
    (lambda m: m.generate(prompt_token_ids=[[]], params=GREEDY), r"empty prompt"),
    (lambda m: m.eager([""], EagerParams(max_tokens=4)), r"prompts\[0\] is empty"),
    (lambda m: m.eager([[]], EagerParams(max_tokens=4)), r"prompts\[0\] must be"),
    (lambda m: m.generate(prompt_token_ids=[[1] * 20], params=GREEDY),
     r"prompt has 20 tokens, the model's context is 20"),
    (lambda m: m.eager([[1] * 25], EagerParams(max_tokens=4)), r"prompt has 25 tokens, the model's context is 20"),
    (lambda m: m.generate(prompt_token_ids=[[1, 259]], params=GREEDY), r"token ids must be integers in \[0, 259\)"),
    (lambda m: m.generate(prompt_token_ids=[5, 6], params=GREEDY), r"list of token-id lists"),
    (lambda m: m.generate(42, GREEDY), r"prompts is a int"),
    (lambda m: m.generate("hi", dict(temperature=0)), r"params is a dict, expected SamplingParams"),
    (lambda m: m.eager(["hi"], SamplingParams()), r"params is a SamplingParams, expected EagerParams"),
    (lambda m: m.eager([[1]], EagerParams(max_tokens=4), method="eager"), r"needs answers=\[\.\.\.\] and checker"),
    (lambda m: m.eager([[1]], EagerParams(max_tokens=4), method="eager", answers=["1"]), r"checker"),
    (lambda m: m.eager([[1], [2]], EagerParams(), method="eager", answers=["1"], checker=lambda t, a: True),
     r"answers has 1 entries for 2 prompts"),
    (lambda m: m.eager([[1]], EagerParams(), method="beam"), r"method='beam': expected one of parallel"),
], ids=["empty-text", "empty-second", "empty-ids", "eager-empty-text", "eager-empty-ids", "prompt-fills-context",
        "eager-prompt-too-long", "id-out-of-vocab", "flat-id-list", "prompt-not-a-string", "params-wrong-type",
        "eager-params-wrong-type", "eager-without-answers", "eager-without-checker", "answers-mismatch",
        "unknown-method"])
def test_bad_requests_are_request_errors_and_leave_the_engine_clean(llm, call, message):
    with pytest.raises(RequestError, match=message):
        call(llm)
    assert_clean(llm)
    assert llm.generate(prompt_token_ids=[[1, 2]], params=GREEDY)[0].outputs[0].finish_reason == "length"


def test_context_is_the_checkpoints_unless_max_model_len_is_smaller(tiny_ckpt_factory):
    short = tiny_ckpt_factory("llama", max_position_embeddings=24)
    assert LLM(str(short), num_kv_blocks=16).max_model_len == 24
    assert LLM(str(short), num_kv_blocks=16, max_model_len=10**6).max_model_len == 24   # never beyond the model
    with pytest.raises(RequestError, match="prompt has 24 tokens, the model's context is 24"):
        LLM(str(short), num_kv_blocks=16).generate(prompt_token_ids=[[7] * 24], params=GREEDY)


def test_max_tokens_beyond_the_context_stops_with_length(llm):
    params = SamplingParams(temperature=0.8, n=3, seed=1, max_tokens=1000, ignore_eos=True)
    outs = llm.generate(prompt_token_ids=[[3, 4, 5, 6, 7, 8], [9] * 19], params=params)
    assert [[len(t) for t in r] for r in token_ids(outs)] == [[14] * 3, [1] * 3]   # 20 - prompt length
    assert all(c.finish_reason == "length" for r in outs for c in r.outputs)
    assert_clean(llm)


@pytest.mark.parametrize("method", ["parallel", "eager-init"])
def test_eager_max_tokens_beyond_the_context_stops_at_the_context(llm, method):
    outs = llm.eager([[3, 4, 5, 6, 7, 8], [11, 12]], EagerParams(max_tokens=1000, max_sequences=3, theta=0.5), method)
    seqs = [(len(o.prompt_token_ids), s) for o in outs for s in o.sequences]
    assert all(p + len(s.token_ids) <= 20 for p, s in seqs)
    full = [s for p, s in seqs if p + len(s.token_ids) == 20]
    assert full and all(s.finish_reason == "length" for s in full)
    assert all(s.finish_reason == "stop" for p, s in seqs if p + len(s.token_ids) < 20)   # EOS: the only other end
    assert_clean(llm)


# --- parameter rows: the messages name the field, the value and what was expected ------------------------

@pytest.mark.parametrize("make, text", [
    (lambda: SamplingParams(temperature=-0.5), "SamplingParams.temperature=-0.5: expected a finite number >= 0"),
    (lambda: SamplingParams(top_p=0.0), "SamplingParams.top_p=0.0: expected a number in (0, 1]"),
    (lambda: SamplingParams(top_p=1.01), "SamplingParams.top_p=1.01: expected a number in (0, 1]"),
    (lambda: SamplingParams(min_p=-0.1), "SamplingParams.min_p=-0.1: expected a number in [0, 1]"),
    (lambda: SamplingParams(min_p=2), "SamplingParams.min_p=2: expected a number in [0, 1]"),
    (lambda: SamplingParams(n=0), "SamplingParams.n=0: expected an integer >= 1"),
    (lambda: SamplingParams(max_tokens=0), "SamplingParams.max_tokens=0: expected an integer >= 1"),
    (lambda: EagerParams(theta=float("inf")), "EagerParams.theta=inf: expected a finite number"),
    (lambda: EagerParams(theta=float("nan")), "EagerParams.theta=nan: expected a finite number"),
    (lambda: EagerParams(max_sequences=0), "EagerParams.max_sequences=0: expected an integer >= 1"),
    (lambda: EagerParams(temperature=-1), "EagerParams.temperature=-1: expected a finite number >= 0"),
])
def test_invalid_parameters_name_field_value_and_expectation(make, text):
    # tests/engine/test_sampling.py and tests/eager/test_eager_policy.py check the field is named;
    # this checks the whole message a user reads.
    with pytest.raises(RequestError) as info:
        make()
    assert str(info.value) == text


# --- dataset row ----------------------------------------------------------------------------------------------

def test_dataset_line_nested_too_deeply_is_one_skipped_line(tmp_path):
    # Malformed lines in general: tests/eval/test_eval_datasets.py::
    # test_malformed_lines_are_reported_with_line_numbers_and_the_rest_loads. This one used to escape
    # as a RecursionError and abort the whole load.
    path = tmp_path / "deep.jsonl"
    path.write_text('{"question": "1+1?", "answer": "2"}\n' + "[" * 100_000 + "\n"
                    + '{"question": "2+2?", "answer": "4"}\n')
    loaded = load_dataset_with_errors(str(path))
    assert [p.answer for p in loaded.problems] == ["2", "4"]
    assert [(s.line, s.reason) for s in loaded.skipped] == [(2, "invalid JSON (nested too deeply)")]
