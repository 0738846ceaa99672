"""Plots render to non-empty PNG files, atomically, without a display."""

import os

import pytest

from eager_core.eval.plots import plot_entropy_hist, plot_frontier, plot_sequences_per_prompt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    leftovers = [n for n in os.listdir(path.parent) if n.startswith(".tmp-")]
    assert leftovers == []


def test_frontier(tmp_path):
    rows = [
        {"method": "parallel", "max_sequences": 8, "num_tokens": 8000, "pass_at_k": 0.30},
        {"method": "parallel", "max_sequences": 16, "num_tokens": 16000, "pass_at_k": 0.38},
        {"method": "eager-init", "theta": 2.0, "max_sequences": 8, "num_tokens": 3000, "pass_at_k": 0.25},
        {"method": "eager-init", "theta": 2.4, "max_sequences": 8, "num_tokens": 1500, "pass_at_k": 0.20},
        {"method": "eager-init", "theta": 2.0, "max_sequences": 16, "num_tokens": 5000, "pass_at_k": 0.31},
        {"method": "eager", "theta": 2.4, "max_sequences": 8, "num_tokens": 4000, "pass_at_k": 0.35},
    ]
    path = tmp_path / "plots" / "frontier.png"  # the folder is created
    plot_frontier(rows, path)
    _assert_png(path)
    first = path.read_bytes()
    plot_frontier(rows[:2], path)  # overwriting replaces the file
    _assert_png(path)
    assert path.read_bytes() != first


def test_frontier_rejects_empty_or_incomplete_rows(tmp_path):
    with pytest.raises(ValueError):
        plot_frontier([], tmp_path / "f.png")
    with pytest.raises(ValueError, match="num_tokens"):
        plot_frontier([{"method": "eager", "pass_at_k": 0.1}], tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_entropy_hist(tmp_path):
    entropies = [i % 300 / 100 for i in range(5000)]  # 0.00 .. 2.99 nats
    path = tmp_path / "entropy.png"
    plot_entropy_hist(entropies, [2.0, 2.4], path)
    _assert_png(path)
    with pytest.raises(ValueError):
        plot_entropy_hist([], [2.0], tmp_path / "e.png")


def test_sequences_per_prompt(tmp_path):
    path = tmp_path / "seqs.png"
    plot_sequences_per_prompt({"parallel": [8] * 10, "eager-init": [1, 2, 2, 3, 8, 8, 5, 1]}, path)
    _assert_png(path)
    with pytest.raises(ValueError):
        plot_sequences_per_prompt({"parallel": []}, tmp_path / "s.png")
