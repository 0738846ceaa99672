"""Log-probabilities of generated tokens (SamplingParams.logprobs), against a fresh prefill's logits."""

from __future__ import annotations

import math

import pytest
import torch

from eager_core import RequestError, SamplingParams
from kv_helpers import make_llm
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)


@pytest.mark.parametrize("k", [0, 1, 5])
def test_logprobs_are_the_raw_distribution_of_each_chosen_token(tiny_ckpt, k):
    llm = make_llm(tiny_ckpt, 64)
    prompt = [5, 6, 7, 8]
    params = SamplingParams(temperature=1.3, top_k=40, max_tokens=6, n=3, seed=4, logprobs=k, ignore_eos=True)
    out = llm.generate(prompt_token_ids=[prompt], params=params)[0]
    plain = llm.generate(prompt_token_ids=[prompt], params=SamplingParams(
        temperature=1.3, top_k=40, max_tokens=6, n=3, seed=4, ignore_eos=True))[0]
    assert [c.token_ids for c in out.outputs] == [c.token_ids for c in plain.outputs]   # asking changes nothing
    assert plain.outputs[0].logprobs is None and plain.outputs[0].cumulative_logprob is None
    for c in out.outputs:
        ref = torch.log_softmax(llm.logits(prompt + c.token_ids), dim=-1)   # untempered, whole vocabulary
        assert len(c.logprobs) == len(c.token_ids)
        total = 0.0
        for pos, (token, entry) in enumerate(zip(c.token_ids, c.logprobs)):
            row = ref[len(prompt) - 1 + pos]
            order = row.argsort(descending=True).tolist()
            assert set(order[:k]) <= set(entry) and set(entry) - set(order[:k]) <= {token}
            assert len(entry) == k + (token not in order[:k])   # the top k, plus the chosen one when outside
            for t, lp in entry.items():
                assert lp.rank == order.index(t) + 1
                assert abs(lp.logprob - float(row[t])) < 1e-4
                assert lp.decoded_token == llm.tokenizer.decode([t], skip_special_tokens=False)
            total += float(row[token])
        assert math.isclose(c.cumulative_logprob, total, abs_tol=1e-3)


def test_logprobs_parameter_is_checked():
    for bad in (-1, 21, 2.0, True, "3"):
        with pytest.raises(RequestError, match="logprobs"):
            SamplingParams(logprobs=bad)


@pytest.mark.parametrize("k", [0, 3])
def test_prompt_logprobs_match_a_scoring_pass(tiny_ckpt, k):
    llm = make_llm(tiny_ckpt, 64, max_num_batched_tokens=5)   # the 11-token prompt goes in three chunks
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
    llm.generate(prompt_token_ids=[prompt[:8]], params=SamplingParams(max_tokens=1))   # cached blocks to ignore
    out = llm.generate(prompt_token_ids=[prompt], params=SamplingParams(
        temperature=0, max_tokens=3, n=2, prompt_logprobs=k, ignore_eos=True))[0]
    assert llm.last_stats["prefix_cache_hit_tokens"] == 0   # every prompt position is computed
    ref = torch.log_softmax(llm.logits(prompt), dim=-1)
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
    for i in range(1, len(prompt)):
        entry, row = out.prompt_logprobs[i], ref[i - 1]
        order = row.argsort(descending=True).tolist()
        assert set(order[:k]) <= set(entry) and set(entry) - set(order[:k]) <= {prompt[i]}
        assert abs(entry[prompt[i]].logprob - float(row[prompt[i]])) < 1e-4
        assert entry[prompt[i]].rank == order.index(prompt[i]) + 1
    plain = llm.generate(prompt_token_ids=[prompt], params=SamplingParams(temperature=0, max_tokens=3, n=2,
                                                                           ignore_eos=True))[0]
    assert [c.token_ids for c in out.outputs] == [c.token_ids for c in plain.outputs]
    assert plain.prompt_logprobs is None
