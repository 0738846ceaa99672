"""The CUDA weight-only int8 kernel (csrc/int8_linear_cuda.cu) against float64 and the CPU kernel, and
an int8 model on CUDA against the same model on CPU (skipped without CUDA).

tools/gpu_check.sh runs this file with EAGER_CORE_REQUIRE_CUDA=1, where a build without the CUDA
kernel fails instead of skipping. The kernel dequantizes in float32 (fma(q, scale, offset)) and sums
in float32, so every dtype is checked against x @ dequant(W)^T in float64 with one output rounding.
"""

from __future__ import annotations

import os

import pytest
import torch

from eager_core import LLM, SamplingParams
from eager_core.ops import Int8Weight, quantize_int8
from eager_core.ops import int8_linear as int8_linear_module
from eager_core.ops.int8_linear import CUDA_SMALL_M, int8_linear, use_int8_kernel


@pytest.fixture(scope="module", autouse=True)
def cuda_kernel():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if not int8_linear_module._has_op("cuda"):
        message = "eager_core._C has no CUDA int8 kernel (built without nvcc or without a CUDA torch)"
        if os.environ.get("EAGER_CORE_REQUIRE_CUDA", "") == "1":
            pytest.fail(f"EAGER_CORE_REQUIRE_CUDA=1 but {message}")
        pytest.skip(message)


def make(N: int, K: int, group: int | None, seed: int, asymmetric: bool) -> Int8Weight:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=g)
    if asymmetric:   # rows shifted off zero, so that the offsets matter
        w = w + torch.linspace(-2, 3, N)[:, None]
    return quantize_int8(w, group, asymmetric=asymmetric)


def exact(x: torch.Tensor, w: Int8Weight, b: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.linear(x.double().cpu(), w.dequantize(torch.float64).cpu(),
                                      None if b is None else b.double().cpu())


def check(x: torch.Tensor, w: Int8Weight, b: torch.Tensor | None) -> torch.Tensor:
    """int8_linear on CUDA for x given on CPU: its dtype and shape, within one output rounding of the
    float64 result (plus float32 summation); returns the result on CPU."""
    wc = w.to("cuda")
    xc, bc = x.cuda(), None if b is None else b.cuda()
    y = int8_linear(xc, wc, bc)
    assert y.is_cuda and y.dtype == x.dtype and y.shape == (*x.shape[:-1], w.shape[0])
    y = y.cpu().double()
    ref = exact(x, w, b)
    # One output rounding, plus float32 summation and dequantization: 4 sqrt(K) units of float32 on
    # the sum of |x_k w_k| (a probabilistic bound with a wide margin; the worst case is K units).
    ulp = {torch.float32: 2.0 ** -23, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}[x.dtype]
    K = w.shape[1]
    absdot = torch.nn.functional.linear(x.double().abs().cpu(), w.dequantize(torch.float64).abs().cpu())
    tol = ref.abs() * ulp + 4 * 2.0 ** -24 * K ** 0.5 * absdot + 1e-6
    bad = (y - ref).abs() > tol
    assert not bad.any(), f"{int(bad.sum())} of {bad.numel()} outputs off; worst {(y - ref).abs().max():.3g}"
    return y


@pytest.mark.parametrize("M", [1, 2, 5, 8])
@pytest.mark.parametrize("N,K,group", [(1, 1, None), (33, 17, None), (130, 576, 32), (130, 576, None),
                                       (1001, 64, 32), (9, 96, 16), (64, 1536, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("asym", [False, True])
def test_matches_float64(M, N, K, group, dtype, with_bias, asym):
    w = make(N, K, group, M * 1000 + N + K, asym)
    g = torch.Generator().manual_seed(M + N)
    x = torch.randn(M, K, generator=g).to(dtype)
    b = torch.randn(N, generator=g).to(dtype) if with_bias else None
    assert use_int8_kernel(x.cuda(), w.to("cuda"))
    check(x, w, b)


def test_unaligned_x_takes_the_scalar_loop_and_agrees():
    """x 4 bytes off a 16-byte boundary (a view into a flat buffer): the kernel's vector loads need
    alignment, so it runs its per-element loop; the result must not change."""
    w = make(300, 576, 32, 3, True)
    buf = torch.randn(4 * 576 + 1, generator=torch.Generator().manual_seed(1))
    x_cuda = buf.cuda()[1:].view(4, 576)
    assert x_cuda.data_ptr() % 16 != 0 and x_cuda.is_contiguous()
    y = int8_linear(x_cuda, w.to("cuda")).cpu().double()
    torch.testing.assert_close(y, exact(buf[1:].view(4, 576), w, None), rtol=1e-5, atol=1e-4)


def test_more_rows_than_the_kernel_take_dequantize_and_cublas():
    w = make(200, 128, 32, 4, False)
    x = torch.randn(CUDA_SMALL_M + 5, 128, generator=torch.Generator().manual_seed(2))
    assert not use_int8_kernel(x.cuda(), w.to("cuda"))
    check(x, w, None)


def test_cuda_and_cpu_kernels_agree():
    w = make(513, 576, 32, 5, True)
    x = torch.randn(3, 576, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(int8_linear(x.cuda(), w.to("cuda")).cpu(), int8_linear(x, w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("offsets", [False, True])
def test_int8_model_on_cuda_equals_the_cpu_one(tiny_ckpt_factory, offsets, monkeypatch):
    """The same int8 weights (quantized on CPU at load, then moved) give the same logits and greedy
    tokens on CUDA, with decode steps replayed from CUDA graphs, as on CPU."""
    if offsets:
        monkeypatch.setattr(int8_linear_module, "ASYMMETRIC_GAIN", 0.0)
    ckpt = tiny_ckpt_factory("llama")
    cpu = LLM(str(ckpt), quantization="int8", num_kv_blocks=64)
    gpu = LLM(str(ckpt), quantization="int8", num_kv_blocks=64, device="cuda")
    assert gpu.model.layers[0].o_w.qweight.is_cuda
    assert (gpu.model.layers[0].o_w.offsets is not None) == offsets
    ids = [(i * 37 + 11) % 250 for i in range(7)]
    torch.testing.assert_close(gpu.logits(ids).cpu(), cpu.logits(ids), rtol=1e-4, atol=1e-4)
    prompts = [[(i * 7 + j) % 250 for j in range(k)] for i, k in enumerate([3, 17, 40])]
    params = SamplingParams(temperature=0, max_tokens=12, n=2, ignore_eos=True)
    a, b = gpu.generate(prompt_token_ids=prompts, params=params), cpu.generate(prompt_token_ids=prompts, params=params)
    assert [[c.token_ids for c in r.outputs] for r in a] == [[c.token_ids for c in r.outputs] for r in b]
