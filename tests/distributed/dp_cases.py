"""Shared cases of the data-parallel tests: prompts and parameters that make EAGer reallocate."""

from __future__ import annotations

import pytest

# A peakier random model (larger init) has varied entropies: with theta 2.5 some prompts saturate
# the cap M=4 and others do not, so the reallocation has something to move.
PROMPTS = [f"p{i} " + "xy" * i for i in range(7)]
PARAMS = dict(theta=2.5, max_sequences=4, max_tokens=12, temperature=0.8, seed=5, no_branch_window=4)
ANSWERS = ["e", "q", "zz", "k", "0", "xy", "!"]

FLOAT_KEYS = ("entropies", "branch_entropy", "entropy", "threshold")


def assert_same_outputs(got, ref, path="outputs"):
    """Equal in every token, text, tree and count; entropies equal up to float noise (1e-4).

    Entropies are computed over batches of a different shape in each process (the other prompts
    are elsewhere), so their last bits may differ; the tokens drawn from them may not.
    """
    if isinstance(ref, dict):
        assert got.keys() == ref.keys(), path
        for k in ref:
            if k in FLOAT_KEYS:
                assert got[k] == pytest.approx(ref[k], abs=1e-4), f"{path}.{k}"
            else:
                assert_same_outputs(got[k], ref[k], f"{path}.{k}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), path
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_same_outputs(g, r, f"{path}[{i}]")
    else:
        assert got == ref, path
