"""GGUF metadata -> Hugging Face ``config.json`` and ``generation_config.json`` for a Llama model.

Sizes come from the ``llama.*`` keys and are cross-checked against the tensor shapes, so a file whose
metadata disagrees with its weights is refused here rather than producing a broken checkpoint.

RoPE scaling: ``llama.rope.scaling.type = linear`` becomes ``rope_scaling`` of type linear. Llama 3.1+
files carry no scaling keys but a ``rope_freqs`` tensor of per-frequency divisors; we recover the
``llama3`` parameters that reproduce it exactly, and refuse the file if none do.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from eager_core.errors import CheckpointError
from eager_core.io.gguf_file import GGUFFile
from eager_core.io.gguf_tensors import dequantize
from eager_core.io.gguf_tokenizer import vocabulary

# Control tokens llama.cpp also treats as end of generation, besides the declared EOS/EOT/EOM ids.
_END_OF_GENERATION_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
                            "<end_of_turn>", "<|end|>", "<EOT>")
_CONTROL = 3  # llama.cpp token type of special tokens


def _int(gg: GGUFFile, key: str, default: int | None = None) -> int:
    value = gg.get(key, default)
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise CheckpointError(f"{gg.path}: metadata {key!r} varies per layer ({value[:4]}...), "
                                  "which the Llama architecture does not support")
        value = value[0]
    if value is None:
        raise CheckpointError(f"{gg.path}: required metadata {key!r} is missing")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise CheckpointError(f"{gg.path}: metadata {key!r} = {value!r}, expected a positive integer")
    return value


def _float(gg: GGUFFile, key: str, default: float) -> float:
    value = gg.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise CheckpointError(f"{gg.path}: metadata {key!r} = {value!r}, expected a positive number")
    # GGUF stores float32; its shortest decimal form (1e-05, not 9.999999747378752e-06) is the intended value.
    return float(str(np.float32(value))) if isinstance(value, float) else float(value)


def llama3_rope_factors(theta: float, head_dim: int, factor: float, low_freq_factor: float,
                        high_freq_factor: float, original_max_position: int) -> np.ndarray:
    """The per-frequency divisors llama.cpp stores as ``rope_freqs`` for Llama 3 RoPE scaling."""
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2 * math.pi / freqs
    low_wavelen = original_max_position / low_freq_factor
    high_wavelen = original_max_position / high_freq_factor
    smooth = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    medium = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < high_wavelen, 1.0, np.where(wavelen > low_wavelen, factor, medium))


def _rope_scaling(gg: GGUFFile, theta: float, head_dim: int) -> dict | None:
    kind = gg.get("llama.rope.scaling.type")
    if kind not in (None, "none", "linear"):
        raise CheckpointError(f"{gg.path}: RoPE scaling type {kind!r} is not supported (expected linear or none)")
    if kind == "linear":
        return {"rope_type": "linear", "factor": _float(gg, "llama.rope.scaling.factor", 1.0)}
    if "rope_freqs.weight" not in gg.tensors:
        return None
    stored = dequantize(gg.tensors["rope_freqs.weight"], torch.float64).numpy().reshape(-1)
    if stored.shape != (head_dim // 2,):
        raise CheckpointError(f"{gg.path}: rope_freqs has {stored.size} values, expected {head_dim // 2}")
    if np.allclose(stored, 1.0):
        return None
    original = _int(gg, "llama.rope.scaling.original_context_length", 8192)
    params = {"factor": float(stored.max()), "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": original}
    factors = llama3_rope_factors(theta, head_dim, params["factor"], 1.0, 4.0, original)
    if np.allclose(factors, stored, rtol=1e-4):
        return {"rope_type": "llama3", **params}
    raise CheckpointError(f"{gg.path}: the rope_freqs tensor does not match Llama 3 RoPE scaling with factor "
                          f"{params['factor']:g}, low/high frequency factors 1/4 and original context {original}")


def _shape(gg: GGUFFile, name: str) -> tuple[int, ...]:
    if name not in gg.tensors:
        raise CheckpointError(f"{gg.path}: tensor {name!r} is missing")
    return tuple(int(d) for d in reversed(gg.tensors[name].shape))


def build_model_config(gg: GGUFFile, dtype_name: str) -> dict:
    """The HF ``config.json`` contents for this GGUF, checked against the tensor shapes."""
    arch = gg.architecture
    if arch != "llama":
        raise CheckpointError(f"{gg.path}: GGUF architecture {arch!r} is not supported (only 'llama')")
    layers = _int(gg, "llama.block_count")
    hidden = _int(gg, "llama.embedding_length")
    heads = _int(gg, "llama.attention.head_count")
    kv_heads = _int(gg, "llama.attention.head_count_kv", heads)
    head_dim = _int(gg, "llama.attention.key_length", hidden // heads)
    theta = _float(gg, "llama.rope.freq_base", 10000.0)
    # The vocabulary and FFN sizes come from the tensors (the metadata may omit them); every tensor's
    # shape is then checked against this config before anything is written (gguf.py).
    vocab = _shape(gg, "token_embd.weight")[0]
    intermediate = _int(gg, "llama.feed_forward_length", _shape(gg, "blk.0.ffn_gate.weight")[0])
    if heads % kv_heads:
        raise CheckpointError(f"{gg.path}: {heads} attention heads are not a multiple of {kv_heads} KV heads")
    tokenizer_ids = {k: _token_id(gg, k) for k in ("bos", "eos", "padding")}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": _int(gg, "llama.context_length", 2048),
        "rms_norm_eps": _float(gg, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": theta,
        "rope_scaling": _rope_scaling(gg, theta, head_dim),
        "attention_bias": "blk.0.attn_q.bias" in gg.tensors,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": "output.weight" not in gg.tensors,
        "bos_token_id": tokenizer_ids["bos"],
        "eos_token_id": tokenizer_ids["eos"],
        "pad_token_id": tokenizer_ids["padding"],
        "torch_dtype": dtype_name,
        "use_cache": True,
    }


def _token_id(gg: GGUFFile, name: str) -> int | None:
    """``tokenizer.ggml.<name>_token_id`` if it is a valid id of the vocabulary, else None."""
    i = gg.get(f"tokenizer.ggml.{name}_token_id")
    valid = isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(vocabulary(gg)[0])
    return i if valid else None


def end_of_generation_ids(gg: GGUFFile) -> list[int]:
    """EOS first, then EOT/EOM and the control tokens llama.cpp also stops on (e.g. ``<|endoftext|>``)."""
    tokens, types = vocabulary(gg)
    ids = [_token_id(gg, k) for k in ("eos", "eot", "eom")]
    ids += [i for i, (text, kind) in enumerate(zip(tokens, types))
            if kind == _CONTROL and text in _END_OF_GENERATION_TEXTS]
    return [i for i in dict.fromkeys(ids) if i is not None]


def build_generation_config(gg: GGUFFile) -> dict:
    """``generation_config.json``: BOS, PAD and every end-of-generation id (EOS first)."""
    eos = end_of_generation_ids(gg)
    config: dict = {"bos_token_id": _token_id(gg, "bos"),
                    "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
                    "pad_token_id": _token_id(gg, "padding")}
    return {k: v for k, v in config.items() if v is not None}
