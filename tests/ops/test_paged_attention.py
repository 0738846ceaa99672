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


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 24])
def test_prefill_chunks_through_the_kernel_equal_sdpa(dtype, head_dim, monkeypatch):
    """model/attention.py sends prefill chunks to the kernel (each query a decode over its causal
    context) when ``meta.paged_kernel``: a fresh prompt and a chunk after cached context, packed
    behind a decode, equal the gather + SDPA path."""
    from eager_core.model import attention
    from eager_core.model.attention import AttentionMetadata, PrefillChunk, paged_attention

    calls = []
    kernel_op = attention.paged_decode_attention
    monkeypatch.setattr(attention, "paged_decode_attention", lambda *a: calls.append(len(a[0])) or kernel_op(*a))

    g = torch.Generator().manual_seed(head_dim)
    bs, heads, kv_heads, blocks = 4, 6, 2, 40
    k_cache = torch.randn(blocks * bs, kv_heads, head_dim, generator=g).to(dtype)
    v_cache = torch.randn(blocks * bs, kv_heads, head_dim, generator=g).to(dtype)
    tables = [torch.randperm(blocks, generator=g)[:8] for _ in range(3)]

    def slots(table, n):
        pos = torch.arange(n)
        return table[pos // bs] * bs + pos % bs

    # token 0: a decode of sequence 0 at 9 positions; then 13 fresh tokens of sequence 1; then the
    # last 6 of 22 positions of sequence 2 (16 cached).
    def chunk(start, n, c, table):   # as the runner builds it: slots, and per query its table row and length
        blocks = table[:-(-c // bs)]
        return PrefillChunk(start, n, c, slots(table, c), blocks.expand(n, -1).contiguous(),
                            torch.arange(c - n + 1, c + 1))

    chunks = [chunk(1, 13, 13, tables[1]), chunk(14, 6, 22, tables[2])]
    q = torch.randn(20, heads, head_dim, generator=g).to(dtype)
    base = dict(slot_mapping=torch.zeros(20, dtype=torch.long), num_decode=1, decode_tables=tables[0][None],
                decode_context_lens=torch.tensor([9]), block_size=bs, prefills=chunks)
    via_kernel = paged_attention(q, k_cache, v_cache, AttentionMetadata(**base, paged_kernel=True), 0.3)
    assert calls == [1, 13, 6]                   # the decode, then each chunk's queries
    via_sdpa = paged_attention(q, k_cache, v_cache, AttentionMetadata(**base), 0.3)
    assert calls == [1, 13, 6, 1]                # the chunks took SDPA
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(via_kernel.float(), via_sdpa.float(), rtol=tol, atol=tol)


def test_prefill_takes_the_kernel_only_where_its_intrinsics_run():
    from eager_core.ops.paged_attention import use_paged_kernel, use_paged_prefill

    cpu = torch.device("cpu")
    assert not use_paged_prefill(cpu, torch.float32, 24)                  # the portable loops: SDPA stays
    assert not use_paged_prefill(cpu, torch.float16, 64)
    if use_paged_kernel(cpu, torch.float32):
        fast = torch.ops.eager_core.paged_attention_isa() == "avx512"
        assert use_paged_prefill(cpu, torch.bfloat16, 64) == fast == use_paged_prefill(cpu, torch.float32, 128)


@pytest.mark.usefixtures("kernel")
def test_uneven_contexts_split_by_work_give_the_same_result_on_any_thread_count():
    """The binding cuts the tasks into one run per thread of about equal work (context length):
    every task is still computed once, whole, so the result does not depend on the thread count."""
    g = torch.Generator().manual_seed(3)
    bs, n = 4, 150
    k_cache, v_cache = torch.randn(64 * bs, 2, 64, generator=g), torch.randn(64 * bs, 2, 64, generator=g)
    table = torch.randperm(64, generator=g)[:40]
    lens = torch.cat([torch.arange(1, n), torch.tensor([157])])     # a causal prompt's queries, ragged
    q = torch.randn(len(lens), 6, 64, generator=g)
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(paged_decode_attention(q, k_cache, v_cache, table.expand(len(lens), -1), lens, bs, 0.125))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    ref = reference(q, k_cache, v_cache, table.expand(len(lens), -1), lens, bs, 0.125)
    torch.testing.assert_close(outs[0].double(), ref, rtol=1e-5, atol=1e-5)
