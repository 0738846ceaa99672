"""The one thread that drives ``LLMEngine.step``, and the per-request queues it feeds.

HTTP handlers run on the asyncio event loop and never step the engine: they ``submit`` a request
(which joins the running batch at the next step), read its queue, and ``abort`` it when the client
goes away. This thread loops: apply the aborts handed to it, then either wait (no work) or run one
step and hand each changed request's cumulative ``RequestOutput`` to its queue through
``loop.call_soon_threadsafe`` (asyncio queues are not thread-safe).

Why aborts go through this thread: ``LLMEngine.abort_request`` waits for a running step to end, and
calling it on the event loop would freeze every other stream for that long. Handed over, it runs
between two steps, so a request's blocks are free within one step of the abort.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

from eager_core.engine.llm_engine import LLMEngine
from eager_core.engine.outputs import RequestOutput

log = logging.getLogger("eager_core.serve")


@dataclass(frozen=True)
class StreamEnd:
    """Put in a queue instead of an output when its request cannot finish: why, and the status."""
    reason: str
    status: int = 503


class QueueFull(Exception):
    """--max-queue unfinished requests are already in the server."""


class ShuttingDown(Exception):
    """The server is stopping and takes no new requests."""


class EngineThread:
    """Owns the stepping thread; every method except ``run`` may be called from the event loop."""

    def __init__(self, engine: LLMEngine, max_queue: int | None = None):
        self.engine = engine
        self.max_queue = max_queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, asyncio.Queue] = {}   # unfinished requests (touched on the loop only)
        self._lock = threading.Lock()                   # guards _aborts and _live
        self._aborts: list[str] = []
        self._live: set[str] = set()                    # ids the engine holds, as this thread knows them
        self._stopping = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self.run, name="eager_core-engine", daemon=True)

    # --- the event loop's side ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    @property
    def num_unfinished(self) -> int:
        return len(self._queues)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def submit(self, request_id: str, prompt: Any, params: Any, controller: Any = None,
               controller_state: Any = None) -> asyncio.Queue:
        """Add a request; its outputs arrive on the returned queue. Raises QueueFull, ShuttingDown,
        or the engine's RequestError (then nothing was added)."""
        if self._stopping:
            raise ShuttingDown()
        if self.max_queue is not None and len(self._queues) >= self.max_queue:
            raise QueueFull()
        queue: asyncio.Queue = asyncio.Queue()
        # Registered before the engine sees it, so that its first output has somewhere to go (and
        # the stepping thread, which may finish it at once, never sees an id it does not know).
        self._queues[request_id] = queue
        with self._lock:
            self._live.add(request_id)
        try:
            self.engine.add_request(request_id, prompt, params, controller=controller,
                                    controller_state=controller_state)
        except BaseException:
            del self._queues[request_id]
            with self._lock:
                self._live.discard(request_id)
            raise
        self._wake.set()
        return queue

    def abort(self, request_id: str) -> None:
        """Stop delivering to the request now; the engine drops it before its next step."""
        if self._queues.pop(request_id, None) is None:
            return   # finished (or already aborted): nothing holds blocks any more
        with self._lock:
            self._aborts.append(request_id)
        self._wake.set()

    def stop(self) -> None:
        """Begin shutdown: refuse new requests, abort every request, end every stream. Safe to call
        from a signal handler; ``join`` waits for the thread."""
        # No lock, and the wake-up is posted to the loop: a signal handler runs in the main thread,
        # which may be inside this lock or inside Event.set (its lock) at that very moment.
        self._stopping = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)
        else:
            self._wake.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def health(self) -> dict:
        eng = self.engine
        return {"status": "stopping" if self._stopping else "ok", "running": eng.num_running,
                "waiting": eng.num_waiting, "unfinished": self.num_unfinished,
                "kv_blocks_free": eng.kv_blocks_free, "kv_blocks_total": eng.kv_blocks_total,
                "kv_blocks_cached": getattr(eng, "kv_blocks_cached", 0)}

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is None:     # aborted in the meantime: nobody reads it
                continue
            queue.put_nowait(out)
            if out.finished:
                del self._queues[out.request_id]

    def _end_all(self, end: StreamEnd) -> None:
        queues, self._queues = self._queues, {}
        for queue in queues.values():
            queue.put_nowait(end)

    # --- the stepping thread ------------------------------------------------------------------------

    def _post(self, fn: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop is closed: the server is gone, nobody is listening
            pass

    def run(self) -> None:
        engine = self.engine
        while True:
            with self._lock:
                aborts, self._aborts = self._aborts, []
                self._live.difference_update(aborts)
                stopping = self._stopping
            if aborts:
                engine.abort_request(aborts)
            if stopping:
                break
            if not engine.has_unfinished_requests():
                # Cleared after waking: a submit that set it after our check is seen at the top.
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except Exception:   # a bug, not a request's fault: fail what is in flight, keep serving
                log.exception("engine step failed; aborting the requests in flight")
                self._abort_everything()
                self._post(self._end_all, StreamEnd("internal error in the engine (see the server log)", 500))
                continue
            if outputs:
                with self._lock:
                    self._live.difference_update(o.request_id for o in outputs if o.finished)
                self._post(self._deliver, outputs)
        self._abort_everything()
        self._post(self._end_all, StreamEnd("the server is shutting down", 503))

    def _abort_everything(self) -> None:
        with self._lock:
            ids, self._live = list(self._live), set()
        try:
            self.engine.abort_request(ids)
        except Exception:
            log.exception("aborting the requests in flight failed")
