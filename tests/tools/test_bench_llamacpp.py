"""tools/bench_llamacpp.py against a fake llama.cpp (shell scripts that print llama.cpp's JSON lines):
the commands each shape runs, how results are read, ratios, bandwidth, and the run without a peer.
The real llama.cpp is never built in CI (tools/build_llamacpp.sh takes ~20 minutes)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_llamacpp  # noqa: E402

FAKE = {
    "llama-quantize": 'cp "$2" "$3"\n',
    "llama-bench": 'echo "$@" >> "$(dirname "$0")/calls"\necho noise\n'
                   'echo \'{"model_size": 2000000, "samples_ts": [50.0, 80.0, 60.0]}\'\n',
    "llama-batched-bench": 'echo "$@" >> "$(dirname "$0")/calls"\n'
                           'echo \'{"pl": 8, "speed_pp": 1.0, "speed_tg": 200.0}\'\n',
}


@pytest.fixture()
def fake_peer(tmp_path):
    root = tmp_path / "llamacpp"
    (root / "bin").mkdir(parents=True)
    for name, body in FAKE.items():
        path = root / "bin" / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return root


def _args(root, shapes="one,n8,p32,prefill", **kw):
    argv = ["--threads", "1", "--dtypes", "float32", "--shapes", shapes, "--max-tokens", "3", "--repeats", "1",
            "--bandwidth-mib", "8", "--llamacpp-dir", str(root)]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return bench_llamacpp.build_parser().parse_args(argv)


@pytest.fixture(scope="module")
def long_ckpt(tiny_ckpt_factory):
    return tiny_ckpt_factory("llama", max_position_embeddings=2048)   # room for the 512-token prefill


def test_both_engines_side_by_side_with_ratios(fake_peer, long_ckpt, tmp_path):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    rep = bench_llamacpp.run(_args(fake_peer), log=lambda m: None, ckpt=long_ckpt, gguf=gguf)
    rows = {r["shape"]: r for r in rep["rows"]}
    assert set(rows) == {"one", "n8", "p32", "prefill"} and not rep["notes"]
    assert rows["one"]["llama.cpp"]["tok_s"] == 80.0          # the best of llama-bench's samples
    assert rows["n8"]["llama.cpp"]["tok_s"] == 200.0
    for r in rows.values():
        assert r["eager_core"]["tok_s"] > 0 and r["eager_core"]["peak_mib"] > 0
        assert r["x_peer"] == pytest.approx(r["eager_core"]["tok_s"] / r["llama.cpp"]["tok_s"])
    one = rows["one"]["llama.cpp"]
    assert one["bw_gbs"] == pytest.approx(2e6 * 80 / 1e9) and one["bw_pct"] > 0
    assert (fake_peer / "models" / "model.F32.gguf").exists()   # requantized once, cached
    calls = (fake_peer / "bin" / "calls").read_text().splitlines()
    assert any("-p 0 -n 3" in c for c in calls) and any("-p 512 -n 0" in c for c in calls)
    assert any("-npl 8" in c and "-pps" in c for c in calls)   # n=8 shares its prompt
    assert any("-npl 32" in c and "-pps" not in c for c in calls)
    table = bench_llamacpp.format_report(rep)
    assert "x peer" in table and table.count("\n| ") == 5


def test_without_a_peer_it_says_so_and_still_measures(long_ckpt, tmp_path):
    rep = bench_llamacpp.run(_args(tmp_path / "none", shapes="one"), log=lambda m: None, ckpt=long_ckpt,
                             gguf=tmp_path / "x.gguf")
    assert "not built" in rep["notes"][0]
    (row,) = rep["rows"]
    assert "llama.cpp" not in row and row["eager_core"]["tok_s"] > 0 and "x_peer" not in row


def test_a_failing_peer_is_a_note_not_a_crash(fake_peer, long_ckpt, tmp_path):
    (fake_peer / "bin" / "llama-bench").write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    rep = bench_llamacpp.run(_args(fake_peer, shapes="one"), log=lambda m: None, ckpt=long_ckpt,
                             gguf=tmp_path / "m.gguf")
    assert any("exit code 3" in n and "boom" in n for n in rep["notes"])


def test_a_gguf_llama_quantize_refuses_is_one_config_error(fake_peer, long_ckpt, tmp_path):
    from eager_core.errors import ConfigError
    with pytest.raises(ConfigError, match="llama-quantize could not make F32"):
        bench_llamacpp.run(_args(fake_peer, shapes="one"), log=lambda m: None, ckpt=long_ckpt,
                           gguf=tmp_path / "missing.gguf")


def test_bad_flags_are_config_errors(tmp_path):
    from eager_core.errors import ConfigError
    for kw in (dict(shapes="one,bogus"), dict(threads="two"), dict(max_tokens=1)):
        args = _args(tmp_path, **({"shapes": "one"} | kw))
        with pytest.raises(ConfigError):
            bench_llamacpp.run(args, log=lambda m: None)
