"""The paged decode-attention kernel against gather + SDPA (the PyTorch path it replaces).

The kernel has AVX-512 and baseline loops, so it runs on every CPU: these tests never skip for an
instruction set. Under EAGER_CORE_CPU_ISA=avx2 or baseline they check the baseline loops.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_support import isa_cap, need_op

from eager_core.ops.paged_attention import paged_decode_attention, use_paged_kernel


@pytest.fixture
def kernel():
    """Skip (or, under EAGER_CORE_REQUIRE_EXT=1, fail) when the build lacks the kernel."""
    need_op("paged_decode_attention")


def reference(q, k_cache, v_cache, tables, lens, bs, scale):
    out = []
    for b in range(q.shape[0]):
        pos = torch.arange(int(lens[b]))
        slots = tables[b][pos // bs] * bs + pos % bs
        k = k_cache[slots].double().transpose(0, 1)[None]      # [1, kvh, C, hd]
        v = v_cache[slots].double().transpose(0, 1)[None]
        o = F.scaled_dot_product_attention(q[b].double()[None, :, None], k, v, scale=scale, enable_gqa=True)
        out.append(o[0, :, 0])
    return torch.stack(out)


@pytest.mark.usefixtures("kernel")
# head_dim 64 and 128 take the AVX-512 intrinsics on CPUs that have them (query heads per kv head:
# 1-8, so every chunking of pass 2: 4 + 1, 4 + 4, 2 + 2 + 1); the others the auto-vectorised loops.
@pytest.mark.parametrize("heads,kv_heads,head_dim", [(4, 4, 16), (9, 3, 64), (8, 1, 24), (6, 2, 130), (10, 2, 64),
                                                     (8, 1, 64), (4, 2, 128), (5, 1, 128), (3, 3, 128)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bs", [1, 4, 16])
def test_matches_gather_reference(heads, kv_heads, head_dim, dtype, bs):
    g = torch.Generator().manual_seed(heads * 100 + head_dim + bs)
    num_blocks = 64
    k_cache = torch.randn(num_blocks * bs, kv_heads, head_dim, generator=g).to(dtype)
    v_cache = torch.randn(num_blocks * bs, kv_heads, head_dim, generator=g).to(dtype)
    lens = torch.tensor([1, 5, bs * 3, 37, bs * 7 - 1])
    width = int((lens.max() + bs - 1) // bs) + 2          # wider than needed: extra entries are ignored
    tables = torch.stack([torch.randperm(num_blocks, generator=g)[:width] for _ in lens])
    q = torch.randn(len(lens), heads, head_dim, generator=g).to(dtype)
    out = paged_decode_attention(q, k_cache, v_cache, tables, lens, bs, head_dim ** -0.5)
    ref = reference(q, k_cache, v_cache, tables, lens, bs, head_dim ** -0.5)
    assert out.dtype == dtype and out.shape == q.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


@pytest.mark.usefixtures("kernel")
def test_strided_query_and_huge_scores():
    qkv = torch.randn(3, 5 * 8) * 50                        # large logits: softmax must subtract the max
    q = qkv.view(3, 5, 8)[:, :4]                            # a non-contiguous slice, like q of a fused qkv
    k_cache, v_cache = torch.randn(32, 2, 8), torch.randn(32, 2, 8)
    tables, lens = torch.tensor([[3, 1], [0, 2], [5, 6]]), torch.tensor([8, 3, 6])
    out = paged_decode_attention(q, k_cache, v_cache, tables, lens, 4, 1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(q, k_cache, v_cache, tables, lens, 4, 1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("kernel")
def test_rejects_out_of_range_inputs():
    k = torch.randn(16, 2, 8)
    q = torch.randn(1, 4, 8)
    with pytest.raises(RuntimeError, match="out of the pool"):
        paged_decode_attention(q, k, k, torch.tensor([[4]]), torch.tensor([3]), 4, 1.0)
    with pytest.raises(RuntimeError, match="context_lens"):
        paged_decode_attention(q, k, k, torch.tensor([[0]]), torch.tensor([5]), 4, 1.0)
    with pytest.raises(RuntimeError, match="multiple of kv_heads"):
        paged_decode_attention(torch.randn(1, 3, 8), k, k, torch.tensor([[0]]), torch.tensor([1]), 4, 1.0)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        paged_decode_attention(q.half(), k.half(), k.half(), torch.tensor([[0]]), torch.tensor([1]), 4, 1.0)


@pytest.mark.usefixtures("kernel")
def test_instruction_set_follows_the_cap():
    """EAGER_CORE_CPU_ISA below avx512 must reach the kernel, so the capped runs test the baseline loops."""
    isa = torch.ops.eager_core.paged_attention_isa()
    if isa_cap() is not None:
        assert isa == "baseline", f"EAGER_CORE_CPU_ISA={isa_cap()} but the kernel runs its {isa} loops"
    else:
        assert isa in ("avx512", "baseline")


def test_kernel_only_on_cpu_for_supported_dtypes(monkeypatch):
    assert not use_paged_kernel(torch.device("cpu"), torch.float16)
    assert not use_paged_kernel(torch.device("cuda"), torch.float32)
    monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")
    assert not use_paged_kernel(torch.device("cpu"), torch.float32)
