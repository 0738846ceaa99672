"""Reading a request's queue: the whole result, or server-sent events as the text grows.

The engine's outputs are cumulative (each holds every choice's whole text so far), so a stream is
the difference per choice between what the client has and the newest text; when several outputs
are waiting, only the newest matters. Text leaves only at a safe boundary:

* a trailing U+FFFD is held back: it is the first bytes of a character whose other bytes are in
  tokens not generated yet, and the finished character will replace it;
* with stop strings, the last ``len(longest stop) - 1`` characters are held back: a stop string
  that completes later removes its beginning from the final text, and that must not have been sent.

Everything left is sent with the choice's finish_reason. EAGer branches appear as new choice
indices whenever the engine forks them; a branch's first chunk carries the prefix it shares with
its parent (its text so far), plus its place in the tree.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from eager_core.engine.outputs import RequestOutput
from eager_core.io.tokenizer import Tokenizer
from eager_core.serve.engine_thread import StreamEnd
from eager_core.serve.errors import APIError
from eager_core.serve.protocol import ParsedRequest
from eager_core.serve.responses import choice_eager, chunk, eager_summary, finish_reason, logprobs_of, usage

DISCONNECT_POLL_S = 0.25   # how often a waiting handler asks whether its client is still there


class OutputReader:
    """The next item of a request's queue, or None once the client has disconnected.

    One ``queue.get()`` task is kept across polls: cancelling a get that has just completed
    (what ``wait_for`` does on a timeout) could drop an output, the final one included.
    """

    def __init__(self, queue: asyncio.Queue, is_disconnected: Callable[[], Awaitable[bool]]):
        self.queue, self.is_disconnected = queue, is_disconnected
        self._get: asyncio.Task | None = None
        self._checked = time.monotonic()

    async def next(self) -> RequestOutput | StreamEnd | None:
        while True:
            # Asked on a clock, not only when the queue is quiet: a running request fills it every step.
            if time.monotonic() - self._checked >= DISCONNECT_POLL_S:
                self._checked = time.monotonic()
                if await self.is_disconnected():
                    return None
            if self._get is None:
                self._get = asyncio.ensure_future(self.queue.get())
            done, _ = await asyncio.wait({self._get}, timeout=DISCONNECT_POLL_S)
            if done:
                item, self._get = self._get.result(), None
                while isinstance(item, RequestOutput) and not self.queue.empty():
                    item = self.queue.get_nowait()   # cumulative: the newest one says it all
                return item

    def close(self) -> None:
        if self._get is not None:
            self._get.cancel()
            self._get = None


async def collect(reader: OutputReader) -> RequestOutput | None:
    """Wait for the final output (None: the client left). A StreamEnd becomes its APIError."""
    try:
        while True:
            item = await reader.next()
            if item is None:
                return None
            if isinstance(item, StreamEnd):
                raise APIError(item.status, item.reason)
            if item.finished:
                return item
    finally:
        reader.close()


def failure(out: RequestOutput) -> APIError | None:
    """A request whose every choice failed is an error response, not a choice list.
    Not fitting in the KV pool is the request's size (400); anything else is the server's (500)."""
    if not out.outputs or not all(c.finish_reason == "error" for c in out.outputs):
        return None
    message = out.outputs[0].error or "generation failed"
    if "KV pool too small" in message:
        return APIError(400, f"the request does not fit in the server's KV cache: {message}", code="request_too_large")
    return APIError(500, f"generation failed: {message}")


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


@dataclass
class _Cursor:
    text: int = 0          # characters of the choice's text already sent
    tokens: int = 0        # tokens whose log-probabilities were already sent
    offset: int = 0        # completions' text_offset of the next token
    done: bool = False


def safe_end(text: str, finished: bool, holdback: int) -> int:
    """How much of ``text`` may be sent now (see the module docstring)."""
    if finished:
        return len(text)
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    return max(0, min(end, len(text) - holdback))


async def events(kind: str, rid: str, created: int, model: str, parsed: ParsedRequest, reader: OutputReader,
                 tokenizer: Tokenizer) -> AsyncIterator[str]:
    """The SSE body of a streaming request, ``data: [DONE]`` last."""
    stop = parsed.sampling.stop or []
    holdback = max((len(s) for s in stop), default=1) - 1
    cursors: dict[int, _Cursor] = {}
    extra = {"usage": None} if parsed.include_usage else {}
    final = None
    try:
        while final is None:
            item = await reader.next()
            if item is None:
                return
            if isinstance(item, StreamEnd):
                yield sse(APIError(item.status, item.reason).body())
                yield sse("[DONE]")
                return
            choices = []
            for c in item.outputs:
                cur = cursors.get(c.index)
                first = cur is None
                cur = cursors.setdefault(c.index, _Cursor())
                if cur.done:
                    continue
                end = safe_end(c.text, c.finished, holdback)
                if end <= cur.text and not c.finished and not first:
                    continue
                delta = c.text[cur.text:end] if end > cur.text else ""
                choice = {"index": c.index}
                if kind == "chat":
                    choice["delta"] = {"role": "assistant", "content": delta} if first else {"content": delta}
                else:
                    choice["text"] = delta
                lp = logprobs_of(kind, tokenizer, parsed, c, cur.tokens, cur.offset)
                choice["logprobs"] = lp
                if lp is not None:
                    cur.tokens = len(c.token_ids)
                    cur.offset += sum(len(t) for t in lp.get("tokens", []))
                choice["finish_reason"] = finish_reason(c.finish_reason)
                if c.error:
                    choice["error"] = c.error
                if parsed.eager and first:
                    choice["eager"] = choice_eager(c)
                cur.text, cur.done = max(cur.text, end), c.finished
                choices.append(choice)
            if item.finished:
                final = item
                err = failure(item)
                if err is not None:
                    yield sse(err.body())
                    yield sse("[DONE]")
                    return
            if choices:
                yield sse(chunk(kind, rid, created, model, choices, **extra))
        tail = {}
        if parsed.include_usage:
            tail["usage"] = usage(parsed, final.outputs)
        if parsed.eager:
            tail["eager"] = eager_summary(parsed, final.outputs)
        if tail:
            yield sse(chunk(kind, rid, created, model, [], **tail))
        yield sse("[DONE]")
    finally:
        reader.close()
