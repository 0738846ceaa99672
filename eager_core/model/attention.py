"""Attention over the paged KV cache.

The cache of one layer is a flat array of *slots* ``[num_blocks * block_size, kv_heads, head_dim]``;
slot ``b * block_size + i`` is position i of physical block b. A sequence's block table maps its
logical block j (positions j*block_size ...) to a physical block, so position p of a sequence lives
in slot ``table[p // block_size] * block_size + p % block_size``.

One forward packs the new tokens of every scheduled sequence into one flat batch ``[T, ...]``:
first one token per *decoding* sequence, then the chunks of *prefilling* sequences. Each layer

1. writes the new keys/values into their slots (``slot_mapping``), and then
2. reads every sequence's context back through its slots and runs attention.

On CPU, decode queries read the cache in place through their block tables (the compiled kernel of
ops/paged_attention.py), and so do prefill chunks: each query of a chunk is one "decode" over its
causal context (query i of a chunk that ends at position c reads c - n + i + 1 positions), which
on this CPU beats PyTorch's flash attention (2x at 512 tokens; docs/decode_kernels.md). Otherwise
the read gathers slots into a padded ``[B, C, kv_heads, head_dim]`` tensor; the gather indices are
computed once per step (``AttentionMetadata``) and shared by all layers, so the per-layer cost is
one indexed copy of the context plus the attention itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from eager_core.ops.paged_attention import paged_decode_attention


@dataclass
class PrefillChunk:
    """A run of ``num_tokens`` new tokens of one sequence, the last ones of a context of ``context_len``."""

    token_start: int              # offset of the chunk in the packed batch
    num_tokens: int
    context_len: int              # tokens in the cache after this step, chunk included
    context_slots: torch.Tensor   # [context_len] slot of every context position
    # For the paged kernel (AttentionMetadata.paged_kernel), built once per step by the runner:
    # query i's block table row [num_tokens, blocks] and context length (context_len - num_tokens + i + 1).
    kernel_tables: torch.Tensor | None = None
    kernel_lens: torch.Tensor | None = None


@dataclass
class AttentionMetadata:
    """Per-step tensors that say where to write new K/V and what each query may read.

    Invariants: ``slot_mapping`` has one entry per packed token; the first ``num_decode`` tokens are
    decodes (one query each, reading ``decode_context_lens[i]`` positions through ``decode_slots[i]``);
    prefill chunks follow, in order, covering the rest of the batch.
    """

    slot_mapping: torch.Tensor                 # [T] long
    num_decode: int = 0
    decode_slots: torch.Tensor | None = None   # [B, C] long, padded with the row's first slot
    decode_mask: torch.Tensor | None = None    # [B, 1, 1, C] bool, True where the position exists;
                                               # None when every context is full length (no padding)
    # Instead of decode_slots/mask, for the in-place kernel: block tables [B, width] and lengths [B].
    decode_tables: torch.Tensor | None = None
    decode_context_lens: torch.Tensor | None = None
    block_size: int = 0
    paged_kernel: bool = False                 # prefill chunks too read through the kernel
    prefills: list[PrefillChunk] = field(default_factory=list)


def context_slots(tables: torch.Tensor, context_lens: torch.Tensor, block_size: int,
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather slots [B, width] of positions 0..width-1 through block tables [B, >= width/block_size],
    and the mask [B, width] of the positions that exist (p < context_lens[b]).

    Positions past a row's context read the row's own first slot, never another sequence's block:
    masked positions still multiply their values by 0, and a foreign block could hold a NaN.
    """
    pos = torch.arange(width, device=tables.device)
    slots = tables[:, pos // block_size] * block_size + pos % block_size
    mask = pos[None, :] < context_lens[:, None]
    return torch.where(mask, slots, slots[:, :1]), mask


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Store the new keys/values [T, kv_heads, head_dim] into their slots."""
    k_cache.index_copy_(0, slot_mapping, k)
    v_cache.index_copy_(0, slot_mapping, v)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """Attention of the packed queries q [T, heads, head_dim] over the cache; returns [T, heads, head_dim].

    Keys and values of the current step must already be written (``write_kv``): a query reads its
    own position from the cache like any other.
    """
    nd = meta.num_decode
    decode_out = None
    if nd and meta.decode_tables is not None:
        decode_out = paged_decode_attention(q[:nd], k_cache, v_cache, meta.decode_tables,
                                            meta.decode_context_lens, meta.block_size, scale)
        if not meta.prefills:
            return decode_out
    elif nd:
        k = k_cache[meta.decode_slots].transpose(1, 2)   # [B, kvh, C, hd]
        v = v_cache[meta.decode_slots].transpose(1, 2)
        decode_out = F.scaled_dot_product_attention(q[:nd].unsqueeze(2), k, v, attn_mask=meta.decode_mask,
                                                    scale=scale, enable_gqa=True).squeeze(2)  # [B, heads, hd]
        if not meta.prefills:
            return decode_out   # the common decode-only step: no output buffer to assemble
    out = torch.empty_like(q)
    if decode_out is not None:
        out[:nd] = decode_out
    for chunk in meta.prefills:
        s, n, c = chunk.token_start, chunk.num_tokens, chunk.context_len
        if meta.paged_kernel:
            out[s:s + n] = _chunk_through_kernel(q[s:s + n], k_cache, v_cache, chunk, meta.block_size, scale)
            continue
        qc = q[s:s + n].transpose(0, 1).unsqueeze(0)                      # [1, heads, n, hd]
        k = k_cache[chunk.context_slots].transpose(0, 1).unsqueeze(0)     # [1, kvh, c, hd]
        v = v_cache[chunk.context_slots].transpose(0, 1).unsqueeze(0)
        if c == n:   # a fresh prompt: plain causal attention
            o = F.scaled_dot_product_attention(qc, k, v, is_causal=True, scale=scale, enable_gqa=True)
        else:        # a chunk after cached context: query i sits at position c - n + i
            qpos = torch.arange(c - n, c, device=q.device)[:, None]
            mask = torch.arange(c, device=q.device)[None, :] <= qpos
            o = F.scaled_dot_product_attention(qc, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
        out[s:s + n] = o[0].transpose(0, 1)
    return out


def _chunk_through_kernel(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, chunk: PrefillChunk,
                          block_size: int, scale: float) -> torch.Tensor:
    """A prefill chunk's attention [n, heads, hd] by the decode kernel: query i is a decode over the
    first c - n + i + 1 positions, all through the sequence's block table (``chunk.kernel_tables``)."""
    if chunk.kernel_tables is None or chunk.kernel_lens is None:
        raise ValueError("paged_kernel prefill needs the chunk's kernel_tables and kernel_lens (set by the runner)")
    return paged_decode_attention(q, k_cache, v_cache, chunk.kernel_tables, chunk.kernel_lens, block_size, scale)
