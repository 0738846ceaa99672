"""SamplingParams: what a request asks of the sampler, validated once at the door."""

from __future__ import annotations

from dataclasses import dataclass

from eager_core.errors import RequestError
from eager_core.validation import check_bool, check_int, check_list, check_number, is_int, named_arguments

MAX_LOGPROBS = 20   # vLLM's default cap: the top-k of the entropy gate covers it without a second pass


@named_arguments(RequestError)
@dataclass
class SamplingParams:
    """vLLM-style sampling parameters.

    temperature 0 means greedy. top_k 0 means off. top_p keeps the smallest set of most likely
    tokens whose probability reaches top_p (the token that crosses it is kept). min_p drops tokens
    whose probability is below min_p times the most likely one's. ``n`` samples share one prefill.
    ``seed`` fixes the request's random streams; None draws one from the engine's seed.
    ``logprobs`` (vLLM's meaning): for each generated token, the log-probabilities of the top
    ``logprobs`` tokens plus the chosen one, over the whole vocabulary and before temperature.
    ``prompt_logprobs``: the same for every prompt token (None for the first, which has no context).
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
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        e, f = RequestError, "SamplingParams."
        # Extreme values behave as their mathematical limits (docs/reliability.md): a tiny positive
        # temperature is greedy up to ties, a huge one uniform over what the filters keep; a top_k
        # above the vocabulary keeps everything; max_tokens beyond the context stops at the context.
        check_number(e, f + "temperature", self.temperature, lo=0)
        check_int(e, f + "top_k", self.top_k, lo=0)
        check_number(e, f + "top_p", self.top_p, lo=0, hi=1, lo_open=True)
        check_number(e, f + "min_p", self.min_p, lo=0, hi=1)
        check_int(e, f + "max_tokens", self.max_tokens, lo=1)
        check_int(e, f + "n", self.n, lo=1)
        check_int(e, f + "seed", self.seed, optional=True)
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is not None:
            self.stop = check_list(e, f + "stop", self.stop, lambda v: isinstance(v, str) and bool(v),
                                   "a string or a list of non-empty strings")
        if self.stop_token_ids is not None:
            self.stop_token_ids = check_list(e, f + "stop_token_ids", self.stop_token_ids,
                                             lambda v: is_int(v) and v >= 0, "a list of token ids >= 0")
        check_bool(e, f + "ignore_eos", self.ignore_eos)
        check_int(e, f + "logprobs", self.logprobs, lo=0, hi=MAX_LOGPROBS, optional=True)
        check_int(e, f + "prompt_logprobs", self.prompt_logprobs, lo=0, hi=MAX_LOGPROBS, optional=True)
