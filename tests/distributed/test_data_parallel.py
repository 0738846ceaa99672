"""Data-parallel EAGer on 2 gloo processes: the same outputs as one process, one global budget."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import dist_workers  # noqa: E402
from dp_cases import ANSWERS, PARAMS, PROMPTS, assert_same_outputs  # noqa: E402
from spawn import run_ranks  # noqa: E402

from eager_core import LLM, EagerParams  # noqa: E402
from eager_core.eager.data_parallel import DataParallelShard, combine_stats, eager_data_parallel  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt_factory):
    return str(tiny_ckpt_factory("llama", initializer_range=0.3))


def test_dp2_equals_one_process_and_keeps_the_global_budget(ckpt, tmp_path):
    runs = [("eager-adapt", None), ("eager", ANSWERS)]
    results = run_ranks(dist_workers.dp_eager, 2, (ckpt, PROMPTS, PARAMS, runs), tmp_path)
    for r in results:
        assert r.exitcode == 0, r.error
    assert results[1].value is None   # only rank 0 receives the outputs
    llm = LLM(ckpt, num_kv_blocks=256)
    M, N = PARAMS["max_sequences"], len(PROMPTS)
    for (method, answers), got in zip(runs, results[0].value):
        checker = dist_workers.contains if answers else None
        ref = llm.eager(PROMPTS, EagerParams(**PARAMS), method, answers, checker)
        assert_same_outputs(got["outputs"], [o.to_dict() for o in ref], method)
        rounds = [[s["round"] for s in o["sequences"]] for o in got["outputs"]]
        assert any(r.count(0) == M for r in rounds) and any(r.count(0) < M for r in rounds), rounds
        assert any(max(r) > 0 for r in rounds), f"{method}: no reallocation happened: {rounds}"
        assert sum(o["num_sequences"] for o in got["outputs"]) <= M * N
        assert got["stats"]["generated_tokens"] == llm.last_stats["generated_tokens"] \
            == sum(o["generated_tokens"] for o in got["outputs"])
        if method == "eager":   # the saved budget went to unsolved prompts only
            for o, answer in zip(got["outputs"], answers):
                init_solved = any(answer in s["text"] for s in o["sequences"] if s["round"] == 0)
                assert not (init_solved and max(s["round"] for s in o["sequences"]) > 0)


def test_two_tensor_parallel_replicas_share_one_budget(ckpt, tmp_path):
    # World of 4: replicas {0, 1} and {2, 3}, each a tensor-parallel pair; prompts split by replica.
    results = run_ranks(dist_workers.grid_eager, 4, (ckpt, PROMPTS, PARAMS, "eager-adapt"), tmp_path)
    for r in results:
        assert r.exitcode == 0, r.error
    assert [(r.value["tp_rank"], r.value["dp_rank"]) for r in results] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    ref = LLM(ckpt, num_kv_blocks=256).eager(PROMPTS, EagerParams(**PARAMS), "eager-adapt")
    assert_same_outputs(results[0].value["outputs"], [o.to_dict() for o in ref])
    assert results[2].value["outputs"] is None   # data-parallel rank 1 hands its outputs to rank 0


def test_a_rank_that_raises_stops_the_other_with_its_error(ckpt, tmp_path):
    runs = [("eager", ANSWERS)]
    results = run_ranks(dist_workers.dp_eager, 2, (ckpt, PROMPTS, PARAMS, runs, 1), tmp_path, timeout_s=60.0)
    r0, r1 = results
    assert r1.exitcode == 1 and "injected checker failure on rank 1" in r1.error, r1.error
    assert r0.exitcode == 1 and "DistributedError" in r0.error, r0.error
    # Told by rank 1 itself (its error travelled), not freed by the 60 s collective timeout, which
    # knows nothing of rank 1's error: no clock needed to tell the two apart.
    assert "rank 1 failed" in r0.error and "injected checker failure" in r0.error, r0.error


def test_one_process_without_torchrun_is_plain_eager(ckpt, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    llm = LLM(ckpt, num_kv_blocks=256)
    params = EagerParams(**PARAMS)
    got = eager_data_parallel(llm, PROMPTS[:3], params, "eager-adapt")
    assert [o.to_dict() for o in got] == [o.to_dict() for o in llm.eager(PROMPTS[:3], params, "eager-adapt")]  # same call


def test_strided_ownership_and_stat_combination():
    shard = DataParallelShard.__new__(DataParallelShard)   # ownership needs no process group
    shard.rank, shard.size = 1, 3
    assert [i for i in range(8) if shard.owns(i)] == [1, 4, 7]
    stats = combine_stats([dict(generated_tokens=5, decode_steps=3, kv_blocks_peak=7, wall_s=1.0, rounds=2),
                           dict(generated_tokens=4, decode_steps=5, kv_blocks_peak=9, wall_s=0.5, rounds=2)])
    assert stats == dict(prompt_tokens=0, generated_tokens=9, decode_steps=8, prefill_tokens=0, kv_blocks_peak=9,
                         kv_blocks_logical_peak=0, cow_copies=0, preemptions=0, prefix_cache_hit_tokens=0, wall_s=1.0,
                         rounds=2)
