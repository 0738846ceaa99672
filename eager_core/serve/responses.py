"""OpenAI's response and chunk shapes, built from the engine's ``RequestOutput``.

Only plain dicts come out (FastAPI and the SSE writer serialise them). Two extensions ride along
for EAGer requests: each choice has ``"eager": {parent, branch_step, branch_entropy}`` and the
response has ``"eager": {generated_tokens, num_sequences, branch_events}``.

Token accounting: ``usage.completion_tokens`` counts a shared prefix once, i.e. the sum over
choices of ``len(token_ids) - branch_step`` (a branch shares its first ``branch_step`` tokens with
its parent and the KV cache holds them once). For plain requests that is the sum of lengths.
"""

from __future__ import annotations

import math
from typing import Any

from eager_core.engine.outputs import CompletionOutput, RequestOutput
from eager_core.io.tokenizer import Tokenizer
from eager_core.serve.protocol import ParsedRequest

# The engine's finish reasons in OpenAI's vocabulary ("budget": EAGer's token budget ran out).
FINISH = {"stop": "stop", "length": "length", "budget": "length"}


def finish_reason(reason: str | None) -> str | None:
    return None if reason is None else FINISH.get(reason, reason)


def usage(parsed: ParsedRequest, outputs: list[CompletionOutput]) -> dict:
    completion = sum(len(c.token_ids) - (c.branch_step or 0) for c in outputs)
    return {"prompt_tokens": parsed.prompt_tokens, "completion_tokens": completion,
            "total_tokens": parsed.prompt_tokens + completion}


def choice_eager(c: CompletionOutput) -> dict:
    return {"parent": c.parent, "branch_step": c.branch_step or 0, "branch_entropy": c.branch_entropy}


def eager_summary(parsed: ParsedRequest, outputs: list[CompletionOutput]) -> dict:
    """The tree's totals and its branch events: EAGer-init's own record when the request kept it
    (step, entropy, threshold and the two tokens), else one event per non-root choice. The parallel
    baseline has none: its samples fork from the prompt, never at an uncertain token."""
    state_events = getattr(parsed.controller_state, "events", None)
    if parsed.eager == "parallel":
        events = []
    elif state_events is not None:
        events = [{"parent": e["parent"], "child": e["child"], "step": e["step"], "entropy": e["entropy"],
                   "threshold": e.get("threshold"), "tokens": list(e.get("tokens", []))} for e in state_events]
    else:
        events = [{"parent": c.parent, "child": c.index, "step": c.branch_step or 0, "entropy": c.branch_entropy}
                  for c in outputs if c.parent is not None]
    return {"generated_tokens": usage(parsed, outputs)["completion_tokens"], "num_sequences": len(outputs),
            "branch_events": events}


# --- log-probabilities -------------------------------------------------------------------------------

def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: vocabulary character -> the byte it stands for."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTE_DECODER = _gpt2_byte_decoder()


def token_bytes(tokenizer: Tokenizer, token_id: int, text: str) -> list[int]:
    """The token's bytes. A byte-level token that holds part of a character decodes to U+FFFD;
    its vocabulary spelling then gives the real bytes (what OpenAI's ``bytes`` field is for)."""
    if "\ufffd" in text:
        spelled = tokenizer.id_to_token(token_id) or ""
        if spelled and all(ch in BYTE_DECODER for ch in spelled):
            return [BYTE_DECODER[ch] for ch in spelled]
    return list(text.encode("utf-8"))


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -9999.0   # JSON has no -Infinity; OpenAI uses -9999 too


def _token_text(tokenizer: Tokenizer, token_id: int, lp: Any) -> str:
    text = getattr(lp, "decoded_token", None)
    return text if text is not None else tokenizer.decode([token_id], skip_special_tokens=False)


def _ranked(entry: dict, top: int) -> list[tuple[int, Any]]:
    return sorted(entry.items(), key=lambda kv: kv[1].rank)[:top]


def chat_logprobs(tokenizer: Tokenizer, token_ids: list[int], entries: list[dict], top: int) -> dict:
    """Chat's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}``."""
    content = []
    for tid, entry in zip(token_ids, entries):
        lp = entry[tid]
        text = _token_text(tokenizer, tid, lp)
        content.append({"token": text, "logprob": _finite(lp.logprob), "bytes": token_bytes(tokenizer, tid, text),
                        "top_logprobs": [{"token": (t := _token_text(tokenizer, i, x)), "logprob": _finite(x.logprob),
                                          "bytes": token_bytes(tokenizer, i, t)} for i, x in _ranked(entry, top)]})
    return {"content": content}


def completion_logprobs(tokenizer: Tokenizer, token_ids: list[int], entries: list[dict], top: int,
                        offset: int = 0) -> dict:
    """Completions' ``logprobs``: parallel lists, ``text_offset`` counted from ``offset``."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for tid, entry in zip(token_ids, entries):
        text = _token_text(tokenizer, tid, entry[tid])
        out["tokens"].append(text)
        out["token_logprobs"].append(_finite(entry[tid].logprob))
        out["top_logprobs"].append({_token_text(tokenizer, i, x): _finite(x.logprob) for i, x in _ranked(entry, top)})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def logprobs_of(kind: str, tokenizer: Tokenizer, parsed: ParsedRequest, c: CompletionOutput, start: int = 0,
                offset: int = 0) -> dict | None:
    """The choice's log-probabilities from token ``start`` on, in the endpoint's shape (None if not asked)."""
    entries = getattr(c, "logprobs", None)
    if parsed.top_logprobs is None or entries is None:
        return None
    ids, entries = c.token_ids[start:], entries[start:]
    if kind == "chat":
        return chat_logprobs(tokenizer, ids, entries, parsed.top_logprobs)
    return completion_logprobs(tokenizer, ids, entries, parsed.top_logprobs, offset)


# --- whole responses -------------------------------------------------------------------------------

def full_response(kind: str, rid: str, created: int, model: str, parsed: ParsedRequest, out: RequestOutput,
                  tokenizer: Tokenizer) -> dict:
    """The non-streaming body of /v1/chat/completions or /v1/completions."""
    choices = []
    for c in out.outputs:
        choice: dict[str, Any] = {"index": c.index}
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": c.text}
        else:
            choice["text"] = c.text
        choice["logprobs"] = logprobs_of(kind, tokenizer, parsed, c)
        choice["finish_reason"] = finish_reason(c.finish_reason)
        if c.error:
            choice["error"] = c.error
        if parsed.eager:
            choice["eager"] = choice_eager(c)
        choices.append(choice)
    body = {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion", "created": created,
            "model": model, "choices": choices, "usage": usage(parsed, out.outputs)}
    if parsed.eager:
        body["eager"] = eager_summary(parsed, out.outputs)
    return body


def chunk(kind: str, rid: str, created: int, model: str, choices: list[dict], **extra: Any) -> dict:
    return {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created, "model": model, "choices": choices, **extra}
