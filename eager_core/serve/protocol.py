"""Request bodies -> what the engine runs: checked fields, the prompt, SamplingParams or EAGer.

The values themselves are checked by ``SamplingParams`` / ``EagerParams`` (one set of rules for
the library and the server); this module checks the JSON types first, so that a string where a
number belongs is a 400 naming the field rather than a Python error. Unknown top-level fields are
ignored, as OpenAI's own server ignores fields it does not know; fields it knows but this engine
cannot honour are refused when set to anything but their neutral value.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from eager_core.eager.params import EagerParams
from eager_core.errors import RequestError
from eager_core.sampling_params import SamplingParams
from eager_core.serve.errors import APIError, from_request_error
from eager_core.serve.prompts import ServedModel, chat_prompt, completion_prompt, json_type

COMPLETION_DEFAULT_MAX_TOKENS = 16   # OpenAI's default for /v1/completions
CHAT_MAX_TOKENS_CAP = 4096           # chat default: the rest of the context, at most this
EAGER_METHODS = ("eager-init", "parallel")
EAGER_FIELDS = ("method", "theta", "max_sequences", "top_k_entropy", "dynamic_threshold", "no_branch_window", "seed")
# field -> values that mean "not used"; any other value is refused rather than silently ignored
UNSUPPORTED = {"frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},), "echo": (False,),
               "suffix": ("",), "best_of": (1,), "tools": ([],), "functions": ([],), "tool_choice": ("none",),
               "response_format": ({"type": "text"},)}
HAS_LOGPROBS = any(f.name == "logprobs" for f in dataclasses.fields(SamplingParams))

INT, NUMBER, BOOL, STR, OBJECT = (int,), (int, float), (bool,), (str,), (dict,)
_NAMES = {INT: "an integer", NUMBER: "a number", BOOL: "a boolean", STR: "a string", OBJECT: "an object"}


@dataclass
class ParsedRequest:
    kind: str                          # "chat" or "completion"
    prompt: dict                       # {"prompt": text or None, "prompt_token_ids": ids}
    sampling: SamplingParams
    controller: Any = None             # EAGer-init's step controller (eager-init requests)
    controller_state: Any = None       # its EagerState: the branch events of the response come from it
    eager: str | None = None           # None, "eager-init" or "parallel"
    stream: bool = False
    include_usage: bool = False
    top_logprobs: int | None = None    # None: no logprobs; k: the k most likely tokens per position

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt["prompt_token_ids"])


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    except RecursionError:   # e.g. 100,000 nested '[': the parser's recursion limit, still the client's input
        raise APIError(400, "the request body is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {json_type(body)}")
    return body


def field(body: dict, name: str, kinds: tuple, default: Any = None, prefix: str = "") -> Any:
    """``body[name]`` if it has one of the JSON types ``kinds`` (null means absent), else a 400."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kinds) and (kinds == BOOL or not isinstance(value, bool))
    if not ok:
        raise APIError(400, f"{prefix}{name}: expected {_NAMES[kinds]}, got {json_type(value)}", param=prefix + name)
    return value


def check_model(body: dict, served: ServedModel) -> None:
    model = field(body, "model", STR)
    if model is not None and model != served.name:
        raise APIError(404, f"The model '{model}' does not exist: this server serves '{served.name}'",
                       param="model", code="model_not_found")


def parse_request(kind: str, body: dict, served: ServedModel) -> ParsedRequest:
    """A chat or completion body -> a ParsedRequest, or an APIError naming the field at fault."""
    check_model(body, served)
    for name, neutral in UNSUPPORTED.items():
        if body.get(name) is not None and body[name] not in neutral:
            raise APIError(400, f"{name} is not supported by this server", param=name, code="unsupported_parameter")
    prompt = chat_prompt(body, served) if kind == "chat" else completion_prompt(body, served)
    stream = bool(field(body, "stream", BOOL, False))
    options = field(body, "stream_options", OBJECT, {})
    include_usage = bool(field(options, "include_usage", BOOL, False, prefix="stream_options."))
    top = _logprobs(kind, body)
    room = served.max_model_len - len(prompt["prompt_token_ids"])
    default_max = COMPLETION_DEFAULT_MAX_TOKENS if kind == "completion" else min(room, CHAT_MAX_TOKENS_CAP)
    max_tokens = _max_tokens(body, default_max)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, (str, list)):
        raise APIError(400, f"stop: expected a string or an array of strings, got {json_type(stop)}", param="stop")
    top_k = field(body, "top_k", INT, 0)
    # Fields the sampler applies on every path (EagerParams has no place for them).
    extras = dict(top_p=field(body, "top_p", NUMBER, 1.0), top_k=0 if top_k == -1 else top_k,   # vLLM: -1 = off
                  min_p=field(body, "min_p", NUMBER, 0.0), stop=stop,
                  ignore_eos=field(body, "ignore_eos", BOOL, False))
    if top is not None:
        extras["logprobs"] = top
    parsed = ParsedRequest(kind, prompt, SamplingParams(), stream=stream, include_usage=include_usage,
                           top_logprobs=top)
    temperature = field(body, "temperature", NUMBER)
    seed = field(body, "seed", INT)
    n = field(body, "n", INT)
    try:
        if body.get("eager") is not None:
            _eager(parsed, body, served, dict(extras, max_tokens=max_tokens), temperature, seed, n)
        else:
            parsed.sampling = SamplingParams(temperature=1.0 if temperature is None else temperature, n=1 if n is None else n,
                                             seed=seed, max_tokens=max_tokens, **extras)
    except RequestError as e:
        err = from_request_error(e, eager=parsed.eager is not None)
        if kind == "chat" and err.param == "logprobs":
            err.param, err.message = "top_logprobs", err.message.replace("logprobs", "top_logprobs", 1)
        raise err from None
    if parsed.sampling.n > served.max_num_seqs:
        # The engine never splits a family, so n siblings must fit in one step's batch.
        name = "eager.max_sequences" if parsed.eager else "n"
        raise APIError(400, f"{name}={parsed.sampling.n}: this server runs at most {served.max_num_seqs} "
                            "sequences at once (--max-num-seqs)", param=name)
    return parsed


