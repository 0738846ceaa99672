"""EAGer on a GPU: the fused entropy gate runs on the logits' device (the CUDA kernel), and the
branch trees must equal the CPU's on the Markov model, whose entropies sit far from theta
(skipped without CUDA; tools/gpu_check.sh runs it)."""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, EagerParams
from eager_core.ops import backend
from markov_model import make_markov_checkpoint
from test_eager_policy import CHAIN

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def trees(outs):
    return [[(s.parent, s.branch_step, s.token_ids, s.finish_reason) for s in o.sequences] for o in outs]


@pytest.mark.parametrize("method", ["eager-init", "eager-adapt"])
def test_cuda_branch_trees_equal_the_cpu_ones(tmp_path, method):
    ckpt = str(make_markov_checkpoint(tmp_path, CHAIN))
    params = EagerParams(theta=0.9, max_sequences=3, max_tokens=16, dynamic_threshold=False, seed=1)
    prompts = [[1], [1], [20]]
    cpu = LLM(ckpt, num_kv_blocks=64, block_size=4).eager(prompts, params, method=method)
    gpu = LLM(ckpt, num_kv_blocks=64, block_size=4, device="cuda").eager(prompts, params, method=method)
    assert trees(gpu) == trees(cpu)
    for a, b in zip(gpu, cpu):
        assert [s.entropies for s in a.sequences] == pytest.approx([s.entropies for s in b.sequences], abs=1e-4)
    # [1] branches at both uncertain steps, capped at M = 3; [20] once. eager-adapt gives the one
    # saved sequence to the first saturated prompt, as a second round.
    assert [o.num_sequences for o in cpu] == ([3, 3, 2] if method == "eager-init" else [4, 3, 2])
    if backend("cuda") != "cuda":
        pytest.skip("trees equal, but through the PyTorch fallback: eager_core._C has no CUDA kernel")
