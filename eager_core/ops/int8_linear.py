"""Weight-only int8 linear layers: the weight holder, the quantizer, the op and its reference.

``Int8Weight`` holds a linear weight as int8 values ``qweight [N, K]`` and float32 ``scales
[N, K / group_size]``: weight[n, k] = qweight[n, k] * scales[n, k // group_size]. Symmetric, round
to nearest, values in [-127, 127] (as llama.cpp's Q8_0, which loads into this layout unchanged:
group 32, its float16 scales widened exactly). Activations, bias and outputs stay in the model's
dtype; only the weight is quantized.

``linear`` (eager_core/ops/linear.py) sends an ``Int8Weight`` here, so the model's call sites do not
change. ``int8_linear`` then picks:

* CPU, at most ``INT8_SMALL_M`` rows (decode steps): the compiled kernel (csrc/int8_linear_cpu.cpp),
  which widens the int8 weights to float32 in registers and never materialises a float weight;
  AVX-512, AVX2 or portable C++, chosen at load time (``int8_isa()``).
* CUDA, at most ``CUDA_SMALL_M`` rows: the compiled CUDA kernel (csrc/int8_linear_cuda.cu).
* everything else (prefill, no extension, ``EAGER_CORE_DISABLE_EXT=1``): dequantize to x's dtype,
  then ``F.linear`` (float32 on CPU: oneDNN's matmul, ``ops/onednn.py``, unless the extension is
  disabled). That is also the reference the kernels are tested against (``int8_linear_reference``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eager_core.ops._extension import extension_disabled, load_extension
from eager_core.ops.onednn import onednn_available, onednn_linear

# One scale per 32 weights of a row unless K is not a multiple of it (then one per row). Chosen by
# measurement over per-channel scales (docs/performance.md, "Weight-only int8").
DEFAULT_GROUP_SIZE = 32
# Rows up to which the compiled kernels beat dequantize + BLAS (docs/decode_kernels.md).
INT8_SMALL_M = 64
CUDA_SMALL_M = 8
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(eq=False)
class Int8Weight:
    """A linear weight [N, K] as int8 values and float32 scales per group of ``group_size`` along K."""

    qweight: torch.Tensor   # int8 [N, K], contiguous
    scales: torch.Tensor    # float32 [N, K // group_size], contiguous

    def __post_init__(self) -> None:
        q, s = self.qweight, self.scales
        if q.dtype != torch.int8 or q.dim() != 2:
            raise ValueError(f"Int8Weight: qweight must be a 2-D int8 tensor, got {q.dtype} {list(q.shape)}")
        if s.dim() != 2 or s.shape[0] != q.shape[0] or s.shape[1] < 1 or q.shape[1] % s.shape[1]:
            raise ValueError(f"Int8Weight: scales {list(s.shape)} do not fit qweight {list(q.shape)} "
                             "([N, groups] with groups dividing K)")
        self.qweight = q.contiguous()
        self.scales = s.to(torch.float32).contiguous()

    @property
    def shape(self) -> torch.Size:
        return self.qweight.shape

    @property
    def group_size(self) -> int:
        return self.qweight.shape[1] // self.scales.shape[1]

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    @property
    def nbytes(self) -> int:
        """Bytes a matmul reads: the int8 values and their scales."""
        return self.qweight.numel() + self.scales.numel() * self.scales.element_size()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight [N, K]: products formed in float32 (float64 if asked), then cast once."""
        n, k = self.qweight.shape
        work = torch.float64 if dtype == torch.float64 else torch.float32
        w = self.qweight.view(n, -1, self.group_size).to(work) * self.scales.to(work)[..., None]
        return w.view(n, k).to(dtype)

    def to(self, device: torch.device | str) -> "Int8Weight":
        return Int8Weight(self.qweight.to(device), self.scales.to(device))

    @staticmethod
    def cat(parts: list["Int8Weight"]) -> "Int8Weight":
        """Stack weights along N (q/k/v, gate/up fusion): rows are independent, so this is exact."""
        groups = {p.group_size for p in parts}
        if len(groups) != 1:
            raise ValueError(f"Int8Weight.cat: parts have different group sizes {sorted(groups)}")
        return Int8Weight(torch.cat([p.qweight for p in parts]), torch.cat([p.scales for p in parts]))


