"""Errors in OpenAI's JSON shape, and the handlers that make every failure one of them.

Every response that is not a success is ``{"error": {"message", "type", "param", "code"}}`` with a
matching HTTP status, so the official clients raise their usual exception classes
(``BadRequestError``, ``AuthenticationError``, ``NotFoundError``, ``RateLimitError``...). Client
input never yields a 500, and no response ever carries a traceback: an unexpected exception is
logged on the server's stderr (by uvicorn) and answered with a generic 500.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from eager_core.errors import RequestError

# The "type" OpenAI uses for each status (its clients key on the status, people read the type).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
               500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    """An error to answer with: HTTP status, message, and OpenAI's param / code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ERROR_TYPES.get(status, "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


# A RequestError from SamplingParams / EagerParams names the field as "SamplingParams.top_p=..." or
# "EagerParams.theta=...". Clients wrote "top_p" and "eager.theta", so the message and param say that.
_FIELD = re.compile(r"\b(SamplingParams|EagerParams)\.(\w+)")


def from_request_error(exc: RequestError, eager: bool = False) -> APIError:
    """A RequestError of the engine or the params classes as a 400 naming the JSON field."""
    message = " ".join(str(exc).split())
    match = _FIELD.search(message)
    param = None
    if match:
        cls, field = match.groups()
        param = f"eager.{field}" if cls == "EagerParams" else field
        if eager and field in ("n",):      # an eager request's sequences are eager.max_sequences
            param = "eager.max_sequences"
        message = _FIELD.sub(lambda m: ("eager." if m.group(1) == "EagerParams" else "") + m.group(2), message)
    message = re.sub(r"^request '[^']*': ", "", message)   # the id is ours, not the client's
    return APIError(400, message, param=param)


def install_handlers(app: FastAPI) -> None:
    """Route every exception that can escape a handler to an OpenAI-shaped response."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return from_request_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Routes read the raw body themselves, so this only fires for framework-level checks.
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        return APIError(400, f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}",
                        param=".".join(loc) or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if status == 404:
            message = f"no route {request.method} {request.url.path}"
        return APIError(status, message, code=None).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises it after this response is sent, so uvicorn logs the traceback on stderr.
        return APIError(500, "internal server error (see the server log)").response()
