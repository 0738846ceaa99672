"""Converting a Llama-family GGUF file into a Hugging Face checkpoint folder.

The output folder holds ``model.safetensors`` (dequantized weights, HF names, Q/K rows in HF order),
``config.json``, ``generation_config.json``, ``tokenizer.json`` and ``tokenizer_config.json`` (with the
chat template). It is written under a temporary name and renamed into place at the end, so an
interrupted conversion never leaves a folder that looks like a checkpoint.

Weights stream tensor by tensor into the safetensors file: peak memory is about one dequantized
tensor, whatever the model size.

With ``keep_q8_0=True``, Q8_0 matrices are not dequantized: each becomes ``<name>.qweight`` (int8)
and ``<name>.scales`` (float16, one per 32 weights), the int8 layout eager_core loads directly
(``LLM(..., quantization="int8")``; without it they are dequantized at load). See model/quantized.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import torch

from eager_core.errors import CheckpointError
from eager_core.io.atomic_dir import atomic_directory
from eager_core.io.checkpoint import resolve_dtype
from eager_core.io.gguf_config import build_generation_config, build_model_config
from eager_core.io.gguf_file import GGUFFile
from eager_core.io.gguf_tensors import (REQUIRED_LAYER_TENSORS, check_quantization, dequantize, hf_name,
                                        hf_shape, q8_0_parts, unpermute_qk)
from eager_core.io.gguf_tokenizer import build_tokenizer
from eager_core.io.safetensors_format import write_safetensors

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _tensor_plan(gg: GGUFFile, config: dict) -> list[tuple[str, str]]:
    """(gguf name, hf name) for every tensor to write, in file order; checks nothing is missing."""
    layers = config["num_hidden_layers"]
    # Bound the metadata by the file before any loop over layers: a corrupt block_count of 2**31
    # would otherwise build a list of billions of "missing" names (and exhaust memory).
    found = {name.split(".")[1] for name in gg.tensors if name.startswith("blk.")}
    if layers > len(found):
        raise CheckpointError(f"{gg.path}: metadata 'llama.block_count' = {layers}, but the file has tensors "
                              f"for {len(found)} layers")
    plan = [(name, hf) for name in gg.tensors if (hf := hf_name(name, layers)) is not None]
    present = set(gg.tensors)
    missing = [f"blk.{i}.{suffix}" for i in range(layers) for suffix in REQUIRED_LAYER_TENSORS
               if f"blk.{i}.{suffix}" not in present]
    missing += [n for n in ("token_embd.weight", "output_norm.weight") if n not in present]
    if missing:
        raise CheckpointError(f"{gg.path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    for name, hf in plan:
        shape, expected = tuple(int(d) for d in reversed(gg.tensors[name].shape)), hf_shape(hf, config)
        if shape != expected:
            raise CheckpointError(f"{gg.path}: tensor {name!r} has shape {shape}, expected {expected} "
                                  "from the model's metadata")
    return plan


def _hf_tensor(gg: GGUFFile, name: str, config: dict, dtype: torch.dtype) -> torch.Tensor:
    return _hf_rows(dequantize(gg.tensors[name], dtype), name, config)


def _hf_rows(tensor: torch.Tensor, name: str, config: dict) -> torch.Tensor:
    """Q/K rows back in HF order (a row permutation: it applies to int8 values and scales alike)."""
    if ".attn_q." in name:
        tensor = unpermute_qk(tensor, config["num_attention_heads"])
    elif ".attn_k." in name:
        tensor = unpermute_qk(tensor, config["num_key_value_heads"])
    return tensor


def _kept_q8_0(gg: GGUFFile, name: str, hf: str) -> bool:
    return gg.tensors[name].tensor_type == gguf.GGMLQuantizationType.Q8_0 and len(gg.tensors[name].shape) == 2 \
        and hf.endswith(".weight")


def _write_plan(gg: GGUFFile, plan: list[tuple[str, str]], config: dict, dtype: torch.dtype, keep_q8_0: bool):
    """(specs, tensors) for write_safetensors: one float tensor per plan entry, or qweight + scales."""
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
    jobs = []
    for name, hf in plan:
        shape = tuple(int(d) for d in reversed(gg.tensors[name].shape))
        if keep_q8_0 and _kept_q8_0(gg, name, hf):
            base = hf.removesuffix(".weight")
            specs += [(base + ".qweight", torch.int8, shape), (base + ".scales", torch.float16, (shape[0], shape[1] // 32))]
            jobs.append((name, True))
        else:
            specs.append((hf, dtype, shape))
            jobs.append((name, False))

    def tensors():
        for name, keep in jobs:
            if keep:
                yield from (_hf_rows(t, name, config) for t in q8_0_parts(gg.tensors[name]))
            else:
                yield _hf_tensor(gg, name, config, dtype)
    return specs, tensors()


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: torch.dtype | str = torch.float32,
                 overwrite: bool = False, keep_q8_0: bool = False) -> Path:
    """Convert a Llama GGUF into an HF checkpoint folder at ``out_dir`` and return its path.

    ``dtype`` is the dtype of the written weights (float32 keeps the dequantized values exactly);
    ``keep_q8_0`` writes Q8_0 matrices as int8 values + float16 scales instead (module docstring).
    Raises ``CheckpointError`` for a missing, truncated or corrupt file, a non-llama architecture, an
    unsupported quantization or tokenizer, and if ``out_dir`` exists (unless ``overwrite``).
    """
    return write_checkpoint(GGUFFile(gguf_path), out_dir, dtype, overwrite, keep_q8_0)


def write_checkpoint(gg: GGUFFile, out_dir: str | Path, dtype: torch.dtype | str = torch.float32,
                     overwrite: bool = False, keep_q8_0: bool = False) -> Path:
    """``convert_gguf`` for an already parsed file. Everything is checked before anything is written."""
    torch_dtype = resolve_dtype(dtype)
    config = build_model_config(gg, _DTYPE_NAMES[torch_dtype])
    check_quantization(gg.tensors)
    plan = _tensor_plan(gg, config)
    tokenizer, tokenizer_config = build_tokenizer(gg)
    tokenizer_config["model_max_length"] = config["max_position_embeddings"]
    if tokenizer.get_vocab_size(with_added_tokens=True) > config["vocab_size"]:
        raise CheckpointError(f"{gg.path}: the tokenizer has {tokenizer.get_vocab_size(with_added_tokens=True)} "
                              f"tokens but the embedding only {config['vocab_size']} rows")
    specs, tensors = _write_plan(gg, plan, config, torch_dtype, keep_q8_0)
    if keep_q8_0 and any(spec[1] == torch.int8 for spec in specs):   # for readers: not an HF quantization
        config["quantization_config"] = {"quant_method": "eager_core_int8", "bits": 8, "group_size": 32,
                                         "source": "gguf Q8_0"}
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        write_safetensors(tmp / "model.safetensors", specs, tensors, metadata={"format": "pt"})
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", build_generation_config(gg))
        tokenizer.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tokenizer_config)
    return Path(out_dir).expanduser().absolute()
