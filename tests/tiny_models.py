"""Tiny random checkpoints of every supported architecture, saved by transformers itself.

The tokenizer is a byte-level BPE without merges (256 byte tokens + ChatML specials), so every
string round-trips and the vocabulary stays small.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 256 + len(SPECIALS)
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, eos_token_id=258,
            bos_token_id=256, pad_token_id=256)

# name -> (transformers config class, model class, config overrides)
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True)),
    "llama3_scaled": ("LlamaConfig", "LlamaForCausalLM", dict(
        tie_word_embeddings=False, attention_bias=True, mlp_bias=True,
        rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=64))),
    "llama_linear": ("LlamaConfig", "LlamaForCausalLM", dict(
        rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0))),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, tie_word_embeddings=True)),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", dict(num_hidden_layers=4, no_rope_layers=[1, 0, 1, 0])),
}


def write_tokenizer(folder: Path, extra_specials: list[str] = ()) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS + list(extra_specials))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(
        chat_template=CHATML, eos_token="<|im_end|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>",
        tokenizer_class="PreTrainedTokenizerFast", model_max_length=512)))
    (folder / "generation_config.json").write_text(json.dumps(dict(eos_token_id=[258], bos_token_id=256)))


def make_tiny_checkpoint(folder: Path, arch: str = "llama", seed: int = 0, **overrides) -> Path:
    """Save a random tiny model of ``arch`` (a key of ARCHS) with transformers' save_pretrained."""
    import transformers

    cfg_name, model_name, arch_overrides = ARCHS[arch]
    torch.manual_seed(seed)
    cfg = getattr(transformers, cfg_name)(**{**BASE, **arch_overrides, **overrides})
    model = getattr(transformers, model_name)(cfg).eval()
    with torch.no_grad():   # random init leaves norms at 1 and biases at 0: perturb them so they matter
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return folder


def load_hf_model(folder: Path, dtype: torch.dtype = torch.float32):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
