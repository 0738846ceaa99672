"""The prompt of a request as the engine takes it: ``{"prompt": text, "prompt_token_ids": ids}``.

Completions encode their text as ``LLM.generate`` does (``add_special_tokens=True``); chat renders
the checkpoint's chat template and encodes without special tokens, exactly as ``LLM.chat`` does
(the rendered template already holds any BOS it wants). So a greedy request to the server and
the same call offline see the same token ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eager_core.errors import CheckpointError, RequestError
from eager_core.io.tokenizer import Tokenizer
from eager_core.serve.errors import APIError


@dataclass
class ServedModel:
    """What request parsing needs to know about the loaded model."""
    name: str
    tokenizer: Tokenizer
    max_model_len: int
    vocab_size: int
    max_num_seqs: int


def json_type(value: Any) -> str:
    """The JSON name of a decoded value, for messages such as 'expected a number, got a string'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def completion_prompt(body: dict, model: ServedModel) -> dict:
    """``prompt``: a string, an array of token ids, or an array holding one of those."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]   # a batch of one: the shape the openai client sends for a single prompt
    if isinstance(prompt, str):
        if not prompt:
            raise APIError(400, "prompt: empty prompt", param="prompt")
        ids = model.tokenizer.encode(prompt, add_special_tokens=True)
        return _checked({"prompt": prompt, "prompt_token_ids": ids}, model, "prompt")
    if _is_token_list(prompt):
        if any(t < 0 or t >= model.vocab_size for t in prompt):
            raise APIError(400, f"prompt: token ids must be integers in [0, {model.vocab_size})", param="prompt")
        return _checked({"prompt": None, "prompt_token_ids": list(prompt)}, model, "prompt")
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise APIError(400, f"prompt: this server takes one prompt per request (got {len(prompt)}); "
                            "send one request each", param="prompt")
    raise APIError(400, f"prompt: expected a string or an array of token ids, got {json_type(prompt)}"
                        + (" (empty)" if prompt == [] else ""), param="prompt")


def chat_prompt(body: dict, model: ServedModel) -> dict:
    """``messages`` rendered with the checkpoint's chat template, then encoded."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, f"messages: expected a non-empty array of messages, got {json_type(messages)}",
                       param="messages")
    clean = [_message(m, i) for i, m in enumerate(messages)]
    try:
        text = model.tokenizer.apply_chat_template(clean, add_generation_prompt=True)
    except CheckpointError:
        raise APIError(400, "this model has no chat template: use /v1/completions with a plain prompt",
                       param="messages", code="no_chat_template") from None
    except RequestError as e:
        raise APIError(400, f"messages: the chat template failed: {' '.join(str(e).split())}",
                       param="messages") from None
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    return _checked({"prompt": text, "prompt_token_ids": ids}, model, "messages")


def _message(m: Any, i: int) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise APIError(400, f"{where}: expected an object with role and content, got {json_type(m)}", param=where)
    role = m.get("role")
    if not isinstance(role, str) or not role:
        raise APIError(400, f"{where}.role: expected a string, got {json_type(role)}", param=f"{where}.role")
    content = m.get("content")
    if content is None:      # an assistant turn that only called tools has no content
        content = ""
    elif isinstance(content, list):   # content parts: only text ones can reach a text-only model
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise APIError(400, f"{where}.content[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                                    "are supported", param=f"{where}.content")
            texts.append(part["text"])
        content = "".join(texts)
    elif not isinstance(content, str):
        raise APIError(400, f"{where}.content: expected a string or an array of text parts, got {json_type(content)}",
                       param=f"{where}.content")
    out = {"role": role, "content": content}
    if isinstance(m.get("name"), str):
        out["name"] = m["name"]
    return out


def _checked(prompt: dict, model: ServedModel, param: str) -> dict:
    n = len(prompt["prompt_token_ids"])
    if n == 0:
        raise APIError(400, f"{param}: the prompt has no tokens", param=param)
    if n >= model.max_model_len:   # at least one position must be left to generate into
        raise APIError(400, f"{param}: the prompt has {n} tokens, but the model's context is "
                            f"{model.max_model_len} tokens (prompt + completion)",
                       param=param, code="context_length_exceeded")
    return prompt
