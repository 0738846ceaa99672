"""EngineArgs: the constructor arguments of ``LLM`` and ``LLMEngine``, validated in one place.

Every check happens before anything is loaded or allocated, so a bad argument costs nothing and
its ``ConfigError`` names the argument as the caller wrote it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from eager_core.errors import ConfigError
from eager_core.validation import check_bool, check_choice, check_int, check_number

# vLLM constructor arguments that mean nothing for this engine: accepted, with a warning, and ignored.
# (None changes a result: there is no remote code, no download, no swap space, no CUDA all-reduce
# choice, and prefill is always chunked.)
VLLM_IGNORED = {"trust_remote_code", "download_dir", "swap_space", "cpu_offload_gb", "revision", "tokenizer_revision",
                "tokenizer_mode", "load_format", "disable_custom_all_reduce", "max_seq_len_to_capture",
                "disable_log_stats", "enable_chunked_prefill", "max_logprobs", "distributed_executor_backend"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# vLLM's spellings: "auto" is the checkpoint's own dtype (resolved when the config is read).
DTYPE_ALIASES = {"float": "float32", "half": "float16", "bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


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
    quantization: str | None = None      # vLLM's name: "int8" stores linear weights as int8 (model/quantized.py)
    tokenizer: str | None = None         # vLLM's name: a folder to take the tokenizer from (default: ckpt)
    gpu_memory_utilization: float | None = None   # vLLM's name: share of free memory for the KV pool

    def __post_init__(self) -> None:
        e = ConfigError
        if self.ckpt is not None and not isinstance(self.ckpt, (str, os.PathLike)):
            raise e(f"ckpt is a {type(self.ckpt).__name__}: expected a checkpoint folder path or None")
        if isinstance(self.dtype, str):
            self.dtype = DTYPE_ALIASES.get(self.dtype, self.dtype)
        check_choice(e, "dtype", self.dtype, [*DTYPES, "auto"])
        if self.tokenizer is not None and not isinstance(self.tokenizer, (str, os.PathLike)):
            raise e(f"tokenizer is a {type(self.tokenizer).__name__}: expected a folder path or None")
        check_number(e, "gpu_memory_utilization", self.gpu_memory_utilization, lo=0, hi=1, lo_open=True, optional=True)
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
        if self.quantization is not None:
            check_choice(e, "quantization", self.quantization, ("int8",))
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

    @classmethod
    def from_vllm(cls, ckpt: str | None = None, model: str | None = None, seed: int | None = 0,
                  extra: dict[str, Any] | None = None, **kwargs: Any) -> "EngineArgs":
        """EngineArgs from ``LLM``'s own arguments plus vLLM's names: ``model`` (= ``ckpt``), ``seed=None``
        (= 0), and vLLM arguments that mean nothing here (``trust_remote_code``, ``download_dir``, ...),
        accepted with one warning each. An unknown argument is a ConfigError, not silently ignored."""
        if model is not None:
            if ckpt is not None and ckpt != model:
                raise ConfigError(f"model={model!r} and ckpt={ckpt!r}: pass one checkpoint folder")
            ckpt = model
        unknown = sorted(set(extra or {}) - VLLM_IGNORED)
        if unknown:
            raise ConfigError(f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                              f"(vLLM arguments accepted without effect: {', '.join(sorted(VLLM_IGNORED))})")
        for name in sorted(extra or {}):
            warnings.warn(f"{name}={extra[name]!r} has no effect in eager_core (a vLLM argument, accepted for "
                          f"compatibility; results do not depend on it)", stacklevel=3)
        return cls(ckpt, seed=0 if seed is None else seed, **kwargs)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]
