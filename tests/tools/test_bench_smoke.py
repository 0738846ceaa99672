"""Smoke test of tools/bench.py on a tiny random checkpoint: every column, finite ratios, no timings."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench  # noqa: E402
from bench_table import COLUMNS, match_rate  # noqa: E402


@pytest.fixture(scope="module")
def report(tiny_ckpt_factory):
    # A longer context than the default tiny model, so that the chat-templated math prompts of (d) fit.
    ckpt = tiny_ckpt_factory("llama", max_position_embeddings=2048)
    cfg = bench.BenchConfig(ckpt=str(ckpt), max_tokens=3, bandwidth_bytes=16 << 20, matmul_size=128,
                            in_process=True,
                            num_mixed_prompts=4, num_math_prompts=1)
    return bench.run_bench(cfg, log=lambda msg: None)


def test_every_workload_and_engine_has_a_row(report):
    got = {(r["workload"], r["engine"]) for r in report["rows"]}
    expected = {(w, e) for w, engines in bench.ENGINES.items() for e in engines}
    assert got == expected, report["notes"]
    assert not report["notes"]


def test_table_has_every_column_and_finite_ratios(report):
    table = bench.format_report(report)
    header = next(line for line in table.splitlines() if line.startswith("workload"))
    for _, title in COLUMNS:
        assert title in header
    for row in report["rows"]:
        for key in ("tok_s", "x_hf", "ms_step", "wall_s", "gflops"):
            assert row[key] is not None and math.isfinite(row[key]) and row[key] > 0, (row["workload"], key)
        if row["engine"] == "transformers":
            assert row["x_hf"] == 1.0
    for key in ("bandwidth_gbs", "matmul_gflops"):
        assert math.isfinite(report["machine"][key]) and report["machine"][key] > 0
    floor = report["machine"]["linear_floor_ms"]
    assert sorted(floor) == [1, 8, 32, 128] and all(math.isfinite(v) and v > 0 for v in floor.values())
    assert "F.linear over the weights alone" in table
    json.dumps(report)   # what --json writes must be serialisable


def test_equal_work_and_greedy_agreement(report):
    rows = {(r["workload"], r["engine"]): r for r in report["rows"]}
    for w in ("a", "b", "c"):   # EOS ignored: both engines generate the same number of tokens
        assert rows[w, "eager_core"]["tokens"] == rows[w, "transformers"]["tokens"] > 0
    assert rows["b", "eager_core"]["tokens"] == 8 * 3
    for w in ("a", "c"):        # greedy on the same weights: the parity tests make these equal
        m = rows[w, "eager_core"]["match"]
        assert m["equal"] == m["total"] and m["token_rate"] == 1.0
    for w in ("a", "b", "c"):   # decode bandwidth counts weights + KV over pure decode steps
        bw = rows[w, "eager_core"]["bw_gbs"]
        assert bw is not None and math.isfinite(bw) and bw > 0
    assert rows["prefill", "eager_core"]["tokens"] == rows["prefill", "transformers"]["tokens"] > 8


def test_match_rate_counts_common_prefixes():
    m = match_rate([[1, 2, 3], [4, 5, 6], [7]], [[1, 2, 3], [4, 9, 6], [8]])
    assert (m["equal"], m["total"]) == (1, 3)
    assert m["token_rate"] == pytest.approx(4 / 7)


def test_bad_workload_name_is_a_one_line_error(capsys):
    assert bench.run_main(bench.main, ["--workloads", "a,zz"]) == 2
    assert "--workloads" in capsys.readouterr().err
