"""What a request brings in and what ends a sequence: prompt encoding, params -> controller, stop checks.

Pure functions of the request and the tokenizer, so the rules are written once and ``LLMEngine``
keeps only the step loop. Every refusal is a ``RequestError`` naming the request and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eager_core.engine.controller import SAMPLING, StepController
from eager_core.engine.sequence import Sequence
from eager_core.errors import RequestError
from eager_core.io.tokenizer import Tokenizer
from eager_core.sampling_params import SamplingParams
from eager_core.validation import clean_text


class ScoreParams:
    """Parameters of a scoring request: compute the logits of every prompt position, generate nothing.

    The final ``RequestOutput.prompt_logits`` is float32 ``[len(prompt), vocab]``; row i predicts
    token i + 1. (``LLM.logits`` is one such request.)
    """


@dataclass
class RequestPlan:
    sampling: SamplingParams
    controller: StepController
    controller_state: Any = None
    score_only: bool = False


def plan_request(params: Any, tokenizer: Tokenizer, controller: StepController | None = None,
                 controller_state: Any = None) -> RequestPlan:
    """Which sampling parameters and step controller a request runs with.

    ``SamplingParams``: plain sampling (or the given controller). ``ScoreParams``: scoring only.
    Anything with ``request_plan(tokenizer)`` (``EagerParams``) brings its own controller and
    per-request state, so the engine never imports the layers above it.
    """
    if isinstance(params, SamplingParams):
        return RequestPlan(params, controller or SAMPLING, controller_state)
    if isinstance(params, ScoreParams):
        return RequestPlan(SamplingParams(max_tokens=1), SAMPLING, score_only=True)
    if hasattr(params, "request_plan"):
        sampling, plan_ctl, plan_state = params.request_plan(tokenizer)
        return RequestPlan(sampling, controller or plan_ctl, plan_state if controller_state is None else controller_state)
    raise RequestError(f"params is a {type(params).__name__}, expected SamplingParams or EagerParams")


def encode_prompt(tokenizer: Tokenizer, vocab_size: int, max_model_len: int, request_id: str,
                  prompt: Any) -> tuple[str | None, list[int]]:
    """(text or None, token ids) of a prompt given as text, token ids or ``{"prompt", "prompt_token_ids"}``.

    Text is encoded as ``LLM.generate`` encodes it (with the tokenizer's special tokens).
    """
    where = f"request {request_id!r}"
    text = None
    if isinstance(prompt, dict):
        text, ids = prompt.get("prompt"), prompt.get("prompt_token_ids")
        if ids is None:
            raise RequestError(f"{where}: a dict prompt needs 'prompt_token_ids'")
        if text is not None:
            if not isinstance(text, str):
                raise RequestError(f"{where}: 'prompt' is a {type(text).__name__}, expected a string")
            text = clean_text(text)
    elif isinstance(prompt, str):
        if not prompt:
            raise RequestError(f"{where}: empty prompt")
        text = clean_text(prompt)   # lone surrogates -> U+FFFD (docs/reliability.md)
        ids = tokenizer.encode(text, add_special_tokens=True)
    else:
        ids = prompt
    if not isinstance(ids, (list, tuple)):
        raise RequestError(f"{where}: prompt is a {type(prompt).__name__}, expected a string or a list of token ids")
    if not ids:
        raise RequestError(f"{where}: empty prompt (no tokens)")
    if any(not isinstance(t, int) or isinstance(t, bool) or t < 0 or t >= vocab_size for t in ids):
        raise RequestError(f"{where}: prompt token ids must be integers in [0, {vocab_size})")
    if len(ids) >= max_model_len:
        raise RequestError(f"{where}: prompt has {len(ids)} tokens, the model's context is {max_model_len}")
    return text, list(ids)


def stop_reason(seq: Sequence, tokenizer: Tokenizer, max_model_len: int) -> str | None:
    """Why ``seq`` ends after its newest token ("stop", "length"), or None. A stop string also sets
    ``seq.stop_text``: the output excludes the stop string."""
    token = seq.token_ids[-1]
    params = seq.request.params
    if not params.ignore_eos and token in tokenizer.eos_token_ids:
        return "stop"
    if params.stop_token_ids and token in params.stop_token_ids:
        return "stop"
    if params.stop:
        text = tokenizer.decode(seq.generated_ids)
        hits = [text.find(s) for s in params.stop if s in text]
        if hits:
            seq.stop_text = text[:min(hits)]
            return "stop"
    if seq.num_generated >= params.max_tokens or len(seq.token_ids) >= max_model_len:
        return "length"
    return None
