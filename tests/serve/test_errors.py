"""Every error class in OpenAI's shape: 400 (field value, JSON type, bad JSON, too long), 401, 404, 429.

No response may be a 500 for client input, or carry a traceback.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from serve_helpers import LONG, run_server

SHAPE = {"message", "type", "param", "code"}


def post(url: str, body, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url, content=content, headers={"content-type": "application/json", **(headers or {})},
                      timeout=30)


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == SHAPE and isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    return err


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "x", "n": 1.5}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "x", "n": 10_000}, "n"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "seed": "1"}, "seed"),
    ("/v1/completions", {"prompt": "x", "stop": 5}, "stop"),
    ("/v1/completions", {"prompt": "x", "stop": [""]}, "stop"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "x", "stream_options": {"include_usage": "no"}}, "stream_options.include_usage"),
    ("/v1/completions", {"prompt": "x", "top_k": -5}, "top_k"),
    ("/v1/completions", {"prompt": "x", "min_p": 2}, "min_p"),
    ("/v1/completions", {"prompt": "x", "ignore_eos": "true"}, "ignore_eos"),
    ("/v1/completions", {"prompt": "x", "presence_penalty": 0.5}, "presence_penalty"),
    ("/v1/completions", {"prompt": "x", "model": 3}, "model"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", {"prompt": [1, -2]}, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {}, "prompt"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "logprobs": 1}, "logprobs"),
])
def test_invalid_fields_are_400_naming_the_field(server, path, body, param):
    err = error_of(post(server.url + path, body), 400)
    assert err["param"] == param and err["type"] == "invalid_request_error", err


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe", b"null", b"[" * 200_000,
                                 b'{"prompt": "a", "temperature": NaN}', b'{"prompt": "a", "top_p": Infinity}'])
def test_malformed_bodies_are_400(server, raw):
    for path in ("/v1/completions", "/v1/chat/completions"):
        error_of(post(server.url + path, raw), 400)


def test_openai_client_raises_bad_request(client, model_name):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_name, prompt="x", temperature=-1)
    assert e.value.body["param"] == "temperature" and "temperature" in e.value.body["message"]


def test_unknown_model_is_404(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"
    error_of(httpx.get(server.url + "/v1/models/gpt-4o", timeout=10), 404)


def test_unknown_route_and_method_keep_the_shape(server):
    error_of(httpx.get(server.url + "/v2/nothing", timeout=10), 404)
    error_of(httpx.get(server.url + "/v1/completions", timeout=10), 405)


def test_prompt_longer_than_the_context_is_400(server, client, model_name):
    ctx = client.models.list().data[0].model_dump()["max_model_len"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=model_name, prompt=[65] * ctx, max_tokens=1)
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "a" * ctx}])
    assert e.value.body["code"] == "context_length_exceeded" and e.value.body["param"] == "messages"
    assert server.health()["unfinished"] == 0


@pytest.fixture(scope="module")
def guarded(long_ckpt, tmp_path_factory):
    with run_server(long_ckpt, tmp_path_factory.mktemp("guarded"), "--api-key", "s3cret", "--max-queue", "1",
                    "--served-model-name", "tiny-guarded") as s:
        yield s


def test_api_key_is_required_on_v1(guarded):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        err = error_of(httpx.get(guarded.url + "/v1/models", headers=headers, timeout=10), 401)
        assert err["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=guarded.url + "/v1", api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny-guarded", prompt="x", max_tokens=1)
    good = openai.OpenAI(base_url=guarded.url + "/v1", api_key="s3cret", max_retries=0, timeout=30)
    assert good.completions.create(model="tiny-guarded", prompt="x", max_tokens=2).usage.completion_tokens >= 1
    assert httpx.get(guarded.url + "/health", timeout=10).json()["status"] == "ok"   # probes need no key


def test_a_full_queue_is_429_until_it_drains(guarded):
    client = openai.OpenAI(base_url=guarded.url + "/v1", api_key="s3cret", max_retries=0, timeout=30)
    body = {"model": "tiny-guarded", "prompt": "x", "max_tokens": LONG, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", guarded.url + "/v1/completions", json=body, timeout=30,
                      headers={"Authorization": "Bearer s3cret"}) as r:
        lines = r.iter_lines()                     # kept: dropping the iterator closes the stream
        next(lines)                                # it runs
        assert guarded.health()["running"] == 1
        with pytest.raises(openai.RateLimitError) as e:
            client.completions.create(model="tiny-guarded", prompt="y", max_tokens=2)
        assert e.value.status_code == 429 and e.value.body["code"] == "rate_limit_exceeded"
    guarded.wait_idle(2.0)                          # closing the stream aborted it
    assert client.completions.create(model="tiny-guarded", prompt="y", max_tokens=2).choices[0].finish_reason
