"""One round of an EAGer-layer method: one request per prompt, run to the end in one batched engine call.

Every method of ``runner.py`` is a sequence of such rounds (EAGer-init, then reallocation runs;
DeepConf's warm-up, then its final traces). A round adds every prompt's request with its step
controller and per-request state, steps the engine until all finish, and folds the engine's
statistics into the call's running total (``RunStats.then``). On any exception, ``KeyboardInterrupt``
included, the round's requests are aborted, so every block they held is back in the pool.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from eager_core.eager.eager_init import EagerState
from eager_core.eager.outputs import RoundResult
from eager_core.engine.llm_engine import LLMEngine
from eager_core.engine.stats import RunStats
from eager_core.errors import RequestError
from eager_core.sampling_params import SamplingParams

# (prompt index, its sampling params in this round, its controller state)
Plan = tuple[int, SamplingParams, EagerState]


class RoundRunner:
    """Runs rounds over already encoded prompts and keeps the statistics of all of them (``total``)."""

    def __init__(self, engine: LLMEngine, encoded: dict[int, dict],
                 on_step: Callable[[RunStats], None] | None = None):
        self.engine, self.encoded, self.on_step = engine, encoded, on_step
        self.total = RunStats()

    def run(self, rnd: int, plans: list[Plan], controller: Any) -> list[RoundResult]:
        """One engine run of the planned requests (prompts this process does not own are skipped)."""
        engine = self.engine
        states: dict[str, EagerState] = {}
        engine.stats = RunStats()
        ids: list[str] = []
        tag = uuid.uuid4().hex[:12]
        try:
            for i, sampling, st in plans:
                if i not in self.encoded:   # another process runs it
                    continue
                rid = f"eager-{tag}-{rnd}-{i}"
                try:
                    engine.add_request(rid, self.encoded[i], sampling, controller=controller, controller_state=st)
                except RequestError as e:   # name the prompt as the caller knows it
                    raise RequestError(str(e).replace(f"request {rid!r}", f"prompts[{i}]")) from None
                ids.append(rid)
                states[rid] = st
            on_step = self.on_step
            outs = engine.run_until_finished(ids, None if on_step is None else lambda s: on_step(self.total.then(s)))
        except BaseException:
            engine.abort_request(ids)
            raise
        finally:
            self.total = self.total.then(engine.stats)
        return [RoundResult(out, states[out.request_id]) for out in outs]
