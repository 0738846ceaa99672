"""read_config / read_generation_config / load_weights: good folders load, bad ones fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from eager_core.errors import CheckpointError, ConfigError
from eager_core.io.checkpoint import load_weights, read_config, read_generation_config, resolve_dtype


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(5, generator=g),
            "c.ids": torch.arange(6, dtype=torch.int64), "d.half": torch.randn(2, 2, generator=g).to(torch.bfloat16)}


@pytest.fixture
def single(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    save_file(_tensors(), str(tmp_path / "model.safetensors"))
    return tmp_path


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    t = _tensors()
    save_file({k: t[k] for k in ("a.weight", "b.bias")}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: t[k] for k in ("c.ids", "d.half")}, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {"a.weight": "model-00001-of-00002.safetensors", "b.bias": "model-00001-of-00002.safetensors",
                  "c.ids": "model-00002-of-00002.safetensors", "d.half": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def _index(folder: Path) -> dict:
    return json.loads((folder / "model.safetensors.index.json").read_text())


def _write_index(folder: Path, index: dict) -> None:
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


# --- good input -------------------------------------------------------------------------------------

def test_single_file_loads_every_tensor_exactly(single: Path) -> None:
    weights = load_weights(single)
    expected = _tensors()
    assert set(weights) == set(expected)
    for name, tensor in expected.items():
        assert weights[name].dtype == tensor.dtype and torch.equal(weights[name], tensor)


def test_sharded_checkpoint_loads_like_single(sharded: Path) -> None:
    weights = load_weights(sharded)
    for name, tensor in _tensors().items():
        assert torch.equal(weights[name], tensor)


def test_dtype_converts_floating_tensors_only(single: Path) -> None:
    weights = load_weights(single, dtype=torch.bfloat16)
    assert weights["a.weight"].dtype == torch.bfloat16 and weights["d.half"].dtype == torch.bfloat16
    assert weights["c.ids"].dtype == torch.int64
    assert torch.equal(weights["a.weight"], _tensors()["a.weight"].to(torch.bfloat16))
    assert load_weights(single, dtype="float16")["b.bias"].dtype == torch.float16


def test_resolve_dtype_rejects_unknown_names() -> None:
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype("torch.float32") is torch.float32
    with pytest.raises(ConfigError, match="float64x"):
        resolve_dtype("float64x")
    with pytest.raises(ConfigError, match="floating"):
        resolve_dtype(torch.int32)


def test_read_config_and_missing_generation_config(single: Path) -> None:
    assert read_config(single) == {"model_type": "llama", "hidden_size": 8}
    assert read_generation_config(single) == {}
    (single / "generation_config.json").write_text('{"eos_token_id": [2, 0]}')
    assert read_generation_config(single) == {"eos_token_id": [2, 0]}


# --- bad folders ------------------------------------------------------------------------------------

def test_missing_folder(tmp_path: Path) -> None:
    for call in (read_config, load_weights, read_generation_config):
        with pytest.raises(CheckpointError, match="does not exist"):
            call(tmp_path / "nope")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is empty"):
        read_config(tmp_path)
    with pytest.raises(CheckpointError, match="is empty"):
        load_weights(tmp_path)


def test_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("hi")
    with pytest.raises(CheckpointError, match="not a folder"):
        read_config(tmp_path / "x")


def test_missing_config_json(single: Path) -> None:
    (single / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        read_config(single)


def test_malformed_config_json(single: Path) -> None:
    (single / "config.json").write_text('{"model_type": "llama",, }')
    with pytest.raises(ConfigError, match=r"config\.json: malformed JSON at line 1"):
        read_config(single)


def test_truncated_config_json(single: Path) -> None:
    (single / "config.json").write_text('{"model_type": "llama", "hidden_si')
    with pytest.raises(ConfigError, match="truncated"):
        read_config(single)


def test_config_json_not_an_object(single: Path) -> None:
    (single / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        read_config(single)


def test_config_json_not_utf8(single: Path) -> None:
    (single / "config.json").write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_config(single)


def test_malformed_generation_config(single: Path) -> None:
    (single / "generation_config.json").write_text("{eos}")
    with pytest.raises(ConfigError, match="generation_config.json"):
        read_generation_config(single)


def test_no_weights_only_pickle(single: Path) -> None:
    (single / "model.safetensors").unlink()
    (single / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="pickle files are never loaded"):
        load_weights(single)


# --- bad shards -------------------------------------------------------------------------------------

def test_index_names_a_missing_shard(sharded: Path) -> None:
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shard model-00002-of-00002\.safetensors .* is missing"):
        load_weights(sharded)


def test_index_is_malformed(sharded: Path) -> None:
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(ConfigError, match=r"index\.json: malformed JSON"):
        load_weights(sharded)


def test_index_without_weight_map(sharded: Path) -> None:
    _write_index(sharded, {"metadata": {}})
    with pytest.raises(CheckpointError, match="weight_map"):
        load_weights(sharded)


def test_index_lists_tensor_absent_from_its_shard(sharded: Path) -> None:
    index = _index(sharded)
    index["weight_map"]["e.ghost"] = "model-00001-of-00002.safetensors"
    _write_index(sharded, index)
    with pytest.raises(CheckpointError, match="'e.ghost' should be in model-00001-of-00002"):
        load_weights(sharded)


def test_index_points_outside_the_folder(sharded: Path) -> None:
    index = _index(sharded)
    index["weight_map"]["a.weight"] = "../model-00001-of-00002.safetensors"
    _write_index(sharded, index)
    with pytest.raises(CheckpointError, match="inside the checkpoint folder"):
        load_weights(sharded)


def test_tensor_in_two_shards(sharded: Path) -> None:
    save_file({"a.weight": torch.zeros(4, 3), "c.ids": torch.arange(6)},
              str(sharded / "model-00002-of-00002.safetensors"))
    with pytest.raises(CheckpointError, match="'a.weight' appears in both"):
        load_weights(sharded)
