"""linear: F.linear, or the CPU path that is fastest for the rows at hand.

A decode step multiplies a few rows (one per sequence) by every weight matrix: the time is the
time to read the weights. MKL's and oneDNN's paths for few rows leave bandwidth unused (MKL's
matrix-vector product runs on one thread), so for CPU inputs with at most ``SMALL_M[dtype]`` rows
the compiled kernel (csrc/small_linear_cpu.cpp) splits the weight rows across the threads and
reads each one once: float32 with AVX-512F, bfloat16 with AVX512-BF16 dot products (float32
accumulation, like oneDNN). Above that, float32 goes to oneDNN's matmul rather than F.linear's MKL
sgemm: MKL runs its AVX2 code on AMD CPUs (210 GFLOP/s at 2 threads on the AMD EPYC reference
machine) where oneDNN uses AVX-512 (460 GFLOP/s); on Intel CPUs the two are close. bfloat16 above
the threshold is F.linear, which is oneDNN already. Everything else (GPUs, float16, no extension)
goes to F.linear. A weight-only int8 weight (``Int8Weight``) goes to ``int8_linear`` instead.

The thresholds are where the paths cross on that machine (docs/performance.md, "linear dispatch"):
float32 16 rows, bfloat16 8. Results differ between paths only in summation order (~1e-6
relative in float32; in bfloat16 the output rounding dominates).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from eager_core.ops._extension import extension_disabled, load_extension
from eager_core.ops.int8_linear import Int8Weight, int8_linear
from eager_core.ops.onednn import onednn_available, onednn_linear

# Rows up to which the kernel beats oneDNN on the 2-core reference machine (docs/performance.md).
SMALL_M = {torch.float32: 16, torch.bfloat16: 8}


@functools.lru_cache(maxsize=None)
def _kernel_available(dtype: torch.dtype = torch.float32) -> bool:
    if load_extension() is None or not hasattr(torch.ops.eager_core, "small_linear"):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.eager_core.small_linear_supported_bf16())
    return bool(torch.ops.eager_core.small_linear_supported())


def small_linear_available(dtype: torch.dtype) -> bool:
    """Whether the compiled small-M kernel runs here for ``dtype`` operands (the CPU's ISA, the build)."""
    return dtype in SMALL_M and _kernel_available(dtype)


def use_small_linear(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear(x, weight)`` takes the compiled kernel."""
    rows = SMALL_M.get(x.dtype, 0)
    return (x.device.type == "cpu" and x.dtype == weight.dtype and x.numel() <= rows * x.shape[-1]
            and weight.is_contiguous() and _kernel_available(x.dtype) and not extension_disabled())


def use_onednn_f32(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear(x, weight)`` takes oneDNN's float32 matmul (rows above the small kernel's)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.dim() == 2 and x.shape[-1] == weight.shape[1] and not use_small_linear(x, weight)
            and onednn_available() and not extension_disabled())


def linear(x: torch.Tensor, weight: torch.Tensor | Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias, like F.linear; an ``Int8Weight`` goes to ``int8_linear`` (ops/int8_linear.py)."""
    if isinstance(weight, Int8Weight):
        return int8_linear(x, weight, bias)
    if use_small_linear(x, weight):
        return torch.ops.eager_core.small_linear(x, weight, bias)
    if use_onednn_f32(x, weight):
        return onednn_linear(x, weight, bias)
    return F.linear(x, weight, bias)
