"""Turn a batch of logits into tokens: temperature, top-k, top-p, min-p, then one draw per row.

Randomness: every row brings its own uniform number ``u`` in [0, 1), drawn from its sequence's
private stream (see sequence.py). The token is the inverse CDF of the filtered distribution at u.
So a row's token depends only on its logits and its own stream, never on which other rows share
the batch, and the whole batch is sampled with a handful of tensor ops and no per-row loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from eager_core.engine.sequence import Sequence


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
           min_p: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Sample one token per row of float32 ``logits`` [B, V]; every other argument is a [B] tensor.

    Rows with temperature 0 take the argmax. top_k 0 and top_p 1 and min_p 0 are "off".
    """
    greedy_tokens = logits.argmax(dim=-1)
    greedy = temperature <= 0
    if bool(greedy.all()):
        return greedy_tokens
    # Shift each row's maximum to 0 before dividing: with a tiny positive temperature ``logits / t``
    # overflows to +inf (and softmax to NaN), while ``(logits - max) / t`` only sends the losers to
    # -inf, which is the limit t -> 0 (greedy, ties shared). Softmax does not see the shift.
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    x = shifted / torch.where(greedy, torch.ones_like(temperature), temperature)[:, None]
    V = x.shape[-1]
    if bool((top_k > 0).any()):
        k = torch.where(top_k > 0, top_k.clamp(max=V), torch.full_like(top_k, V))
        kth = x.topk(int(k.max()), dim=-1).values.gather(1, (k - 1)[:, None])   # k-th largest value
        x = x.masked_fill(x < kth, float("-inf"))
    if bool((min_p > 0).any()):
        probs = torch.softmax(x, dim=-1)
        x = x.masked_fill(probs < min_p[:, None] * probs.max(dim=-1, keepdim=True).values, float("-inf"))
    if bool((top_p < 1).any()):
        sorted_x, order = x.sort(dim=-1, descending=True)
        sorted_p = torch.softmax(sorted_x, dim=-1)
        mass_before = sorted_p.cumsum(dim=-1) - sorted_p        # probability of strictly better tokens
        drop_sorted = mass_before >= top_p[:, None]              # the token that crosses top_p is kept
        drop_sorted[:, 0] = False
        x = x.masked_fill(torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted), float("-inf"))
    probs = torch.softmax(x, dim=-1, dtype=torch.float64)
    cdf = probs.cumsum(dim=-1)
    target = (uniform.to(torch.float64) * cdf[:, -1])[:, None]
    tokens = torch.searchsorted(cdf, target, right=True).squeeze(1).clamp(max=V - 1)
    # right=True lands on the first token whose cdf exceeds the target, which always has p > 0,
    # except when rounding puts the target at or past the total: then take the last live token.
    # (Rare, so the [B, V] scan for it runs only when a drawn token has probability 0.)
    if bool((probs.gather(1, tokens[:, None]) == 0).any()):
        last_live = (V - 1) - (probs.flip(-1) > 0).to(torch.int8).argmax(dim=-1)
        tokens = torch.minimum(tokens, last_live)
    return torch.where(greedy, greedy_tokens, tokens)



def sample_rows(seqs: "list[Sequence]", logits: torch.Tensor, temperature: float | None = None) -> list[int]:
    """Sample each row with its request's parameters (or a shared temperature) and its own stream."""
    params = [s.request.params for s in seqs]
    temps = [p.temperature if temperature is None else temperature for p in params]
    if all(t <= 0 for t in temps):
        return logits.argmax(dim=-1).tolist()   # all greedy: no filters, no draws from the streams
    t = torch.tensor(temps, dtype=torch.float32)
    vocab = logits.shape[-1]   # a top_k past the vocabulary keeps everything (and any int fits in int64)
    top_k = torch.tensor([min(p.top_k, vocab) for p in params], dtype=torch.long)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
    min_p = torch.tensor([p.min_p for p in params], dtype=torch.float32)
    u = torch.tensor([s.rng.random() for s in seqs], dtype=torch.float64)
    dev = logits.device
    return sample(logits, t.to(dev), top_k.to(dev), top_p.to(dev), min_p.to(dev), u.to(dev)).tolist()
