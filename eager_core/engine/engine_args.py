"""EngineArgs: the constructor arguments of ``LLM`` and ``LLMEngine``, validated in one place.

Every check happens before anything is loaded or allocated, so a bad argument costs nothing and
its ``ConfigError`` names the argument as the caller wrote it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from eager_core.errors import ConfigError
from eager_core.validation import check_bool, check_choice, check_int

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class EngineArgs:
    ckpt: str | None = None          # an HF checkpoint folder; None: the default model (SmolLM2)
    dtype: str = "float32"
    device: str = "cpu"
    block_size: int = 16
    num_kv_blocks: int | None = None
    seed: int = 0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    enable_prefix_caching: bool = True   # vLLM's name and default: shared prompt prefixes are computed once

    def __post_init__(self) -> None:
        e = ConfigError
        if self.ckpt is not None and not isinstance(self.ckpt, (str, os.PathLike)):
            raise e(f"ckpt is a {type(self.ckpt).__name__}: expected a checkpoint folder path or None")
        check_choice(e, "dtype", self.dtype, DTYPES)
        # Sizes have no upper bound here: what the memory can hold is checked before allocating
        # (loader.py), so a huge value is refused with the number that would fit.
        check_int(e, "block_size", self.block_size, lo=1, hi=1 << 20)
        check_int(e, "num_kv_blocks", self.num_kv_blocks, lo=1, optional=True)
        for name in ("max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size"):
            check_int(e, name, getattr(self, name), lo=1)
        for name in ("enforce_eager", "enable_prefix_caching"):
            check_bool(e, name, getattr(self, name))
        check_int(e, "max_model_len", self.max_model_len, lo=2, optional=True)
        check_int(e, "seed", self.seed)
        if not isinstance(self.device, (str, torch.device)):
            raise e(f"device={self.device!r}: expected 'cpu', 'cuda' or 'cuda:<index>'")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as err:
            raise e(f"device={self.device!r}: {err}") from err
        if device.type not in ("cpu", "cuda"):
            raise e(f"device={self.device!r}: expected 'cpu', 'cuda' or 'cuda:<index>'")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise e(f"device={str(device)!r}: CUDA is not available (this torch build or machine has no GPU)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
