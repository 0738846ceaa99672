"""Corrupt safetensors files become CheckpointErrors naming the file and tensor; the writer round-trips."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from eager_core.errors import CheckpointError
from eager_core.io.checkpoint import load_weights
from eager_core.io.safetensors_format import read_safetensors_header, write_safetensors


def _write_raw(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _good_header() -> dict:
    return {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            "b": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]}}


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    (tmp_path / "config.json").write_text("{}")
    return tmp_path


def test_good_raw_file_is_accepted(ckpt: Path) -> None:
    _write_raw(ckpt / "model.safetensors", _good_header(), bytes(20))
    assert load_weights(ckpt)["w"].shape == (2, 2)


def test_file_too_short(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*too short"):
        load_weights(ckpt)


def test_header_length_beyond_file(ckpt: Path) -> None:
    _write_raw(ckpt / "model.safetensors", _good_header(), bytes(20), length=10_000)
    with pytest.raises(CheckpointError, match="goes beyond the end"):
        load_weights(ckpt)


def test_header_length_absurd(ckpt: Path) -> None:
    _write_raw(ckpt / "model.safetensors", _good_header(), bytes(20), length=2**63)
    with pytest.raises(CheckpointError, match="header length"):
        load_weights(ckpt)


def test_header_not_json(ckpt: Path) -> None:
    _write_raw(ckpt / "model.safetensors", b'{"w": {"dtype": "F32", ', bytes(20))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_weights(ckpt)


def test_header_not_an_object(ckpt: Path) -> None:
    _write_raw(ckpt / "model.safetensors", b"[1, 2, 3]", b"")
    with pytest.raises(CheckpointError, match="must be a JSON object"):
        load_weights(ckpt)


def test_offsets_out_of_range(ckpt: Path) -> None:
    header = _good_header()
    header["b"]["data_offsets"] = [16, 400]
    _write_raw(ckpt / "model.safetensors", header, bytes(20))
    with pytest.raises(CheckpointError, match=r"tensor 'b': data_offsets \[16, 400\] outside"):
        load_weights(ckpt)


def test_offsets_inconsistent_with_dtype_and_shape(ckpt: Path) -> None:
    header = _good_header()
    header["w"]["shape"] = [3, 2]
    _write_raw(ckpt / "model.safetensors", header, bytes(20))
    with pytest.raises(CheckpointError, match=r"tensor 'w': .* needs 24"):
        load_weights(ckpt)


def test_unknown_dtype(ckpt: Path) -> None:
    header = _good_header()
    header["w"]["dtype"] = "F33"
    _write_raw(ckpt / "model.safetensors", header, bytes(20))
    with pytest.raises(CheckpointError, match="tensor 'w': unknown dtype 'F33'"):
        load_weights(ckpt)


def test_bad_shape(ckpt: Path) -> None:
    header = _good_header()
    header["b"]["shape"] = [-2]
    _write_raw(ckpt / "model.safetensors", header, bytes(20))
    with pytest.raises(CheckpointError, match="tensor 'b': shape"):
        load_weights(ckpt)


def test_overlapping_tensors(ckpt: Path) -> None:
    header = _good_header()
    header["b"]["data_offsets"] = [12, 16]
    _write_raw(ckpt / "model.safetensors", header, bytes(16))
    with pytest.raises(CheckpointError, match="overlaps"):
        load_weights(ckpt)


def test_trailing_bytes(ckpt: Path) -> None:
    _write_raw(ckpt / "model.safetensors", _good_header(), bytes(24))
    with pytest.raises(CheckpointError, match="trailing bytes or truncated"):
        load_weights(ckpt)


def test_truncated_real_file(ckpt: Path) -> None:
    path = ckpt / "model.safetensors"
    save_file({"a": torch.ones(8), "z": torch.ones(100)}, str(path))
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt safetensors file: tensor 'z'"):
        load_weights(ckpt)


def test_writer_round_trips_through_the_library(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    tensors = {"x": torch.randn(3, 5, generator=g), "y": torch.randn(7, generator=g).to(torch.bfloat16),
               "z": torch.arange(4, dtype=torch.int32), "empty": torch.zeros(0, 3)}
    specs = [(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]
    write_safetensors(tmp_path / "m.safetensors", specs, iter(tensors.values()), metadata={"format": "pt"})
    loaded = load_file(str(tmp_path / "m.safetensors"))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert read_safetensors_header(tmp_path / "m.safetensors").data_start % 8 == 0


def test_writer_refuses_a_tensor_that_differs_from_its_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="announced"):
        write_safetensors(tmp_path / "m.safetensors", [("x", torch.float32, (2,))], iter([torch.zeros(3)]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=64), position=st.integers(0, 200), cut=st.one_of(st.just(0), st.integers(1, 60)))
def test_fuzzed_files_fail_only_with_checkpoint_errors(tmp_path: Path, data: bytes, position: int, cut: int) -> None:
    """Splice random bytes into a valid file and truncate it: the loader either succeeds or says why."""
    path = tmp_path / "fuzz.safetensors"
    save_file({"a": torch.ones(3), "b": torch.zeros(2, 2, dtype=torch.float16)}, str(path))
    raw = path.read_bytes()
    raw = (raw[:position] + data + raw[position + len(data):])[:max(len(raw) - cut, 0)]
    path.write_bytes(raw)
    try:
        header = read_safetensors_header(path)
    except CheckpointError:
        return
    # A header we accept must be one the library accepts too, tensor for tensor.
    loaded = load_file(str(path))
    assert set(loaded) == set(header.entries)
