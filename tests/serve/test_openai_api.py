"""Chat and completions through the official openai client, checked against the offline LLM."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from eager_core import SamplingParams

HAS_LOGPROBS = any(f.name == "logprobs" for f in dataclasses.fields(SamplingParams))
needs_logprobs = pytest.mark.skipif(not HAS_LOGPROBS, reason="SamplingParams has no logprobs field yet")

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7 * 8?"}]


def stream_texts(stream) -> tuple[dict[int, str], dict[int, str | None], list]:
    """Reassemble a stream: text and finish_reason per choice index, and every chunk."""
    texts, reasons, chunks = {}, {}, []
    for ch in stream:
        chunks.append(ch)
        for c in ch.choices:
            piece = c.delta.content if hasattr(c, "delta") else c.text
            texts[c.index] = texts.get(c.index, "") + (piece or "")
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    return texts, reasons, chunks


def test_models_and_health(server, client, model_name):
    assert [m.id for m in client.models.list().data] == [model_name]
    h = server.health()
    assert {"status", "running", "waiting", "kv_blocks_free", "kv_blocks_total"} <= set(h)
    assert h["status"] == "ok" and h["kv_blocks_total"] > 0
    client.completions.create(model=model_name, prompt="a prompt long enough to fill a few KV blocks " * 3,
                              max_tokens=2)
    h = server.health()   # the prompt's full blocks stay cached (and count as free) after the request
    assert 0 < h["kv_blocks_cached"] <= h["kv_blocks_free"]


def test_greedy_chat_equals_offline_chat(client, offline, model_name):
    r = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=12, temperature=0)
    ref = offline.chat(CHAT, SamplingParams(temperature=0, max_tokens=12))[0]
    assert r.choices[0].message.content == ref.outputs[0].text
    assert r.choices[0].message.role == "assistant" and r.object == "chat.completion"
    assert r.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert r.usage.completion_tokens == len(ref.outputs[0].token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_greedy_completion_text_ids_and_list_of_one_equal_offline(client, offline, model_name):
    sp = SamplingParams(temperature=0, max_tokens=10)
    ref = offline.generate(["The capital of France is"], sp)[0]
    for prompt in ("The capital of France is", ["The capital of France is"], ref.prompt_token_ids,
                   [ref.prompt_token_ids]):
        r = client.completions.create(model=model_name, prompt=prompt, max_tokens=10, temperature=0)
        assert r.choices[0].text == ref.outputs[0].text, prompt
        assert r.usage.prompt_tokens == len(ref.prompt_token_ids)


def test_completion_default_max_tokens_is_16(client, model_name):
    r = client.completions.create(model=model_name, prompt="Once", temperature=0, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_streaming_equals_non_streaming(client, model_name, kind):
    args = dict(model=model_name, max_tokens=24, temperature=1.0, seed=3, n=2, extra_body={"ignore_eos": True})
    if kind == "chat":
        full = client.chat.completions.create(messages=CHAT, **args)
        stream = client.chat.completions.create(messages=CHAT, stream=True, stream_options={"include_usage": True}, **args)
        expected = {c.index: c.message.content for c in full.choices}
    else:
        full = client.completions.create(prompt="Hello there", **args)
        stream = client.completions.create(prompt="Hello there", stream=True, stream_options={"include_usage": True},
                                           **args)
        expected = {c.index: c.text for c in full.choices}
    texts, reasons, chunks = stream_texts(stream)
    assert texts == expected and set(reasons.values()) == {"length"}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens == 48
    assert all(ch.usage is None for ch in chunks[:-1])
    for ch in chunks:   # text is sent on character boundaries: never the first bytes of a character
        for c in ch.choices:
            piece = c.delta.content if kind == "chat" else c.text
            assert c.finish_reason or not (piece or "").endswith("\ufffd")


def test_n_with_seed_is_reproducible_and_equals_offline(client, offline, model_name):
    args = dict(model=model_name, prompt="Tell me a story", max_tokens=12, temperature=1.0, n=3, seed=11)
    a = [c.text for c in client.completions.create(**args).choices]
    b = [c.text for c in client.completions.create(**args).choices]
    ref = offline.generate(["Tell me a story"], SamplingParams(temperature=1.0, n=3, seed=11, max_tokens=12))[0]
    assert a == b == [c.text for c in ref.outputs]
    assert len(set(a)) > 1   # three different samples
    other = [c.text for c in client.completions.create(**dict(args, seed=12)).choices]
    assert other != a


def test_sampling_extensions_reach_the_sampler(client, offline, model_name):
    extra = {"top_k": 5, "min_p": 0.05, "ignore_eos": True}
    r = client.completions.create(model=model_name, prompt="abc", max_tokens=10, temperature=0.8, top_p=0.9, seed=4,
                                  extra_body=extra)
    ref = offline.generate(["abc"], SamplingParams(temperature=0.8, top_p=0.9, top_k=5, min_p=0.05, seed=4,
                                                   max_tokens=10, ignore_eos=True))[0]
    assert r.choices[0].text == ref.outputs[0].text


def _stop_string(text: str) -> str | None:
    for i in range(3, len(text) - 2):
        s = text[i:i + 2]
        if s.isascii() and s.isprintable() and s.strip():
            return s
    return None


def test_stop_strings_cut_the_text_in_both_modes(client, model_name):
    args = dict(model=model_name, prompt="Once upon a time", max_tokens=40, temperature=1.0, seed=21,
                extra_body={"ignore_eos": True})
    text = client.completions.create(**args).choices[0].text
    stop = _stop_string(text)
    assert stop is not None, text
    r = client.completions.create(stop=[stop, "\x00never"], **args)
    assert r.choices[0].text == text[:text.find(stop)] and r.choices[0].finish_reason == "stop"
    texts, reasons, _ = stream_texts(client.completions.create(stop=[stop, "\x00never"], stream=True, **args))
    assert texts[0] == r.choices[0].text and reasons[0] == "stop"


def test_chat_default_max_tokens_is_the_rest_of_the_context(client, model_name):
    ctx = client.models.list().data[0].model_dump()["max_model_len"]
    messages = [{"role": "user", "content": "a" * (ctx - 40)}]   # leaves room for ~20 tokens
    r = client.chat.completions.create(model=model_name, messages=messages, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens + r.usage.completion_tokens == ctx and r.usage.completion_tokens < 40


@needs_logprobs
def test_chat_logprobs_shape(client, offline, model_name):
    r = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    for tok in content:
        assert len(tok.top_logprobs) == 3
        values = [t.logprob for t in tok.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert tok.logprob == pytest.approx(values[0])          # greedy: the chosen token is the top one
        assert tok.token == tok.top_logprobs[0].token and isinstance(tok.bytes, list)
    ref = offline.chat(CHAT, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=3))[0].outputs[0]
    assert [t.logprob for t in content] == pytest.approx([e[t].logprob for t, e in zip(ref.token_ids, ref.logprobs)])
    plain = client.chat.completions.create(model=model_name, messages=CHAT, max_tokens=2, temperature=0)
    assert plain.choices[0].logprobs is None


@needs_logprobs
def test_completion_logprobs_shape_and_streaming(client, model_name):
    args = dict(model=model_name, prompt="Hello", max_tokens=8, temperature=1.0, seed=5, logprobs=2,
                extra_body={"ignore_eos": True})
    r = client.completions.create(**args)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 8
    assert all(len(t) <= 2 for t in lp.top_logprobs) and lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)
    if "\ufffd" not in r.choices[0].text:
        assert "".join(lp.tokens) == r.choices[0].text
    tokens, values = [], []
    for ch in client.completions.create(stream=True, **args):
        for c in ch.choices:
            if c.logprobs is not None:
                tokens += c.logprobs.tokens
                values += c.logprobs.token_logprobs
    assert tokens == lp.tokens and values == pytest.approx(lp.token_logprobs)


def test_raw_http_stream_format(server, model_name):
    body = {"model": model_name, "prompt": "Hi", "max_tokens": 3, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
