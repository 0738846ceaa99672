"""The decoder, top to bottom: embed -> N x (attention, MLP) -> norm -> logits.

One class covers Llama, Qwen2, Qwen3 and SmolLM3; the differences are switches in ModelConfig.
Weights are plain tensors (no nn.Module tree), loaded from HF names and fused at load time:
q/k/v become one [q+k+v, hidden] matrix and gate/up one [2*inter, hidden] matrix, so each layer
runs 4 matmuls instead of 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from eager_core.errors import CheckpointError
from eager_core.io.freed_memory import release_freed_memory
from eager_core.model.attention import AttentionMetadata, paged_attention, write_kv
from eager_core.model.config import ModelConfig
from eager_core.model.layers import apply_rope, rope_cos_sin, rope_inv_freq, swiglu_mlp
from eager_core.model.quantized import (INT8_LM_HEAD, check_quantization, fused_int8, prequantized,
                                        weight_nbytes)
from eager_core.ops.decode_layers import decode_layers, use_decode_layers
from eager_core.ops.int8_linear import Int8Weight
from eager_core.ops.linear import linear
from eager_core.ops.norm import rms_norm

Linear = torch.Tensor | Int8Weight   # a linear weight [out, in]: float, or weight-only int8 (model/quantized.py)


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    qkv_w: Linear
    qkv_b: torch.Tensor | None
    o_w: Linear
    o_b: torch.Tensor | None
    q_norm: torch.Tensor | None
    k_norm: torch.Tensor | None
    post_norm: torch.Tensor
    gate_up_w: Linear
    gate_up_b: torch.Tensor | None
    down_w: Linear
    down_b: torch.Tensor | None


class RowParallel(Protocol):
    """The collectives a tensor-parallel shard needs (eager_core/model/tensor_parallel.py)."""

    def reduce(self, partial: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Sum partial outputs of a row-parallel layer over the ranks, then add the bias once."""

    def check_inputs(self, input_ids: torch.Tensor) -> None:
        """Raise if the ranks are not running the same step."""


