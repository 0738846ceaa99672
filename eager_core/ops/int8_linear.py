"""Weight-only int8 linear layers: the weight holder, the quantizer, the op and its reference.

``Int8Weight`` holds a linear weight as int8 values ``qweight [N, K]``, float16 ``scales
[N, K / group_size]`` and optional float16 ``offsets`` of the same shape:
weight[n, k] = qweight[n, k] * scales[n, g] + offsets[n, g], g = k // group_size (offset 0 without
them). Float16, as llama.cpp's Q8_0 stores its scales: 36 bytes per 32 weights instead of 40 (a
decode step streams every weight: 3-7% faster one-sequence decode, measured), and q * scale is exact in
float32 (8 + 11 significant bits), so the only rounding of a weight is the offset's addition, the
same in every kernel and in ``dequantize``. Two ways to fill a group of 32, both round to nearest
against the float16 scale and offset actually stored (``quantize_int8``):

* symmetric, values in [-127, 127], scale max|w| / 127, no offset: llama.cpp's Q8_0, which loads
  into this layout bit for bit;
* asymmetric, values in [-128, 127] spanning the group's minimum to its maximum: 256 levels instead
  of 255 over a range that is often narrower, for 2 more bytes per 32 weights. A group that sits on
  a grid of 16 levels (llama.cpp's Q4_1 and Q4_0: the default checkpoint) is stored on that grid
  instead, scale = its step and offset = its minimum (both float16 in the GGUF, so exact), wherever
  that reproduces every weight bit for bit: the int8 model then computes what the float32 one does.

By default each matrix takes the asymmetric form only where it at least halves the squared error
(``ASYMMETRIC_GAIN``): on the default model every decoder matrix does and the LM head (Q8_0 in the
GGUF, exact when symmetric) does not. Activations, bias and outputs stay in the model's dtype; only
the weight is quantized.

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
# A matrix stores offsets (asymmetric groups) only if they cut its squared error by this factor:
# they cost 4 bytes per 32 weights (11% more per step), so a small gain is not worth it. None of
# quantize_int8's ``asymmetric`` means this rule; True / False force one form.
ASYMMETRIC_GAIN = 2.0
# Rows up to which the compiled kernels beat dequantize + BLAS (docs/decode_kernels.md).
INT8_SMALL_M = 64
CUDA_SMALL_M = 8
_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _as_half(t: torch.Tensor, what: str) -> torch.Tensor:
    """t as a contiguous float16 tensor; ValueError if a finite value overflows float16."""
    h = t.to(torch.float16).contiguous()
    if t.dtype != torch.float16 and bool((torch.isinf(h) & torch.isfinite(t)).any()):
        raise ValueError(f"Int8Weight: {what} beyond float16's range (|value| > 65504); the weight is too "
                         "large for int8 with float16 scales")
    return h


@dataclass(eq=False)
class Int8Weight:
    """A linear weight [N, K] as int8 values, float16 scales per group of ``group_size`` along K and,
    for asymmetric groups, float16 offsets shaped like the scales (the group size then a multiple of
    16, as the kernels' grouped layout needs). Scales or offsets given in another float dtype are
    rounded to float16 (ValueError if one is beyond float16's range, 65504)."""

    qweight: torch.Tensor                   # int8 [N, K], contiguous
    scales: torch.Tensor                    # float16 [N, K // group_size], contiguous
    offsets: torch.Tensor | None = None     # float16 like scales, or None (symmetric: offset 0)

    def __post_init__(self) -> None:
        q, s, z = self.qweight, self.scales, self.offsets
        if q.dtype != torch.int8 or q.dim() != 2:
            raise ValueError(f"Int8Weight: qweight must be a 2-D int8 tensor, got {q.dtype} {list(q.shape)}")
        if s.dim() != 2 or s.shape[0] != q.shape[0] or s.shape[1] < 1 or q.shape[1] % s.shape[1]:
            raise ValueError(f"Int8Weight: scales {list(s.shape)} do not fit qweight {list(q.shape)} "
                             "([N, groups] with groups dividing K)")
        if z is not None:
            if z.shape != s.shape or not z.is_floating_point():
                raise ValueError(f"Int8Weight: offsets {z.dtype} {list(z.shape)} must be float, shaped like "
                                 f"the scales {list(s.shape)}")
            if (q.shape[1] // s.shape[1]) % 16:
                raise ValueError(f"Int8Weight: offsets need a group size that is a multiple of 16, got "
                                 f"{q.shape[1] // s.shape[1]}")
            self.offsets = _as_half(z, "offsets")
        self.qweight = q.contiguous()
        self.scales = _as_half(s, "scales")

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
        """Bytes a matmul reads: the int8 values, their scales and offsets."""
        extra = 0 if self.offsets is None else self.offsets.numel() * self.offsets.element_size()
        return self.qweight.numel() + self.scales.numel() * self.scales.element_size() + extra

    @functools.cached_property
    def kernel_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, scales, offsets) as ops.decode_layers takes them: offsets empty when symmetric.
        Built once, since the op's weight list is assembled at every decode step."""
        offsets = self.offsets if self.offsets is not None else self.scales.new_empty(0)
        return self.qweight, self.scales, offsets

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight [N, K]: q * s (+ z) formed in float32 (float64 if asked), then cast once.
        q * s is exact in float32, so this is what the kernels' fma(q, s, z) computes, bit for bit."""
        n, k = self.qweight.shape
        work = torch.float64 if dtype == torch.float64 else torch.float32
        q = self.qweight.view(n, -1, self.group_size).to(work)
        s = self.scales.to(work)[..., None]
        w = q * s if self.offsets is None else torch.addcmul(self.offsets.to(work)[..., None], q, s)
        return w.view(n, k).to(dtype)

    def to(self, device: torch.device | str) -> "Int8Weight":
        z = None if self.offsets is None else self.offsets.to(device)
        return Int8Weight(self.qweight.to(device), self.scales.to(device), z)

    @staticmethod
    def cat(parts: list["Int8Weight"]) -> "Int8Weight":
        """Stack weights along N (q/k/v, gate/up fusion): rows are independent, so this is exact. If
        any part has offsets, the symmetric parts get offsets of 0 (the same weights)."""
        groups = {p.group_size for p in parts}
        if len(groups) != 1:
            raise ValueError(f"Int8Weight.cat: parts have different group sizes {sorted(groups)}")
        offsets = None
        if any(p.offsets is not None for p in parts):
            offsets = torch.cat([torch.zeros_like(p.scales) if p.offsets is None else p.offsets for p in parts])
        return Int8Weight(torch.cat([p.qweight for p in parts]), torch.cat([p.scales for p in parts]), offsets)


# The smallest positive float16 (a subnormal): the floor of a stored scale, so that a group of tiny
# but nonzero weights never gets scale 0.
_HALF_TINY = 2.0 ** -24
_HALF_MAX = 65504.0


def _half(t: torch.Tensor) -> torch.Tensor:
    """t rounded to float16 (to nearest even), kept in float32 for the arithmetic that follows."""
    return t.to(torch.float16).to(torch.float32)


def _symmetric(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 values, scales) of float32 groups w [n, groups, g]: scale max|w| / 127 rounded to float16
    (1 if all zero), values rounded against that stored scale."""
    amax = w.abs().amax(dim=-1)
    scales = _half(torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))).clamp_min_(_HALF_TINY)
    return torch.round(w / scales[..., None]).clamp_(-127, 127).to(torch.int8), scales


def _asymmetric(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(int8 values, scales, offsets) of float32 groups w [n, groups, g], per group the better of:

    * a 16-level grid: scale (max - min) / 15, offset the minimum, values 0..15, taken where it
      reproduces every weight exactly (a 4-bit format's group: Q4_1's d * q + m, Q4_0's d * (q - 8),
      whose d and m are float16, so they survive the rounding below);
    * 256 levels: offset min + 128 (max - min) / 255 rounded to float16, then the smallest scale
      that keeps the minimum at -128 and the maximum at 127 around that rounded offset: about
      (max - min) / 255, a little more for a narrow group far from zero, whose offset float16
      cannot place to within a step (a constant group: scale 1, offset its value).

    Scales and offsets are rounded to float16 first, and the values rounded against them.
    """
    lo, hi = w.amin(dim=-1), w.amax(dim=-1)
    spread = hi - lo
    varies = spread > 0
    offsets = _half(torch.where(varies, lo + spread * (128.0 / 255.0), lo))
    need = torch.maximum((hi - offsets) / 127.0, (offsets - lo) / 128.0)   # both ends fit, wherever the offset fell
    scales = _half(torch.where(varies, need, torch.ones_like(spread))).clamp_min_(_HALF_TINY)
    q = torch.round((w - offsets[..., None]) / scales[..., None]).clamp_(-128, 127)
    grid_s = _half(torch.where(varies, spread / 15.0, torch.ones_like(spread))).clamp_min_(_HALF_TINY)
    grid_z = _half(lo)
    grid_q = torch.round((w - grid_z[..., None]) / grid_s[..., None]).clamp_(-128, 127)
    # q * s is exact in float32 (8 + 11 significant bits): one rounding, as in every kernel.
    on_grid = varies & (grid_q * grid_s[..., None] + grid_z[..., None] == w).all(dim=-1)
    q = torch.where(on_grid[..., None], grid_q, q).to(torch.int8)
    return q, torch.where(on_grid, grid_s, scales), torch.where(on_grid, grid_z, offsets)


# Rows quantized at a time: bounds the float temporaries (an LM head is 28 M weights) to ~4 MB each.
_CHUNK_WEIGHTS = 1 << 20


def quantize_int8(weight: torch.Tensor, group_size: int | None = DEFAULT_GROUP_SIZE,
                  asymmetric: bool | None = None) -> Int8Weight:
    """Round-to-nearest int8 of a float weight [N, K], per group of ``group_size`` weights of a row
    (one group per row if None, or if K is not a multiple of it).

    Symmetric: scale = max|w| / 127, so the largest weight maps to +-127 (an all-zero group gets
    scale 1). Asymmetric: scale = (max - min) / 255 and offset = min + 128 * scale, so the minimum
    maps to -128 and the maximum to 127 (a constant group: scale 1, offset its value), or a group's
    own 16-level grid where that is exact (``_asymmetric``); only for groups that are a multiple of
    16. Scales and offsets are stored in float16 and the values rounded against the stored ones.
    ``asymmetric=None`` picks per matrix: asymmetric where its squared error is at most
    1 / ASYMMETRIC_GAIN of the symmetric one's (read at call time). Computed in float32 from the
    weight as given (quantize before any cast to a smaller model dtype), a block of rows at a time.
    Raises ValueError for a non-finite weight or one beyond float16's range.
    """
    if weight.dim() != 2 or not weight.is_floating_point():
        raise ValueError(f"quantize_int8: expected a 2-D floating-point weight, got {weight.dtype} "
                         f"{list(weight.shape)}")
    n, k = weight.shape
    g = k if group_size is None or k % group_size else group_size
    forms = [False] if asymmetric is False or g % 16 else [True] if asymmetric else [False, True]
    parts: dict[bool, list[tuple[torch.Tensor, ...]]] = {f: [] for f in forms}
    error = dict.fromkeys(forms, 0.0)
    rows = max(1, _CHUNK_WEIGHTS // max(k, 1))
    for r0 in range(0, max(n, 1), rows):   # an empty weight still yields its (empty) parts
        w = weight[r0:r0 + rows].to(torch.float32).reshape(-1, k // g, g)
        if not torch.isfinite(w).all():
            raise ValueError("quantize_int8: the weight has NaN or infinite values")
        if w.numel() and float(w.abs().amax()) > _HALF_MAX:
            raise ValueError(f"quantize_int8: weights up to {float(w.abs().amax()):.3g} in magnitude are beyond "
                             f"float16's range ({_HALF_MAX:g}), which int8's scales and offsets use")
        for form in forms:
            got = _asymmetric(w) if form else _symmetric(w)
            parts[form].append(got)
            if len(forms) > 1 and w.numel():   # this block's error, through the holder's own dequantize
                deq = Int8Weight(got[0].reshape(-1, k), *got[1:]).dequantize().view_as(w)
                error[form] += (deq - w).square().sum(dtype=torch.float64).item()
    form = forms[0] if len(forms) == 1 else error[True] * ASYMMETRIC_GAIN <= error[False]
    cols = [torch.cat(c) for c in zip(*parts[form])]
    return Int8Weight(cols[0].view(n, k), *cols[1:])


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
        return torch.ops.eager_core.int8_linear(x, weight.qweight, weight.scales, bias, weight.offsets)
    if x.is_cpu and x.dtype == torch.float32 and onednn_available() and not extension_disabled():
        return onednn_linear(x, weight.dequantize(torch.float32), bias)   # prefill: not MKL (ops/onednn.py)
    return int8_linear_reference(x, weight, bias)


def int8_swiglu(x: torch.Tensor, gate_up: Int8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """silu(gate) * up for a fused [gate; up] weight [2I, K]: one compiled call on CPU decode steps
    (saves the chunk, SiLU and product ops, and rounds once), else int8_linear and those ops."""
    if x.is_cpu and use_int8_kernel(x, gate_up) and _has_op("swiglu"):
        return torch.ops.eager_core.int8_swiglu(x, gate_up.qweight, gate_up.scales, bias, gate_up.offsets)
    gate, up = int8_linear(x, gate_up, bias).chunk(2, dim=-1)
    return F.silu(gate) * up
