"""The ``eager`` extension: one EAGer-init tree (or the parallel baseline) per request, equal to LLM.eager."""

from __future__ import annotations

import httpx
import pytest

from eager_core import EagerParams

PROMPT = [(50 + 7 * j) % 250 for j in range(7)]    # token ids, as the engine tests use
SPEC = {"theta": 0.5, "max_sequences": 6, "dynamic_threshold": False, "seed": 5}
REF_PARAMS = EagerParams(theta=0.5, max_sequences=6, max_tokens=8, dynamic_threshold=False, seed=5)


@pytest.fixture(scope="module")
def reference(offline):
    ref = offline.eager([PROMPT], REF_PARAMS, method="eager-init")[0]
    assert ref.num_sequences > 2   # it did branch
    return ref


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_eager_completion_is_the_llm_eager_tree(server, client, model_name, reference):
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=8, extra_body={"eager": SPEC})
    body = r.model_dump()
    assert [c["text"] for c in body["choices"]] == [s.text for s in reference.sequences]
    assert [c["index"] for c in body["choices"]] == list(range(reference.num_sequences))
    tree = [c["eager"] for c in body["choices"]]
    assert [t["parent"] for t in tree] == [s.parent for s in reference.sequences]
    assert [t["branch_step"] for t in tree] == [s.branch_step for s in reference.sequences]
    assert [t["branch_entropy"] for t in tree] == [s.branch_entropy for s in reference.sequences]
    assert tree[0]["parent"] is None and all(t["parent"] is not None for t in tree[1:])
    summary = body["eager"]
    assert summary["num_sequences"] == reference.num_sequences
    assert summary["generated_tokens"] == reference.generated_tokens == r.usage.completion_tokens
    events = summary["branch_events"]
    assert [(e["parent"], e["child"], e["step"]) for e in events] == [
        (e["parent"], e["child"], e["step"]) for e in reference.branch_events]
    # one event per branch, and it says where the branch's choice came from
    assert [(e["parent"], e["step"], e["entropy"]) for e in events] == [
        (tree[e["child"]]["parent"], tree[e["child"]]["branch_step"], tree[e["child"]]["branch_entropy"])
        for e in events]


def test_eager_stream_delivers_every_branch(server, model_name):
    body = {"model": model_name, "prompt": PROMPT, "max_tokens": 8, "eager": SPEC}
    full = post(server, "/v1/completions", body).json()
    texts, tree, last = {}, {}, None
    with httpx.stream("POST", server.url + "/v1/completions", json=dict(body, stream=True), timeout=60) as r:
        import json
        for line in r.iter_lines():
            if not line or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            last = chunk
            for c in chunk["choices"]:
                texts[c["index"]] = texts.get(c["index"], "") + c["text"]
                if "eager" in c:
                    tree[c["index"]] = c["eager"]
    assert texts == {c["index"]: c["text"] for c in full["choices"]}
    assert tree == {c["index"]: c["eager"] for c in full["choices"]}
    assert last["choices"] == [] and last["eager"] == full["eager"]


def test_eager_chat(server, client, offline, model_name):
    messages = [{"role": "user", "content": "Pick a number."}]
    r = client.chat.completions.create(model=model_name, messages=messages, max_tokens=8, extra_body={"eager": SPEC})
    ref = offline.eager([messages], REF_PARAMS, method="eager-init")[0]
    assert [c.message.content for c in r.choices] == [s.text for s in ref.sequences]
    assert r.model_dump()["eager"]["num_sequences"] == ref.num_sequences


def test_parallel_method_is_the_baseline(server, client, offline, model_name):
    spec = {"method": "parallel", "max_sequences": 4, "seed": 9}
    r = client.completions.create(model=model_name, prompt=PROMPT, max_tokens=6, temperature=0.7,
                                  extra_body={"eager": spec})
    ref = offline.eager([PROMPT], EagerParams(max_sequences=4, max_tokens=6, temperature=0.7, seed=9),
                        method="parallel")[0]
    assert [c.text for c in r.choices] == [s.text for s in ref.sequences]
    body = r.model_dump()
    assert body["eager"]["num_sequences"] == 4 and body["eager"]["branch_events"] == []
    assert [c["eager"]["parent"] for c in body["choices"]] == [s.parent for s in ref.sequences]   # siblings of the root
    assert r.usage.completion_tokens == ref.generated_tokens


@pytest.mark.parametrize("spec, param", [
    ({"theta": "high"}, "eager.theta"),
    ({"max_sequences": 0}, "eager.max_sequences"),
    ({"max_sequences": 1000}, "eager.max_sequences"),
    ({"method": "eager-adapt"}, "eager.method"),
    ({"dynamic_threshold": 1}, "eager.dynamic_threshold"),
    ({"thetaa": 1.0}, "eager.thetaa"),
    ({"top_k_entropy": 0}, "eager.top_k_entropy"),
    ("yes", "eager"),
])
def test_bad_eager_fields_are_400_naming_the_field(server, model_name, spec, param):
    r = post(server, "/v1/completions", {"model": model_name, "prompt": "x", "eager": spec})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error", err
    assert param.split(".")[-1] in err["message"]


def test_eager_with_n_is_refused(server, model_name):
    r = post(server, "/v1/completions", {"model": model_name, "prompt": "x", "n": 2, "eager": {}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
