"""Tensor parallelism on 2 gloo processes: same tokens and logits as one process, clear errors otherwise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import dist_workers  # noqa: E402
from spawn import run_ranks  # noqa: E402

from eager_core import LLM, SamplingParams  # noqa: E402
from eager_core.model.process_group import rank_device  # noqa: E402
from eager_core.model.tensor_parallel import TensorParallel  # noqa: E402
from eager_core.errors import CheckpointError, ConfigError  # noqa: E402
from eager_core.io.checkpoint import load_weights  # noqa: E402

PROMPTS = ["hello world", "the quick brown fox", "a"]
PROBE = list(range(3, 43))


def test_tp2_matches_one_process(tiny_ckpt_factory, tmp_path):
    # llama3_scaled has o_proj and down_proj biases (added once, after the sum); qwen3 has per-head
    # q/k norms and an explicit head_dim; both have 4 query heads and 2 kv heads.
    ckpts = [str(tiny_ckpt_factory("llama3_scaled")), str(tiny_ckpt_factory("qwen3"))]
    results = run_ranks(dist_workers.tp_compare, 2, (ckpts, PROMPTS, 16, PROBE), tmp_path)
    for r in results:
        assert r.exitcode == 0, r.error
    for k, ckpt in enumerate(ckpts):
        llm = LLM(ckpt, num_kv_blocks=64)
        ref = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=16))]
        ref_logits = llm.logits(PROBE)
        for r in results:
            got = r.value[k]
            assert got["tokens"] == ref, f"rank {r.rank}, {ckpt}"
            torch.testing.assert_close(got["logits"], ref_logits, rtol=0, atol=1e-5)
            assert got["local_heads"] == llm.config.num_heads // 2
            assert got["kv_heads"] == llm.config.num_kv_heads // 2   # the pool holds local kv heads only


def test_shards_partition_every_split_tensor(tiny_ckpt_factory):
    ckpt = tiny_ckpt_factory("llama3_scaled")
    llm_cfg = LLM(str(ckpt), num_kv_blocks=4).config
    full = load_weights(ckpt)
    parts = [TensorParallel(2, r, None, torch.device("cpu")).shard(llm_cfg, dict(full))[1] for r in range(2)]
    dims = {"q_proj.weight": 0, "k_proj.bias": 0, "o_proj.weight": 1, "gate_proj.weight": 0, "down_proj.weight": 1}
    for name, t in full.items():
        dim = next((d for suffix, d in dims.items() if name.endswith(suffix)), None)
        if dim is None and not name.endswith(("o_proj.bias", "down_proj.bias", "norm.weight", "embed_tokens.weight",
                                              "lm_head.weight")):
            continue
        if dim is None:   # replicated, biases of row-parallel layers included
            assert all(p[name] is t for p in parts), name
        else:
            assert parts[0][name].shape[dim] * 2 == t.shape[dim]
            torch.testing.assert_close(torch.cat([p[name] for p in parts], dim), t, rtol=0, atol=0)


def test_indivisible_heads_and_bad_shapes_are_clear_errors(tiny_ckpt_factory):
    ckpt = tiny_ckpt_factory("llama")
    cfg = LLM(str(ckpt), num_kv_blocks=4).config
    tp = TensorParallel(2, 0, None, torch.device("cpu"))
    import dataclasses
    with pytest.raises(ConfigError, match="num_key_value_heads=1 is not divisible by 2"):
        tp.local_config(dataclasses.replace(cfg, num_kv_heads=1))
    with pytest.raises(ConfigError, match="num_attention_heads=4 is not divisible by 3"):
        TensorParallel(3, 0, None, torch.device("cpu")).local_config(cfg)
    weights = dict(load_weights(ckpt))
    name = "model.layers.1.self_attn.k_proj.weight"
    weights[name] = torch.zeros(weights[name].shape[0] + 2, weights[name].shape[1])
    with pytest.raises(CheckpointError, match="k_proj.weight"):   # its half would have the right shape
        tp.shard(cfg, weights)


def test_tp_without_torchrun_environment_is_a_config_error(tiny_ckpt, monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        LLM(str(tiny_ckpt), num_kv_blocks=4, tensor_parallel_size=2)
    with pytest.raises(ConfigError, match="tensor_parallel_size=0"):
        LLM(str(tiny_ckpt), num_kv_blocks=4, tensor_parallel_size=0)


def test_bare_cuda_means_this_process_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert rank_device("cuda") == torch.device("cuda", 1)
    assert rank_device("cuda:0") == torch.device("cuda", 0) and rank_device("cpu") == torch.device("cpu")


def test_divergent_ranks_are_detected(tiny_ckpt, tmp_path):
    results = run_ranks(dist_workers.tp_diverge, 2, (str(tiny_ckpt),), tmp_path)
    for r in results:
        assert r.exitcode == 1 and "DistributedError" in r.error and "different tokens" in r.error, r.error


def test_a_rank_that_raises_and_hangs_does_not_hang_the_other(tiny_ckpt, tmp_path):
    # Rank 1 raises and then stays alive without calling any collective until rank 0 has given up
    # (or 30 s pass); rank 0, waiting in an all-reduce, must give up on its own, by the 2 s collective
    # timeout, with a DistributedError. Rank 1 reports whether rank 0 released it: proof of the order
    # of events that needs no clock (a loaded machine stretches every duration).
    results = run_ranks(dist_workers.tp_rank1_raises_then_hangs, 2, (str(tiny_ckpt), str(tmp_path / "released"), 30.0),
                        tmp_path, timeout_s=2.0, deadline_s=90.0)
    r0, r1 = results
    assert r1.error is not None and "injected failure on rank 1" in r1.error, r1.error
    assert r0.exitcode == 1 and "DistributedError" in r0.error and "rank 0" in r0.error, r0.error
    assert "released by rank 0" in r1.error, r1.error   # rank 0 was freed while rank 1 still hung
