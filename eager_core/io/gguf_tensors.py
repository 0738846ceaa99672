"""GGUF tensors -> Hugging Face Llama tensors: names, dequantization and the Q/K row order.

llama.cpp's converter reorders the rows of ``q_proj`` and ``k_proj``. Hugging Face Llama applies RoPE
with ``rotate_half``, which pairs dimension ``j`` with ``j + d/2`` inside each head; llama.cpp pairs
adjacent dimensions ``2j`` and ``2j + 1``. To make both compute the same thing, the converter
interleaves each head's two halves::

    hf   rows of one head: [a0 a1 ... a(d/2-1) | b0 b1 ... b(d/2-1)]
    gguf rows of one head: [a0 b0 a1 b1 ... ]

``unpermute_qk`` undoes it: view the rows as (heads, d/2, 2) and swap the last two axes back.
Keys use the number of KV heads (GQA), queries the number of attention heads.
"""

from __future__ import annotations

import re
from functools import lru_cache

import gguf
import numpy as np
import torch

from eager_core.errors import CheckpointError

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Present in some files but carrying nothing the HF model needs (``rope_freqs`` becomes rope_scaling).
_IGNORED = re.compile(r"^(rope_freqs\.weight|blk\.\d+\.attn_rot_embd(\.weight)?)$")
_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")
REQUIRED_LAYER_TENSORS = ("attn_norm.weight", "ffn_norm.weight", "attn_q.weight", "attn_k.weight",
                          "attn_v.weight", "attn_output.weight", "ffn_gate.weight", "ffn_up.weight",
                          "ffn_down.weight")


def hf_name(gguf_name: str, num_layers: int) -> str | None:
    """The HF name of a GGUF tensor, None for tensors to skip; ``CheckpointError`` for unknown ones."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    if _IGNORED.match(gguf_name):
        return None
    match = _LAYER.match(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        layer = int(match.group(1))
        if layer >= num_layers:
            raise CheckpointError(f"GGUF tensor {gguf_name!r} belongs to layer {layer}, but the file declares "
                                  f"{num_layers} layers")
        return f"model.layers.{layer}.{_LAYER_NAMES[match.group(2)]}"
    raise CheckpointError(f"GGUF tensor {gguf_name!r} has no Llama equivalent (mixture-of-experts or another "
                          "architecture's layers are not supported)")


def hf_shape(name: str, config: dict) -> tuple[int, ...]:
    """The shape the HF Llama model expects for parameter ``name`` under ``config``."""
    h, d, i, v = config["hidden_size"], config["head_dim"], config["intermediate_size"], config["vocab_size"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    shapes = {"embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "norm.weight": (h,),
              "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
              "q_proj.weight": (q, h), "k_proj.weight": (kv, h), "v_proj.weight": (kv, h),
              "q_proj.bias": (q,), "k_proj.bias": (kv,), "v_proj.bias": (kv,), "o_proj.weight": (h, q),
              "gate_proj.weight": (i, h), "up_proj.weight": (i, h), "down_proj.weight": (h, i)}
    return shapes[".".join(name.split(".")[-2:])]


@lru_cache(maxsize=None)
def can_dequantize(qtype: gguf.GGMLQuantizationType) -> bool:
    """Whether the installed ``gguf`` package can dequantize this type (probed on one zero block)."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def check_quantization(tensors: dict) -> None:
    """Refuse the file up front if any tensor's type cannot be dequantized."""
    for name, tensor in tensors.items():
        if not can_dequantize(tensor.tensor_type):
            raise CheckpointError(f"GGUF tensor {name!r} uses quantization type {tensor.tensor_type.name}, which "
                                  "cannot be dequantized (supported: F32, F16, BF16, Q4_0..Q8_0, K-quants, IQ-quants)")


def unpermute_qk(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's interleaving of the two RoPE halves of each head (rows only; works for biases)."""
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise CheckpointError(f"cannot split {rows} rows into {num_heads} heads of even size")
    rest = weight.shape[1:]
    return weight.reshape(num_heads, rows // num_heads // 2, 2, *rest).transpose(1, 2).reshape(weight.shape)


def dequantize(tensor, dtype: torch.dtype) -> torch.Tensor:
    """A GGUF tensor as a torch tensor in HF orientation ([out, in] for matrices) and ``dtype``."""
    try:
        array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except (ValueError, NotImplementedError) as e:
        raise CheckpointError(f"GGUF tensor {tensor.name!r} ({tensor.tensor_type.name}) cannot be dequantized: "
                              f"{e}") from e
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists dims innermost first
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not array.flags.writeable:  # F32 tensors come back as read-only views of the memory-mapped file
        array = array.copy()
    return torch.from_numpy(array).reshape(shape).to(dtype)


def q8_0_parts(tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A Q8_0 matrix as (int8 values [N, K], float16 scales [N, K / 32]) in HF orientation, bit for bit.

    A Q8_0 block is 32 weights: a float16 scale d, then 32 int8 values q; weight = d * q. This is the
    layout of eager_core's ``Int8Weight`` with groups of 32, so no value passes through float.
    """
    if tensor.tensor_type != gguf.GGMLQuantizationType.Q8_0 or len(tensor.shape) != 2:
        raise CheckpointError(f"GGUF tensor {tensor.name!r} is not a Q8_0 matrix")
    k, n = (int(d) for d in tensor.shape)
    blocks = np.asarray(tensor.data).reshape(n, k // 32, 34)
    scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16).reshape(n, k // 32)
    values = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(n, k)
    return torch.from_numpy(values.copy()), torch.from_numpy(scales.copy())

