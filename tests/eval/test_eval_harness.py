"""The evaluation harness end to end on a tiny random model: files, records, metrics, resume, CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from eager_core import LLM
from eager_core.errors import ConfigError
from eager_core.eval.harness import EvalConfig, run_eval, sweep_settings
from eager_core.eval.io_utils import JsonlLog
from eager_core.eval.metrics import pass_at_k
from eager_core.eval.records import Setting

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import eval as eval_tool  # noqa: E402
from cli_common import run_main  # noqa: E402

FIXTURE = str(Path(__file__).parent / "fixtures" / "harness_small.jsonl")
N_PROBLEMS = 5   # line 4 of the fixture is malformed
TIMING_KEYS = {"wall_s", "engine_wall_s", "tokens_per_s"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The machine is shared: several threads per test process oversubscribe the cores badly.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def llm(tiny_ckpt):
    return LLM(str(tiny_ckpt), num_kv_blocks=256, max_num_seqs=64)


def config(**kw) -> EvalConfig:
    base = dict(dataset=FIXTURE, seed=3, methods=["parallel", "eager-init", "eager", "eager-adapt"],
                thetas=[2.0, 3.5], max_sequences=[2, 3], max_tokens=6, batch_prompts=3)
    base.update(kw)
    return EvalConfig(**base)


class CountingLLM:
    """Forwards to a real LLM, counts ``eager`` calls and can raise on the n-th one."""

    def __init__(self, llm, fail_on: int | None = None):
        self.llm, self.fail_on, self.calls = llm, fail_on, 0
        self.device = llm.device

    def eager(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        out = self.llm.eager(*args, **kwargs)
        self.last_stats = self.llm.last_stats
        return out


def checker(text: str, gold: str) -> bool:
    """A deterministic stand-in for is_correct: a random model is never right, so metrics would be 0."""
    return len(text) % 3 == 0


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def untimed(obj):
    """Records or metric rows without wall-clock fields (they differ between runs)."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [untimed(v) for v in obj]
    return obj


def by_key(records: list[dict]) -> dict:
    return {(r["prompt_id"], r["method"], json.dumps(r["setting"])): untimed(r) for r in records}


