"""Loading of the compiled extension eager_core._C and the choice of backend.

Invariants:
  * the extension is imported at most once per process (the import result is cached);
  * the "extension missing" warning is emitted at most once per process;
  * EAGER_CORE_DISABLE_EXT=1 is read at every call, so tests can force the PyTorch fallback
    without reloading anything; forcing it does not warn (it was asked for).
"""

from __future__ import annotations

import functools
import os
import warnings
from types import ModuleType

import torch

DISABLE_ENV = "EAGER_CORE_DISABLE_EXT"


@functools.lru_cache(maxsize=1)
def load_extension() -> ModuleType | None:
    """The imported eager_core._C (which registers torch.ops.eager_core.*), or None."""
    try:
        from eager_core import _C  # noqa: PLC0415 (optional compiled module)
    except ImportError:
        return None
    return _C


def extension_disabled() -> bool:
    """True when the user forces the PyTorch fallback through the environment."""
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    # lru_cache runs the body once per distinct message: a one-time warning without a flag.
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def backend(device: torch.device | str | None = None) -> str:
    """Which implementation entropy_gate uses for tensors on `device`.

    Returns "cuda" (compiled CUDA kernel), "cpp" (compiled CPU kernel) or "torch" (the PyTorch
    reference). With device=None: "cuda" if the extension has CUDA kernels and a GPU is
    visible, else the CPU answer. Does not warn; see resolve_backend.
    """
    if extension_disabled():
        return "torch"
    ext = load_extension()
    if ext is None:
        return "torch"
    if device is None:
        return "cuda" if ext.with_cuda and torch.cuda.is_available() else "cpp"
    dev = torch.device(device)
    if dev.type == "cpu":
        return "cpp"
    if dev.type == "cuda" and ext.with_cuda:
        return "cuda"
    return "torch"


def resolve_backend(device: torch.device) -> str:
    """backend(device), warning once when the fallback is used because the build is missing."""
    chosen = backend(device)
    if chosen == "torch" and not extension_disabled():
        if load_extension() is None:
            _warn_once("eager_core._C (the compiled entropy gate) is not built or not importable; "
                       "using the slower PyTorch reference. Build it with "
                       "`pip install --no-build-isolation -e .`.")
        else:
            _warn_once(f"eager_core._C has no kernel for {device.type} tensors (built without "
                       "CUDA?); using the PyTorch reference there.")
    return chosen