def quantize_int8(weight: torch.Tensor, group_size: int | None = DEFAULT_GROUP_SIZE) -> Int8Weight:
    """Symmetric round-to-nearest int8 of a float weight [N, K].

    Each group of ``group_size`` weights of a row (one group per row if None, or if K is not a
    multiple of it) gets scale = max|w| / 127, so the largest weight maps to +-127 exactly; an
    all-zero group gets scale 1. Computed in float32 from the weight as given (quantize before any
    cast to a smaller model dtype). Raises ValueError for a non-finite weight.
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_int8: expected a 2-D floating-point weight, got {weight.dtype} {list(weight.shape)}")
    n, k = weight.shape
    g = k if group_size is None or k % group_size else group_size
    w = weight.to(torch.float32).reshape(n, k // g, g)
    amax = w.abs().amax(dim=-1)
    if not torch.isfinite(amax).all():
        raise ValueError("quantize_int8: the weight has NaN or infinite values")
    scales = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(w / scales[..., None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(q.view(n, k), scales)


def int8_linear_reference(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dequantize to x's dtype, then F.linear: the fallback, and the kernels' oracle (in float64)."""
    return F.linear(x, weight.dequantize(x.dtype), bias)


@functools.lru_cache(maxsize=None)
def _has_op(kind: str) -> bool:
    """kind: "cpu" / "cuda" (int8_linear for that device) or "swiglu" (the fused CPU op)."""
    ext = load_extension()
    if ext is None or not hasattr(torch.ops.eager_core, "int8_linear"):
        return False
    if kind == "swiglu":
        return hasattr(torch.ops.eager_core, "int8_swiglu")
    return kind == "cpu" or (kind == "cuda" and bool(getattr(ext, "with_cuda", False)))


def int8_isa() -> str:
    """What runs decode-sized int8 matmuls on this CPU: "avx512", "avx2", "baseline" or "torch"."""
    if extension_disabled() or not _has_op("cpu"):
        return "torch"
    return str(torch.ops.eager_core.int8_linear_isa())


def use_int8_kernel(x: torch.Tensor, weight: Int8Weight) -> bool:
    """Whether ``int8_linear(x, weight)`` runs a compiled kernel (else dequantize + F.linear).

    Called for every matmul of every step, so it avoids building device objects (a microsecond each).
    """
    if x.is_cpu:
        if not weight.qweight.is_cpu:
            return False
        limit, kind = INT8_SMALL_M, "cpu"
    elif x.is_cuda:
        if not weight.qweight.is_cuda or x.get_device() != weight.qweight.get_device():
            return False
        limit, kind = CUDA_SMALL_M, "cuda"
    else:
        return False
    return (x.numel() <= limit * x.shape[-1] and x.dtype in _KERNEL_DTYPES and _has_op(kind)
            and not extension_disabled())


def int8_linear(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ dequant(weight).T + bias, in x's dtype (float32 accumulation in the kernels)."""
    if use_int8_kernel(x, weight):
        return torch.ops.eager_core.int8_linear(x, weight.qweight, weight.scales, bias)
    if x.is_cpu and x.dtype == torch.float32 and onednn_available() and not extension_disabled():
        return onednn_linear(x, weight.dequantize(torch.float32), bias)   # prefill: not MKL (ops/onednn.py)
    return int8_linear_reference(x, weight, bias)


def int8_swiglu(x: torch.Tensor, gate_up: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """silu(gate) * up for a fused [gate; up] weight [2I, K]: one compiled call on CPU decode steps
    (saves the chunk, SiLU and product ops, and rounds once), else int8_linear and those ops."""
    if x.is_cpu and use_int8_kernel(x, gate_up) and _has_op("swiglu"):
        return torch.ops.eager_core.int8_swiglu(x, gate_up.qweight, gate_up.scales, bias)
    gate, up = int8_linear(x, gate_up, bias).chunk(2, dim=-1)
    return F.silu(gate) * up
