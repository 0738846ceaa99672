"""PositionLogprobs (engine/logprobs.py) against a float64 log-softmax of the same logits: values,
ranks, the extra chosen token, and ties, for every backend of the fused gate it reads."""

from __future__ import annotations

import pytest
import torch

from eager_core.engine.logprobs import PositionLogprobs
from ops.entropy_gate_cases import BACKENDS, forced_backend, need_backend


class _Tok:
    def decode(self, ids, skip_special_tokens=False):
        return f"<{ids[0]}>"


def _tied_logits(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 300, generator=g)
    x[0, [7, 40, 41, 250]] = 4.0            # a four-way tie at the top
    x[1] = x[1].clamp(max=2.0)
    x[1, [3, 9, 11]] = 2.5                  # a tie straddling the k = 2 cut
    x[2, :] = 0.0                           # every token tied
    return x.to(dtype)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [0, 2, 5, 20])
def test_records_match_float64_log_softmax_with_ties(backend_name, dtype, k):
    need_backend(backend_name)
    x = _tied_logits(dtype)
    ref = torch.log_softmax(x.double(), dim=-1)
    with forced_backend(backend_name):
        pos = PositionLogprobs(x, k)
    for j in range(x.shape[0]):
        order = torch.sort(x[j].double(), descending=True, stable=True).indices.tolist()  # ties: lower id first
        for chosen in (order[0], order[k] if k < 300 else order[-1], order[-1], 11 if j == 1 else 41):
            rec = pos.record(j, k, chosen, _Tok())
            top = order[:k]
            assert list(rec)[:k] == top, "top entries are the k most likely, equal logits in id order"
            assert len(rec) == k + (chosen not in top)
            for tid, lp in rec.items():
                assert abs(lp.logprob - float(ref[j, tid])) < 1e-5
                assert lp.decoded_token == f"<{tid}>"
                if tid in top:
                    assert lp.rank == top.index(tid) + 1
                else:   # vLLM's rank: one plus the number of strictly more likely tokens
                    assert tid == chosen and lp.rank == int((x[j] > x[j, tid]).sum()) + 1


def test_a_tied_chosen_token_outside_the_top_k_shares_the_rank_of_its_equals():
    x = _tied_logits(torch.float32)
    pos = PositionLogprobs(x, 2)
    rec = pos.record(1, 2, 11, _Tok())        # 3, 9, 11 tie; the top 2 are 3 and 9
    assert list(rec) == [3, 9, 11]
    assert [lp.rank for lp in rec.values()] == [1, 2, 1]
    assert rec[11].logprob == pytest.approx(rec[3].logprob, abs=1e-6)
