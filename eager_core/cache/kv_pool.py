"""The KV tensors themselves: one pool of blocks for all layers, and batched block copies.

Layout ``[layers, 2 (k, v), (num_blocks + 1) * block_size, kv_heads, head_dim]`` (the last block is
scratch, see ``KVPool.scratch_block``): slot s of layer l is
``pool[l, :, s]``. Keeping every layer in one tensor lets a copy-on-write step copy a block in all
layers with one indexing operation.
"""

from __future__ import annotations

import torch

from eager_core.errors import ConfigError
from eager_core.model.config import ModelConfig

ZERO_AHEAD = 16   # blocks zeroed per first-use call (fewer, larger memsets)
DEFAULT_CPU_BUDGET = 2 << 30   # bytes; the pool is zero-filled, so it is resident memory


def block_bytes(cfg: ModelConfig, dtype: torch.dtype, block_size: int) -> int:
    """Bytes one block occupies over all layers (keys and values)."""
    elem = torch.empty((), dtype=dtype).element_size()
    return cfg.num_layers * 2 * block_size * cfg.num_kv_heads * cfg.head_dim * elem


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can take on ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        return None


def check_pool_fits(cfg: ModelConfig, dtype: torch.dtype, block_size: int, num_blocks: int,
                    device: torch.device) -> None:
    """Refuse, before allocating, a pool that the device's memory cannot hold (zero-filled, so all resident)."""
    need = (num_blocks + 1) * block_bytes(cfg, dtype, block_size)   # + the scratch block
    have = available_bytes(device)
    if have is not None and need > 0.9 * have:
        fits = max(0, int(0.9 * have) // block_bytes(cfg, dtype, block_size) - 1)
        raise ConfigError(f"num_kv_blocks={num_blocks} with block_size={block_size} needs {need / 2**30:.2f} GiB "
                          f"for the KV cache, {have / 2**30:.2f} GiB are available on {device}: at most "
                          f"{fits} blocks fit")


def default_num_blocks(cfg: ModelConfig, dtype: torch.dtype, block_size: int, device: torch.device,
                       max_tokens: int, memory_fraction: float | None = None) -> int:
    """Size the pool from free memory, capped at what ``max_tokens`` cached tokens can use.

    ``memory_fraction`` (vLLM's ``gpu_memory_utilization``) takes that share of the free memory
    instead of the defaults (half of a GPU's free memory; a quarter of the CPU's, at most 2 GiB).
    """
    if memory_fraction is not None:
        budget = int((available_bytes(device) or DEFAULT_CPU_BUDGET) * memory_fraction)
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * 0.5)
    else:
        try:
            with open("/proc/meminfo") as f:
                info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
            budget = min(int(info.get("MemAvailable", DEFAULT_CPU_BUDGET * 4) * 0.25), DEFAULT_CPU_BUDGET)
        except OSError:
            budget = DEFAULT_CPU_BUDGET
    by_memory = budget // block_bytes(cfg, dtype, block_size)
    by_need = -(-max_tokens // block_size)
    return max(1, min(by_memory, by_need))


class KVPool:
    """Owns the cache tensor; the block manager decides which slots a sequence may use."""

    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device):
        self.num_blocks, self.block_size = num_blocks, block_size
        # One block past the block manager's range is never handed out: the padding rows of a
        # static-shape decode step (decode_graphs.py) read and write only this scratch block.
        self.scratch_block = num_blocks
        # Zeroed before first use, not at allocation: masked-out positions multiply their values by a
        # probability of 0, which must never meet a NaN from uninitialised memory; but zeroing the
        # whole pool up front makes every page resident at start (2 GiB for the default pool on a
        # CPU, for a one-line prompt). The block manager hands out never-used blocks in increasing
        # order, so "every block below the high-water mark is zeroed" is all the state needed, and
        # untouched pages of a large allocation stay virtual until a request needs them.
        self.kv = torch.empty(cfg.num_layers, 2, (num_blocks + 1) * block_size, cfg.num_kv_heads, cfg.head_dim,
                              dtype=dtype, device=device)
        self.kv[:, :, num_blocks * block_size:].zero_()   # the scratch block
        self.zeroed_blocks = 0

    def ensure_zeroed(self, block: int) -> None:
        """Zero every block up to ``block`` that has never been zeroed (call before writing it)."""
        if block < self.zeroed_blocks:
            return
        end = min(max(block + 1, self.zeroed_blocks + ZERO_AHEAD), self.num_blocks)   # a few at a time
        bs = self.block_size
        self.kv[:, :, self.zeroed_blocks * bs:end * bs].zero_()
        self.zeroed_blocks = end

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy block src -> dst for every pair, in every layer, in one gather and one scatter."""
        if not pairs:
            return
        bs = self.block_size
        offsets = torch.arange(bs)
        src = (torch.tensor([s for s, _ in pairs])[:, None] * bs + offsets).flatten().to(self.kv.device)
        dst = (torch.tensor([d for _, d in pairs])[:, None] * bs + offsets).flatten().to(self.kv.device)
        self.kv.index_copy_(2, dst, self.kv.index_select(2, src))

    def zero_blocks(self, blocks: list[int]) -> None:
        """Overwrite every slot of ``blocks`` (all layers) with zeros.

        For blocks freed by a sequence whose values went non-finite: a later owner never reads a
        slot before writing it, but masked-out padding may still multiply one by a probability of 0.
        """
        if not blocks:
            return
        bs = self.block_size
        slots = (torch.tensor(blocks)[:, None] * bs + torch.arange(bs)).flatten().to(self.kv.device)
        self.kv.index_fill_(2, slots, 0)

    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()
