"""The real default model: our conversion and tokenizer agree with transformers on the same GGUF.

transformers is the reference: its tokenizer loaded straight from the GGUF, its chat template
rendering, and its own GGUF loader (dequantization, Q/K un-permutation, names) for the logits.
"""

from __future__ import annotations

import functools
from pathlib import Path

import gguf
import pytest
import torch
import transformers
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from eager_core.io.checkpoint import load_weights, read_config
from eager_core.io.tokenizer import Tokenizer

TEXTS = [
    "The capital of France is",
    "Digits: 0 7 42 3.14159 1,000,000 and 2024-05-17; phone 555 0199",
    "whitespace   runs\t\ttabs\n\n\nnewlines    \n  indented  1   22    333 ",
    "Accents: café, naïve, Ångström, déjà vu, São Paulo, Øresund, ß, œ, ñ",
    "Emoji: 😀👍🏽 🇫🇷 👨‍👩‍👧 ❤️ 🤖 — and CJK 你好, 日本語",
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>text after end<repo_name>x<file_sep>",
    "",
    "   ",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour 🎨."},
     {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another, in French: é?"}],
]


@pytest.fixture(scope="module")
def ours(smollm_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(smollm_dir)


@pytest.fixture(scope="module")
def hf_converted(smollm_dir: Path):
    return transformers.AutoTokenizer.from_pretrained(str(smollm_dir))


@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_encode_matches_transformers(ours, hf_gguf_tokenizer, hf_converted, add_special_tokens: bool) -> None:
    for text in TEXTS:
        expected = hf_gguf_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        assert ours.encode(text, add_special_tokens=add_special_tokens) == expected, text
        assert hf_converted.encode(text, add_special_tokens=add_special_tokens) == expected, text


def test_special_tokens_stay_whole(ours) -> None:
    ids = ours.encode("<|im_start|>user\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2 and len(ids) == 5


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode_matches_transformers_and_round_trips(ours, hf_gguf_tokenizer, skip_special_tokens: bool) -> None:
    for text in TEXTS:
        ids = ours.encode(text)
        expected = hf_gguf_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        assert ours.decode(ids, skip_special_tokens=skip_special_tokens) == expected, text
        if not skip_special_tokens:
            assert ours.decode(ids, skip_special_tokens=False) == text


def test_chat_template_matches_transformers(ours, hf_converted, hf_gguf_tokenizer) -> None:
    for chat in CHATS:
        for add_generation_prompt in (True, False):
            expected = hf_converted.apply_chat_template(chat, tokenize=False,
                                                        add_generation_prompt=add_generation_prompt)
            assert ours.apply_chat_template(chat, add_generation_prompt=add_generation_prompt) == expected
            assert hf_gguf_tokenizer.apply_chat_template(chat, tokenize=False,
                                                         add_generation_prompt=add_generation_prompt) == expected
    assert ours.apply_chat_template(CHATS[0]).endswith("<|im_start|>assistant\n")


def test_token_properties(ours, hf_gguf_tokenizer, smollm_dir: Path) -> None:
    assert ours.eos_token_ids == [2, 0]  # <|im_end|> first, then <|endoftext|> (llama.cpp stops on both)
    assert ours.bos_token_id == hf_gguf_tokenizer.bos_token_id == 1
    assert ours.vocab_size == len(hf_gguf_tokenizer) == read_config(smollm_dir)["vocab_size"] == 49152
    assert ours.special_ids == set(range(17))  # the GGUF's 17 control tokens
    assert set(hf_gguf_tokenizer.all_special_ids) <= ours.special_ids
    for i in (0, 2, 300, 10813, 49151):
        assert ours.id_to_token(i) == hf_gguf_tokenizer.convert_ids_to_tokens(i)


def _transformers_from_gguf(gguf_path: Path, naming_config_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """transformers' own GGUF loading: its config parsing, dequantization, names and Q/K un-permutation.

    ``from_pretrained(..., gguf_file=)`` does the same but insists on ``accelerate``, so we call its
    loader directly. The loader needs a model only to list the HF parameter names; that one is built
    from our config on the meta device, while the reference model uses transformers' reading of the
    GGUF metadata. (A wrong layer count in our config would show up as missing or extra tensors.)
    """
    # transformers rebuilds gguf's (pure) tensor-name table once per submodule, ~10 s for 30 layers.
    monkeypatch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
    with torch.device("meta"):
        naming = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(
            str(naming_config_dir)))
    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=naming)
    config = transformers.LlamaConfig.from_dict({k: v for k, v in parsed["config"].items() if not k.startswith("_")})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(parsed["tensors"], strict=False, assign=True)
    assert result.unexpected_keys == [] and set(result.missing_keys) <= {"lm_head.weight"}
    model.tie_weights()
    # Non-persistent buffers (RoPE inverse frequencies) are not in the checkpoint: rebuild them off meta.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.eval(), parsed["tensors"]


def test_converted_weights_and_logits_match_transformers_gguf_loader(smollm_gguf: Path, smollm_dir: Path, ours,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reference, reference_tensors = _transformers_from_gguf(smollm_gguf, smollm_dir, monkeypatch)
    converted = transformers.AutoModelForCausalLM.from_pretrained(str(smollm_dir), dtype=torch.float32).eval()
    ours_weights = load_weights(smollm_dir)
    assert set(ours_weights) == set(reference_tensors)
    for name, tensor in reference_tensors.items():
        assert torch.equal(ours_weights[name], tensor), name
    ours_config, theirs = converted.config, reference.config
    for field in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "max_position_embeddings"):
        assert getattr(ours_config, field) == getattr(theirs, field), field
    assert ours_config.rope_parameters["rope_theta"] == theirs.rope_parameters["rope_theta"]
    assert ours_config.rms_norm_eps == pytest.approx(theirs.rms_norm_eps, rel=1e-6)
    ids = torch.tensor([ours.encode("The capital of France is")])
    with torch.no_grad():
        expected, actual = reference(ids).logits, converted(ids).logits
    assert torch.allclose(actual, expected, atol=1e-4, rtol=0), (actual - expected).abs().max()
    # The checkpoint is a working model, not just matching numbers: it knows the capital of France.
    assert ours.decode([int(actual[0, -1].argmax())]) == " Paris"
