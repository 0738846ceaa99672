"""LLM(..., quantization="int8") on every supported architecture.

The int8 model must compute exactly what the float32 model computes with the dequantized weights
(int8 values x scales), up to float32 summation order: logits within 1e-4 and the same greedy
tokens, on decode steps (the compiled kernel) and on long prefills (dequantize + F.linear). How far
that is from the original float32 model is an accuracy question, measured by tools/int8_accuracy.py
(docs/performance.md), not a correctness one.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import ARCHS

from eager_core import LLM, SamplingParams
from eager_core.engine.engine_args import EngineArgs
from eager_core.errors import CheckpointError, ConfigError
from eager_core.ops import Int8Weight, int8_linear, quantize_int8

LINEARS = ("qkv_w", "o_w", "gate_up_w", "down_w")


def dequantized_twin(ckpt, llm8: LLM, dtype: str = "float32") -> LLM:
    """A float model whose every linear weight is the int8 model's, dequantized."""
    twin = LLM(str(ckpt), dtype=dtype, num_kv_blocks=64)
    dt = twin.model.dtype
    for mine, theirs in zip(twin.model.layers, llm8.model.layers):
        for name in LINEARS:
            setattr(mine, name, getattr(theirs, name).dequantize(dt))
    twin.model.lm_head = llm8.model.lm_head.dequantize(dt)
    return twin


def assert_same_model(llm8: LLM, ref: LLM, tol: float, max_tokens: int) -> None:
    """Logits within tol on 7 rows (the decode kernels) and 100 rows (dequantize + F.linear), and
    the same greedy tokens for ragged prompts with n=2."""
    for n in (7, 100):
        ids = [(i * 37 + 11) % 250 for i in range(n)]
        torch.testing.assert_close(llm8.logits(ids), ref.logits(ids), rtol=tol, atol=tol)
    prompts = [[(i * 7 + j) % 250 for j in range(k)] for i, k in enumerate([3, 17, 40])]
    params = SamplingParams(temperature=0, max_tokens=max_tokens, n=2, ignore_eos=True)
    a = llm8.generate(prompt_token_ids=prompts, params=params)
    b = ref.generate(prompt_token_ids=prompts, params=params)
    assert [[c.token_ids for c in r.outputs] for r in a] == [[c.token_ids for c in r.outputs] for r in b]


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("offsets", [False, True])
def test_int8_model_equals_float_model_with_dequantized_weights(tiny_ckpt_factory, arch, offsets, monkeypatch):
    ckpt = tiny_ckpt_factory(arch)
    if offsets:   # every matrix asymmetric (tiny Gaussian weights would otherwise stay symmetric)
        monkeypatch.setattr(int8_linear, "ASYMMETRIC_GAIN", 0.0)
    llm8 = LLM(str(ckpt), quantization="int8", num_kv_blocks=64)
    assert (llm8.model.layers[0].o_w.offsets is not None) == offsets
    m = llm8.model
    assert all(isinstance(getattr(lw, n), Int8Weight) for lw in m.layers for n in LINEARS)
    assert isinstance(m.lm_head, Int8Weight) and m.embed.dtype == torch.float32   # lookup stays float
    assert m.layers[0].input_norm.dtype == torch.float32
    twin = dequantized_twin(ckpt, llm8)
    assert_same_model(llm8, twin, tol=1e-4, max_tokens=12)


def test_bfloat16_activations(tiny_ckpt_factory):
    ckpt = tiny_ckpt_factory("qwen2")
    llm8 = LLM(str(ckpt), dtype="bfloat16", quantization="int8", num_kv_blocks=64)
    assert llm8.kv_pool is not None and llm8.model.embed.dtype == torch.bfloat16
    twin = dequantized_twin(ckpt, llm8, "bfloat16")
    ids = list(range(20, 40))
    torch.testing.assert_close(llm8.logits(ids), twin.logits(ids), rtol=0.05, atol=0.05)   # bf16 roundings


def test_weight_bytes_shrink(tiny_ckpt_factory):
    ckpt = tiny_ckpt_factory("llama")
    f32, i8 = LLM(str(ckpt), num_kv_blocks=16), LLM(str(ckpt), quantization="int8", num_kv_blocks=16)
    assert i8.model.weight_bytes() < 0.3 * f32.model.weight_bytes()


@pytest.mark.parametrize("bad", ["int4", "INT8", 8, ""])
def test_quantization_argument_is_validated(bad):
    with pytest.raises(ConfigError, match="quantization"):
        EngineArgs(quantization=bad)
    with pytest.raises(ConfigError, match="quantization"):
        LLM("/nonexistent", quantization=bad)   # refused before anything is loaded


def _prequantize(src, dst, names: list[str]) -> dict[str, Int8Weight]:
    """Copy checkpoint ``src`` to ``dst`` with the linear layers ``names`` stored as qweight + float16 scales."""
    shutil.copytree(src, dst)
    sd = load_file(str(dst / "model.safetensors"))
    stored = {}
    for name in names:
        q = quantize_int8(sd.pop(name + ".weight"), 32)
        sd[name + ".qweight"], sd[name + ".scales"] = q.qweight, q.scales.half()   # as Q8_0 stores them
        stored[name] = Int8Weight(q.qweight, q.scales.half().float())
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return stored


