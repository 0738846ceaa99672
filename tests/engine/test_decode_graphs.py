"""Static-shape decode steps (decode_graphs.py): the padding logic on CPU, the graphs on a GPU.

On CPU the static step runs without capture (``capture=False``): the same padded inputs, scratch
block, in-graph slot and mask computation that a CUDA graph records. Outputs must equal the packed
path's; the GPU tests at the bottom run only where CUDA is available (tools/gpu_check.py runs them).
"""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, ConfigError, SamplingParams
from eager_core.engine.decode_graphs import DecodeGraphs, batch_buckets
from kv_helpers import assert_pool_empty, make_llm, prompts_of, token_lists
from kv_helpers import one_thread  # noqa: F401  (an autouse fixture: importing it applies it here)
from step_recorders import RecordingGreedy


def static_steps(llm: LLM, **kwargs) -> DecodeGraphs:
    graphs = DecodeGraphs(llm.model, llm.kv_pool, capture=False, **kwargs)
    llm.llm_engine.runner.graphs = graphs
    return graphs


def test_batch_buckets():
    assert batch_buckets(1) == [1]
    assert batch_buckets(6) == [1, 2, 4, 6]
    assert batch_buckets(40) == [1, 2, 4, 8, 16, 32, 40]
    assert batch_buckets(128)[-3:] == [96, 112, 128]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_static_steps_equal_the_packed_path(tiny_ckpt, temperature):
    prompts = prompts_of([3, 9, 17, 30, 5])
    params = SamplingParams(temperature=temperature, max_tokens=20, n=2, seed=3, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 200).generate(prompt_token_ids=prompts, params=params)
    llm = make_llm(tiny_ckpt, 200)
    graphs = static_steps(llm, context_step=16)
    out = llm.generate(prompt_token_ids=prompts, params=params)
    assert token_lists(out) == token_lists(ref)
    # 10 rows pad to 16; contexts up to 50 tokens pad to 16, 32, 48, 64: several static shapes were used.
    assert {b for b, _ in graphs.steps} == {16}
    assert {c for _, c in graphs.steps} == {32, 48, 64}
    assert_pool_empty(llm)


def decode_logits(llm: LLM, prompts: list[list[int]]) -> list[torch.Tensor]:
    rec, engine = RecordingGreedy(), llm.llm_engine
    ids = [f"r{i}" for i in range(len(prompts))]
    for rid, p in zip(ids, prompts):
        engine.add_request(rid, p, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), controller=rec)
    engine.run_until_finished(ids)
    return rec.steps


def test_static_logits_match_packed_logits(tiny_ckpt):
    prompts = prompts_of([4, 11, 7])
    packed = decode_logits(make_llm(tiny_ckpt, 64), prompts)
    llm = make_llm(tiny_ckpt, 64)
    graphs = static_steps(llm, context_step=8)
    static = decode_logits(llm, prompts)
    assert graphs.steps and len(static) == len(packed) == 6   # one prefill step, then five static decodes
    for a, b in zip(static, packed):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_padding_rows_touch_only_the_scratch_block(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 40)
    graphs = static_steps(llm, context_step=8)
    pool = llm.kv_pool
    pool.ensure_zeroed(pool.num_blocks - 1)   # the whole pool zeroed now, so "never written" reads as 0
    llm.generate(prompt_token_ids=prompts_of([5, 6, 7]), params=SamplingParams(temperature=0, max_tokens=4))
    assert set(graphs.steps) == {(4, 8), (4, 16)}   # 3 rows padded to 4: a padding row wrote K/V
    kv, bs = llm.kv_pool.kv, llm.kv_pool.block_size
    scratch = llm.kv_pool.scratch_block
    assert kv[:, :, scratch * bs:(scratch + 1) * bs].abs().sum() > 0
    assert kv.shape[2] == (llm.block_manager.num_blocks + 1) * bs
    assert llm.block_manager.num_blocks == scratch   # the block manager never hands it out
    # 3 prompts of 5-7 tokens + 4 new tokens fit in 3 blocks each: blocks 9.. were never written.
    assert kv[:, :, 9 * bs:scratch * bs].abs().sum() == 0


def test_static_steps_under_preemption_and_forks(tiny_ckpt):
    prompts = prompts_of([30, 30, 12], start=11)
    params = SamplingParams(temperature=0.7, max_tokens=10, n=3, seed=1, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 300).generate(prompt_token_ids=prompts, params=params)
    small = make_llm(tiny_ckpt, 30)
    static_steps(small, context_step=8)
    out = small.generate(prompt_token_ids=prompts, params=params)
    assert small.last_stats["preemptions"] > 0 and small.last_stats["cow_copies"] > 0
    assert token_lists(out) == token_lists(ref)
    assert_pool_empty(small)


def test_steps_past_the_largest_bucket_use_the_packed_path(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 200)
    graphs = static_steps(llm, max_batch=4, max_context=16, context_step=8)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 200).generate(prompt_token_ids=prompts_of([3] * 6 + [2]), params=params)
    out = llm.generate(prompt_token_ids=prompts_of([3] * 6 + [2]), params=params)
    assert token_lists(out) == token_lists(ref)
    assert not graphs.steps   # 7 rows > 4: every decode step went through the packed forward
    out = llm.generate(prompt_token_ids=prompts_of([3, 4]), params=params)
    assert set(graphs.steps) == {(2, 8), (2, 16)}   # contexts up to 16; from 17 on, packed again


def test_enforce_eager_is_validated(tiny_ckpt):
    with pytest.raises(ConfigError, match="enforce_eager"):
        LLM(str(tiny_ckpt), num_kv_blocks=8, enforce_eager="no")


def test_capture_needs_cuda(tiny_ckpt):
    llm = make_llm(tiny_ckpt, 8)
    with pytest.raises(ValueError, match="CUDA"):
        DecodeGraphs(llm.model, llm.kv_pool, capture=True)
    assert llm.llm_engine.runner.graphs is None   # no graphs on CPU


# --- on a GPU ----------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_cuda_greedy_equals_cpu_with_and_without_graphs(tiny_ckpt_factory, arch):
    ckpt = tiny_ckpt_factory(arch)
    prompts = prompts_of([3, 9, 17, 30, 5])
    params = SamplingParams(temperature=0, max_tokens=24, n=2, ignore_eos=True)
    cpu = token_lists(make_llm(ckpt, 200).generate(prompt_token_ids=prompts, params=params))
    graphed = make_llm(ckpt, 200, device="cuda")
    assert graphed.llm_engine.runner.graphs is not None
    assert token_lists(graphed.generate(prompt_token_ids=prompts, params=params)) == cpu
    assert graphed.llm_engine.runner.graphs.replays > 0
    eager = make_llm(ckpt, 200, device="cuda", enforce_eager=True)
    assert eager.llm_engine.runner.graphs is None
    assert token_lists(eager.generate(prompt_token_ids=prompts, params=params)) == cpu


@cuda
def test_cuda_graphs_under_preemption(tiny_ckpt):
    prompts = prompts_of([30, 30, 12], start=11)
    params = SamplingParams(temperature=0.7, max_tokens=10, n=3, seed=1, ignore_eos=True)
    ref = make_llm(tiny_ckpt, 300, device="cuda", enforce_eager=True).generate(prompt_token_ids=prompts, params=params)
    small = make_llm(tiny_ckpt, 30, device="cuda")
    out = small.generate(prompt_token_ids=prompts, params=params)
    assert small.last_stats["preemptions"] > 0
    assert token_lists(out) == token_lists(ref)
    assert_pool_empty(small)
