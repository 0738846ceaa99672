"""The server's parts in-process, for what a live server cannot be made to do: an engine step that
raises, a handler bug, text boundaries chosen by hand."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from starlette.testclient import TestClient

from eager_core.engine.outputs import CompletionOutput, RequestOutput
from eager_core.errors import RequestError
from eager_core.serve.app import create_app
from eager_core.serve.engine_thread import EngineThread, QueueFull, StreamEnd
from eager_core.serve.errors import from_request_error
from eager_core.serve.prompts import ServedModel
from eager_core.serve.server import bind
from eager_core.serve.stream import safe_end


class FakeEngine:
    """Three verbs of LLMEngine: each step adds one character to every request; ``fail`` makes it raise."""

    kv_blocks_free = kv_blocks_total = 8
    num_running = num_waiting = 0

    def __init__(self):
        self.requests: dict[str, str] = {}
        self.aborted: list[str] = []
        self.fail = False
        self.lock = threading.Lock()

    def add_request(self, rid, prompt, params, controller=None, controller_state=None):
        if prompt == "bad":
            raise RequestError(f"request {rid!r}: SamplingParams.top_p=7: expected a number in (0, 1]")
        with self.lock:
            self.requests[rid] = ""

    def abort_request(self, ids):
        with self.lock:
            for rid in [ids] if isinstance(ids, str) else ids:
                if self.requests.pop(rid, None) is not None:
                    self.aborted.append(rid)

    def has_unfinished_requests(self):
        return bool(self.requests)

    def step(self):
        if self.fail:
            raise RuntimeError("boom")
        outs = []
        with self.lock:
            for rid in list(self.requests):
                text = self.requests[rid] = self.requests[rid] + "a"
                done = len(text) == 3
                outs.append(RequestOutput(rid, None, [1], [CompletionOutput(0, text, [97] * len(text),
                                                                            "length" if done else None)], done))
                if done:
                    del self.requests[rid]
        return outs


async def drain(queue: asyncio.Queue) -> list:
    items = []
    while not items or isinstance(items[-1], RequestOutput) and not items[-1].finished:
        items.append(await asyncio.wait_for(queue.get(), 5))
    return items


def test_engine_thread_delivers_aborts_and_survives_a_failing_step():
    async def scenario():
        engine = FakeEngine()
        et = EngineThread(engine, max_queue=2)
        et.start(asyncio.get_running_loop())
        try:
            items = await drain(et.submit("a", "p", None))
            assert [o.outputs[0].text for o in items] == ["a", "aa", "aaa"] and et.num_unfinished == 0
            with pytest.raises(RequestError):
                et.submit("b", "bad", None)
            assert et.num_unfinished == 0          # a refused request leaves nothing behind
            engine.fail = True
            q1, q2 = et.submit("c", "p", None), et.submit("d", "p", None)
            with pytest.raises(QueueFull):
                et.submit("e", "p", None)
            ends = [(await drain(q))[-1] for q in (q1, q2)]
            assert all(isinstance(e, StreamEnd) and e.status == 500 for e in ends)
            assert sorted(engine.aborted) == ["c", "d"] and not engine.requests
            engine.fail = False
            et.submit("f", "p", None)
            et.abort("f")
            for _ in range(100):
                if "f" in engine.aborted:
                    break
                await asyncio.sleep(0.01)
            assert "f" in engine.aborted and et.num_unfinished == 0
            engine.step = lambda: []          # from now on nothing ever finishes on its own
            q = et.submit("g", "p", None)
            et.stop()
            assert isinstance((await drain(q))[-1], StreamEnd) and "g" in engine.aborted
        finally:
            et.stop()
            await asyncio.to_thread(et.join, 5)

    asyncio.run(scenario())


def test_a_handler_bug_is_an_openai_shaped_500_without_traceback():
    class BrokenTokenizer:
        def encode(self, *args, **kwargs):
            raise RuntimeError("secret internal detail")

    app = create_app(None, ServedModel("m", BrokenTokenizer(), 100, 300, 4))
    client = TestClient(app, raise_server_exceptions=False)   # no lifespan: the engine is never reached
    r = client.post("/v1/completions", json={"prompt": "hello"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "secret" not in r.text and "Traceback" not in r.text


def test_request_errors_name_the_json_field():
    err = from_request_error(RequestError("request 'cmpl-1': SamplingParams.top_p=7: expected a number in (0, 1]"))
    assert (err.status, err.param, err.message) == (400, "top_p", "top_p=7: expected a number in (0, 1]")
    err = from_request_error(RequestError("EagerParams.theta=nan: expected a finite number"))
    assert err.param == "eager.theta" and err.message.startswith("eager.theta=")


@pytest.mark.parametrize("text, finished, holdback, end", [
    ("abc", False, 0, 3),
    ("ab\ufffd", False, 0, 2),            # the first byte of a character whose rest is not generated yet
    ("ab\ufffd\ufffd", False, 0, 2),
    ("ab\ufffd", True, 0, 3),             # finished: an invalid byte stays invalid, send it
    ("a\ufffdb", False, 0, 3),
    ("abcdef", False, 3, 3),              # a 4-character stop string may be starting in the last 3
    ("ab", False, 3, 0),
])
def test_safe_end(text, finished, holdback, end):
    assert safe_end(text, finished, holdback) == end


def test_the_listening_socket_is_tcp_without_nagle():
    # asyncio disables Nagle on accepted sockets only when their proto says TCP; with Nagle on, every
    # kept-alive response (headers, then body) waited ~40 ms for the client's delayed ACK.
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()
