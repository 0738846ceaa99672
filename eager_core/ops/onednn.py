"""oneDNN's float32 matmul, reached through the op torch registers for it.

Why not F.linear: torch's float32 F.linear is MKL's sgemm, and MKL runs its AVX2 code on AMD CPUs
(210 GFLOP/s at 2 threads on the AMD EPYC reference machine, where oneDNN's AVX-512 code reaches
460); on Intel CPUs the two are close. bfloat16 F.linear is oneDNN already.
"""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=None)
def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias through oneDNN's matmul (plain weight layout; any leading dimensions)."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.ops.mkldnn._linear_pointwise(x2, weight.contiguous(), bias, "none", [], "")
    return y.reshape(*x.shape[:-1], weight.shape[0])
