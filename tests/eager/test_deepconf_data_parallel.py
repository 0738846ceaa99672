"""DeepConf and EAGer-DeepConf over 2 data-parallel gloo processes: the same outputs as one process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
import deepconf_dp_worker  # noqa: E402
from spawn import run_ranks  # noqa: E402

from eager_core import LLM  # noqa: E402
from eager_core.eager.deepconf_params import DeepConfParams  # noqa: E402

PROMPTS = [f"p{i} " + "xy" * i for i in range(5)]
PARAMS = dict(theta=2.5, max_sequences=4, max_tokens=10, temperature=0.8, seed=5, warmup_traces=2,
              window_size=2, confidence_percentile=50.0)
METHODS = ["deepconf", "eager-deepconf"]
APPROX = ("entropies", "branch_entropy", "entropy", "threshold", "confidence_threshold", "lowest_group_confidence")


def same(got, ref, path="outputs"):
    """Equal in every token, text and tree; confidences and entropies up to float noise between batch shapes."""
    if isinstance(ref, dict):
        assert got.keys() == ref.keys(), path
        for k in ref:
            if k in APPROX:
                assert got[k] == pytest.approx(ref[k], abs=1e-4), f"{path}.{k}"
            else:
                same(got[k], ref[k], f"{path}.{k}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), path
        for i, (g, r) in enumerate(zip(got, ref)):
            same(g, r, f"{path}[{i}]")
    else:
        assert got == ref, path


def test_dp2_equals_one_process(tiny_ckpt_factory, tmp_path):
    ckpt = str(tiny_ckpt_factory("llama", initializer_range=0.3))
    results = run_ranks(deepconf_dp_worker.dp_confidence, 2, (ckpt, PROMPTS, PARAMS, METHODS), tmp_path)
    for r in results:
        assert r.exitcode == 0, r.error
    llm = LLM(ckpt, num_kv_blocks=256)
    for method, got in zip(METHODS, results[0].value):
        ref = llm.eager(PROMPTS, DeepConfParams(**PARAMS), method)
        same(got["outputs"], [o.to_dict() for o in ref])
        assert got["stats"]["generated_tokens"] == llm.last_stats["generated_tokens"]
