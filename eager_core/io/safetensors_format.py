"""The safetensors file format: a header validator and a streaming writer.

Layout of a safetensors file::

    [8 bytes: N, little-endian u64][N bytes: JSON header][data region]

The JSON header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}``
(offsets relative to the data region) and may hold a ``"__metadata__"`` dict of strings.

We validate the header ourselves before the ``safetensors`` library sees the file, so a truncated
or corrupted file becomes a ``CheckpointError`` naming the file and the tensor at fault instead of
an opaque library error. The rules are those the library enforces: offsets inside the data region,
``end - begin == prod(shape) * itemsize``, tensors packed back to back with no gap or overlap, and
the data region covered exactly.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from eager_core.errors import CheckpointError

# The library refuses larger headers too; the cap keeps a corrupt length from making us read gigabytes.
MAX_HEADER_BYTES = 100 * 1024 * 1024

# safetensors dtype name -> bytes per element.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}

TORCH_TO_SAFETENSORS = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.float16: "F16",
    torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32", torch.int64: "I64", torch.float64: "F64",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header entry; ``begin``/``end`` are byte offsets into the data region."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: entries in file order, where the data region starts, and the metadata."""

    path: Path
    entries: dict[str, TensorEntry]
    data_start: int
    metadata: dict


def _fail(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: corrupt safetensors file: {what}")


def read_safetensors_header(path: str | Path) -> SafetensorsHeader:
    """Read and validate the header of ``path``; raise ``CheckpointError`` on any inconsistency."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _fail(path, f"file is {size} bytes, too short for the 8-byte header length")
            (n,) = struct.unpack("<Q", prefix)
            if n == 0 or n > MAX_HEADER_BYTES:
                raise _fail(path, f"header length {n} is not in 1..{MAX_HEADER_BYTES}")
            if 8 + n > size:
                raise _fail(path, f"header length {n} goes beyond the end of the {size}-byte file (truncated?)")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read safetensors file: {e}") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:   # (nested too deeply)
        raise _fail(path, f"header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise _fail(path, f"header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    metadata = {} if metadata is None else metadata   # (not `or {}`: [] or "" must be refused, as the library does)
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "__metadata__ must be a JSON object of strings")
    data_len = size - 8 - n
    entries = {name: _parse_entry(path, name, spec, data_len) for name, spec in header.items()}
    _check_packing(path, entries, data_len)
    return SafetensorsHeader(path=path, entries=entries, data_start=8 + n, metadata=metadata)


def _parse_entry(path: Path, name: str, spec: object, data_len: int) -> TensorEntry:
    where = f"tensor {name!r}"
    if not isinstance(spec, dict):
        raise _fail(path, f"{where}: entry must be an object, got {type(spec).__name__}")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:   # (a list or dict is unhashable)
        raise _fail(path, f"{where}: unknown dtype {dtype!r} (expected one of {sorted(DTYPE_SIZES)})")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _fail(path, f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)):
        raise _fail(path, f"{where}: data_offsets must be [begin, end] integers, got {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise _fail(path, f"{where}: data_offsets [{begin}, {end}] outside the {data_len}-byte data region"
                          " (truncated file or corrupt header)")
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end - begin != expected:
        raise _fail(path, f"{where}: data_offsets span {end - begin} bytes but dtype {dtype} with shape "
                          f"{shape} needs {expected}")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _check_packing(path: Path, entries: dict[str, TensorEntry], data_len: int) -> None:
    """Tensors must tile the data region exactly (what the safetensors library demands)."""
    position = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != position:
            kind = "overlaps the previous tensor" if entry.begin < position else "leaves a gap before it"
            raise _fail(path, f"tensor {entry.name!r}: data_offsets start at {entry.begin}, which {kind} "
                              f"(expected {position})")
        position = entry.end
    if position != data_len:
        raise _fail(path, f"tensors cover {position} bytes but the data region holds {data_len} "
                          "(trailing bytes or truncated file)")


def write_safetensors(path: str | Path, specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]],
                      tensors: Iterable[torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Stream tensors into a safetensors file, holding at most one tensor in memory.

    ``specs`` lists (name, dtype, shape) for every tensor in write order, so the header can be written
    first; ``tensors`` must then yield exactly those tensors in that order (checked).
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, dtype, shape in specs:
        nbytes = math.prod(shape) * DTYPE_SIZES[TORCH_TO_SAFETENSORS[dtype]]
        header[name] = {"dtype": TORCH_TO_SAFETENSORS[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data region starts 8-byte aligned, as the library writes it
    count = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for (name, dtype, shape), tensor in zip(specs, tensors):
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(f"tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, "
                                 f"but the header announced {dtype} {tuple(shape)}")
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            f.write(memoryview(flat.view(torch.uint8).numpy()))
            count += 1
    if count != len(specs):
        raise ValueError(f"{path}: {len(specs)} tensors announced but {count} written")
