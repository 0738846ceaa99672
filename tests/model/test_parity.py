"""Parity with transformers on tiny random checkpoints of every supported architecture."""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, SamplingParams
from tiny_models import ARCHS, load_hf_model

PROMPTS = [[3, 17, 42], list(range(5, 45)), [7], list(range(100, 117))]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_float32_logits_match_transformers(tiny_ckpt_factory, arch):
    folder = tiny_ckpt_factory(arch)
    llm, hf = LLM(str(folder), num_kv_blocks=32, block_size=8), load_hf_model(folder)
    for ids in PROMPTS:
        ours = llm.logits(ids)
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0].float()
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max().item() < 1e-4, (arch, len(ids))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_greedy_ragged_batch_matches_transformers(tiny_ckpt_factory, arch):
    folder = tiny_ckpt_factory(arch)
    llm, hf = LLM(str(folder), num_kv_blocks=64, block_size=8), load_hf_model(folder)
    hf.generation_config.eos_token_id = None   # like ignore_eos (min_new_tokens would mask EOS instead)
    params = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
    outs = llm.generate(prompt_token_ids=PROMPTS, params=params)
    for ids, out in zip(PROMPTS, outs):
        with torch.no_grad():
            ref = hf.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
        assert out.outputs[0].token_ids == ref[0, len(ids):].tolist(), arch
        assert out.outputs[0].finish_reason == "length"


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_bfloat16_logits_close_to_transformers(tiny_ckpt_factory, arch):
    """bf16 keeps 8 significant bits: a logit in [2^e, 2^(e+1)) is a multiple of ulp = 2^(e-7)
    (3.9e-3 for logits in [0.5, 1), the size of these). Both engines round every matmul output,
    residual add and the logits to bf16, possibly in different orders, so per position we allow
    2 ulps of the row's largest logit against transformers' bf16 run, and against the float32 truth
    no more than transformers' own bf16 error plus 1 ulp. (The prefill measures 0 ulps apart: the
    same roundings. test_decode_parity.py checks decode steps, where our kernels differ.)"""
    folder = tiny_ckpt_factory(arch)
    llm = LLM(str(folder), dtype="bfloat16", num_kv_blocks=32, block_size=8)
    hf16, hf32 = load_hf_model(folder, torch.bfloat16), load_hf_model(folder)
    for ids in PROMPTS:
        ours = llm.logits(ids)
        with torch.no_grad():
            ref16 = hf16(torch.tensor([ids])).logits[0].float()
            ref32 = hf32(torch.tensor([ids])).logits[0].float()
        ulp = torch.exp2(torch.floor(torch.log2(ref32.abs().amax(-1))) - 7)   # per position
        assert ((ours - ref16).abs().amax(-1) <= 2 * ulp).all()
        assert ((ours - ref32).abs().amax(-1) <= (ref16 - ref32).abs().amax(-1) + ulp).all()


def test_chunked_prefill_equals_one_shot(tiny_ckpt_factory):
    folder = tiny_ckpt_factory("qwen2")
    ids = list(range(3, 83))
    whole = LLM(str(folder), num_kv_blocks=32, block_size=8).logits(ids)
    chunked = LLM(str(folder), num_kv_blocks=32, block_size=8, max_num_batched_tokens=13).logits(ids)
    assert (whole - chunked).abs().max().item() < 1e-5
