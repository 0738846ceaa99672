"""The FastAPI application: OpenAI's routes over one ``EngineThread``.

Handlers only parse, submit, read the request's queue and abort: the engine is stepped by its own
thread (engine_thread.py), so a request that arrives while others decode joins their batch at the
next step. A request is aborted whenever its handler stops reading before it finished: the client
disconnected (streaming or not), the stream was cancelled, or the server is shutting down.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from eager_core.errors import RequestError
from eager_core.serve.engine_thread import EngineThread, QueueFull, ShuttingDown
from eager_core.serve.errors import APIError, from_request_error, install_handlers
from eager_core.serve.prompts import ServedModel
from eager_core.serve.protocol import ParsedRequest, parse_json, parse_request
from eager_core.serve.responses import full_response
from eager_core.serve.stream import OutputReader, collect, events, failure


class _AbortingStream(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends: finished, client gone, cancelled."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


class _RequireKey:
    """Everything under /v1 needs ``Authorization: Bearer <key>``; /health stays open for probes.
    Plain ASGI (not BaseHTTPMiddleware), so it cannot get between a stream and its disconnect."""

    def __init__(self, app: Any, expected: bytes):
        self.app, self.expected = app, expected

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                    code="invalid_api_key").response()
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(engine_thread: EngineThread, served: ServedModel, api_key: str | None = None) -> FastAPI:
    """The app; its lifespan starts the engine thread and, on shutdown, aborts everything and stops it."""
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine_thread.start(asyncio.get_running_loop())
        yield
        engine_thread.stop()
        await asyncio.to_thread(engine_thread.join, 10.0)

    app = FastAPI(title="eager_core", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)

    if api_key:
        app.add_middleware(_RequireKey, expected=f"Bearer {api_key}".encode())

    def model_card() -> dict:
        return {"id": served.name, "object": "model", "created": started, "owned_by": "eager_core",
                "max_model_len": served.max_model_len}

    @app.get("/health")
    async def health() -> dict:
        return engine_thread.health()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict:
        if model != served.name:
            raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate("completion", request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate("chat", request)

    async def generate(kind: str, request: Request) -> Response:
        parsed = parse_request(kind, parse_json(await request.body()), served)
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        reader = OutputReader(submit(rid, parsed), request.is_disconnected)
        created = int(time.time())
        if parsed.stream:
            body = events(kind, rid, created, served.name, parsed, reader, served.tokenizer)
            return _AbortingStream(body, on_close=lambda: engine_thread.abort(rid))
        try:
            out = await collect(reader)
        finally:
            engine_thread.abort(rid)   # a no-op once it finished; else the client left or we failed
        if out is None:
            return Response(status_code=499)   # the client is gone; nobody reads this
        err = failure(out)
        if err is not None:
            raise err
        return JSONResponse(full_response(kind, rid, created, served.name, parsed, out, served.tokenizer))

    def submit(rid: str, parsed: ParsedRequest) -> asyncio.Queue:
        try:
            return engine_thread.submit(rid, parsed.prompt, parsed.sampling, controller=parsed.controller,
                                        controller_state=parsed.controller_state)
        except QueueFull:
            raise APIError(429, f"the server is full: {engine_thread.max_queue} requests are already "
                                "queued or running (--max-queue); retry later", code="rate_limit_exceeded") from None
        except ShuttingDown:
            raise APIError(503, "the server is shutting down") from None
        except RequestError as e:
            raise from_request_error(e, eager=parsed.eager is not None) from None

    return app
