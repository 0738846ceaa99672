"""The one-call decode stack (ops/decode_layers.py, csrc/decode_layers_cpu.cpp) against the model's
layer-by-layer PyTorch path: every decode step's logits, ragged batches with forks, both dtypes;
which models take it; and its argument checks."""

from __future__ import annotations

import pytest
import torch

from eager_core import LLM, SamplingParams
from eager_core.ops import int8_linear
from eager_core.ops.decode_layers import decode_layers_available
from eager_core.ops.linear import SMALL_M

PROMPTS = [[(i * 7 + j) % 250 for j in range(n)] for i, n in enumerate([3, 17, 40, 9])]


def _need(dtype: torch.dtype) -> None:
    if not decode_layers_available(dtype):
        pytest.skip(f"decode_layers does not run here for {dtype} (extension or the CPU's instructions)")


def _run(ckpt, dtype: str, fused: bool, n: int = 2, quantization: str | None = None):
    """Tokens and every step's logits of a seeded sampling run, with the one-call path on or off."""
    llm = LLM(str(ckpt), num_kv_blocks=200, block_size=4, dtype=dtype, enable_prefix_caching=False,
              quantization=quantization)
    model = llm.llm_engine.runner.model
    model.fused_decode = fused
    steps, forward = [], model.forward

    def record(*args, **kwargs):
        out = forward(*args, **kwargs)
        steps.append(out.clone())
        return out

    model.forward = record
    params = SamplingParams(temperature=0.8, max_tokens=20, n=n, seed=5, ignore_eos=True)
    outs = llm.generate(prompt_token_ids=PROMPTS, params=params)
    return [[c.token_ids for c in r.outputs] for r in outs], steps, model


@pytest.mark.parametrize("n", [2, 5])   # 8 rows: the one-call path; 20 rows: more than it takes
@pytest.mark.parametrize("quantization", [None, "int8", "int8-offsets"])
@pytest.mark.parametrize("dtype,atol", [("float32", 1e-4), ("bfloat16", 0.0)])
def test_every_decode_step_equals_the_layer_by_layer_path(tiny_ckpt, dtype, atol, quantization, n, monkeypatch):
    _need(getattr(torch, dtype))
    if quantization == "int8-offsets":   # every matrix asymmetric: the op's offsets tensors in use
        monkeypatch.setattr(int8_linear, "ASYMMETRIC_GAIN", 0.0)
        quantization = "int8"
    fused_tokens, fused_steps, model = _run(tiny_ckpt, dtype, fused=True, quantization=quantization, n=n)
    assert model.fused_decode   # a plain Llama: the one-call path was available
    if quantization:
        assert (model.layers[0].down_w.offsets is not None) == (int8_linear.ASYMMETRIC_GAIN == 0.0)
    ref_tokens, ref_steps, _ = _run(tiny_ckpt, dtype, fused=False, quantization=quantization, n=n)
    assert fused_tokens == ref_tokens
    assert len(fused_steps) == len(ref_steps)
    worst = max((a - b).abs().max().item() for a, b in zip(fused_steps, ref_steps))
    # bfloat16: the same roundings in the same order (only std::exp vs PyTorch's vectorised exp in
    # SiLU may differ, in the last float32 bit, and did not here); float32: summation order of the
    # norm's mean.
    assert worst <= atol, worst


def test_the_path_is_taken_only_where_it_applies(tiny_ckpt, tiny_ckpt_factory, monkeypatch):
    _need(torch.float32)
    calls = []
    import eager_core.model.transformer as transformer
    real = transformer.decode_layers
    monkeypatch.setattr(transformer, "decode_layers", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    llm = LLM(str(tiny_ckpt), num_kv_blocks=200, block_size=4, enable_prefix_caching=False)
    llm.generate(prompt_token_ids=PROMPTS, params=SamplingParams(max_tokens=4, n=2, seed=1, ignore_eos=True))
    assert calls and max(calls) <= SMALL_M[torch.float32]   # decode-only steps, within the kernel's rows
    from eager_core.ops.decode_layers import use_decode_layers
    assert not use_decode_layers(SMALL_M[torch.float32] + 1, torch.float32) and not use_decode_layers(0, torch.float32)
    calls.clear()
    monkeypatch.setenv("EAGER_CORE_DISABLE_EXT", "1")
    llm.generate(prompt_token_ids=PROMPTS, params=SamplingParams(max_tokens=4, seed=1, ignore_eos=True))
    assert not calls
    for arch in ("qwen3", "qwen2"):   # q/k norms, qkv biases: the layer loop
        assert not LLM(str(tiny_ckpt_factory(arch)), num_kv_blocks=64).llm_engine.runner.model.fused_decode


def test_op_checks_its_arguments(tiny_ckpt):
    _need(torch.float32)
    llm = LLM(str(tiny_ckpt), num_kv_blocks=16, block_size=4)
    model, kv = llm.llm_engine.runner.model, llm.llm_engine.runner.kv_pool.kv
    cfg, D = model.cfg, model.cfg.head_dim
    weights = [t for lw in model.layers for t in (lw.input_norm, lw.qkv_w, lw.o_w, lw.post_norm, lw.gate_up_w,
                                                   lw.down_w)]
    x = torch.randn(1, cfg.hidden_size)
    good = dict(cos=torch.ones(1, D), sin=torch.zeros(1, D), slots=torch.tensor([0]),
                tables=torch.tensor([[0]]), lens=torch.tensor([1]))

    def call(**kw):
        a = {**good, **kw}
        return torch.ops.eager_core.decode_layers(kw.get("x", x), kw.get("w", weights), a["cos"], a["sin"],
                                                  kv, a["slots"], a["tables"], a["lens"], 4, 0.1, 1e-6,
                                                  cfg.num_heads, cfg.num_kv_heads)

    assert call().shape == x.shape
    for bad in (dict(slots=torch.tensor([10 ** 6])), dict(lens=torch.tensor([5])), dict(tables=torch.tensor([[99]])),
                dict(w=weights[:5]), dict(w=[w.t() if w.dim() == 2 else w for w in weights]),
                dict(x=x.bfloat16()), dict(cos=torch.ones(1, D + 2))):
        with pytest.raises(RuntimeError, match="decode_layers"):
            call(**bad)
