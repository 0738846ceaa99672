"""Loading that keeps one copy of the weights: plain reads equal the safetensors library's, casting
while reading equals casting afterwards, and a Transformer built with release_weights drops each
layer's checkpoint tensors yet computes the same logits."""

from __future__ import annotations

import torch
from safetensors import safe_open

from eager_core.io import checkpoint
from eager_core.io.checkpoint import load_weights, read_config
from eager_core.io.freed_memory import release_freed_memory
from eager_core.io.safetensors_format import write_safetensors
from eager_core.model.config import ModelConfig
from eager_core.model.transformer import Transformer


def test_plain_reads_equal_the_library(tiny_ckpt):
    ours = load_weights(tiny_ckpt)
    with safe_open(str(tiny_ckpt / "model.safetensors"), framework="pt") as f:
        lib = {k: f.get_tensor(k) for k in f.keys()}
    assert ours.keys() == lib.keys()
    for k in lib:
        assert ours[k].dtype == lib[k].dtype and torch.equal(ours[k], lib[k]), k


def test_casting_while_reading_equals_casting_after_and_scales_keep_their_dtype(tmp_path, tiny_ckpt):
    cast = load_weights(tiny_ckpt, torch.bfloat16)
    for k, t in load_weights(tiny_ckpt).items():
        assert torch.equal(cast[k], t.to(torch.bfloat16) if t.is_floating_point() else t), k
    tensors = {"a.weight": torch.randn(4, 8), "a.scales": torch.randn(4, 1), "ids": torch.arange(3)}
    write_safetensors(tmp_path / "model.safetensors", [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()],
                      iter(tensors.values()))
    got = load_weights(tmp_path, torch.bfloat16)
    assert got["a.weight"].dtype == torch.bfloat16 and got["ids"].dtype == torch.int64
    assert got["a.scales"].dtype == torch.float32 and torch.equal(got["a.scales"], tensors["a.scales"])


def test_release_weights_drops_layer_tensors_and_changes_no_logit(tiny_ckpt):
    cfg = ModelConfig.from_hf(read_config(tiny_ckpt))
    kept = Transformer(cfg, load_weights(tiny_ckpt), torch.float32)
    weights = load_weights(tiny_ckpt)
    released = Transformer(cfg, weights, torch.float32, release_weights=True)
    assert not any(k.startswith("model.layers.") for k in weights)
    assert "model.embed_tokens.weight" in weights   # outside the layers: left to the caller
    for a, b in zip(vars(kept.layers[0]).values(), vars(released.layers[0]).values()):
        assert (a is None and b is None) or torch.equal(a, b)
    assert torch.equal(kept.norm, released.norm) and torch.equal(kept.lm_head, released.lm_head)


def test_plain_reads_do_not_map_the_file(tiny_ckpt, monkeypatch):
    # A mapped file's pages would count in the resident set while the model copies out of it.
    def refuse(*a, **k):
        raise AssertionError("safe_open (a memory map) used for a file of plain dtypes")
    monkeypatch.setattr(checkpoint, "safe_open", refuse)
    assert load_weights(tiny_ckpt)


def test_release_freed_memory_trims_under_glibc():
    import platform
    assert release_freed_memory() is (platform.libc_ver()[0] == "glibc")
