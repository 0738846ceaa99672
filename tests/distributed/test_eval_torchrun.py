"""tools/eval.py on 2 data-parallel processes writes the results folder a single process writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import dist_workers  # noqa: E402
from dp_cases import assert_same_outputs  # noqa: E402
from spawn import run_ranks  # noqa: E402

FIXTURE = str(Path(__file__).parents[1] / "eval" / "fixtures" / "harness_small.jsonl")
# Wall times differ between any two runs; the KV peak is per process (the maximum over ranks).
PER_RUN_KEYS = {"wall_s", "engine_wall_s", "tokens_per_s", "kv_blocks_peak"}


def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in PER_RUN_KEYS}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def records(folder: Path) -> dict:
    lines = [json.loads(x) for x in (folder / "generations.jsonl").read_text().splitlines()]
    out = {(r["prompt_id"], r["method"], json.dumps(r["setting"])): strip(r) for r in lines}
    assert len(out) == len(lines), f"{folder}: a record was written twice (by two ranks?)"
    return out


def test_torchrun_eval_writes_the_single_process_results(tiny_ckpt_factory, tmp_path):
    ckpt = str(tiny_ckpt_factory("llama", initializer_range=0.3))
    argv = ["--ckpt", ckpt, "--dataset", FIXTURE, "--methods", "eager-init,eager,eager-adapt", "--theta", "2.5",
            "--max-sequences", "3", "--max-tokens", "6", "--num-kv-blocks", "256", "--no-progress", "--threads", "1"]
    r0, r1 = run_ranks(dist_workers.eval_cli, 2, (argv + ["--out", str(tmp_path / "dp")],), tmp_path)
    assert (r0.value, r1.value) == (0, 0), (r0.error, r1.error)
    threads = torch.get_num_threads()
    try:   # the reference: the same command in this process (it sets --threads 1 here too)
        assert dist_workers.eval_cli(0, argv + ["--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(threads)
    dp, one = records(tmp_path / "dp"), records(tmp_path / "one")
    assert dp.keys() == one.keys() and len(one) == 5 * 3
    assert_same_outputs([dp[k] for k in sorted(one)], [one[k] for k in sorted(one)])
    res_dp, res_one = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("dp", "one"))
    assert res_dp["status"] == "complete"
    assert strip(res_dp["settings"]) == strip(res_one["settings"])
    assert sorted(p.name for p in (tmp_path / "dp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
