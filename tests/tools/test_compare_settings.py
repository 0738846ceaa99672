"""tools/compare_settings.py: two settings of an evaluation folder, paired by problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
from compare_settings import compare, main, select  # noqa: E402

from eager_core.errors import ConfigError  # noqa: E402


def record(pid: int, method: str, setting: dict, answers: list[tuple[str, bool]], tokens: int = 10) -> dict:
    return {"prompt_id": f"p{pid}", "method": method, "setting": setting, "generated_tokens": tokens,
            "sequences": [{"answer": a, "correct": c, "finish_reason": "length"} for a, c in answers]}


def folder(tmp_path: Path) -> Path:
    """Four problems: init solves 0, 1; adapt solves 0, 2, 3 (one by plurality only: 3's vote is wrong)."""
    init, adapt = {"theta": 2.3, "M": 8}, {"theta": 2.3, "M": 8, "confidence_percentile": 10.0}
    rows = [record(0, "eager-init", init, [("4", True)]), record(1, "eager-init", init, [("5", True), ("6", False)]),
            record(2, "eager-init", init, [("1", False)]), record(3, "eager-init", init, [("2", False)]),
            record(0, "eager-deepconf", adapt, [("4", True)], 30),
            record(1, "eager-deepconf", adapt, [("7", False)], 30),
            record(2, "eager-deepconf", adapt, [("9", True)], 30),
            record(3, "eager-deepconf", adapt, [("8", False), ("8", False), ("3", True)], 30),
            record(0, "parallel", {"theta": None, "M": 8}, [("4", True)])]
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_paired_deltas_and_counts(tmp_path):
    recs = [json.loads(x) for x in (folder(tmp_path) / "generations.jsonl").read_text().splitlines()]
    a, b = select(recs, "method=eager-deepconf,M=8"), select(recs, "method=eager-init,theta=2.3")
    out = compare(a, b)
    assert out["problems"] == 4 and out["tokens_a"] == 120 and out["tokens_b"] == 40
    p, c = out["pass_at_k"], out["cons_at_k"]
    assert (p["a"], p["b"], p["delta"], p["only_a"], p["only_b"]) == (0.75, 0.5, 0.25, 2, 1)
    assert (c["a"], c["b"], c["delta"]) == (0.5, 0.5, 0.0)        # problem 3: the wrong answer wins the vote
    lo, hi = p["delta_ci95"]
    assert -1.0 <= lo <= 0.25 <= hi <= 1.0


def test_a_setting_must_select_exactly_one(tmp_path):
    recs = [json.loads(x) for x in (folder(tmp_path) / "generations.jsonl").read_text().splitlines()]
    with pytest.raises(ConfigError, match="selects 2 settings"):
        select(recs, "M=8,theta=2.3")
    with pytest.raises(ConfigError, match="selects 0 settings"):
        select(recs, "method=eager,M=8")
    with pytest.raises(ConfigError, match="key=value"):
        select(recs, "method")
    with pytest.raises(ConfigError, match="share no problem"):
        compare(select(recs, "method=parallel"), [])


def test_cli_prints_writes_json_and_fails_in_one_line(tmp_path):
    out = folder(tmp_path)
    assert main(["--out", str(out), "--a", "method=eager-deepconf", "--b", "method=eager-init",
                 "--json", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["pass_at_k"]["delta"] == 0.25
    bad = subprocess.run([sys.executable, str(TOOLS / "compare_settings.py"), "--out", str(tmp_path / "none"),
                          "--a", "method=x", "--b", "method=y"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "generations.jsonl" in bad.stderr
