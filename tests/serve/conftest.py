"""The server under test: tools/serve.py in a subprocess, on a port the OS chose, on a tiny model.

One server serves every test that does not need special flags (session fixture ``server``); the
tests of --api-key / --max-queue and of SIGTERM start their own. The model is the suite's tiny
random Llama with a long context (8192), so that a request can be made to run for seconds and be
seen to be cut short (disconnect, shutdown, a full queue).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import NUM_KV_BLOCKS, Server, run_server  # noqa: E402


@pytest.fixture(scope="session")
def long_ckpt(tiny_ckpt_factory) -> Path:
    return tiny_ckpt_factory("llama", max_position_embeddings=8192)


@pytest.fixture(scope="session")
def server(long_ckpt, tmp_path_factory) -> Iterator[Server]:
    with run_server(long_ckpt, tmp_path_factory.mktemp("serve")) as s:
        yield s
        assert "Traceback" not in s.output(), s.output()[-3000:]


@pytest.fixture(scope="session")
def offline(long_ckpt):
    """The same model offline, in this process: what the server's answers must equal."""
    import torch

    from eager_core import LLM

    torch.set_num_threads(1)
    return LLM(str(long_ckpt), num_kv_blocks=NUM_KV_BLOCKS)


@pytest.fixture(scope="session")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60, max_retries=0)


@pytest.fixture(scope="session")
def model_name(server) -> str:
    return httpx.get(server.url + "/v1/models", timeout=5).json()["data"][0]["id"]
