"""Single-process code on rank 0, its EAGer calls served by every rank (run_data_parallel).

That the leader sees one process's results is tested end to end by test_eval_torchrun.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import dist_workers  # noqa: E402
from dp_cases import PARAMS, PROMPTS  # noqa: E402
from spawn import run_ranks  # noqa: E402

from eager_core import LLM  # noqa: E402
from eager_core.eager.leader import run_data_parallel  # noqa: E402


def test_leader_failure_between_calls_stops_the_followers(tiny_ckpt_factory, tmp_path):
    ckpt = str(tiny_ckpt_factory("llama", initializer_range=0.3))
    r0, r1 = run_ranks(dist_workers.leader_main, 2, (ckpt, PROMPTS[:2], PARAMS, 1), tmp_path)
    assert r0.exitcode == 1 and "injected failure between calls" in r0.error, r0.error
    assert r1.exitcode == 1 and "DistributedError" in r1.error and "rank 0 failed" in r1.error, r1.error
    assert "injected failure between calls" in r1.error


def test_without_torchrun_main_gets_the_llm_itself(tiny_ckpt, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    llm = LLM(str(tiny_ckpt), num_kv_blocks=16)
    assert run_data_parallel(llm, lambda x: x) is llm
