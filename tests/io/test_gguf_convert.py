"""convert_gguf on small synthetic GGUFs: exact weights, transformers agreement, bad files, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_gguf import TINY, write_tiny_gguf
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from eager_core.errors import CheckpointError
from eager_core.io import gguf as gguf_module
from eager_core.io.checkpoint import load_weights, read_config, read_generation_config
from eager_core.io.gguf import convert_gguf, write_checkpoint
from eager_core.io.gguf_config import llama3_rope_factors
from eager_core.io.gguf_file import GGUFFile
from eager_core.io.tokenizer import Tokenizer


def test_weights_round_trip_to_hf_layout(make_tiny_gguf, tmp_path: Path) -> None:
    path, original = make_tiny_gguf()
    out = convert_gguf(path, tmp_path / "ckpt")
    weights = load_weights(out)
    assert set(weights) == set(original)
    for name, tensor in original.items():
        if name == "model.layers.0.self_attn.q_proj.weight":  # stored as Q8_0: equal up to 8-bit rounding
            assert torch.allclose(weights[name], tensor, atol=tensor.abs().max().item() / 100)
        else:  # F32 in the file: the un-permuted tensor must be bit-identical to the original
            assert torch.equal(weights[name], tensor), name


def test_config_reflects_the_metadata(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf()
    config = read_config(convert_gguf(path, tmp_path / "ckpt", dtype="bfloat16"))
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"],
            config["num_hidden_layers"], config["intermediate_size"]) == \
           (TINY["hidden"], TINY["heads"], TINY["kv_heads"], TINY["layers"], TINY["intermediate"])
    assert config["rope_theta"] == TINY["theta"] and config["rms_norm_eps"] == TINY["eps"]
    assert config["tie_word_embeddings"] is False and config["torch_dtype"] == "bfloat16"
    assert config["max_position_embeddings"] == TINY["ctx"] and config["rope_scaling"] is None
    assert load_weights(tmp_path / "ckpt")["model.norm.weight"].dtype == torch.bfloat16
    assert read_generation_config(tmp_path / "ckpt")["eos_token_id"] == [2, 0]


def test_matches_transformers_loading_the_same_gguf(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf()
    out = convert_gguf(path, tmp_path / "ckpt")
    converted = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=converted)
    ours = load_weights(out)
    assert set(parsed["tensors"]) == set(ours)
    for name, tensor in parsed["tensors"].items():
        assert torch.equal(ours[name], tensor), name
    reference = transformers.AutoModelForCausalLM.from_config(converted.config, dtype=torch.float32).eval()
    reference.load_state_dict(parsed["tensors"])
    ids = torch.tensor([[5, 100, 7, 200, 3, 17, 250]])
    with torch.no_grad():
        assert torch.allclose(converted(ids).logits, reference(ids).logits, atol=1e-5)


@pytest.mark.parametrize("tokenizer", ["gpt2", "llama"])
def test_tokenizer_matches_transformers(make_tiny_gguf, tmp_path: Path, tokenizer: str) -> None:
    path, _ = make_tiny_gguf(tokenizer=tokenizer)
    ours = Tokenizer.from_dir(convert_gguf(path, tmp_path / "ckpt"))
    reference = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for text in ["the and then", " an is the", "Hello  world 123 é😀", "<|im_start|>user<|im_end|>",
                 "<s>the</s>", "  the\n\nand  ", "zebra ☃"]:
        for add in (False, True):
            assert ours.encode(text, add_special_tokens=add) == reference.encode(text, add_special_tokens=add)
        ids = ours.encode(text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip)
    if tokenizer == "llama":  # sentencepiece files add BOS by default, as llama.cpp does
        assert ours.encode("the", add_special_tokens=True)[0] == ours.bos_token_id == 1


def test_llama3_rope_scaling_is_recovered(make_tiny_gguf, tmp_path: Path) -> None:
    head_dim = TINY["hidden"] // TINY["heads"]
    factors = llama3_rope_factors(TINY["theta"], head_dim, 8.0, 1.0, 4.0, 8192).astype(np.float32)
    assert factors.min() == 1.0 and factors.max() == 8.0  # the tiny head size covers every regime
    path, _ = make_tiny_gguf(extra_tensors={"rope_freqs.weight": factors})
    config = read_config(convert_gguf(path, tmp_path / "ckpt"))
    assert config["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def test_rope_freqs_that_are_not_llama3_are_refused(make_tiny_gguf, tmp_path: Path) -> None:
    head_dim = TINY["hidden"] // TINY["heads"]
    path, _ = make_tiny_gguf(extra_tensors={"rope_freqs.weight": np.linspace(1, 3, head_dim // 2,
                                                                             dtype=np.float32)})
    with pytest.raises(CheckpointError, match="rope_freqs tensor does not match Llama 3"):
        convert_gguf(path, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


# --- bad input --------------------------------------------------------------------------------------

def test_missing_gguf(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_gguf(tmp_path / "none.gguf", tmp_path / "ckpt")


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        convert_gguf(tmp_path / "x.gguf", tmp_path / "ckpt")


def test_empty_gguf(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        convert_gguf(tmp_path / "x.gguf", tmp_path / "ckpt")


def test_unsupported_gguf_version(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf()
    raw = bytearray(path.read_bytes())
    raw[4:8] = (7).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="GGUF version 7 is not supported"):
        convert_gguf(path, tmp_path / "ckpt")


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.999])
def test_truncated_gguf(make_tiny_gguf, tmp_path: Path, keep: float) -> None:
    path, _ = make_tiny_gguf()
    raw = path.read_bytes()
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(CheckpointError, match="truncated"):
        convert_gguf(path, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_unsupported_architecture(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf(arch="qwen2")
    with pytest.raises(CheckpointError, match="architecture 'qwen2' is not supported"):
        convert_gguf(path, tmp_path / "ckpt")


def test_unsupported_quantization(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf(quant_q0="Q8_1")
    with pytest.raises(CheckpointError, match="'blk.0.attn_q.weight' uses quantization type Q8_1"):
        convert_gguf(path, tmp_path / "ckpt")


def test_unsupported_tokenizer_model(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf(tokenizer="bert")
    with pytest.raises(CheckpointError, match="tokenizer model 'bert' is not supported"):
        convert_gguf(path, tmp_path / "ckpt")


def test_unknown_tensor(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf(extra_tensors={"blk.0.ffn_gate_exps.weight": np.zeros((2, 32), np.float32)})
    with pytest.raises(CheckpointError, match="'blk.0.ffn_gate_exps.weight' has no Llama equivalent"):
        convert_gguf(path, tmp_path / "ckpt")


def test_existing_output_needs_overwrite(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="already exists"):
        convert_gguf(path, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "keep.txt").read_text() == "mine"
    convert_gguf(path, tmp_path / "ckpt", overwrite=True)
    assert not (tmp_path / "ckpt" / "keep.txt").exists() and (tmp_path / "ckpt" / "config.json").is_file()


def test_interrupted_conversion_leaves_nothing(make_tiny_gguf, tmp_path: Path, monkeypatch) -> None:
    path, _ = make_tiny_gguf()
    real = gguf_module.write_safetensors

    def interrupted(file, specs, tensors, metadata=None):
        next(iter(tensors))  # some work done, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_module, "write_safetensors", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_gguf(path, tmp_path / "out" / "ckpt")
    assert list((tmp_path / "out").iterdir()) == []  # no checkpoint, no leftover temporary folder
    monkeypatch.setattr(gguf_module, "write_safetensors", real)
    assert json.loads((convert_gguf(path, tmp_path / "out" / "ckpt") / "config.json").read_text())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 4000), data=st.binary(min_size=1, max_size=16))
def test_fuzzed_gguf_headers_fail_only_with_checkpoint_errors(tmp_path: Path, position: int, data: bytes) -> None:
    """Overwrite bytes in the metadata/tensor-info region: the reader succeeds or raises CheckpointError."""
    path = tmp_path / "fuzz.gguf"
    if not path.exists():
        write_tiny_gguf(path)
    raw = bytearray(path.read_bytes())
    raw[position:position + len(data)] = data
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(bytes(raw))
    try:
        GGUFFile(corrupt)
    except CheckpointError:
        pass


@pytest.mark.parametrize("tokenizer", ["gpt2", "llama"])
def test_gguf_reader_agrees_with_the_gguf_package(make_tiny_gguf, tokenizer: str) -> None:
    path, _ = make_tiny_gguf(tokenizer=tokenizer, extra_tensors={"rope_freqs.weight": np.ones(8, np.float32)})
    ours, theirs = GGUFFile(path), gguf.GGUFReader(str(path))
    keys = [key for key in theirs.fields if not key.startswith("GGUF.")]
    assert list(ours.metadata) == keys
    for key in keys:
        assert ours.get(key) == theirs.fields[key].contents(), key
    assert list(ours.tensors) == [t.name for t in theirs.tensors]
    for t in theirs.tensors:
        mine = ours.tensors[t.name]
        assert mine.tensor_type == t.tensor_type and mine.shape == tuple(int(d) for d in t.shape)
        assert np.array_equal(mine.data.reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1))


def test_tensor_shape_disagreeing_with_metadata(make_tiny_gguf, tmp_path: Path) -> None:
    path, _ = make_tiny_gguf()
    gg = GGUFFile(path)
    gg.metadata["llama.feed_forward_length"] = TINY["intermediate"]  # consistent with blk.0 ...
    bad = gg.tensors["blk.1.ffn_up.weight"]
    gg.tensors["blk.1.ffn_up.weight"] = type(bad)(bad.name, bad.tensor_type, (bad.shape[0], bad.shape[1] - 1),
                                                  bad.data_offset, bad.n_bytes, bad.data[:-1])
    with pytest.raises(CheckpointError, match=r"'blk.1.ffn_up.weight' has shape \(95, 64\), expected \(96, 64\)"):
        write_checkpoint(gg, tmp_path / "ckpt")


@pytest.mark.parametrize("layers", [TINY["layers"] + 1, 2**31, 2**40])
def test_block_count_beyond_the_files_layers(make_tiny_gguf, tmp_path: Path, layers: int) -> None:
    """A corrupt layer count fails at once, naming the key; 2**31 used to build a list of billions
    of missing tensor names first (found by the metadata fuzzer below, at 20 GB of RSS)."""
    path, _ = make_tiny_gguf()
    gg = GGUFFile(path)
    gg.metadata["llama.block_count"] = layers
    expected = rf"'llama.block_count' = {layers}, but the file has tensors for {TINY['layers']} layers"
    with pytest.raises(CheckpointError, match=expected):
        write_checkpoint(gg, tmp_path / "ckpt")


_METADATA_KEYS = ["general.architecture", "llama.block_count", "llama.embedding_length", "llama.attention.head_count",
                  "llama.attention.head_count_kv", "llama.feed_forward_length", "llama.context_length",
                  "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.rope.scaling.type",
                  "llama.attention.key_length", "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                  "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                  "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
                  "tokenizer.ggml.scores"]
_ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.floats(allow_nan=True),
                       st.text(max_size=8), st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=4)), max_size=4))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(_METADATA_KEYS), value=_ANY_VALUE)
def test_metadata_of_the_wrong_type_fails_cleanly(tmp_path: Path, key: str, value: object) -> None:
    """Any value of any type in any metadata field: a checkpoint or a CheckpointError, nothing else."""
    path = tmp_path / "tiny.gguf"
    if not path.exists():
        write_tiny_gguf(path)
    gg = GGUFFile(path)
    if value is None:
        gg.metadata.pop(key, None)
    else:
        gg.metadata[key] = value
    try:
        write_checkpoint(gg, tmp_path / "ckpt", overwrite=True)
    except CheckpointError:
        pass
