"""Hypothesis fuzzers against the loaders: every input ends in a result or a project error (an
``EagerError`` subclass), never another exception, a hang or a huge allocation.

These build inputs from their *structure* (header fields, counts, shapes, config values), which reaches
checks that random byte splicing rarely hits. The byte-level fuzzers live with the loaders:
tests/io/test_safetensors_validation.py::test_fuzzed_files_fail_only_with_checkpoint_errors,
tests/io/test_gguf_convert.py::test_fuzzed_gguf_headers_fail_only_with_checkpoint_errors and
::test_metadata_of_the_wrong_type_fails_cleanly.

Memory: each fuzzer runs under an address-space limit a little above what the process already maps,
so a loader that believed a header claiming 10^12 tensors or a gigantic shape would fail with
MemoryError here (a test failure) instead of exhausting the machine.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eager_core import LLM
from eager_core.errors import CheckpointError, ConfigError, EagerError
from eager_core.io.checkpoint import load_weights, read_config
from eager_core.io.gguf_file import GGUFFile
from eager_core.model.config import ModelConfig

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HUGE = [10**12, 2**31, 2**32 + 1, 2**63 - 1, 2**64 - 1]


@pytest.fixture(autouse=True)
def bounded_address_space():
    """Cap this process's address space at its current size + 1.5 GiB while a fuzzer runs."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + (3 << 29)
    if hard != resource.RLIM_INFINITY and hard < limit:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --- config.json --------------------------------------------------------------------------------------------

CONFIG_KEYS = ["model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings",
               "tie_word_embeddings", "attention_bias", "mlp_bias", "rope_theta", "rope_scaling", "rope_parameters",
               "no_rope_layers", "eos_token_id", "bos_token_id", "hidden_act", "use_sliding_window", "sliding_window"]
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.sampled_from(HUGE + [-(2**70)]),
                  st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                  st.sampled_from(["llama", "qwen2", "qwen3", "smollm3", "silu", "gelu", "linear", "llama3", "yarn",
                                   "LlamaForCausalLM", "default"]))
_ROPE_KEYS = st.sampled_from(["rope_type", "type", "factor", "rope_theta", "full_attention", "low_freq_factor",
                              "high_freq_factor", "original_max_position_embeddings"])
JSON_VALUE = st.recursive(_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_ROPE_KEYS, inner, max_size=4)), max_leaves=8)
TINY_CONFIG = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=259, hidden_size=64,
                   intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


def _check_invariants(cfg: ModelConfig) -> None:
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "max_position_embeddings"):
        value = getattr(cfg, name)
        assert type(value) is int and value > 0, name
    assert cfg.num_heads % cfg.num_kv_heads == 0 and cfg.head_dim % 2 == 0
    assert math.isfinite(cfg.rms_norm_eps) and cfg.rms_norm_eps >= 0
    assert math.isfinite(cfg.rope_theta) and cfg.rope_theta > 0
    assert cfg.rope_scaling is None or cfg.rope_scaling["factor"] > 0
    assert len(cfg.rope_layers) == cfg.num_layers
    assert all(type(t) is int and t >= 0 for t in cfg.eos_token_ids)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON_VALUE, max_size=4),
       keep_base=st.sampled_from([True, True, True, False]))
def test_fuzzed_config_dicts_parse_or_raise_config_error(changes, keep_base):
    try:
        cfg = ModelConfig.from_hf({**TINY_CONFIG, **changes} if keep_base else changes)
    except ConfigError:
        event("ConfigError")
        return
    event("parsed")
    _check_invariants(cfg)


@pytest.mark.parametrize("field", ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"])
def test_gigantic_sizes_in_a_config_are_refused_before_anything_is_sized_from_them(field):
    # num_hidden_layers = 10**12 once built a list of 10**12 per-layer flags (found by the fuzzer above).
    with pytest.raises(ConfigError, match=f"'{field}' = 1000000000000 is beyond any supported model"):
        ModelConfig.from_hf({**TINY_CONFIG, "num_attention_heads": 4, "num_key_value_heads": 4, field: 10**12})


_JSON_TEXT = st.one_of(
    JSON_VALUE.map(json.dumps),
    st.builds(lambda v, cut: json.dumps({**TINY_CONFIG, "x": v})[:cut], JSON_VALUE, st.integers(0, 200)),
    st.integers(1, 50_000).map(lambda depth: "[" * depth + "]" * depth),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(text=_JSON_TEXT, raw=st.one_of(st.none(), st.binary(max_size=32)))
def test_fuzzed_config_files_read_or_raise(tmp_path, text, raw):
    (tmp_path / "config.json").write_bytes(raw if raw is not None else text.encode("utf-8", errors="replace"))
    try:
        ModelConfig.from_hf(read_config(tmp_path))
    except (ConfigError, CheckpointError) as e:
        event(type(e).__name__)
        return
    event("parsed")


@settings(FUZZ, max_examples=40)
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), JSON_VALUE, min_size=1, max_size=3))
def test_fuzzed_config_of_a_real_checkpoint_loads_or_raises(tiny_ckpt, tmp_path_factory, changes):
    """End to end: LLM(...) with a damaged config.json builds an engine (then generates) or says why."""
    folder = tmp_path_factory.mktemp("cfg") / "ckpt"
    shutil.copytree(tiny_ckpt, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    try:
        llm = LLM(str(folder), num_kv_blocks=8, block_size=4)
        event("loaded")
        out = llm.generate(prompt_token_ids=[[1, 2, 3]], params=None)   # (a tiny context refuses the prompt)
    except EagerError as e:
        event(type(e).__name__)
        return
    assert out[0].outputs[0].finish_reason in ("stop", "length", "error")


# --- safetensors headers -------------------------------------------------------------------------------------

_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "BOOL": 1}
_MUTANT = st.one_of(JSON_VALUE, st.sampled_from(HUGE), st.lists(st.sampled_from(HUGE + [0, 1, -1]), max_size=3),
                    st.sampled_from(["F32", "Q4", "f32", "", "F8_E4M3"]))


@st.composite
def safetensors_files(draw) -> tuple[dict, bytes]:
    """A valid header and data region, then up to two fields replaced by anything (or nothing)."""
    header, offset = {}, 0
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(sorted(_SIZES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = math.prod(shape) * _SIZES[dtype]
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    for name, field, value in draw(st.lists(st.tuples(st.sampled_from(["t0", "t1", "t2", "__metadata__"]),
                                                      st.sampled_from(["dtype", "shape", "data_offsets", None]),
                                                      _MUTANT), max_size=2)):
        if field is None or not isinstance(header.get(name), dict):
            header[name] = value
        else:
            header[name][field] = value
    raw = json.dumps(header).encode()
    length = draw(st.one_of(st.just(len(raw)), st.just(len(raw)), st.sampled_from([0, 1, 7] + HUGE)))
    data_len = draw(st.one_of(st.just(offset), st.integers(0, offset + 16)))
    return header, struct.pack("<Q", length) + raw + bytes(data_len)


@FUZZ
@given(case=safetensors_files())
def test_fuzzed_safetensors_headers_load_or_raise_checkpoint_error(tmp_path, case):
    header, raw = case
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(raw)
    try:
        weights = load_weights(tmp_path)
    except CheckpointError as e:
        # Our header check runs first, so the library itself never has to refuse a file.
        assert "cannot read safetensors data" not in str(e)
        event(str(e).split(": ", 2)[-1][:28])
        return
    event("loaded")
    assert {k: list(v.shape) for k, v in weights.items()} == {
        k: v["shape"] for k, v in header.items() if k != "__metadata__"}


# --- GGUF headers ----------------------------------------------------------------------------------------------

def _gguf_string(text: str, claimed: int | None = None) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw) if claimed is None else claimed) + raw


_U64_HUGE = st.sampled_from([m % 2**64 for m in HUGE])
_GGUF_VALUE = st.one_of(   # (value type code, encoded value): right, wrong, or lying about its size
    st.tuples(st.just(4), st.one_of(st.sampled_from([0, 3, 32, 64]), st.integers(0, 2**32 - 1)).map(
        lambda v: struct.pack("<I", v))),
    st.tuples(st.just(8), st.text(max_size=6).map(_gguf_string)),
    st.tuples(st.just(8), st.sampled_from(HUGE).map(lambda n: _gguf_string("x", n))),
    st.tuples(st.just(9), st.builds(lambda n, words: struct.pack("<IQ", 8, n) + b"".join(map(_gguf_string, words)),
                                    st.one_of(st.integers(0, 4), _U64_HUGE),
                                    st.lists(st.text(max_size=3), max_size=4))),
    st.tuples(st.just(9), st.builds(lambda item, n, body: struct.pack("<IQ", item, n) + body,
                                    st.sampled_from([0, 4, 9, 10, 13, 99]), st.one_of(st.integers(0, 4), _U64_HUGE),
                                    st.binary(max_size=24))),
    st.tuples(st.integers(0, 20), st.binary(max_size=12)))
_TENSOR_INFO = st.builds(
    lambda name, dims, kind, offset: _gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(
        struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", kind, offset),
    st.sampled_from(["token_embd.weight", "blk.0.attn_q.weight", "output.weight", ""]),
    st.lists(st.one_of(st.integers(0, 8), st.sampled_from([32, 256]), _U64_HUGE), min_size=1, max_size=5)
    | st.lists(st.integers(0, 4), max_size=6),
    st.one_of(st.sampled_from([0, 1, 8, 12, 30]), st.integers(0, 60)),
    st.one_of(st.integers(0, 64), _U64_HUGE))


_F32_TENSOR = st.builds(   # well formed: 4 x rows float32 values at a small offset
    lambda name, rows, offset: _gguf_string(name) + struct.pack("<IQQIQ", 2, 4, rows, 0, offset),
    st.sampled_from(["token_embd.weight", "output.weight"]), st.integers(0, 3), st.sampled_from([0, 32, 64]))


@FUZZ
@given(version=st.sampled_from([3, 3, 3, 2, 1, 4, 2**32 - 1]),
       counts=st.one_of(st.none(), st.none(), st.tuples(st.one_of(st.integers(0, 3), _U64_HUGE),
                                                       st.one_of(st.integers(0, 3), _U64_HUGE))),
       metadata=st.lists(st.tuples(st.sampled_from(["general.architecture", "general.alignment", "a.b", ""]),
                                   _GGUF_VALUE), max_size=3),
       tensors=st.lists(_F32_TENSOR | _TENSOR_INFO, max_size=3), tail=st.binary(max_size=256))
def test_fuzzed_gguf_headers_parse_or_raise_checkpoint_error(tmp_path, version, counts, metadata, tensors, tail):
    n_tensors, n_kv = counts if counts is not None else (len(tensors), len(metadata))
    body = b"".join(_gguf_string(key) + struct.pack("<I", kind) + value for key, (kind, value) in metadata)
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body + b"".join(tensors) + tail)
    try:
        gg = GGUFFile(path)
    except CheckpointError as e:
        event(str(e).split(": ", 2)[-1][:28])
        return
    event(f"parsed, {len(gg.tensors)} tensors")
    size = path.stat().st_size
    assert all(t.data_offset + t.n_bytes <= size for t in gg.tensors.values())


@pytest.mark.parametrize("header, message", [
    (struct.pack("<IQQ", 3, 10**12, 0), "claims 0 metadata entries and 1000000000000 tensors"),
    (struct.pack("<IQQ", 3, 0, 1) + _gguf_string("k") + struct.pack("<IIQ", 9, 0, 2**62),
     r"\(4611686018427387904 items\) needs"),
    (struct.pack("<IQQ", 3, 0, 1) + _gguf_string("k") + struct.pack("<I", 8) + struct.pack("<Q", 2**40), "string"),
    # A zero dimension beside a gigantic one: the byte size is 0, so only an explicit check stops numpy's
    # "Maximum allowed dimension exceeded" ValueError (found by the fuzzer above).
    (struct.pack("<IQQ", 3, 1, 0) + _gguf_string("w") + struct.pack("<IQQQIQ", 3, 4, 0, 2**64 - 1, 0, 0),
     "zero dimension"),
], ids=["10^12-tensors", "2^62-array-items", "2^40-byte-string", "zero-and-huge-dims"])
def test_gguf_headers_claiming_gigantic_sizes_are_refused_before_allocation(tmp_path, header, message):
    path = tmp_path / "huge.gguf"
    path.write_bytes(b"GGUF" + header + bytes(64))
    with pytest.raises(CheckpointError, match=message):
        GGUFFile(path)


def test_the_address_space_guard_catches_a_huge_allocation():
    """The guard above is what turns "never a huge allocation" into a failing test: check it bites."""
    with pytest.raises(MemoryError):
        bytearray(4 << 30)
