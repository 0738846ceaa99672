"""Reading a Hugging Face checkpoint folder: config files and safetensors weights.

A checkpoint folder holds ``config.json``, the weights as ``model.safetensors`` or as shards listed in
``model.safetensors.index.json``, and optionally ``generation_config.json`` and tokenizer files.
Nothing is ever unpickled: a folder with only ``pytorch_model.bin`` is refused.

Every failure is a ``CheckpointError`` (missing or corrupt files) or a ``ConfigError`` (a config file
that is not valid JSON) whose message names the file, and the tensor where there is one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from eager_core.errors import CheckpointError, ConfigError
from eager_core.io.freed_memory import release_freed_memory
from eager_core.io.safetensors_format import TORCH_TO_SAFETENSORS, SafetensorsHeader, read_safetensors_header

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept a torch floating dtype, one of its names ("float32", "bf16", "torch.float16"...) or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating-point type, got {dtype}")
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    raise ConfigError(f"unsupported dtype {dtype!r}; expected one of float32, bfloat16, float16")


def checkpoint_dir(ckpt_dir: str | Path) -> Path:
    """``ckpt_dir`` as a Path after checking that it is an existing, non-empty folder."""
    path = Path(ckpt_dir).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is not a folder (expected a folder with config.json "
                              "and model.safetensors)")
    if not any(path.iterdir()):
        raise CheckpointError(f"checkpoint folder {path} is empty (expected config.json and model.safetensors)")
    return path


def read_json_file(path: Path, error: type[Exception] = ConfigError) -> object:
    """Parse a JSON file; a malformed, truncated or non-UTF-8 file raises ``error`` naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e})") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read file: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # A string left open can only end at the end of the file: cut inside a string.
        cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        hint = " (the file looks truncated)" if cut else ""
        raise error(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}{hint}") from e
    except RecursionError as e:   # e.g. "[[[[..." nested deeper than the parser's stack
        raise error(f"{path}: malformed JSON: nested too deeply to parse") from e


