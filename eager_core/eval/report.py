"""What an evaluation run reports: its environment, a summary table and the plots.

All functions here read metric rows (from ``records.setting_metrics``) or records; none runs a
model, so reports can be rebuilt from a results folder at any time.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata

from eager_core.eval.metrics import unbiased_pass_at_k
from eager_core.eval.plots import plot_entropy_hist, plot_frontier, plot_sequences_per_prompt
from eager_core.eval.records import own_entropies

_PACKAGES = ("torch", "numpy", "tokenizers", "safetensors", "math-verify", "reasoning-gym", "matplotlib")


def environment(llm=None) -> dict:
    """Versions, CPU, torch threads and the entropy-gate backend in use, as plain JSON."""
    import torch

    from eager_core.ops import backend

    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = getattr(llm, "device", None)
    env = {
        "versions": versions,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
        "entropy_backend": backend(device),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "argv": list(sys.argv),
    }
    return env


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def relative_tokens(rows: Sequence[Mapping]) -> list[float | None]:
    """#T of each row divided by #T of ``parallel`` at the same M (``None`` without that baseline)."""
    base = {r["max_sequences"]: r["num_tokens"] for r in rows if r["method"] == "parallel"}
    return [r["num_tokens"] / base[r["max_sequences"]] if base.get(r["max_sequences"]) else None
            for r in rows]


def format_table(rows: Sequence[Mapping]) -> str:
    """A Markdown table of the metric rows (paste-able into docs), one line per setting."""
    head = ["method", "θ", "M", "Pass@k", "Cons@k", "PR", "pass@1", "#T", "#T/par", "#S", "wall s", "tok/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row, rel in zip(rows, relative_tokens(rows)):
        cells = [row["method"], "-" if row["theta"] is None else f"{row['theta']:g}", str(row["max_sequences"]),
                 f"{row['pass_at_k']:.3f}", f"{row['cons_at_k']:.3f}", f"{row['pass_ratio']:.3f}",
                 _opt(row.get("unbiased_pass_at_1")), f"{row['num_tokens']:,}",
                 "-" if rel is None else f"{rel:.2f}", f"{row['mean_sequences']:.2f}",
                 _opt(row.get("wall_s"), "{:.0f}"), _opt(row.get("tokens_per_s"), "{:.0f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _opt(value, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def reference_theta(thetas: Sequence[float]) -> float | None:
    """The theta shown in per-method plots: the median of the sweep (lower middle if even)."""
    ordered = sorted(set(thetas))
    return ordered[(len(ordered) - 1) // 2] if ordered else None


def subsampled_parallel(records: Sequence[dict]) -> list[dict]:
    """Parallel sampling with k = 1..M sequences, estimated from one parallel run with M per prompt.

    For each k: Pass@k is the mean unbiased pass@k (Chen et al.) over prompts, and #T the
    expected tokens of k random samples out of the M (k/M of the run's #T). This is the
    baseline frontier at every sample count, to compare EAGer points with, at no extra compute.
    """
    if not records:
        return []
    m = min(r["num_sequences"] for r in records)
    total = sum(r["generated_tokens"] for r in records)
    rows = []
    for k in range(1, m + 1):
        p = sum(unbiased_pass_at_k(r["num_sequences"], sum(s["correct"] for s in r["sequences"]), k)
                for r in records) / len(records)
        rows.append({"method": "parallel", "max_sequences": k, "pass_at_k": p,
                     "num_tokens": sum(r["generated_tokens"] * k / r["num_sequences"] for r in records),
                     "mean_sequences": float(k), "from_m": m, "from_num_tokens": total})
    return rows


def parallel_baseline(records_by_setting: Mapping[tuple, Sequence[dict]]) -> list[dict]:
    """``subsampled_parallel`` of the parallel setting with the largest M (``[]`` if none ran)."""
    keys = [key for key in records_by_setting if key[0] == "parallel"]
    return subsampled_parallel(records_by_setting[max(keys, key=lambda k: k[2])]) if keys else []


def make_plots(rows: Sequence[Mapping], records_by_setting: Mapping[tuple, Sequence[dict]],
               thetas: Sequence[float], out_dir: str | os.PathLike, top_k: int = 20) -> dict:
    """Write the frontier, entropy and sequences-per-prompt plots; return {name: file name}.

    ``frontier_subsampled.png`` draws the EAGer rows against ``subsampled_parallel`` of the
    parallel run with the largest M (labelled M=k for k samples), when both exist.

    ``records_by_setting`` maps ``(method, theta, M)`` to that setting's records. The entropy
    histogram uses the ``parallel`` records when there are any (plain sampling at T, with no
    selection by the branching rule), else every record. Sequences per prompt: one plot per M,
    each method at the reference theta (``reference_theta``), parallel included.
    """
    written: dict = {}
    if rows:
        plot_frontier(rows, os.path.join(out_dir, "frontier.png"))
        written["frontier"] = "frontier.png"
    eager_rows = [r for r in rows if r["method"] != "parallel"]
    baseline = parallel_baseline(records_by_setting)
    if baseline and eager_rows:
        plot_frontier(eager_rows + baseline, os.path.join(out_dir, "frontier_subsampled.png"))
        written["frontier_subsampled"] = "frontier_subsampled.png"
    parallel = [r for key, recs in records_by_setting.items() if key[0] == "parallel" for r in recs]
    source = parallel or [r for recs in records_by_setting.values() for r in recs]
    entropies = own_entropies(source)
    if entropies:
        plot_entropy_hist(entropies, list(thetas), os.path.join(out_dir, "entropy_hist.png"), top_k=top_k)
        written["entropy_hist"] = "entropy_hist.png"
        written["entropy_source"] = "parallel" if parallel else "all"
    ref = reference_theta(thetas)
    for m in sorted({key[2] for key in records_by_setting}):
        counts = {}
        for (method, theta, mm), recs in records_by_setting.items():
            if mm == m and (theta is None or theta == ref):
                label = method if theta is None else f"{method} θ={theta:g}"
                counts[label] = [r["num_sequences"] for r in recs]
        if counts:
            name = f"sequences_per_prompt_M{m}.png"
            plot_sequences_per_prompt(counts, os.path.join(out_dir, name))
            written[f"sequences_per_prompt_M{m}"] = name
    written["sequences_theta"] = ref
    return written
