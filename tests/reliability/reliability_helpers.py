"""Helpers shared by the reliability tests."""

from __future__ import annotations

import sys
from pathlib import Path

from eager_core import LLM

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))   # the soak harness lives with the tools
from soak_harness import engine_problems  # noqa: E402


def assert_clean(llm: LLM) -> None:
    """Idle engine: every block free with count 0, nothing queued, running or pending."""
    assert engine_problems(llm) == []
    llm.block_manager.check([])


def token_ids(outputs) -> list[list[list[int]]]:
    return [[c.token_ids for c in r.outputs] for r in outputs]


def eager_ids(outputs) -> list[list[list[int]]]:
    return [[s.token_ids for s in o.sequences] for o in outputs]
