"""Smoke test of tools/bench_serve.py against the test server: every column, finite numbers, no timings."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_serve  # noqa: E402


def test_bench_reports_every_level_and_the_offline_ceiling(server, long_ckpt):
    cfg = bench_serve.BenchConfig(url=server.url, ckpt=str(long_ckpt), concurrency=[1, 3], requests=3, max_tokens=4,
                                  threads=1, num_kv_blocks=64)
    report = bench_serve.run_bench(cfg, log=lambda msg: None)
    assert [(r["engine"], r["concurrency"]) for r in report["rows"]] == [("eager_core", 1), ("eager_core", 3)]
    for r in report["rows"]:
        assert r["requests"] == 3 and r["tokens"] == 3 * 4
        for key in ("tok_s", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "offline_tok_s", "vs_offline"):
            assert r[key] is not None and math.isfinite(r[key]) and r[key] > 0, key
        # chunk gaps exist only if some request came in more than one chunk (4 tokens may come in one)
        assert r["itl_p50_ms"] is None or math.isfinite(r["itl_p50_ms"])
        assert r["match"] == 1.0   # greedy: the server's texts are the offline ones
    table = bench_serve.format_report(report)
    for _, title, _ in bench_serve.COLUMNS:
        assert title in table
    server.wait_idle(2.0)


def test_peer_gets_the_same_load(server):
    # Any OpenAI-compatible server can be the peer (llama.cpp's llama-server in practice); here, ours.
    cfg = bench_serve.BenchConfig(url=server.url, peer=server.url, concurrency=[2], requests=2, max_tokens=3,
                                  offline=False)
    rows = bench_serve.run_bench(cfg, log=lambda msg: None)["rows"]
    assert [(r["engine"], r["tokens"]) for r in rows] == [("eager_core", 6), ("peer", 6)]
    assert all(r["tok_s"] > 0 and "vs_offline" not in r for r in rows)
    assert "peer" in bench_serve.format_report({"max_tokens": 3, "rows": rows})


def test_bad_flags_are_one_line_errors(capsys):
    assert bench_serve.run_main(bench_serve.main, ["--concurrency", "1,x"]) == 2
    assert "--concurrency" in capsys.readouterr().err
