"""Smoke run of tools/bench_prefix_cache.py on the tiny checkpoint: it runs, both settings agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_prefix_cache  # noqa: E402


def test_bench_prefix_cache_reports_both_settings(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "pc.json"
    code = bench_prefix_cache.main(["--ckpt", str(tiny_ckpt), "--threads", "1", "--prefix-tokens", "64",
                                    "--repeats", "1", "--problems", "2", "--max-tokens", "4",
                                    "--num-kv-blocks", "128", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["ttft_ms"]["cached"] > 0 and result["ttft_ms"]["uncached"] > 0
    eager = result["eager"]
    assert eager["same_tokens"] is True
    assert eager["cached"]["prefix_cache_hit_tokens"] > 0 and eager["uncached"]["prefix_cache_hit_tokens"] == 0
    assert "time to first token" in capsys.readouterr().out
