"""The sampler on exact cases: given uniforms, boundary probabilities, rounding edges, and the
per-row parameters of ``sample_rows`` (test_sampling.py checks the distributions statistically).

Every expected token is derived by hand from the inverse CDF: the token is the first whose
cumulative probability (over the filtered, renormalised distribution) exceeds u.
"""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from eager_core import SamplingParams
from eager_core.engine.sampler import sample, sample_rows

INF = float("inf")


def rows(*values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def one(logits: list[float], u: float, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> int:
    """The token of one row with uniform u."""
    tok = sample(torch.tensor([logits]), rows(temperature), torch.tensor([top_k]), rows(top_p), rows(min_p),
                 torch.tensor([u], dtype=torch.float64))
    assert tok.shape == (1,)
    return int(tok)


HALF_QUARTERS = [math.log(0.5), math.log(0.25), math.log(0.25)]   # p = 1/2, 1/4, 1/4 exactly in float32


def test_inverse_cdf_by_hand():
    # cdf 0.5, 0.75, 1.0: u below 0.5 -> 0, between 0.5 and 0.75 -> 1, above -> 2
    assert [one(HALF_QUARTERS, u) for u in (0.0, 0.49, 0.51, 0.74, 0.76, 0.99)] == [0, 0, 1, 1, 2, 2]


def test_all_greedy_rows_take_each_rows_argmax():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 1.0, 2.0]])
    tok = sample(logits, rows(0.0, 0.0), torch.tensor([0, 0]), rows(1.0, 1.0), rows(0.0, 0.0),
                 torch.tensor([0.9, 0.9], dtype=torch.float64))
    assert tok.tolist() == [1, 0]


def test_a_tiny_temperature_is_the_argmax_not_an_overflow():
    # (x - max) / t sends the losers to -inf and keeps the winner at 0; x / t (or (x + max) / t) would
    # overflow float32 to +inf and make softmax NaN.
    logits = [100.0, 90.0, 99.0]
    assert [one(logits, u, temperature=1e-37) for u in (0.0, 0.5, 0.999)] == [0, 0, 0]


def test_top_k_one_is_the_argmax_and_rows_keep_their_own_k():
    assert [one(HALF_QUARTERS, u, top_k=1) for u in (0.0, 0.99)] == [0, 0]
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]] * 3).log()
    # row 0: k = 2 -> [4/7, 3/7]; row 1: k = 0 (off) -> cdf 0.4, 0.7, 0.9, 1; row 2: k = 1. u = 0.8 each.
    tok = sample(logits, rows(1.0, 1.0, 1.0), torch.tensor([2, 0, 1]), rows(1.0, 1.0, 1.0), rows(0.0, 0.0, 0.0),
                 torch.tensor([0.8, 0.8, 0.8], dtype=torch.float64))
    assert tok.tolist() == [1, 2, 0]
    # k = 3 -> [4/9, 3/9, 2/9], k = 2, k = 1; u = 0.99
    tok = sample(logits, rows(1.0, 1.0, 1.0), torch.tensor([3, 2, 1]), rows(1.0, 1.0, 1.0), rows(0.0, 0.0, 0.0),
                 torch.tensor([0.99, 0.99, 0.99], dtype=torch.float64))
    assert tok.tolist() == [2, 1, 0]


def test_top_p_reached_exactly_drops_the_next_token():
    # mass before token 1 is exactly 0.5 = top_p: token 0 alone reaches p, so the rest go
    assert [one(HALF_QUARTERS, u, top_p=0.5) for u in (0.0, 0.6, 0.99)] == [0, 0, 0]
    # top_p 0.6: token 1 crosses it and stays: [2/3, 1/3]; token 2 (mass before 0.75) goes
    assert [one(HALF_QUARTERS, u, top_p=0.6) for u in (0.6, 0.7, 0.99)] == [0, 1, 1]


def test_top_p_one_is_off_even_for_tokens_below_float32_resolution():
    # p = e^-20 = 2e-9: in float32 the cumulative sum before it already reads 1.0 = top_p, so
    # applying the top-p filter at top_p = 1 would drop it; "off" must keep every token with p > 0.
    assert one([0.0, -20.0], 1 - 1e-10) == 1


def test_min_p_is_relative_to_the_best_token():
    # min_p 0.5: tokens need p >= 0.25: all stay; min_p 0.51: the 1/4 tokens go
    assert one(HALF_QUARTERS, 0.99, min_p=0.5) == 2
    assert one(HALF_QUARTERS, 0.99, min_p=0.51) == 0


def test_u_zero_never_lands_on_a_masked_first_token():
    assert one([-INF, 0.0, 0.0], 0.0) == 1


def test_a_target_at_the_total_falls_back_to_the_last_live_token():
    # u * total can round to the total itself (u = 1.0 forces it): searchsorted then points past the
    # end; the sampler must clamp and step back to the last token with p > 0.
    assert one([0.0, 0.0, -INF], 1.0) == 1
    assert one([0.0, -INF, 0.0, -INF, -INF], 1.0) == 2
    two = sample(torch.tensor([[0.0, 0.0, -INF], [0.0, -INF, -INF]]), rows(1.0, 1.0), torch.tensor([0, 0]),
                 rows(1.0, 1.0), rows(0.0, 0.0), torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert two.tolist() == [1, 0]


class Fixed:
    """A stream that returns preset uniforms and counts the draws."""

    def __init__(self, *values: float):
        self.values, self.draws = list(values), 0

    def random(self) -> float:
        self.draws += 1
        return self.values.pop(0)


def seq(rng, **params) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(params=SamplingParams(**params)), rng=rng)


def test_sample_rows_greedy_batch_draws_nothing():
    streams = [Fixed(0.9), Fixed(0.9)]
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 1.0, 2.0]])
    assert sample_rows([seq(streams[0], temperature=0), seq(streams[1], temperature=0)], logits) == [1, 0]
    assert [s.draws for s in streams] == [0, 0]


def test_sample_rows_uses_each_rows_params_and_stream():
    p = [0.4, 0.3, 0.2, 0.1, 0.0]
    logits = torch.tensor([p, p, p]).log()
    # row 0 greedy; row 1: top_k 3 -> [4/9, 3/9, 2/9], u 0.9 -> 2; row 2: top_k 2 -> [4/7, 3/7], u 0.9 -> 1
    streams = [Fixed(0.9), Fixed(0.9), Fixed(0.9)]
    seqs = [seq(streams[0], temperature=0), seq(streams[1], top_k=3), seq(streams[2], top_k=2)]
    assert sample_rows(seqs, logits) == [0, 2, 1]
    assert [s.draws for s in streams] == [1, 1, 1]   # one uniform per row, greedy rows included
    # a shared temperature overrides each request's; top_k past the vocabulary keeps everything
    assert sample_rows([seq(Fixed(0.99), top_k=1000)], logits[:1], temperature=1.0) == [3]
    assert sample_rows([seq(Fixed(0.99), temperature=1.0)], logits[:1], temperature=0.0) == [0]


@pytest.mark.parametrize("seed", [1, 2])
def test_sample_rows_reads_the_sequences_own_stream(seed):
    a, b = random.Random(seed), random.Random(seed)
    logits = torch.tensor([HALF_QUARTERS])
    expected = one(HALF_QUARTERS, b.random())
    assert sample_rows([seq(a, temperature=1.0)], logits) == [expected]