def _max_tokens(body: dict, default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens"):   # the newer name wins when both are sent
        value = field(body, name, INT)
        if value is not None:
            if value < 1:
                raise APIError(400, f"{name}={value}: expected an integer >= 1", param=name)
            return value
    return default


def _logprobs(kind: str, body: dict) -> int | None:
    """How many top tokens to report per position (None: no logprobs), in each endpoint's spelling."""
    if kind == "chat":
        wanted = field(body, "logprobs", BOOL, False)
        top = field(body, "top_logprobs", INT)
        if top is not None and not wanted:
            raise APIError(400, "top_logprobs: needs logprobs: true", param="top_logprobs")
        top = (top or 0) if wanted else None
        param = "logprobs"
    else:
        top = field(body, "logprobs", INT)
        param = "logprobs"
    if top is not None and not HAS_LOGPROBS:
        raise APIError(400, f"{param}: this engine version does not compute log-probabilities", param=param,
                       code="unsupported_parameter")
    return top


def _eager(parsed: ParsedRequest, body: dict, served: ServedModel, extras: dict,
           temperature: float | None, seed: int | None, n: int | None) -> None:
    """The ``eager`` extension: one EAGer-init tree, or its full-parallel baseline, per request."""
    spec = field(body, "eager", OBJECT)
    unknown = sorted(set(spec) - set(EAGER_FIELDS))
    if unknown:
        raise APIError(400, f"eager.{unknown[0]}: unknown field (known: {', '.join(EAGER_FIELDS)})",
                       param=f"eager.{unknown[0]}")
    method = field(spec, "method", STR, "eager-init", prefix="eager.")
    if method not in EAGER_METHODS:
        raise APIError(400, f"eager.method={method!r}: expected one of {', '.join(EAGER_METHODS)}",
                       param="eager.method")
    if n not in (None, 1):
        raise APIError(400, "n: an eager request has one tree; its size is eager.max_sequences", param="n")
    kinds = dict(theta=NUMBER, max_sequences=INT, top_k_entropy=INT, dynamic_threshold=BOOL,
                 no_branch_window=INT, seed=INT)
    kwargs = {k: field(spec, k, t, prefix="eager.") for k, t in kinds.items()}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "seed" not in kwargs and seed is not None:
        kwargs["seed"] = seed     # the top-level seed, when the extension names none
    if temperature is not None:   # else EagerParams' own default (0.6, the paper's)
        kwargs["temperature"] = temperature
    params = EagerParams(max_tokens=extras.pop("max_tokens"), **kwargs)
    parsed.eager = method
    if params.max_sequences > served.max_num_seqs:
        raise APIError(400, f"eager.max_sequences={params.max_sequences}: this server runs at most "
                            f"{served.max_num_seqs} sequences at once (--max-num-seqs)", param="eager.max_sequences")
    if method == "parallel":   # M independent samples: EAGer's baseline is plain n=M sampling
        parsed.sampling = dataclasses.replace(params.sampling_params(n=params.max_sequences), **extras)
        return
    # The same plan LLMEngine.add_request makes of EagerParams (the tree LLM.eager returns), with
    # the sampler's extra fields added; keeping the state lets the response report branch events.
    sampling, parsed.controller, parsed.controller_state = params.request_plan(served.tokenizer)
    parsed.sampling = dataclasses.replace(sampling, **extras)
