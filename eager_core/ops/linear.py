"""linear: F.linear, or the compiled small-M kernel where it streams the weights faster.

A decode step multiplies a few rows (one per sequence) by every weight matrix: the time is the
time to read the weights. MKL's paths for few rows leave bandwidth unused (its matrix-vector
product runs on one thread), so for float32 CPU inputs with at most ``SMALL_M`` rows the compiled
kernel (csrc/small_linear_cpu.cpp) splits the weight rows across the threads and reads each one
once. Everything else (prefill, GPUs, bf16, no extension) goes to F.linear.

Results differ from F.linear only in float32 summation order (~1e-6 relative).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from eager_core.ops._extension import extension_disabled, load_extension

SMALL_M = 32   # rows up to which the kernel beats MKL on the 2-core reference machine (docs/performance.md)


@functools.lru_cache(maxsize=1)
def _kernel_available() -> bool:
    if load_extension() is None or not hasattr(torch.ops.eager_core, "small_linear"):
        return False
    return bool(torch.ops.eager_core.small_linear_supported())


def use_small_linear(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear(x, weight)`` takes the compiled kernel."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.numel() <= SMALL_M * x.shape[-1] and weight.is_contiguous()
            and _kernel_available() and not extension_disabled())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias, like F.linear."""
    if use_small_linear(x, weight):
        return torch.ops.eager_core.small_linear(x, weight, bias)
    return F.linear(x, weight, bias)