@pytest.fixture(scope="module")
def full_run(llm, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    counting = CountingLLM(llm)
    messages = []
    results = run_eval(counting, config(), out, progress=False, log=messages.append, checker=checker)
    return out, results, counting.calls, messages


def test_sweep_settings_runs_parallel_once_per_m():
    settings = sweep_settings(["parallel", "eager-init", "eager"], [2.0, 2.4, 2.0], [8, 16])
    assert settings[0] == Setting("parallel", None, 8)
    assert settings.count(Setting("parallel", None, 16)) == 1
    assert len(settings) == 2 * (1 + 2 * 2)   # duplicate theta dropped


def test_theta_sweep_of_one_method_runs_the_median_theta_for_the_others():
    settings = sweep_settings(["parallel", "eager-init", "eager", "eager-deepconf"], [2.0, 2.3, 2.6], [8],
                              [{"confidence_percentile": 10.0}], theta_sweep_methods=["eager-init"])
    thetas = {(s.method, s.theta) for s in settings}
    assert thetas == {("parallel", None), ("eager-init", 2.0), ("eager-init", 2.3), ("eager-init", 2.6),
                      ("eager", 2.3), ("eager-deepconf", 2.3)}
    for stray in (["deepconf"], ["eager-adapt"]):   # no theta / not in the sweep
        with pytest.raises(ConfigError, match="theta_sweep_methods"):
            EvalConfig(dataset="x", methods=["parallel", "eager-init", "deepconf"],
                       theta_sweep_methods=stray).validate()


def test_end_to_end_writes_every_file(full_run):
    out, results, calls, messages = full_run
    n_settings = 2 * (1 + 3 * 2)
    assert calls == n_settings * 2               # 5 problems in batches of 3
    assert any("harness_small.jsonl:4" in m for m in messages)   # the bad line, by number
    for name in ("results.json", "generations.jsonl", "frontier.png", "frontier_subsampled.png", "entropy_hist.png",
                 "sequences_per_prompt_M2.png", "sequences_per_prompt_M3.png"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    assert saved["status"] == "complete" and len(saved["settings"]) == n_settings
    assert saved["dataset"]["skipped_lines"][0].startswith(FIXTURE + ":4:")
    env = saved["environment"]
    assert env["torch_threads"] == 1 and env["entropy_backend"] in ("cpp", "torch", "cuda")
    assert env["versions"]["torch"] == torch.__version__ and env["cpu_count"] >= 1
    assert "| method |" in saved["table"] and saved["table"].count("\n") == n_settings + 1
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_records_hold_exact_tokens_and_the_branch_tree(full_run):
    out, _, _, _ = full_run
    records = lines(out / "generations.jsonl")
    assert len(records) == 14 * N_PROBLEMS
    for r in records:
        m = r["setting"]["M"]
        seqs = r["sequences"]
        # Each generated position's entropy is recorded once: the own-token counts add up to #T.
        assert sum(len(s["entropies"]) for s in seqs) == r["generated_tokens"]
        assert sum(s["num_tokens"] - s["branch_step"] for s in seqs) == r["generated_tokens"]
        if r["method"] == "parallel":
            assert len(seqs) == m and all(s["branch_step"] == 0 for s in seqs)   # forks of the prompt
        if r["method"] in ("parallel", "eager-init"):
            assert len(seqs) <= m and all(s["round"] == 0 for s in seqs)
        for s in seqs:
            assert s["parent"] is None or 0 <= s["parent"] < len(seqs)
            assert isinstance(s["correct"], bool) and 0 <= s["num_tokens"] <= 6


def test_metrics_match_the_records(full_run):
    out, results, _, _ = full_run
    records = lines(out / "generations.jsonl")
    for row in results["settings"]:
        mine = [r for r in records if r["method"] == row["method"]
                and r["setting"] == {"theta": row["theta"], "M": row["max_sequences"]}]
        assert row["n_prompts"] == len(mine) == N_PROBLEMS
        assert row["num_tokens"] == sum(r["generated_tokens"] for r in mine)
        assert row["pass_at_k"] == pass_at_k([[s["correct"] for s in r["sequences"]] for r in mine])
        assert row["mean_sequences"] == sum(r["num_sequences"] for r in mine) / N_PROBLEMS
        assert row["n_batches"] == 2 and row["wall_s"] > 0
    assert all(0 < r["pass_ratio"] < 1 for r in results["settings"])   # the checker is neither always nor never right
    # eager gets the labels from the same checker: a prompt solved by EAGer-init gets no more sequences.
    for r in records:
        if r["method"] == "eager" and any(s["correct"] for s in r["sequences"] if s["round"] == 0):
            assert all(s["round"] == 0 for s in r["sequences"])
    # θ=3.5 exceeds every top-20 entropy (<= ln 20): one sequence each, the rest goes to unsolved prompts.
    assert all(r["num_sequences"] == 1 for r in records if r["method"] == "eager-init" and r["setting"]["theta"] == 3.5)
    assert any(s["round"] > 0 for r in records if r["method"] == "eager" for s in r["sequences"])
    # eager and eager-adapt spend at most M x N sequences per batch (the budget is per call).
    for r in records:
        if r["method"] in ("eager", "eager-adapt"):
            batch = [x for x in records if x["method"] == r["method"] and x["setting"] == r["setting"]
                     and x["batch"] == r["batch"]]
            assert sum(x["num_sequences"] for x in batch) <= r["setting"]["M"] * len(batch)


def test_subsampled_parallel_baseline_agrees_with_the_parallel_run(full_run):
    _, results, _, _ = full_run
    parallel = next(r for r in results["settings"] if r["method"] == "parallel" and r["max_sequences"] == 3)
    curve = results["parallel_subsampled"]
    assert [r["max_sequences"] for r in curve] == [1, 2, 3]
    # k = M is the run itself; k = 1 is the mean fraction of correct samples (PR).
    assert curve[-1]["pass_at_k"] == pytest.approx(parallel["pass_at_k"])
    assert curve[-1]["num_tokens"] == pytest.approx(parallel["num_tokens"])
    assert curve[0]["pass_at_k"] == pytest.approx(parallel["pass_ratio"])
    assert curve[0]["num_tokens"] == pytest.approx(parallel["num_tokens"] / 3)


def test_interrupt_then_resume_redoes_nothing_finished(llm, full_run, tmp_path):
    out_full, results_full, total_calls, _ = full_run
    interrupted = CountingLLM(llm, fail_on=8)
    with pytest.raises(KeyboardInterrupt):
        run_eval(interrupted, config(), tmp_path, progress=False, checker=checker)
    done = len(lines(tmp_path / "generations.jsonl"))
    assert done == 3 * 5 + 3                      # parallel, eager-init θ=2 and 3.5, one batch of eager
    resumed = CountingLLM(llm)
    results = run_eval(resumed, config(), tmp_path, progress=False, checker=checker)
    assert resumed.calls == total_calls - 7       # only the unfinished batches ran again
    assert by_key(lines(tmp_path / "generations.jsonl")) == by_key(lines(out_full / "generations.jsonl"))
    assert untimed(results["settings"]) == untimed(results_full["settings"])


def test_a_batch_cut_mid_write_is_rerun_and_only_its_missing_lines_added(llm, full_run, tmp_path, monkeypatch):
    out_full, _, total_calls, _ = full_run
    real_append, appended = JsonlLog.append, []

    def append_then_die(self, record):
        if len(appended) == 4:                    # the second line of the second batch
            raise KeyboardInterrupt
        real_append(self, record)
        appended.append(record)

    monkeypatch.setattr(JsonlLog, "append", append_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_eval(CountingLLM(llm), config(), tmp_path, progress=False, checker=checker)
    monkeypatch.setattr(JsonlLog, "append", real_append)
    resumed = CountingLLM(llm)
    run_eval(resumed, config(), tmp_path, progress=False, checker=checker)
    assert resumed.calls == total_calls - 1       # batch 2 ran again, whole (its budget is per call)
    got = lines(tmp_path / "generations.jsonl")
    assert len(got) == len(by_key(got)) == 14 * N_PROBLEMS   # no duplicate line
    assert by_key(got) == by_key(lines(out_full / "generations.jsonl"))


def test_resume_with_other_generation_parameters_is_refused(llm, full_run):
    out, _, _, _ = full_run
    with pytest.raises(ConfigError, match="max_tokens: was 6, now 7"):
        run_eval(llm, config(max_tokens=7), out, progress=False)


def test_progress_line_shows_live_tokens_per_second(llm, tmp_path, capsys):
    run_eval(llm, config(methods=["parallel"], max_sequences=[2], batch_prompts=None), tmp_path)
    err = capsys.readouterr().err
    assert "tok/s" in err and f"[{N_PROBLEMS}/{N_PROBLEMS} 100.0%]" in err


def test_cli_prints_the_table_and_reports_errors_in_one_line(tiny_ckpt, tmp_path, capsys):
    argv = ["--ckpt", str(tiny_ckpt), "--dataset", FIXTURE, "--methods", "parallel,eager-init",
            "--theta", "2.5", "--max-sequences", "2", "--max-tokens", "4", "--out", str(tmp_path / "cli"),
            "--num-kv-blocks", "128", "--no-progress", "--threads", "1"]
    assert run_main(eval_tool.main, argv) == 0
    captured = capsys.readouterr()
    assert "| parallel | - | 2 |" in captured.out and "| eager-init | 2.5 | 2 |" in captured.out
    assert "harness_small.jsonl:4" in captured.err
    assert run_main(eval_tool.main, ["--dataset", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path)]) == 2
    assert run_main(eval_tool.main, ["--dataset", FIXTURE, "--methods", "beam", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "missing.jsonl" in err[0] and "beam" in err[1]
