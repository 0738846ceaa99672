"""Result plots: the efficiency-accuracy frontier, the entropy distribution, sequences per prompt.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, so
nothing touches pyplot's global state or needs a display. Each PNG is written atomically:
rendered to a temporary file in the target folder, then ``os.replace``d over ``path``, so an
interrupted run never leaves a half-written image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eager_core.eval.io_utils import write_atomic

PARALLEL_METHOD = "parallel"


def _save_atomic(fig: Figure, path: str | os.PathLike) -> None:
    FigureCanvasAgg(fig)
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=120), suffix=".png")


def plot_frontier(rows: Sequence[Mapping], path: str | os.PathLike) -> None:
    """#T (x) against Pass@k (y), one curve per method across theta.

    Each row needs ``method``, ``num_tokens`` and ``pass_at_k``; EAGer rows carry ``theta``,
    and ``max_sequences`` (M) when several Ms were run: each (method, M) pair is one curve
    through its thetas, with points labelled by theta. Rows of method ``"parallel"`` (which has
    no theta) form one baseline curve through its Ms, with points labelled ``M=...``.
    """
    if not rows:
        raise ValueError("plot_frontier: no result rows to plot")
    for i, row in enumerate(rows):
        missing = [k for k in ("method", "num_tokens", "pass_at_k") if row.get(k) is None]
        if missing:
            raise ValueError(f"plot_frontier: row {i} lacks {missing}: {dict(row)}")
    ms = {row.get("max_sequences") for row in rows if row["method"] != PARALLEL_METHOD}
    curves: dict[tuple, list[Mapping]] = {}
    for row in rows:
        if row["method"] == PARALLEL_METHOD:
            group: tuple = (PARALLEL_METHOD, None)
        else:
            group = (row["method"], row.get("max_sequences") if len(ms) > 1 else None)
        curves.setdefault(group, []).append(row)

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for (method, m), members in curves.items():
        is_parallel = method == PARALLEL_METHOD
        sort_key = "max_sequences" if is_parallel else "theta"
        members = sorted(members, key=lambda r: (r.get(sort_key) is None, r.get(sort_key) or 0))
        xs = [r["num_tokens"] for r in members]
        ys = [r["pass_at_k"] for r in members]
        label = method if m is None else f"{method} (M={m})"
        ax.plot(xs, ys, marker="s" if is_parallel else "o", linestyle="--" if is_parallel else "-",
                color="black" if is_parallel else None, label=label)
        for r, x, y in zip(members, xs, ys):
            value = r.get(sort_key)
            if value is not None:
                text = f"M={value}" if is_parallel else f"θ={value:g}"
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("#T (generated tokens)")
    ax.set_ylabel("Pass@k")
    ax.set_title("Efficiency-accuracy frontier")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_atomic(fig, path)


def plot_entropy_hist(entropies: Sequence[float], thetas: Sequence[float],
                      path: str | os.PathLike, top_k: int = 20) -> None:
    """Histogram of per-token entropies (nats) with a vertical line and share above each theta.

    The x range covers [0, ln top_k] (the largest top-k renormalised entropy) or the data's
    maximum if larger, so plots of different runs line up.
    """
    values = np.asarray(entropies, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("plot_entropy_hist: no finite entropies to plot")
    hi = max(math.log(top_k), float(values.max()))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ax.hist(values, bins=60, range=(0.0, hi), color="tab:blue", alpha=0.8)
    for theta, color in zip(sorted(set(thetas)), ("tab:red", "tab:orange", "tab:green",
                                                  "tab:purple", "tab:brown", "tab:pink")):
        share = float(np.mean(values > theta))
        ax.axvline(theta, color=color, linestyle="--", label=f"θ={theta:g}: {share:.1%} above")
    ax.set_xlabel("per-token entropy (nats)")
    ax.set_ylabel("tokens")
    ax.set_title(f"Per-token entropy ({values.size:,} tokens)")
    if thetas:
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_atomic(fig, path)


def plot_sequences_per_prompt(counts_by_method: Mapping[str, Sequence[int]],
                              path: str | os.PathLike) -> None:
    """Side-by-side bars: how many prompts ended with 1, 2, ... sequences, per method."""
    methods = [m for m, counts in counts_by_method.items() if len(counts) > 0]
    if not methods:
        raise ValueError("plot_sequences_per_prompt: no sequence counts to plot")
    all_counts = sorted({int(c) for m in methods for c in counts_by_method[m]})
    width = 0.8 / len(methods)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        counts = [int(c) for c in counts_by_method[method]]
        heights = [counts.count(c) for c in all_counts]
        offsets = [c - 0.4 + width * (i + 0.5) for c in all_counts]
        ax.bar(offsets, heights, width=width, label=f"{method} (mean {sum(counts) / len(counts):.2f})")
    ax.set_xlabel("sequences per prompt")
    ax.set_ylabel("prompts")
    ax.set_xticks(all_counts)
    ax.set_title("Sequences per prompt")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_atomic(fig, path)