def _read_json_object(path: Path) -> dict:
    data = read_json_file(path, ConfigError)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def read_config(ckpt_dir: str | Path) -> dict:
    """The parsed ``config.json`` of a checkpoint folder."""
    path = checkpoint_dir(ckpt_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: a checkpoint folder needs config.json")
    return _read_json_object(path)


def read_generation_config(ckpt_dir: str | Path) -> dict:
    """The parsed ``generation_config.json``, or ``{}`` when the checkpoint has none."""
    path = checkpoint_dir(ckpt_dir) / "generation_config.json"
    return _read_json_object(path) if path.is_file() else {}


def weight_files(ckpt_dir: str | Path) -> list[Path]:
    """The safetensors files holding the weights: the single file, or every shard the index names.

    The single file wins when both exist, as in transformers. Shard names must stay inside the folder.
    """
    folder = checkpoint_dir(ckpt_dir)
    single, index = folder / SINGLE_FILE, folder / INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        return _shards_from_index(folder, index)
    pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt*")]
    extra = f"; found {sorted(pickled)}, pickle files are never loaded (convert them to safetensors)" \
        if pickled else ""
    raise CheckpointError(f"{folder}: no weights, expected {SINGLE_FILE} or {INDEX_FILE}{extra}")


def _shards_from_index(folder: Path, index: Path) -> list[Path]:
    data = _read_json_object(index)
    weight_map = data.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: expected a non-empty 'weight_map' object mapping tensor names to files")
    shards: list[Path] = []
    for name, filename in weight_map.items():
        if not isinstance(filename, str) or Path(filename).name != filename:
            raise CheckpointError(f"{index}: tensor {name!r} maps to {filename!r}, expected a file name "
                                  "inside the checkpoint folder")
        shard = folder / filename
        if not shard.is_file():
            raise CheckpointError(f"{index}: shard {filename} (holding tensor {name!r}) is missing from {folder}")
        if shard not in shards:
            shards.append(shard)
    return shards


_FROM_SAFETENSORS = {v: k for k, v in TORCH_TO_SAFETENSORS.items()}
# Tensors that keep their own precision whatever ``dtype`` is asked: the float scales and offsets of int8 weights.
_KEEP_DTYPE_SUFFIXES = (".scales", ".offsets")


def _can_read_plainly(header: SafetensorsHeader) -> bool:
    """Every dtype has a torch equivalent here and the host is little-endian, as the file is."""
    return sys.byteorder == "little" and all(e.dtype in _FROM_SAFETENSORS for e in header.entries.values())


def _read_plainly(header: SafetensorsHeader) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a validated file, one at a time, each read with a plain read into a fresh tensor.

    Not memory-mapped on purpose: pages of a mapped file count in the process's resident set for as
    long as it is mapped, so mapping the whole file while the model copies tensors out of it would
    hold the weights twice at the peak."""
    with open(header.path, "rb") as f:
        for name, e in header.entries.items():
            t = torch.empty(e.shape, dtype=_FROM_SAFETENSORS[e.dtype])
            f.seek(header.data_start + e.begin)
            if e.end > e.begin and f.readinto(memoryview(t.view(-1).view(torch.uint8).numpy())) != e.end - e.begin:
                raise CheckpointError(f"{header.path}: tensor {name!r} is cut short (truncated file?)")
            yield name, t


def _convert(tensor: torch.Tensor, dtype: torch.dtype | None, device: torch.device, name: str = "") -> torch.Tensor:
    if (dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype
            or name.endswith(_KEEP_DTYPE_SUFFIXES)):
        return tensor.to(device)
    # Cast on the side where the tensor is smaller, so a float32 -> bfloat16 load never holds both on device.
    if dtype.itemsize < tensor.dtype.itemsize:
        return tensor.to(dtype).to(device)
    return tensor.to(device).to(dtype)


def load_weights(ckpt_dir: str | Path, dtype: torch.dtype | str | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint, by name; floating tensors cast to ``dtype`` when given (except
    the float scales and offsets of int8 weights, ``*.scales`` and ``*.offsets``, which keep their precision).

    Files are read with plain reads, one tensor at a time, so peak memory is the result plus one
    tensor. Every header is validated before the safetensors library opens the file. For sharded
    checkpoints, each tensor named in the index must be in the shard the index names, and no tensor
    may appear in two shards.
    """
    dtype, device = resolve_dtype(dtype), torch.device(device)
    files = weight_files(ckpt_dir)
    folder = files[0].parent
    index_map = {}
    if files[0].name != SINGLE_FILE:
        index_map = _read_json_object(folder / INDEX_FILE)["weight_map"]
    weights: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for path in files:
        header = read_safetensors_header(path)
        for name in header.entries:
            if name in origin:
                raise CheckpointError(f"tensor {name!r} appears in both {origin[name]} and {path}")
            origin[name] = path
        try:
            if _can_read_plainly(header):
                for name, tensor in _read_plainly(header):   # cast as read: the peak holds one tensor twice
                    weights[name] = converted = _convert(tensor, dtype, device, name)
                    if converted is not tensor:
                        del tensor
                        release_freed_memory()   # the read copy's pages, now free (io/freed_memory.py)
                continue
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in header.entries:
                    weights[name] = _convert(f.get_tensor(name), dtype, device, name)
        except SafetensorError as e:
            raise CheckpointError(f"{path}: cannot read safetensors data: {e}") from e
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read safetensors data: {e}") from e
    for name, filename in index_map.items():
        if name not in origin:
            raise CheckpointError(f"{folder / INDEX_FILE}: tensor {name!r} should be in {filename} but is not")
        if origin[name].name != filename:
            raise CheckpointError(f"{folder / INDEX_FILE}: tensor {name!r} is listed in {filename} "
                                  f"but found in {origin[name].name}")
    return weights
