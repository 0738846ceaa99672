"""paged_decode_attention: decode attention read straight from the paged KV cache (compiled, CPU).

The alternative, in model/attention.py, gathers each decoding sequence's context into a padded
copy per layer and runs SDPA with a padding mask. The kernel (csrc/paged_attention_*.cpp) walks
each sequence's block table instead: no copy, no padding, each key and value read once for all
query heads that share it. It covers float32 and bfloat16 caches on CPU; elsewhere the gather
path runs (on a GPU the decode step is a CUDA graph, see decode_graphs.py).
"""

from __future__ import annotations

import functools

import torch

from eager_core.ops._extension import extension_disabled, load_extension

_CACHE_DTYPES = (torch.float32, torch.bfloat16)


@functools.lru_cache(maxsize=1)
def _kernel_available() -> bool:
    return load_extension() is not None and hasattr(torch.ops.eager_core, "paged_decode_attention")


def use_paged_kernel(device: torch.device, cache_dtype: torch.dtype) -> bool:
    """Whether decode attention on ``device`` over a cache of ``cache_dtype`` takes the kernel."""
    return (device.type == "cpu" and cache_dtype in _CACHE_DTYPES and _kernel_available()
            and not extension_disabled())


@functools.lru_cache(maxsize=None)
def _intrinsics_kernel(head_dim: int) -> bool:
    return (_kernel_available() and head_dim in (64, 128)
            and str(torch.ops.eager_core.paged_attention_isa()) == "avx512")


def use_paged_prefill(device: torch.device, cache_dtype: torch.dtype, head_dim: int) -> bool:
    """Whether prefill chunks also take the kernel (one decode per query over its causal context):
    only where its AVX-512 intrinsics run (head_dim 64 or 128), which beat PyTorch's flash
    attention on this CPU; the portable loops do not (docs/decode_kernels.md)."""
    return use_paged_kernel(device, cache_dtype) and _intrinsics_kernel(head_dim)


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int,
                           scale: float) -> torch.Tensor:
    """out [B, heads, head_dim] of one query per sequence over its paged context.

    q [B, heads, head_dim]; caches [slots, kv_heads, head_dim]; block_tables [B, width] int64
    (entries past a sequence's last block are ignored); context_lens [B] int64, the new token
    included (its key/value must already be in the cache).
    """
    return torch.ops.eager_core.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens,
                                                       block_size, scale)
