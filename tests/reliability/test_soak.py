"""The soak (tools/soak_harness.py, tools/soak.py), short: random requests, forks, preemptions and
interrupts against a small pool end with every block free, no sequence alive and flat memory.
The checks themselves are shown to catch a leak, so a clean report means something.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from reliability_helpers import REPO, assert_clean  # (also puts tools/ on sys.path)

from eager_core import LLM, SamplingParams
from eager_core.errors import ConfigError
from soak_harness import engine_problems, live_sequence_objects, max_family, pool_blocks_needed, run_soak

SOAK = dict(max_prompt_len=8, max_new_tokens=32, max_n=4, max_sequences=3, interrupt_fraction=0.15)


def _soak_llm(tiny_ckpt) -> LLM:
    blocks = pool_blocks_needed(max_family(SOAK["max_n"], SOAK["max_sequences"]),
                                SOAK["max_prompt_len"] + SOAK["max_new_tokens"], 4)
    return LLM(str(tiny_ckpt), num_kv_blocks=blocks, block_size=4, seed=5)


def test_short_soak_ends_with_nothing_leaked(tiny_ckpt):
    llm = _soak_llm(tiny_ckpt)
    report = run_soak(llm, num_requests=150, seed=11, **SOAK)
    assert report["ok"], report["problems"]
    assert report["requests"] == 150 and report["free_blocks_end"] == report["num_blocks"]
    assert report["leaked_objects"] == 0 and report["rss_growth_mb"] is not None
    # The run did what a soak is for: forks, copy-on-write, preemptions, branches, interrupts.
    assert report["preemptions"] > 0 and report["cow_copies"] > 0 and report["branch_events"] > 0
    assert report["interrupted_calls"] > 0 and report["eager_calls"] > 0
    assert_clean(llm)


def test_the_checks_catch_a_leaked_block_and_a_stuck_request(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=16, block_size=4)
    table = []
    llm.block_manager.prepare_write(table, 0, 5)          # two blocks that nobody will free
    assert engine_problems(llm) == ["2 of 16 KV blocks not back in the pool",
                                    f"blocks with a non-zero reference count: {table}"]
    llm.block_manager.free(table)
    llm.llm_engine.add_request("stuck", [1, 2], SamplingParams())   # queued, never run
    assert engine_problems(llm) == ["engine still holds 1 requests (1 not admitted)"]
    llm.llm_engine.abort_request("stuck")
    assert engine_problems(llm) == []


def test_the_soak_reports_sequences_that_outlive_their_call(tiny_ckpt, monkeypatch):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=64, block_size=4)
    kept = []
    real_remove = llm.scheduler.remove
    monkeypatch.setattr(llm.scheduler, "remove", lambda req: (kept.append(req), real_remove(req)))   # a leak
    report = run_soak(llm, num_requests=6, seed=1, max_prompt_len=4, max_new_tokens=4, max_n=2, max_sequences=2)
    assert not report["ok"] and report["leaked_objects"] > 0
    assert any("outlived their calls" in p for p in report["problems"])
    before = live_sequence_objects()
    kept.clear()
    assert live_sequence_objects() < before


def test_a_pool_too_small_for_the_largest_family_is_refused(tiny_ckpt):
    llm = LLM(str(tiny_ckpt), num_kv_blocks=8, block_size=4)
    with pytest.raises(ConfigError, match="the largest soak family needs"):
        run_soak(llm, num_requests=5)


def test_soak_tool_runs_and_prints_a_json_report(tiny_ckpt, capsys):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("soak_tool", REPO / "tools" / "soak.py")
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)
    finally:
        sys.path.remove(str(REPO / "tools"))
    code = tool.run_main(tool.main, ["--ckpt", str(tiny_ckpt), "--requests", "12", "--seed", "3", "--max-new-tokens",
                                     "8", "--max-sequences", "2", "--json", "--quiet"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["requests"] == 12
    assert report["num_blocks"] == pool_blocks_needed(max_family(4, 2), 16 + 8, 4)   # the default: the smallest pool
    assert tool.run_main(tool.main, ["--ckpt", str(tiny_ckpt), "--requests", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: num_requests=0")
