"""The decode kernels on a CPU without AVX-512, emulated with EAGER_CORE_CPU_ISA=baseline in a
fresh process (the switch is read once): the paged attention runs its baseline loops and must
still match gather + SDPA; the small-M matmul reports itself unsupported, so ops.linear takes
F.linear; and a whole greedy decode gives the tokens of the AVX-512 build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from kernel_support import need_op

from eager_core import LLM, SamplingParams

SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    import torch
    torch.set_num_threads(1)
    from test_paged_attention import reference
    from eager_core import LLM, SamplingParams
    from eager_core.ops import linear
    from eager_core.ops.linear import use_small_linear
    from eager_core.ops._extension import load_extension
    from eager_core.ops.paged_attention import paged_decode_attention

    assert load_extension() is not None   # registers torch.ops.eager_core.*
    assert torch.ops.eager_core.paged_attention_isa() == "baseline"
    assert not torch.ops.eager_core.small_linear_supported()
    assert not torch.ops.eager_core.small_linear_supported_bf16()
    x, w = torch.randn(4, 64), torch.randn(32, 64)
    assert not use_small_linear(x, w) and torch.equal(linear(x, w), torch.nn.functional.linear(x, w))
    g = torch.Generator().manual_seed(0)
    for heads, kv_heads, dim in ((9, 3, 64), (4, 2, 24)):
        for dtype in (torch.float32, torch.bfloat16):
            k = torch.randn(64, kv_heads, dim, generator=g).to(dtype)
            v = torch.randn(64, kv_heads, dim, generator=g).to(dtype)
            q = torch.randn(3, heads, dim, generator=g).to(dtype)
            tables, lens = torch.stack([torch.randperm(16, generator=g)[:6] for _ in range(3)]), torch.tensor([1, 9, 23])
            out = paged_decode_attention(q, k, v, tables, lens, 4, dim ** -0.5)
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(out.double(), reference(q, k, v, tables, lens, 4, dim ** -0.5), rtol=tol, atol=tol)
    llm = LLM({ckpt!r}, num_kv_blocks=200, block_size=4)
    outs = llm.generate(prompt_token_ids={prompts!r}, params=SamplingParams(temperature=0, max_tokens=16, n=2, ignore_eos=True))
    print(json.dumps([[c.token_ids for c in r.outputs] for r in outs]))
    """
)


def test_baseline_isa_decode(tiny_ckpt):
    # Runs on every CPU (the cap only lowers the instruction set); needs the build, which
    # EAGER_CORE_REQUIRE_EXT=1 turns from a skip into a failure.
    need_op("paged_decode_attention")
    need_op("small_linear")
    prompts = [[(i * 7 + j) % 250 for j in range(n)] for i, n in enumerate([3, 17, 40])]
    env = dict(os.environ, EAGER_CORE_CPU_ISA="baseline")
    env.pop("EAGER_CORE_DISABLE_EXT", None)
    code = SCRIPT.format(here=str(Path(__file__).parent), ckpt=str(tiny_ckpt), prompts=prompts)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    baseline_tokens = json.loads(proc.stdout.strip().splitlines()[-1])
    llm = LLM(str(tiny_ckpt), num_kv_blocks=200, block_size=4)
    outs = llm.generate(prompt_token_ids=prompts, params=SamplingParams(temperature=0, max_tokens=16, n=2,
                                                                        ignore_eos=True))
    assert baseline_tokens == [[c.token_ids for c in r.outputs] for r in outs]
