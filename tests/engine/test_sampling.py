"""The sampler's filters and randomness, checked against the distributions they must produce."""

from __future__ import annotations

import math

import pytest
import torch

from eager_core import LLM, RequestError, SamplingParams
from eager_core.engine.sampler import sample

N = 20000


def draw(probs: list[float], temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=0) -> torch.Tensor:
    """Frequencies of N samples from one row with the given filters."""
    logits = torch.tensor(probs).log().expand(N, -1).contiguous()
    full = lambda v, dt: torch.full((N,), v, dtype=dt)  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    tokens = sample(logits, full(temperature, torch.float32), full(top_k, torch.long), full(top_p, torch.float32),
                    full(min_p, torch.float32), torch.rand(N, generator=gen, dtype=torch.float64))
    return torch.bincount(tokens, minlength=len(probs)).double() / N


def close(freq: torch.Tensor, expected: list[float]) -> bool:
    # 4 standard errors of a frequency near 0.5 over N draws is 0.014.
    return bool((freq - torch.tensor(expected, dtype=torch.float64)).abs().max() < 0.015)


P = [0.4, 0.3, 0.2, 0.1]


def test_plain_sampling_follows_the_distribution():
    assert close(draw(P), P)


def test_temperature_sharpens_like_p_to_the_power_one_over_t():
    t = 0.5
    w = [p ** (1 / t) for p in P]
    assert close(draw(P, temperature=t), [x / sum(w) for x in w])


def test_top_k_keeps_the_k_most_likely_renormalised():
    assert close(draw(P, top_k=2), [0.4 / 0.7, 0.3 / 0.7, 0, 0])
    assert close(draw(P, top_k=10), P)   # k beyond the vocabulary is "all"


def test_top_p_keeps_the_token_that_crosses_p():
    assert close(draw(P, top_p=0.5), [0.4 / 0.7, 0.3 / 0.7, 0, 0])    # 0.4 < 0.5: the 0.3 crosses it, kept
    assert close(draw(P, top_p=0.4), [1, 0, 0, 0])                    # reached exactly by the first token
    assert close(draw(P, top_p=0.75), [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0])


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    assert close(draw(P, min_p=0.4), [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0])   # 0.1 < 0.4 * 0.4 <= 0.2
    assert close(draw(P, min_p=1.0), [1, 0, 0, 0])


def test_greedy_rows_take_the_argmax_beside_sampled_rows():
    logits = torch.tensor([[0.0, 2.0, 1.0], [0.0, 2.0, 1.0]])
    tokens = sample(logits, torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), torch.tensor([1.0, 1.0]),
                    torch.tensor([0.0, 0.0]), torch.tensor([0.999, 0.999], dtype=torch.float64))
    assert tokens.tolist() == [1, 2]


def test_masked_tokens_are_never_drawn_even_at_u_close_to_one():
    logits = torch.tensor([[0.0, 0.0, -math.inf, -math.inf]])
    for u in [0.0, 0.5, 1 - 1e-16]:
        t = sample(logits, torch.ones(1), torch.zeros(1, dtype=torch.long), torch.ones(1), torch.zeros(1),
                   torch.tensor([u], dtype=torch.float64))
        assert t.item() in (0, 1)


def test_seeds_make_generation_reproducible(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=32)
    p = SamplingParams(temperature=1.0, max_tokens=12, seed=7, ignore_eos=True)
    a = llm.generate(prompt_token_ids=[[5, 6, 7]], params=p)[0].outputs[0].token_ids
    b = llm.generate(prompt_token_ids=[[5, 6, 7]], params=p)[0].outputs[0].token_ids
    c = llm.generate(prompt_token_ids=[[5, 6, 7]], params=SamplingParams(temperature=1.0, max_tokens=12, seed=8,
                                                                          ignore_eos=True))[0].outputs[0].token_ids
    assert a == b and a != c


def test_engine_seed_makes_unseeded_requests_reproducible(tiny_ckpt):
    p = SamplingParams(temperature=1.0, max_tokens=10, ignore_eos=True)
    runs = [LLM(str(tiny_ckpt), num_kv_blocks=32, seed=s).generate(prompt_token_ids=[[9, 9]], params=p)
            for s in (1, 1, 2)]
    ids = [r[0].outputs[0].token_ids for r in runs]
    assert ids[0] == ids[1] and ids[0] != ids[2]


@pytest.mark.parametrize("kwargs", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(min_p=-0.1),
                                    dict(min_p=1.1), dict(n=0), dict(max_tokens=0), dict(top_k=-1),
                                    dict(temperature=float("nan")), dict(stop=[""])])
def test_invalid_sampling_params_are_named(kwargs):
    field = next(iter(kwargs))
    with pytest.raises(RequestError, match=field):
        SamplingParams(**kwargs)
