"""The branch vote printed under every EAGer tree by tools/generate.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from eager_cli import branch_vote  # noqa: E402

from eager_core.eager.outputs import EagerOutput, EagerSequence  # noqa: E402


def tree(texts: list[str]) -> EagerOutput:
    out = EagerOutput("q", [1])
    for i, t in enumerate(texts):
        out.sequences.append(EagerSequence(t, [1], None if i == 0 else 0, i, None, "stop", 0))
    return out


def test_the_vote_counts_equal_numbers_in_any_notation():
    assert branch_vote(tree(["2 + 3 = 5", "The answer is 11", "answer: 5.0", "so 5"])) == "vote: 5 (3 of 4 branches)"
    assert branch_vote(tree(["no idea", "none"])) == "vote: no branch gave an answer"
