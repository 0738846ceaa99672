"""Requests that leave early, a server that is told to stop, and many clients at once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from eager_core import SamplingParams
from serve_helpers import LONG, SERVE, run_server


def test_a_stream_closed_mid_way_frees_its_blocks(server, model_name):
    body = {"model": model_name, "prompt": "x", "max_tokens": LONG, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        next(lines)
        h = server.health()
        assert h["running"] == 1 and h["kv_blocks_free"] < h["kv_blocks_total"]
    t0 = time.monotonic()
    server.wait_idle(2.0)       # LONG tokens would take many seconds: only the abort explains this
    assert time.monotonic() - t0 < 2.0


def test_a_non_streaming_client_that_gives_up_frees_its_blocks(server, model_name):
    body = {"model": model_name, "prompt": "x", "max_tokens": LONG, "ignore_eos": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/v1/completions", json=body, timeout=0.5)
    server.wait_idle(2.0)


def test_many_concurrent_streams_equal_offline(server, offline, model_name):
    """48 greedy streaming requests, 16 at a time, joining and leaving the running batch."""
    prompts = [f"Request {i}: " + "abcdefgh"[: 1 + i % 8] * (1 + i % 3) for i in range(48)]
    max_tokens = [4 + (i * 5) % 13 for i in range(48)]

    async def one(client: openai.AsyncOpenAI, sem: asyncio.Semaphore, i: int) -> str:
        async with sem:
            stream = await client.completions.create(model=model_name, prompt=prompts[i], max_tokens=max_tokens[i],
                                                     temperature=0, stream=True)
            return "".join([c.choices[0].text async for c in stream if c.choices])

    async def run() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        sem = asyncio.Semaphore(16)
        try:
            return await asyncio.wait_for(asyncio.gather(*(one(client, sem, i) for i in range(48))), 120)
        finally:
            await client.close()

    got = asyncio.run(run())
    for i, text in enumerate(got):
        ref = offline.generate([prompts[i]], SamplingParams(temperature=0, max_tokens=max_tokens[i]))[0]
        assert text == ref.outputs[0].text, i
    server.wait_idle(2.0)


def test_sigterm_while_streaming_exits_0_quickly(long_ckpt, tmp_path):
    with run_server(long_ckpt, tmp_path) as s:
        body = {"prompt": "x", "max_tokens": LONG, "ignore_eos": True, "stream": True}
        started, events = threading.Event(), []

        def client() -> None:
            try:
                with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=30) as r:
                    for line in r.iter_lines():
                        if line:
                            events.append(line)
                            started.set()
            except httpx.HTTPError as e:   # the server may close the connection: that is fine too
                events.append(repr(e))
            finally:
                started.set()

        t = threading.Thread(target=client, daemon=True)
        t.start()
        assert started.wait(30)
        t0 = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        rc = s.proc.wait(10)
        elapsed = time.monotonic() - t0
        t.join(10)
        assert rc == 0, s.output()[-3000:]
        assert elapsed < 5, elapsed
        assert "Traceback" not in s.output()
        # the stream ended early, with an error event and [DONE] (not a silent cut or a completed text)
        payloads = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
        assert events[-1] == "data: [DONE]" and "error" in payloads[-1], events[-3:]
        assert payloads[-1]["error"]["message"] == "the server is shutting down"


@pytest.mark.parametrize("flags, named", [(["--port", "{busy}"], "--port"), (["--max-queue", "0"], "--max-queue"),
                                          (["--threads", "0"], "--threads")])
def test_bad_start_flags_are_one_line_errors(server, long_ckpt, flags, named):
    port = server.url.rsplit(":", 1)[1]
    cmd = [sys.executable, str(SERVE), "--ckpt", str(long_ckpt), *[f.format(busy=port) for f in flags]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and named in r.stderr, r.stderr
