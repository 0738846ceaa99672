"""The CUDA-graph decode path on a GPU: logits, NaN isolation, padding, buckets (skipped without CUDA).

tests/engine/test_decode_graphs.py checks the static step on CPU (capture=False) and the tokens of
graphed runs; this file checks the captured graphs themselves, step by step. tools/gpu_check.sh runs
it on a lent GPU.
"""

from __future__ import annotations

import pytest
import torch

from eager_core import SamplingParams
from kv_helpers import assert_pool_empty, make_llm, prompts_of, token_lists
from nan_helpers import poison_unreadable_slots, record_logits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = prompts_of([3, 9, 21, 5, 12])   # ragged: every decode step pads rows and contexts
SAMPLED = SamplingParams(temperature=0.8, n=2, seed=5, max_tokens=12, ignore_eos=True)


def graphed(ckpt, num_blocks: int = 200, **kwargs):
    llm = make_llm(ckpt, num_blocks, device="cuda", enable_prefix_caching=False, **kwargs)
    assert llm.llm_engine.runner.graphs is not None
    return llm


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_graph_logits_equal_the_packed_path_step_by_step(tiny_ckpt_factory, arch):
    """Every decode step's logits, replayed from a graph, against the packed path (enforce_eager) on
    the same GPU. Both run float32 matmuls without TF32 (PyTorch's default) over the same context; the
    only difference is the summation order of differently shaped kernels (padded [16, 32] attention vs
    the packed one), a few float32 ulps of logits of magnitude < 10: 1e-4 absolute is ~100x that."""
    ckpt = tiny_ckpt_factory(arch)
    params = SamplingParams(temperature=0, max_tokens=12, n=2, ignore_eos=True)
    eager = make_llm(ckpt, 200, device="cuda", enforce_eager=True)
    ref_logits = record_logits(eager)
    ref = eager.generate(prompt_token_ids=PROMPTS, params=params)
    llm = graphed(ckpt)
    logits = record_logits(llm)
    out = llm.generate(prompt_token_ids=PROMPTS, params=params)
    graphs = llm.llm_engine.runner.graphs
    assert graphs.replays == len(logits) - 1 == 11   # one prefill step, then every decode step replayed
    assert token_lists(out) == token_lists(ref)
    assert len(logits) == len(ref_logits)
    for step, (a, b) in enumerate(zip(logits, ref_logits)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=f"step {step}")
    assert_pool_empty(llm)


def test_graphs_read_only_their_own_context(tiny_ckpt):
    """NaN in every slot a step may not read (free blocks, the scratch block, unwritten tails),
    rewritten before every replay: the logits stay finite and equal to a clean graphed run."""
    clean = graphed(tiny_ckpt)
    clean_logits = record_logits(clean)
    ref = clean.generate(prompt_token_ids=PROMPTS, params=SAMPLED)
    llm = graphed(tiny_ckpt)
    logits = poison_unreadable_slots(llm)
    out = llm.generate(prompt_token_ids=PROMPTS, params=SAMPLED)
    assert llm.llm_engine.runner.graphs.replays > 0
    assert [c.finish_reason for r in out for c in r.outputs] == ["length"] * 10
    assert token_lists(out) == token_lists(ref)
    for step, (a, b) in enumerate(zip(logits, clean_logits)):
        assert torch.isfinite(a).all(), f"step {step}: a NaN reached the logits"
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    assert_pool_empty(llm)


def test_graph_padding_rows_touch_only_the_scratch_block(tiny_ckpt):
    llm = graphed(tiny_ckpt, 40)
    llm.generate(prompt_token_ids=prompts_of([5, 6, 7]), params=SamplingParams(temperature=0, max_tokens=4))
    graphs = llm.llm_engine.runner.graphs
    assert {b for b, _ in graphs.steps} == {4}   # 3 rows padded to 4: a padding row wrote K/V
    assert all(step.graph is not None for step in graphs.steps.values())
    kv, bs, scratch = llm.kv_pool.kv, llm.kv_pool.block_size, llm.kv_pool.scratch_block
    assert kv[:, :, scratch * bs:(scratch + 1) * bs].abs().sum() > 0
    # 3 prompts of 5-7 tokens + 4 new tokens fit in 3 blocks each: blocks 9.. were never written.
    assert kv[:, :, 9 * bs:scratch * bs].abs().sum() == 0


def test_graphs_are_captured_once_per_shape_and_replayed(tiny_ckpt):
    llm = graphed(tiny_ckpt)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    first = llm.generate(prompt_token_ids=prompts_of([3, 4]), params=params)
    graphs = llm.llm_engine.runner.graphs
    shapes, replays = dict(graphs.steps), graphs.replays
    assert set(shapes) == {(2, 256)} and replays == 5
    again = llm.generate(prompt_token_ids=prompts_of([3, 4]), params=params)
    assert token_lists(again) == token_lists(first)
    assert graphs.replays == 2 * replays   # the same graph objects, replayed
    assert graphs.steps.keys() == shapes.keys() and all(graphs.steps[k] is shapes[k] for k in shapes)
    assert_pool_empty(llm)
