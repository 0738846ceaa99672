"""rms_norm: RMSNorm in one compiled call for bfloat16 / float16 on CPU, with its PyTorch reference.

x / sqrt(mean(x^2) + eps) * weight, computed in float32 like the reference implementations. The
upcast matters in bf16/fp16: the mean of squares over 4k channels loses digits otherwise. In those
dtypes the reference rounds twice, as Hugging Face's LlamaRMSNorm does: once after normalising,
once after the weight multiply; the compiled op (csrc/rms_norm_cpu.cpp) keeps both roundings and
replaces the formula's eight PyTorch calls by one, which is what it costs at one token per step.

Dispatch: float32 -> F.rms_norm (one op, bit-identical to the formula); CUDA, any dtype ->
F.rms_norm (one fused kernel, rounding once: at most one bf16 step from the formula, which greedy
parity tolerates); bf16 / fp16 on CPU -> the compiled op when built, else the formula.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from eager_core.ops._extension import extension_disabled, load_extension


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The formula in PyTorch ops (float32 inside, two roundings in bf16/fp16)."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


@functools.lru_cache(maxsize=None)
def _kernel_available() -> bool:
    return load_extension() is not None and hasattr(torch.ops.eager_core, "rms_norm")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of ``x`` (see the module docstring for the paths)."""
    if x.dtype == torch.float32 or x.is_cuda:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    if (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
            and _kernel_available() and not extension_disabled()):
        return torch.ops.eager_core.rms_norm(x, weight, eps)
    return rms_norm_reference(x, weight, eps)
