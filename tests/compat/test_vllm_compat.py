"""vLLM-compatible offline API: a program written for vLLM runs unchanged through the alias, the
constructor takes vLLM's names, and logprobs reproduce the fused kernel's entropy."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from eager_core import LLM, SamplingParams
from eager_core.errors import ConfigError
from eager_core.ops import entropy_gate

HERE = Path(__file__).parent


def test_a_vllm_program_runs_unchanged(tiny_ckpt):
    code = ("import runpy, sys; import eager_core.compat as c; c.install_vllm_alias(); "
            f"sys.argv = ['prog', {str(tiny_ckpt)!r}]; runpy.run_path({str(HERE / 'vllm_style_program.py')!r}, "
            "run_name='__main__')")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The same program's answers, computed through eager_core's own names.
    llm = LLM(str(tiny_ckpt), num_kv_blocks=None, gpu_memory_utilization=0.01)
    prompts = ["The capital of France is", "One, two, three,"]
    par = llm.generate(prompts, SamplingParams(n=4, temperature=0.8, max_tokens=6, seed=1))
    assert result["parallel"] == [[c.token_ids for c in o.outputs] for o in par]
    assert all(len(e) == 5 and all(x >= 0 for x in e) for e in result["entropies"])


def test_vllm_constructor_names(tiny_ckpt):
    with pytest.warns(UserWarning, match="trust_remote_code=True has no effect"):
        llm = LLM(model=str(tiny_ckpt), tokenizer=str(tiny_ckpt), dtype="auto", seed=None, trust_remote_code=True,
                  download_dir="/nowhere", gpu_memory_utilization=0.001, max_num_seqs=8)
    assert llm.dtype == torch.float32 and llm.scheduler.max_num_seqs == 8   # the tiny checkpoint is float32
    with pytest.raises(ConfigError, match="unknown argument tensor_paralel_size"):
        LLM(model=str(tiny_ckpt), tensor_paralel_size=2)   # a typo is an error, not silently ignored
    with pytest.raises(ConfigError, match="gpu_memory_utilization=1.5"):
        LLM(model=str(tiny_ckpt), gpu_memory_utilization=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # eager_core's own names warn about nothing
        LLM(str(tiny_ckpt), num_kv_blocks=8)


def test_vllm_generate_shapes(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4)
    ids = llm.tokenizer.encode("hello", add_special_tokens=True)
    a, b = llm.generate([{"prompt": "hello"}, {"prompt_token_ids": ids}],
                        sampling_params=[SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)] * 2,
                        use_tqdm=True)
    assert a.outputs[0].token_ids == b.outputs[0].token_ids and a.prompt == "hello"


def test_top20_logprobs_reproduce_the_fused_kernels_entropy(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4)
    prompt = [5, 6, 7, 8, 9]
    out = llm.generate(prompt_token_ids=[prompt], params=SamplingParams(temperature=0, max_tokens=6, logprobs=20,
                                                                        ignore_eos=True))[0].outputs[0]
    logits = llm.logits(prompt + out.token_ids)
    gate = entropy_gate(logits[len(prompt) - 1:-1], torch.zeros(6), top_k=20, kind="topk")
    for step, (entry, token) in enumerate(zip(out.logprobs, out.token_ids)):
        top = sorted(entry.values(), key=lambda lp: lp.rank)[:20]
        probs = [math.exp(lp.logprob) for lp in top]
        z = sum(probs)
        entropy = -sum(p / z * math.log(p / z) for p in probs)
        assert abs(entropy - float(gate.entropy_topk[step])) < 1e-4
        assert [lp.rank for lp in top] == list(range(1, 21))
        assert int(gate.top2_ids[step][0]) == max(entry, key=lambda t: entry[t].logprob)
