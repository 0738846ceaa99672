"""The small building blocks of the decoder: rotary embeddings, the SwiGLU MLP (RMSNorm: ops/norm.py).

Plain functions over tensors, so the hot path is easy to read and to profile.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from eager_core.ops.int8_linear import Int8Weight, int8_swiglu
from eager_core.ops.linear import linear


# ---------------------------------------------------------------------------------------------
# Rotary position embeddings
# ---------------------------------------------------------------------------------------------

def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> torch.Tensor:
    """Inverse frequencies (float32, [head_dim/2]) for the rope variants we support.

    - default: theta^(-2i/d)
    - linear:  default / factor (positions are squeezed by `factor`)
    - llama3:  long wavelengths are divided by `factor`, short ones kept, the band in between
               interpolated smoothly (Llama 3.1's context extension).
    """
    # float32 like the reference implementation, so greedy tokens match it bit for bit where possible.
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_ctx = scaling.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_ctx / wavelen - low) / (high - low)
        interpolated = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_ctx / low, inv_freq / factor,
                               torch.where(wavelen < old_ctx / high, inv_freq, interpolated))
    return inv_freq.float()


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and *signed* sin tables [T, 1, head_dim], computed once per forward for all layers.

    The sign of the first half of sin is flipped so that rotating needs one ``roll`` instead of a
    negate and a concatenation (see ``apply_rope``).
    """
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    sin[:, :inv_freq.shape[0]] *= -1
    return emb.cos().to(dtype)[:, None, :], sin.to(dtype)[:, None, :]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [T, heads, head_dim] by position, in the half-split layout HF checkpoints use.

    rotate_half(x) = [-x2, x1] = roll(x, half) * [-1, +1]; the signs live in ``signed_sin``.
    """
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


# ---------------------------------------------------------------------------------------------
# MLP
# ---------------------------------------------------------------------------------------------

def swiglu_mlp(x: torch.Tensor, gate_up_w: torch.Tensor | Int8Weight, gate_up_b: torch.Tensor | None,
               down_w: torch.Tensor | Int8Weight, down_b: torch.Tensor | None) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)); gate and up are fused into one matmul at load time."""
    if isinstance(gate_up_w, Int8Weight):   # int8: matmul and SwiGLU in one compiled call where it can
        return linear(int8_swiglu(x, gate_up_w, gate_up_b), down_w, down_b)
    gate_up = linear(x, gate_up_w, gate_up_b)
    gate, up = gate_up.chunk(2, dim=-1)
    return linear(F.silu(gate) * up, down_w, down_b)
