"""Fixtures of the reliability tests: one torch thread and tiny engines."""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model gains nothing from threads; on a shared 2-core machine they made tests ~50x
    slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_llm(tiny_ckpt):
    """make_llm(**kwargs) -> a fresh LLM on the tiny checkpoint (block size 4, a small pool by default)."""
    def make(**kwargs) -> LLM:
        kwargs.setdefault("num_kv_blocks", 64)
        kwargs.setdefault("block_size", 4)
        return LLM(str(tiny_ckpt), **kwargs)
    return make

