"""Bootstrap intervals, the matched-token baseline, DeepConf's vote, and the six-method sweep end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from eager_core import LLM
from eager_core.eval.harness import EvalConfig, run_eval, sweep_settings
from eager_core.eval.metrics import unbiased_pass_at_k, weighted_vote
from eager_core.eval.records import Setting, prompt_outcomes
from eager_core.eval.report import add_intervals
from eager_core.eval.stats import bootstrap_ci, fractional_pass_at_k, matched_parallel, paired_bootstrap_ci

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import eval as eval_tool  # noqa: E402
from cli_common import run_main  # noqa: E402

FIXTURE = str(Path(__file__).parent / "fixtures" / "harness_small.jsonl")
SIX = ["parallel", "eager-init", "eager", "eager-adapt", "deepconf", "eager-deepconf"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def checker(text: str, gold: str) -> bool:
    return len(text) % 3 == 0


def test_bootstrap_of_known_data():
    assert bootstrap_ci([1.0] * 50) == [1.0, 1.0]
    assert bootstrap_ci([0.0] * 7) == [0.0, 0.0]
    assert bootstrap_ci([]) is None
    lo, hi = bootstrap_ci([0.0, 1.0] * 150)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * 0.5 / 300 ** 0.5, rel=0.15)   # the normal width


def test_paired_delta_of_identical_methods_is_zero_and_of_a_shift_is_the_shift():
    a = [0.0, 1.0, 1.0, 0.0, 1.0] * 20
    assert paired_bootstrap_ci(a, a) == [0.0, 0.0]
    assert paired_bootstrap_ci([x + 1 for x in a], a) == [1.0, 1.0]
    with pytest.raises(ValueError):
        paired_bootstrap_ci(a, a[:-1])


def test_bootstrap_is_seeded():
    values = [(i * 37 % 101) / 101 for i in range(97)]   # continuous: two seeds cannot land on the same grid
    assert bootstrap_ci(values, seed=4) == bootstrap_ci(values, seed=4)
    assert bootstrap_ci(values, seed=4) != bootstrap_ci(values, seed=5)
    assert bootstrap_ci(values, n_boot=500, seed=1) == bootstrap_ci(values, n_boot=500, seed=1)


def test_fractional_pass_at_k_interpolates_the_unbiased_estimate():
    assert fractional_pass_at_k(8, 2, 3) == unbiased_pass_at_k(8, 2, 3)
    assert fractional_pass_at_k(8, 2, 2.5) == pytest.approx((unbiased_pass_at_k(8, 2, 2) + unbiased_pass_at_k(8, 2, 3)) / 2)
    assert fractional_pass_at_k(8, 2, 0.5) == pytest.approx(unbiased_pass_at_k(8, 2, 1) / 2)
    assert fractional_pass_at_k(8, 0, 8) == 0.0
    with pytest.raises(ValueError):
        fractional_pass_at_k(8, 2, 9)


def record(pid, flags, tokens, answers=None, **extra):
    seqs = [{"correct": f, "answer": (answers or [None] * len(flags))[i], "finish_reason": "stop"}
            for i, f in enumerate(flags)]
    return {"prompt_id": pid, "num_sequences": len(flags), "generated_tokens": tokens, "sequences": seqs, **extra}


def test_matched_parallel_at_half_the_tokens():
    par = [record(i, [True, False, False, False], 400) for i in range(10)]
    method = [record(i, [True], 200) for i in range(10)]
    m = matched_parallel(par, method, [1.0] * 10)
    assert m["k"] == 2.0 and m["num_tokens"] == 2000
    assert m["pass_at_k"] == pytest.approx(unbiased_pass_at_k(4, 1, 2)) == pytest.approx(0.5)
    assert m["ci95"] == [0.5, 0.5] and m["delta"] == pytest.approx(0.5) and m["delta_ci95"] == [0.5, 0.5]
    assert matched_parallel(par, [record(i, [True], 900) for i in range(10)], [1.0] * 10)["pass_at_k"] is None


def test_deepconf_vote_weights_confident_traces_and_ignores_pruned_and_low_ones():
    assert weighted_vote(["1", "2", "2"], [5.0, 2.0, 2.0]) == 0
    assert weighted_vote(["1", "2", "2"], [3.0, 2.0, 2.0]) == 1
    assert weighted_vote(["1", None], [None, 1.0]) is None
    seqs = [dict(answer="7", correct=True, finish_reason="stop", lowest_group_confidence=50.0),
            dict(answer="3", correct=False, finish_reason="stop", lowest_group_confidence=40.0),
            dict(answer="3", correct=False, finish_reason="stop", lowest_group_confidence=41.0),
            dict(answer="7", correct=True, finish_reason="pruned", lowest_group_confidence=20.0)]
    r = {"sequences": seqs, "confidence_threshold": 45.0}
    # majority: 3 (two votes; the pruned 7 does not vote); DeepConf: only the trace at or above 45 votes
    assert prompt_outcomes(r) == {"pass": 1.0, "cons": 0.0, "weighted_cons": 1.0}
    assert prompt_outcomes({"sequences": seqs[3:]}) == {"pass": 0.0, "cons": 0.0, "weighted_cons": None}


def test_intervals_are_added_per_row_with_a_paired_delta_against_parallel():
    par = [record(i, [i % 2 == 0] * 2, 20, ["1", "1"]) for i in range(40)]
    same = [dict(r) for r in par]
    rows = [{"method": "parallel", "max_sequences": 2}, {"method": "eager-init", "max_sequences": 2}]
    add_intervals(list(zip(rows, [par, same])), n_boot=300)
    assert "delta_pass_at_k_vs_parallel" not in rows[0]["ci95"] and "matched_parallel" not in rows[0]
    assert rows[1]["ci95"]["delta_pass_at_k_vs_parallel"] == [0.0, 0.0]
    assert rows[1]["ci95"]["delta_cons_at_k_vs_parallel"] == [0.0, 0.0]
    assert rows[1]["delta_pass_at_k_vs_parallel"] == 0.0
    lo, hi = rows[1]["ci95"]["pass_at_k"]
    assert lo < 0.5 < hi and rows[1]["matched_parallel"]["k"] == 2.0


def test_sweep_settings_of_the_deepconf_methods():
    dc = [dict(confidence_percentile=q, warmup_traces=2) for q in (10.0, 90.0)]
    settings = sweep_settings(SIX, [2.0, 2.4], [4], dc)
    assert [s for s in settings if s.method == "deepconf"] == [Setting("deepconf", None, 4, tuple(d.items())) for d in dc]
    assert len([s for s in settings if s.method == "eager-deepconf"]) == 4
    assert Setting("deepconf", None, 4, tuple(dc[0].items())).key() == {"theta": None, "M": 4, **dc[0]}


@pytest.fixture(scope="module")
def six_run(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("six")
    llm = LLM(str(tiny_ckpt), num_kv_blocks=256, max_num_seqs=64)
    config = EvalConfig(dataset=FIXTURE, seed=3, methods=SIX, thetas=[2.0], max_sequences=[4], max_tokens=6,
                        warmup_traces=2, window_size=2, confidence_percentiles=[50.0], bootstrap=200)
    return out, run_eval(llm, config, out, progress=False, checker=checker)


def test_six_methods_with_intervals_in_results_json(six_run):
    out, results = six_run
    saved = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in saved["settings"]}
    assert set(rows) == set(SIX) and saved["status"] == "complete"
    for method, row in rows.items():
        ci = row["ci95"]
        assert ci["pass_at_k"][0] <= row["pass_at_k"] <= ci["pass_at_k"][1]
        assert ci["cons_at_k"][0] <= row["cons_at_k"] <= ci["cons_at_k"][1]
        assert ("delta_pass_at_k_vs_parallel" in ci) == (method != "parallel")
        if method != "parallel" and row["matched_parallel"]["pass_at_k"] is not None:
            lo, hi = row["matched_parallel"]["ci95"]
            assert lo <= row["matched_parallel"]["pass_at_k"] <= hi
    for method in ("deepconf", "eager-deepconf"):
        assert rows[method]["weighted_cons_at_k"] is not None and "weighted_cons_at_k" in rows[method]["ci95"]
        assert {"delta_weighted_vs_majority", "delta_weighted_cons_at_k_vs_parallel"} <= set(rows[method]["ci95"])
        assert rows[method]["confidence_percentile"] == 50.0
    assert rows["parallel"]["weighted_cons_at_k"] is None
    assert "| deepconf | - | 4 |" in saved["table"]


def test_deepconf_records_hold_confidences_and_keep_the_budget(six_run):
    out, _ = six_run
    records = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    for r in records:
        seqs = r["sequences"]
        assert sum(len(s["entropies"]) for s in seqs) == r["generated_tokens"]
        assert sum(s["num_tokens"] - s["branch_step"] for s in seqs) == r["generated_tokens"]
        if r["method"] == "deepconf":
            assert len(seqs) == 4 and r["warmup_traces"] == 2 and r["setting"]["confidence_percentile"] == 50.0
        if r["method"] == "eager-deepconf":
            assert len([s for s in seqs if s["finish_reason"] != "pruned"]) <= 4
            assert r["generated_tokens"] <= 4 * 6
        if r["method"] in ("deepconf", "eager-deepconf"):
            assert all("lowest_group_confidence" in s for s in seqs) and "confidence_threshold" in r


def test_cli_runs_all_six_methods(tiny_ckpt, tmp_path, capsys):
    argv = ["--ckpt", str(tiny_ckpt), "--dataset", FIXTURE, "--methods", ",".join(SIX), "--theta", "2.5",
            "--max-sequences", "2", "--max-tokens", "4", "--out", str(tmp_path / "cli"), "--num-kv-blocks", "128",
            "--no-progress", "--threads", "1", "--warmup-traces", "1", "--window-size", "2",
            "--confidence-percentile", "10,90", "--bootstrap", "100"]
    assert run_main(eval_tool.main, argv) == 0
    table = capsys.readouterr().out
    assert table.count("| deepconf | - | 2 |") == 2 and table.count("| eager-deepconf | 2.5 | 2 |") == 2
    assert run_main(eval_tool.main, ["--dataset", FIXTURE, "--methods", "deepconf", "--window-size", "0",
                                     "--out", str(tmp_path / "bad")]) == 2
