"""Fixtures for the checkpoint / GGUF / tokenizer tests.

* ``smollm_gguf`` / ``smollm_dir``: the real default model's GGUF and a fresh conversion of it
  (once per session, into a temporary folder, so the tests always exercise the current converter).
* ``hf_gguf_tokenizer``: transformers' tokenizer loaded straight from the GGUF (the reference).
* ``make_tiny_gguf``: writes a small random Llama GGUF (see ``tiny_gguf.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_gguf import write_tiny_gguf

from eager_core.io.default_model import default_gguf_path
from eager_core.io.gguf import convert_gguf


@pytest.fixture
def make_tiny_gguf(tmp_path: Path):
    """``make_tiny_gguf(name="tiny.gguf", **kwargs) -> (path, hf_weights)`` in the test's tmp folder."""
    def make(name: str = "tiny.gguf", **kwargs) -> tuple[Path, dict[str, torch.Tensor]]:
        path = tmp_path / name
        return path, write_tiny_gguf(path, **kwargs)
    return make


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    return default_gguf_path()


@pytest.fixture(scope="session")
def smollm_dir(smollm_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_gguf(smollm_gguf, tmp_path_factory.mktemp("smollm") / "ckpt")


@pytest.fixture(scope="session")
def hf_gguf_tokenizer(smollm_gguf: Path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(smollm_gguf.parent), gguf_file=smollm_gguf.name)
