"""Joining torch.distributed, and failing cleanly when another rank fails.

Processes are started by ``torchrun`` (or by a test that sets the same environment variables:
RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, and LOCAL_RANK for GPUs). ``init_distributed`` joins
the default process group once per process: gloo for CPU tensors, NCCL for CUDA ones.

A rank that dies, hangs or raises where its peers wait in a collective: their collective fails
when the connection drops, or at the latest after the process group's timeout
(``EAGER_CORE_DIST_TIMEOUT`` seconds, default 300); ``collective`` turns that into a
``DistributedError`` that says so, instead of a hang or a bare backend trace. (Data-parallel calls
also pass errors along explicitly, so that peers learn *which* error: data_parallel.py.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from eager_core.errors import ConfigError, EagerError

TIMEOUT_ENV = "EAGER_CORE_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(EagerError):
    """Another rank failed, died or hung; the message names the rank (and its error) when known."""


def positive_seconds(env: str, default: float) -> float:
    """A positive number of seconds from environment variable ``env`` (``default`` when unset)."""
    raw = os.environ.get(env)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{env}={raw!r}: expected a positive number of seconds")
    return value


def timeout_seconds() -> float:
    """The collective timeout: ``$EAGER_CORE_DIST_TIMEOUT`` seconds, else DEFAULT_TIMEOUT_S."""
    return positive_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def rank_device(device: str | torch.device) -> torch.device:
    """``cuda`` without an index means this process's GPU: ``cuda:$LOCAL_RANK`` (torchrun's convention)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_distributed(device: str | torch.device = "cpu", timeout_s: float | None = None) -> torch.device:
    """Join the default process group if this process has not yet; return this rank's device.

    The backend is NCCL for a CUDA device and gloo otherwise. A group that is already up (the
    caller's own ``init_process_group``) is used as it is.
    """
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed support")
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device
    missing = [k for k in _ENV_VARS if k not in os.environ]
    if missing:
        raise ConfigError(f"no torch.distributed environment ({', '.join(missing)} unset): launch every process "
                          "with torchrun, e.g. `torchrun --nproc-per-node 2 tools/eval.py ...`")
    backend = "nccl" if device.type == "cuda" else "gloo"
    seconds = timeout_s if timeout_s is not None else timeout_seconds()
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"rank {os.environ['RANK']}: could not join the process group at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({backend}): "
                               f"{_first_line(e)}") from e
    atexit.register(_destroy)
    return device


def _destroy() -> None:
    with contextlib.suppress(Exception):   # at exit, a peer may already be gone: nothing left to do
        if dist.is_initialized():
            dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed collective (peer gone, timeout) into a DistributedError that names ``what``."""
    try:
        yield
    except RuntimeError as e:   # DistBackendError and gloo/NCCL errors are RuntimeErrors
        rank = dist.get_rank() if dist.is_initialized() else "?"
        raise DistributedError(
            f"rank {rank}: {what} failed, so another rank probably raised, exited or hung (see its own error; "
            f"collectives time out after {TIMEOUT_ENV}={timeout_seconds():g} s): {_first_line(e)}") from e
