"""decode_layers: every decoder layer of a decode step in one compiled call (csrc/decode_layers_cpu.cpp).

At one token per sequence the four matmuls of a layer are most of its arithmetic, but in PyTorch the
rest is ~35 op calls whose dispatch costs more than their work (a bf16 forward of the default model:
9.0 ms, of which 6.0 in the matmuls). The op runs the same kernels (small_linear, the paged decode
attention) and the same elementwise arithmetic with the same roundings in C++; the model
(model/transformer.py) takes it for decode-only steps of Llama-style layers (no biases, no q/k norms,
rotary in every layer) on CPU, in float32 or bfloat16, with float or weight-only int8 linears
(``quantization="int8"``: int8_linear's rows and int8_swiglu's arithmetic), for the row counts in
``use_decode_layers``, and keeps the layer-by-layer PyTorch path, its reference, for everything else.
"""

from __future__ import annotations

import torch

from eager_core.ops._extension import extension_disabled, load_extension
from eager_core.ops.linear import SMALL_M, small_linear_available


def decode_layers_available(dtype: torch.dtype) -> bool:
    """Whether the compiled op runs here for ``dtype`` (read at every call: EAGER_CORE_DISABLE_EXT)."""
    return (dtype in (torch.float32, torch.bfloat16) and not extension_disabled() and load_extension() is not None
            and hasattr(torch.ops.eager_core, "decode_layers") and small_linear_available(dtype))


def use_decode_layers(rows: int, dtype: torch.dtype) -> bool:
    """Whether a decode step of ``rows`` rows takes the op: up to ``SMALL_M[dtype]`` rows, where its
    matmuls are the small kernels the layer loop would call. Beyond, the loop's multithreaded,
    vectorised elementwise ops matter: tried with bfloat16 at 32 rows (the same GEMM as F.linear),
    the op's scalar SiLU made the 32-prompt decode 20% slower."""
    return 1 <= rows <= SMALL_M.get(dtype, 0) and decode_layers_available(dtype)


def decode_layers(x: torch.Tensor, weights: list[torch.Tensor], cos: torch.Tensor, sin: torch.Tensor,
                  kv_cache: torch.Tensor, slot_mapping: torch.Tensor, block_tables: torch.Tensor,
                  context_lens: torch.Tensor, block_size: int, scale: float, eps: float, heads: int,
                  kv_heads: int) -> torch.Tensor:
    """x [T, hidden] after every layer; each row one decode query. ``weights``: per layer input norm,
    fused qkv, o, post norm, fused gate_up, down (an int8 linear as three tensors: values, scales,
    offsets, the last empty for symmetric groups: ``Int8Weight.kernel_tensors``).
    ``cos``/``sin``: [T, head_dim] rotary tables (sin signed as in model/layers.py). Writes each row's
    k, v into ``kv_cache`` [layers, 2, slots, kv_heads, head_dim] at ``slot_mapping``."""
    return torch.ops.eager_core.decode_layers(x, weights, cos, sin, kv_cache, slot_mapping, block_tables,
                                              context_lens, block_size, scale, eps, heads, kv_heads)
