"""tools/bench_int8.py: the median-of-rounds aggregation, the paired ratios, and a real --rounds run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import bench_int8  # noqa: E402


def _row(config: str, ms: float | None, workload: str = "a") -> dict:
    return dict(workload=workload, config=config, tokens=8, wall_s=1.0, tok_s=8.0, ms_step=ms, weight_mb=1.0,
                load=0.5, threads=1)


def test_median_row_is_a_real_round_with_its_range():
    rounds = [[_row("bfloat16", 8.0), _row("int8-bf16", 5.0)],
              [_row("bfloat16", 6.0), _row("int8-bf16", 4.0)],
              [_row("bfloat16", 7.0), _row("int8-bf16", 6.0)],
              [_row("bfloat16", 9.0), _row("int8-bf16", None)]]   # an untimed round counts, is not picked
    got = {r["config"]: r for r in bench_int8.median_rows(rounds)}
    assert got["bfloat16"]["ms_step"] == 7.0          # lower middle of 6, 7, 8, 9: a measured value
    assert (got["bfloat16"]["ms_step_min"], got["bfloat16"]["ms_step_max"]) == (6.0, 9.0)
    assert got["int8-bf16"]["ms_step"] == 5.0 and got["int8-bf16"]["rounds"] == 4
    table = bench_int8.format_rows(list(got.values()))
    assert "| 1.40 |" in table                        # x bf16 of the medians: 7.0 / 5.0
    assert "(6.00-9.00, 4 rounds)" in table


def test_paired_ratios_compare_within_each_round():
    rounds = [[_row("bfloat16", 8.0), _row("int8-bf16", 5.0), _row("bfloat16", 3.0, "b")],
              [_row("bfloat16", 6.0), _row("int8-bf16", 4.0), _row("int8-bf16", 2.0, "b")]]
    got = bench_int8.paired_ratios(rounds)
    assert got[("a", "int8-bf16")] == pytest.approx([1.6, 1.5])
    assert ("b", "int8-bf16") not in got              # no bf16 run of (b) in its round: no pair
    assert ("a", "bfloat16") not in got


def test_rounds_run_each_config_in_turn(tiny_ckpt_factory, tmp_path, capsys):
    ckpt = tiny_ckpt_factory("llama")
    out = tmp_path / "int8.json"
    rc = bench_int8.run_main(bench_int8.main, ["--ckpt", str(ckpt), "--workloads", "a", "--configs",
                                               "bfloat16,int8-bf16", "--rounds", "2", "--repeats", "1",
                                               "--max-tokens", "4", "--threads", "1", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [[r["config"] for r in rows] for rows in data["rounds"]] == [["bfloat16", "int8-bf16"]] * 2
    assert {r["config"]: r["rounds"] for r in data["rows"]} == {"bfloat16": 2, "int8-bf16": 2}
    printed = capsys.readouterr().out
    assert "(a) int8-bf16 x bfloat16 per round: " in printed and "2 rounds)" in printed


def test_zero_rounds_is_a_one_line_error(capsys):
    assert bench_int8.run_main(bench_int8.main, ["--rounds", "0", "--ckpt", "/nonexistent"]) == 2
    assert "--rounds" in capsys.readouterr().err