class Transformer:
    """A decoder-only transformer that reads and writes a paged KV cache.

    ``forward`` takes the packed new tokens of a step and returns logits only for the rows listed in
    ``logits_indices`` (the positions that will be sampled), which saves the vocabulary matmul for
    every other prompt token.

    With ``tp`` (tensor parallel), ``cfg`` and ``weights`` are this rank's shard: its heads and MLP
    rows (see model/tensor_parallel.py); o_proj and down_proj yield partial sums that ``tp``
    all-reduces, and their biases are added once, after the sum.

    With ``release_weights``, each layer's checkpoint tensors are deleted from ``weights`` once the
    layer holds its own (fused, cast) copies, so that loading peaks at one copy of the weights plus
    one layer instead of two copies; the caller must not use ``weights`` afterwards.

    With ``quantization="int8"`` every linear weight, the LM head included, is an ``Int8Weight``
    (weight-only int8; see model/quantized.py); activations and the KV cache stay in ``dtype``.
    """

    def __init__(self, cfg: ModelConfig, weights: dict[str, torch.Tensor], dtype: torch.dtype,
                 device: str | torch.device = "cpu", tp: RowParallel | None = None, quantization: str | None = None,
                 release_weights: bool = False):
        check_quantization(quantization)
        self.cfg, self.dtype, self.device, self.tp = cfg, dtype, torch.device(device), tp
        self.quantization = quantization
        take = _WeightTaker(weights, dtype, self.device, quantization)
        h, hd = cfg.hidden_size, cfg.head_dim
        q_out, kv_out = cfg.num_heads * hd, cfg.num_kv_heads * hd
        self.embed = take("model.embed_tokens.weight", (cfg.vocab_size, h))
        self.layers: list[LayerWeights] = []
        for i in range(cfg.num_layers):
            p = f"model.layers.{i}."
            attn, mlp = p + "self_attn.", p + "mlp."
            qkv_b = None
            if cfg.qkv_bias:
                qkv_b = torch.cat([take(attn + "q_proj.bias", (q_out,)), take(attn + "k_proj.bias", (kv_out,)),
                                   take(attn + "v_proj.bias", (kv_out,))])
            gate_up_b = None
            if cfg.mlp_bias:
                gate_up_b = torch.cat([take(mlp + "gate_proj.bias", (cfg.intermediate_size,)),
                                       take(mlp + "up_proj.bias", (cfg.intermediate_size,))])
            self.layers.append(LayerWeights(
                input_norm=take(p + "input_layernorm.weight", (h,)),
                qkv_w=take.linear((attn + "q_proj", (q_out, h)), (attn + "k_proj", (kv_out, h)),
                                  (attn + "v_proj", (kv_out, h))),
                qkv_b=qkv_b,
                o_w=take.linear((attn + "o_proj", (h, q_out))),
                o_b=take(attn + "o_proj.bias", (h,)) if cfg.o_bias else None,
                q_norm=take(attn + "q_norm.weight", (hd,)) if cfg.qk_norm else None,
                k_norm=take(attn + "k_norm.weight", (hd,)) if cfg.qk_norm else None,
                post_norm=take(p + "post_attention_layernorm.weight", (h,)),
                gate_up_w=take.linear((mlp + "gate_proj", (cfg.intermediate_size, h)),
                                      (mlp + "up_proj", (cfg.intermediate_size, h))),
                gate_up_b=gate_up_b,
                down_w=take.linear((mlp + "down_proj", (h, cfg.intermediate_size))),
                down_b=take(mlp + "down_proj.bias", (h,)) if cfg.mlp_bias else None,
            ))
            if release_weights:   # the layer's own copies exist now (fused, cast): drop the checkpoint's
                for name in [k for k in weights if k.startswith(p)]:
                    del weights[name]
                release_freed_memory()   # their pages back to the OS now, not after the last layer
        self.norm = take("model.norm.weight", (h,))
        head = "model.embed_tokens" if cfg.tie_word_embeddings else "lm_head"
        if quantization is not None and INT8_LM_HEAD:   # tied: an int8 copy; the float embedding stays for lookups
            self.lm_head: Linear = take.linear((head, (cfg.vocab_size, h)))
        else:
            self.lm_head = self.embed if cfg.tie_word_embeddings else take("lm_head.weight", (cfg.vocab_size, h))
        self.inv_freq = rope_inv_freq(hd, cfg.rope_theta, cfg.rope_scaling).to(self.device)
        self.scale = hd ** -0.5
        # Decode steps of plain Llama-style layers run as one compiled call (ops/decode_layers.py);
        # the loop in forward() stays the reference and the path for everything else.
        self.fused_decode = (tp is None and self.device.type == "cpu" and not cfg.qk_norm
                             and not (cfg.qkv_bias or cfg.o_bias or cfg.mlp_bias) and all(cfg.rope_layers)
                             and dtype in (torch.float32, torch.bfloat16))

    def weight_bytes(self) -> int:
        """Bytes of weights one decode step reads (the embedding row lookup is negligible)."""
        tensors = [self.norm, self.lm_head]
        for lw in self.layers:
            tensors += [t for t in vars(lw).values() if t is not None]
        return sum(weight_nbytes(t) for t in tensors)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata,
                kv_cache: torch.Tensor, logits_indices: torch.Tensor) -> torch.Tensor:
        """Run the packed tokens [T] through the model; return float32 logits [len(logits_indices), V].

        ``kv_cache`` is [layers, 2, slots, kv_heads, head_dim]; the new tokens' K/V are written into
        the slots given by ``meta.slot_mapping`` before attention reads them.
        """
        cfg = self.cfg
        T, hd = input_ids.shape[0], cfg.head_dim
        q_out, kv_out = cfg.num_heads * hd, cfg.num_kv_heads * hd
        tp = self.tp
        if tp is not None:
            tp.check_inputs(input_ids)
        x = F.embedding(input_ids, self.embed)
        cos, sin = rope_cos_sin(positions, self.inv_freq, self.dtype)
        if (self.fused_decode and meta.num_decode == T and meta.decode_tables is not None
                and use_decode_layers(T, self.dtype)):
            # Read from self.layers at each call (a few us), so a swapped layer weight is always the one used.
            weights = [t for lw in self.layers for t in _decode_layer_tensors(lw)]
            x = decode_layers(x, weights, cos.view(T, hd), sin.view(T, hd), kv_cache, meta.slot_mapping,
                              meta.decode_tables, meta.decode_context_lens, meta.block_size, self.scale,
                              cfg.rms_norm_eps, cfg.num_heads, cfg.num_kv_heads)
            return linear(rms_norm(x[logits_indices], self.norm, cfg.rms_norm_eps), self.lm_head).float()
        for i, lw in enumerate(self.layers):
            # --- attention block ---
            hn = rms_norm(x, lw.input_norm, cfg.rms_norm_eps)
            qkv = linear(hn, lw.qkv_w, lw.qkv_b)
            q = qkv[:, :q_out].view(T, cfg.num_heads, hd)
            k = qkv[:, q_out:q_out + kv_out].view(T, cfg.num_kv_heads, hd)
            v = qkv[:, q_out + kv_out:].view(T, cfg.num_kv_heads, hd)
            if lw.q_norm is not None:  # Qwen3: RMSNorm per head before RoPE
                q = rms_norm(q, lw.q_norm, cfg.rms_norm_eps)
                k = rms_norm(k, lw.k_norm, cfg.rms_norm_eps)
                if cfg.rope_layers[i]:
                    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            elif cfg.rope_layers[i]:   # rotate q and k heads together: one set of ops instead of two
                qk = apply_rope(qkv[:, :q_out + kv_out].view(T, cfg.num_heads + cfg.num_kv_heads, hd), cos, sin)
                q, k = qk[:, :cfg.num_heads], qk[:, cfg.num_heads:]
            k_cache, v_cache = kv_cache[i, 0], kv_cache[i, 1]
            write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
            attn = paged_attention(q, k_cache, v_cache, meta, self.scale)
            if tp is None:
                x = x + linear(attn.reshape(T, q_out), lw.o_w, lw.o_b)
            else:
                x = x + tp.reduce(linear(attn.reshape(T, q_out), lw.o_w), lw.o_b)
            # --- MLP block ---
            hn = rms_norm(x, lw.post_norm, cfg.rms_norm_eps)
            if tp is None:
                x = x + swiglu_mlp(hn, lw.gate_up_w, lw.gate_up_b, lw.down_w, lw.down_b)
            else:
                x = x + tp.reduce(swiglu_mlp(hn, lw.gate_up_w, lw.gate_up_b, lw.down_w, None), lw.down_b)
        x = rms_norm(x[logits_indices], self.norm, cfg.rms_norm_eps)
        return linear(x, self.lm_head).float()


