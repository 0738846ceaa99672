"""Shared fixtures: tiny random checkpoints made once per test session.

The suite runs torch on one thread (OMP_NUM_THREADS=1, inherited by the processes tests spawn):
on a 2-core machine, OpenMP threads that wait for a peer descheduled by another process stall
every matmul for milliseconds, and several tests run processes side by side. Nothing here times
anything, so one thread only removes that variance.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
from pathlib import Path

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import make_tiny_checkpoint  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_ckpt_factory(tmp_path_factory):
    """tiny_ckpt_factory(arch, **overrides) -> checkpoint folder, cached per (arch, overrides)."""
    made: dict[tuple, Path] = {}

    def make(arch: str = "llama", **overrides) -> Path:
        key = (arch, tuple(sorted(overrides.items())))
        if key not in made:
            made[key] = make_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny_{arch}"), arch, **overrides)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_ckpt_factory) -> Path:
    return tiny_ckpt_factory("llama")


@pytest.fixture(scope="session")
def smol_llm():
    """The real default model (SmolLM2-135M-Instruct, float32), converted once into the cache."""
    from eager_core import LLM

    return LLM(None, num_kv_blocks=512)
