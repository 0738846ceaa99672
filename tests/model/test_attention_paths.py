"""The compiled decode paths (paged attention, small-M linear) against the pure-PyTorch ones.

EAGER_CORE_DISABLE_EXT=1 routes decode attention through gather + SDPA and every matmul through
F.linear; the tokens of ragged batches with forks must not change.
"""

from __future__ import annotations

import pytest

from eager_core import LLM, SamplingParams
from eager_core.ops.paged_attention import _kernel_available


@pytest.mark.skipif(not _kernel_available(), reason="compiled extension missing")
@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen2"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_compiled_decode_equals_pytorch_decode(tiny_ckpt_factory, monkeypatch, arch, dtype):
    ckpt = tiny_ckpt_factory(arch)
    prompts = [[(i * 7 + j) % 250 for j in range(n)] for i, n in enumerate([3, 17, 40, 9, 64])]
    params = SamplingParams(temperature=0, max_tokens=24, n=2, ignore_eos=True)

    def tokens():
        llm = LLM(str(ckpt), num_kv_blocks=200, block_size=4, dtype=dtype)
        return [[c.token_ids for c in r.outputs] for r in llm.generate(prompt_token_ids=prompts, params=params)]

    compiled = tokens()
    monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")
    assert tokens() == compiled