def _decode_layer_tensors(lw: LayerWeights) -> tuple[torch.Tensor, ...]:
    """A layer's tensors in ops.decode_layers' order: norm, qkv, o, norm, gate_up, down; an int8
    linear as its values, scales and offsets (empty when symmetric)."""
    def parts(w: Linear) -> tuple[torch.Tensor, ...]:
        return w.kernel_tensors if isinstance(w, Int8Weight) else (w,)
    return (lw.input_norm, *parts(lw.qkv_w), *parts(lw.o_w), lw.post_norm, *parts(lw.gate_up_w), *parts(lw.down_w))


class _WeightTaker:
    """Fetch a named tensor, check its shape, cast it; a missing or mis-shaped tensor is a CheckpointError.

    ``linear`` fetches (and fuses) linear weights: float in ``dtype``, or ``Int8Weight`` under
    ``quantization="int8"``, from float or pre-quantized checkpoint tensors (model/quantized.py).
    """

    def __init__(self, weights: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device,
                 quantization: str | None = None):
        self.weights, self.dtype, self.device, self.quantization = weights, dtype, device, quantization

    def __call__(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        return self.raw(name, shape).to(device=self.device, dtype=self.dtype).contiguous()

    def raw(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The checked float tensor in the checkpoint's dtype, on the CPU (a pre-quantized one dequantized)."""
        if name not in self.weights and name.endswith(".weight") and len(shape) == 2:
            pre = prequantized(self.weights, name.removesuffix(".weight"), shape)
            if pre is not None:
                return pre.dequantize(torch.float32)
        if name not in self.weights:
            raise CheckpointError(f"checkpoint is missing tensor {name!r} (expected shape {list(shape)})")
        t = self.weights[name]
        if tuple(t.shape) != tuple(shape):
            raise CheckpointError(f"tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        if not t.is_floating_point():
            raise CheckpointError(f"tensor {name!r} has dtype {t.dtype}, expected a floating-point type")
        return t

    def linear(self, *parts: tuple[str, tuple[int, int]]) -> Linear:
        """The weights ``<prefix>.weight`` of ``parts`` [(prefix, shape)], stacked along the output rows."""
        if self.quantization is None:
            tensors = [self(prefix + ".weight", shape) for prefix, shape in parts]
            return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
        found = [(prefix + ".weight", prequantized(self.weights, prefix, shape) or self.raw(prefix + ".weight", shape))
                 for prefix, shape in parts]
        return fused_int8(found, self.device)
