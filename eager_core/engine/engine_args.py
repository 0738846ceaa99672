"""EngineArgs: the constructor arguments of ``LLM`` and ``LLMEngine``, validated in one place.

Every check happens before anything is loaded or allocated, so a bad argument costs nothing and
its ``ConfigError`` names the argument as the caller wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eager_core.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _positive_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


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
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        if not _positive_int(self.block_size):
            raise ConfigError(f"block_size={self.block_size!r}: expected a positive integer")
        if self.num_kv_blocks is not None and not _positive_int(self.num_kv_blocks):
            raise ConfigError(f"num_kv_blocks={self.num_kv_blocks!r}: expected a positive integer or None")
        for name in ("max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected a positive integer")
        for name in ("enforce_eager", "enable_prefix_caching"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected True or False")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int)
                                               or isinstance(self.max_model_len, bool) or self.max_model_len < 2):
            raise ConfigError(f"max_model_len={self.max_model_len!r}: expected an integer >= 2 or None")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed={self.seed!r}: expected an integer")
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"device={self.device!r}: {e}") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={str(device)!r}: CUDA is not available (this torch build or machine has no GPU)")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
