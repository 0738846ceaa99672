"""SamplingParams: what a request asks of the sampler, validated once at the door."""

from __future__ import annotations

import math
from dataclasses import dataclass

from eager_core.errors import RequestError

MAX_LOGPROBS = 20   # vLLM's default cap: the top-k of the entropy gate covers it without a second pass


@dataclass
class SamplingParams:
    """vLLM-style sampling parameters.

    temperature 0 means greedy. top_k 0 means off. top_p keeps the smallest set of most likely
    tokens whose probability reaches top_p (the token that crosses it is kept). min_p drops tokens
    whose probability is below min_p times the most likely one's. ``n`` samples share one prefill.
    ``seed`` fixes the request's random streams; None draws one from the engine's seed.
    ``logprobs`` (vLLM's meaning): for each generated token, the log-probabilities of the top
    ``logprobs`` tokens plus the chosen one, over the whole vocabulary and before temperature.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 16
    n: int = 1
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self) -> None:
        def bad(field: str, expected: str) -> RequestError:
            return RequestError(f"SamplingParams.{field}={getattr(self, field)!r}: expected {expected}")

        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise bad("temperature", "a finite number >= 0")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "an integer >= 0 (0 turns it off)")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise bad("top_p", "a number in (0, 1]")
        if not _is_number(self.min_p) or not 0 <= self.min_p <= 1:
            raise bad("min_p", "a number in [0, 1]")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise bad("max_tokens", "an integer >= 1")
        if not _is_int(self.n) or self.n < 1:
            raise bad("n", "an integer >= 1")
        if self.seed is not None and not _is_int(self.seed):
            raise bad("seed", "an integer or None")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is not None and not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop", "a list of non-empty strings")
        if self.stop_token_ids is not None and not all(_is_int(t) and t >= 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "a list of token ids >= 0")
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS):
            raise bad("logprobs", f"an integer in [0, {MAX_LOGPROBS}] or None")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
