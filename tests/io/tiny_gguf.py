"""A small random Llama GGUF written the way llama.cpp's converter writes one (Q/K rows permuted).

GQA (4 heads, 2 KV heads), untied output head, ``blk.0.attn_q`` quantized (Q8_0 by default), the rest
F32 so the conversion can be checked bit for bit; byte-level BPE or sentencepiece vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from eager_core.io.gguf_tokenizer import byte_alphabet

TINY = dict(hidden=64, heads=4, kv_heads=2, layers=2, intermediate=96, theta=10000.0, eps=1e-6, ctx=128)
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_BPE_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("Ġa", "n"), ("Ġan", "d"),
               ("Ġ", "Ġ"), ("o", "n"), ("e", "r")]
_SPM_PIECES = ["▁", "t", "h", "e", "a", "n", "d", "o", "r", "i", "s", "▁t", "he", "▁the", "an", "▁an",
               "▁and", "in", "on", "er", "is", "▁is", "▁a"]


def llama_cpp_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """The row order llama.cpp's converter writes for q/k (adjacent RoPE pairs), from HF order."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def _byte_level_vocab() -> tuple[list[str], list[int], list[str]]:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + sorted(set(byte_alphabet().values())) + ["".join(m) for m in _BPE_MERGES]
    return tokens, [3] * len(specials) + [1] * (len(tokens) - len(specials)), [" ".join(m) for m in _BPE_MERGES]


def _spm_vocab() -> tuple[list[str], list[int], list[float]]:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + _SPM_PIECES
    types = [2, 3, 3] + [6] * 256 + [1] * len(_SPM_PIECES)
    # Longer pieces score higher, with distinct scores, like a real sentencepiece model's log-probs.
    scores = [0.0] * 259 + [-100.0 + 10 * len(p) - 0.01 * i for i, p in enumerate(_SPM_PIECES)]
    return tokens, types, scores


def tiny_hf_weights(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in HF layout and names for the TINY shape."""
    g = torch.Generator().manual_seed(seed)
    h, d = TINY["hidden"], TINY["hidden"] // TINY["heads"]

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.2

    weights = {"model.embed_tokens.weight": rand(vocab, h), "model.norm.weight": 1 + rand(h),
               "lm_head.weight": rand(vocab, h)}
    for i in range(TINY["layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": 1 + rand(h), p + "post_attention_layernorm.weight": 1 + rand(h),
            p + "self_attn.q_proj.weight": rand(TINY["heads"] * d, h),
            p + "self_attn.k_proj.weight": rand(TINY["kv_heads"] * d, h),
            p + "self_attn.v_proj.weight": rand(TINY["kv_heads"] * d, h),
            p + "self_attn.o_proj.weight": rand(h, TINY["heads"] * d),
            p + "mlp.gate_proj.weight": rand(TINY["intermediate"], h),
            p + "mlp.up_proj.weight": rand(TINY["intermediate"], h),
            p + "mlp.down_proj.weight": rand(h, TINY["intermediate"]),
        })
    return weights


_TO_GGUF = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
            "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
            "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _gguf_name(hf: str) -> str:
    if hf.startswith("model.layers."):
        layer, rest = hf.removeprefix("model.layers.").split(".", 1)
        return f"blk.{layer}.{_TO_GGUF[rest.removesuffix('.weight')]}.weight"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


def write_tiny_gguf(path: Path, *, arch: str = "llama", tokenizer: str = "gpt2", quant_q0: str = "Q8_0",
                    extra_tensors: dict[str, np.ndarray] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a tiny GGUF to ``path``; return the HF-layout weights it encodes (before quantization)."""
    writer = gguf.GGUFWriter(str(path), arch)
    if tokenizer == "llama":
        tokens, types, scores = _spm_vocab()
        writer.add_tokenizer_model("llama")
        writer.add_token_scores(scores)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)
    else:
        tokens, types, merges = _byte_level_vocab()
        writer.add_tokenizer_model(tokenizer)
        writer.add_tokenizer_pre("smollm")
        writer.add_token_merges(merges)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_add_bos_token(False)
        writer.add_chat_template(CHATML)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_block_count(TINY["layers"])
    writer.add_context_length(TINY["ctx"])
    writer.add_embedding_length(TINY["hidden"])
    writer.add_feed_forward_length(TINY["intermediate"])
    writer.add_head_count(TINY["heads"])
    writer.add_head_count_kv(TINY["kv_heads"])
    writer.add_rope_freq_base(TINY["theta"])
    writer.add_layer_norm_rms_eps(TINY["eps"])
    writer.add_rope_dimension_count(TINY["hidden"] // TINY["heads"])
    writer.add_vocab_size(len(tokens))
    weights = tiny_hf_weights(len(tokens), seed)
    for hf, tensor in weights.items():
        name = _gguf_name(hf)
        if ".attn_q." in name:
            tensor = llama_cpp_permute(tensor, TINY["heads"])
        elif ".attn_k." in name:
            tensor = llama_cpp_permute(tensor, TINY["kv_heads"])
        array = tensor.numpy()
        if name == "blk.0.attn_q.weight" and quant_q0 != "F32":
            qtype = gguf.GGMLQuantizationType[quant_q0]
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            data = gguf.quants.quantize(array, qtype) if quant_q0 != "Q8_1" else \
                np.zeros((array.shape[0], array.shape[1] // block * type_size), dtype=np.uint8)
            writer.add_tensor(name, data, raw_dtype=qtype)
        else:
            writer.add_tensor(name, array)
    for name, array in (extra_tensors or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights
