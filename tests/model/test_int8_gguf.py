"""GGUF Q8_0 tensors loaded as int8 without a round trip through float.

``convert_gguf(..., keep_q8_0=True)`` (``tools/convert_gguf.py --keep-q8-0``) writes each Q8_0 matrix
as ``<name>.qweight`` (int8) + ``<name>.scales`` (float16); ``LLM(..., quantization="int8")`` takes
them as they are. The tiny GGUF (tests/io/tiny_gguf.py) has ``blk.0.attn_q`` in Q8_0, with
llama.cpp's Q row order, so the row permutation is checked on int8 values and scales too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "io"))
from tiny_gguf import TINY, write_tiny_gguf  # noqa: E402

from eager_core import LLM  # noqa: E402
from eager_core.io.gguf import convert_gguf  # noqa: E402
from eager_core.io.gguf_file import GGUFFile  # noqa: E402
from eager_core.io.gguf_tensors import q8_0_parts, unpermute_qk  # noqa: E402

Q = "model.layers.0.self_attn.q_proj"
ROOT = Path(__file__).resolve().parents[2]


def _convert(tmp_path: Path) -> tuple[Path, Path, Path]:
    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_path, quant_q0="Q8_0")
    kept = convert_gguf(gguf_path, tmp_path / "kept", keep_q8_0=True)
    plain = convert_gguf(gguf_path, tmp_path / "plain")
    return gguf_path, kept, plain


def test_q8_0_is_written_and_loaded_bit_for_bit(tmp_path):
    gguf_path, kept, plain = _convert(tmp_path)
    with safe_open(str(kept / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
        qweight, scales = f.get_tensor(Q + ".qweight"), f.get_tensor(Q + ".scales")
    assert Q + ".weight" not in names and "model.layers.0.self_attn.k_proj.weight" in names   # F32 stays float
    assert qweight.dtype == torch.int8 and scales.dtype == torch.float16
    values, d = q8_0_parts(GGUFFile(gguf_path).tensors["blk.0.attn_q.weight"])
    assert torch.equal(qweight, unpermute_qk(values, TINY["heads"]))
    assert torch.equal(scales, unpermute_qk(d, TINY["heads"]))

    llm8 = LLM(str(kept), quantization="int8", num_kv_blocks=16)
    w = llm8.model.layers[0].qkv_w
    rows = qweight.shape[0]
    assert torch.equal(w.qweight[:rows], qweight) and torch.equal(w.scales[:rows], scales.float())
    # Re-quantizing the float conversion gives the same int8 (the largest |q| of a block is 127 in
    # both quantizers), so the two routes agree exactly; the direct one just skips the float copy.
    via_float = LLM(str(plain), quantization="int8", num_kv_blocks=16)
    assert torch.equal(via_float.model.layers[0].qkv_w.qweight[:rows], qweight)
    ids = list(range(3, 30))
    torch.testing.assert_close(llm8.logits(ids), via_float.logits(ids), rtol=1e-5, atol=1e-5)
    # Without quantization the kept tensors are dequantized at load: the float conversion's values exactly.
    f32_kept, f32_plain = LLM(str(kept), num_kv_blocks=16), LLM(str(plain), num_kv_blocks=16)
    assert torch.equal(f32_kept.model.layers[0].qkv_w, f32_plain.model.layers[0].qkv_w)


def test_q8_0_unpacking_matches_the_gguf_package(tmp_path):
    import gguf

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, quant_q0="Q8_0")
    t = GGUFFile(path).tensors["blk.0.attn_q.weight"]
    values, d = q8_0_parts(t)
    ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
    assert np.array_equal((values.view(values.shape[0], -1, 32).float() * d.float()[..., None]).view(values.shape).numpy(),
                          ref.reshape(values.shape).astype(np.float32))


def test_cli_flag(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, quant_q0="Q8_0")
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / "tools" / "convert_gguf.py"), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    out = run("--gguf", str(path), "--out", str(tmp_path / "ck"), "--keep-q8-0")
    assert out.returncode == 0, out.stderr
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), framework="pt") as f:
        assert Q + ".qweight" in set(f.keys())
    assert run("--gguf", str(path), "--keep-q8-0").returncode == 2   # needs --out (argparse error)