def test_prequantized_tensors_load_as_they_are(tiny_ckpt_factory, tmp_path):
    p = "model.layers.0."
    names = [p + "self_attn.q_proj", p + "mlp.down_proj", "model.embed_tokens"]
    stored = _prequantize(tiny_ckpt_factory("llama"), tmp_path / "q", names)
    llm8 = LLM(str(tmp_path / "q"), quantization="int8", num_kv_blocks=16)
    lw = llm8.model.layers[0]
    q_rows = stored[p + "self_attn.q_proj"].shape[0]
    assert torch.equal(lw.qkv_w.qweight[:q_rows], stored[p + "self_attn.q_proj"].qweight)   # no float round trip
    assert torch.equal(lw.qkv_w.scales[:q_rows], stored[p + "self_attn.q_proj"].scales)
    assert torch.equal(lw.down_w.qweight, stored[p + "mlp.down_proj"].qweight)
    emb = stored["model.embed_tokens"]
    assert torch.equal(llm8.model.lm_head.qweight, emb.qweight)          # tied head: the stored int8 itself
    assert torch.equal(llm8.model.embed, emb.dequantize())               # lookups: dequantized once
    plain = LLM(str(tmp_path / "q"), num_kv_blocks=16)                   # no quantization: dequantized at load
    assert torch.equal(plain.model.layers[0].down_w, stored[p + "mlp.down_proj"].dequantize())
    ids = list(range(30, 50))
    torch.testing.assert_close(llm8.logits(ids), dequantized_twin(tmp_path / "q", llm8).logits(ids),
                               rtol=1e-4, atol=1e-4)


def test_prequantized_scales_beyond_float16_are_a_checkpoint_error(tiny_ckpt_factory, tmp_path):
    """Scales are held in float16 (eager_core/ops/int8_linear.py): a stored float32 scale beyond its
    range is refused, naming the tensor, instead of becoming inf."""
    name = "model.layers.0.mlp.down_proj"
    _prequantize(tiny_ckpt_factory("llama"), tmp_path / "q", [name])
    sd = load_file(str(tmp_path / "q" / "model.safetensors"))
    sd[name + ".scales"] = torch.full_like(sd[name + ".scales"], 1e6, dtype=torch.float32)
    save_file(sd, str(tmp_path / "q" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=name + ".*float16"):
        LLM(str(tmp_path / "q"), quantization="int8", num_kv_blocks=16)


def _onto_q4_1_grid(w: torch.Tensor) -> torch.Tensor:
    """w as llama.cpp's Q4_1 stores it: per 32 weights of a row, d * q + m with q in 0..15, d and m
    float16 (what the default checkpoint's weights are, dequantized)."""
    n, k = w.shape
    g = w.float().view(n, k // 32, 32)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    d, m = ((hi - lo) / 15).half().float().clamp_min(1e-8), lo.half().float()
    return (torch.round((g - m) / d).clamp(0, 15) * d + m).view(n, k)


def test_a_q4_1_checkpoint_runs_in_int8_exactly(tiny_ckpt_factory, tmp_path):
    """Weights on a Q4_1 grid (the default model's) take asymmetric groups, which hold them exactly:
    the int8 model then gives the float32 model's logits up to float32 rounding and its greedy
    tokens, on decode steps (the kernels) and a long prefill (dequantize + F.linear)."""
    dst = tmp_path / "q4"
    shutil.copytree(tiny_ckpt_factory("llama"), dst)
    sd = load_file(str(dst / "model.safetensors"))
    for name in list(sd):
        if sd[name].dim() == 2 and sd[name].shape[1] % 32 == 0:   # every matrix, the (tied) head too
            sd[name] = _onto_q4_1_grid(sd[name])
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    llm8, f32 = LLM(str(dst), quantization="int8", num_kv_blocks=64), LLM(str(dst), num_kv_blocks=64)
    assert all(getattr(lw, n).offsets is not None for lw in llm8.model.layers for n in LINEARS)
    assert_same_model(llm8, f32, tol=1e-5, max_tokens=16)


def test_prequantized_offsets_load_as_they_are(tiny_ckpt_factory, tmp_path):
    dst, name = tmp_path / "qz", "model.layers.1.mlp.down_proj"
    shutil.copytree(tiny_ckpt_factory("llama"), dst)
    sd = load_file(str(dst / "model.safetensors"))
    q = quantize_int8(sd.pop(name + ".weight") + 1.0, 32, asymmetric=True)
    sd[name + ".qweight"], sd[name + ".scales"], sd[name + ".offsets"] = q.qweight, q.scales, q.offsets
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    down = LLM(str(dst), quantization="int8", num_kv_blocks=16).model.layers[1].down_w
    assert torch.equal(down.qweight, q.qweight) and torch.equal(down.offsets, q.offsets)
    plain = LLM(str(dst), num_kv_blocks=16).model.layers[1].down_w       # no quantization: dequantized
    assert torch.equal(plain, q.dequantize())
    sd[name + ".offsets"] = q.offsets[:, :1].contiguous()
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="down_proj.offsets"):
        LLM(str(dst), quantization="int8", num_kv_blocks=16)


def test_prequantized_without_scales_is_a_checkpoint_error(tiny_ckpt_factory, tmp_path):
    dst = tmp_path / "broken"
    _prequantize(tiny_ckpt_factory("llama"), dst, ["model.layers.1.mlp.up_proj"])
    sd = load_file(str(dst / "model.safetensors"))
    del sd["model.layers.1.mlp.up_proj.scales"]
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="up_proj.scales"):
        LLM(str(dst), quantization="int8", num_kv_blocks=16)
