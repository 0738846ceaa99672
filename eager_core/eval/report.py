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
from eager_core.eval.records import extra_label, own_entropies, prompt_outcomes
from eager_core.eval.stats import N_BOOT, bootstrap_ci, matched_parallel, paired_bootstrap_ci

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
    """A Markdown table of the metric rows (paste-able into docs), one line per setting.

    ``q`` is DeepConf's confidence percentile, ``wCons@k`` its confidence-weighted vote; the
    intervals are 95% bootstrap intervals over problems (``add_intervals``); ``par@#T`` is
    parallel's Pass@k subsampled to the row's #T."""
    head = ["method", "θ", "M", "Pass@k", "Cons@k", "PR", "pass@1", "#T", "#T/par", "#S", "wall s", "tok/s",
            "q", "wCons@k", "Pass@k 95% CI", "ΔPass@k vs par [95% CI]", "par@#T [95% CI]"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for row, rel in zip(rows, relative_tokens(rows)):
        ci = row.get("ci95") or {}
        matched = row.get("matched_parallel") or {}
        cells = [row["method"], "-" if row["theta"] is None else f"{row['theta']:g}", str(row["max_sequences"]),
                 f"{row['pass_at_k']:.3f}", f"{row['cons_at_k']:.3f}", f"{row['pass_ratio']:.3f}",
                 _opt(row.get("unbiased_pass_at_1")), f"{row['num_tokens']:,}",
                 "-" if rel is None else f"{rel:.2f}", f"{row['mean_sequences']:.2f}",
                 _opt(row.get("wall_s"), "{:.0f}"), _opt(row.get("tokens_per_s"), "{:.0f}"),
                 _opt(row.get("confidence_percentile"), "{:g}"), _opt(row.get("weighted_cons_at_k")),
                 _interval(ci.get("pass_at_k")),
                 _with_interval(row.get("delta_pass_at_k_vs_parallel"), ci.get("delta_pass_at_k_vs_parallel")),
                 _with_interval(matched.get("pass_at_k"), matched.get("ci95"), signed=False)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _opt(value, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _interval(ci: Sequence[float] | None, signed: bool = False) -> str:
    f = "{:+.2f}" if signed else "{:.2f}"
    return "-" if ci is None else f"[{f.format(ci[0])}, {f.format(ci[1])}]"


def _with_interval(value: float | None, ci: Sequence[float] | None, signed: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f} {_interval(ci, signed)}" if signed else f"{value:.3f} {_interval(ci)}"


def add_intervals(pairs: Sequence[tuple[dict, Sequence[dict]]], n_boot: int = N_BOOT, seed: int = 0) -> None:
    """Add bootstrap intervals to each (metric row, its records), in place.

    ``row["ci95"]``: ``pass_at_k``, ``cons_at_k`` (and ``weighted_cons_at_k`` for DeepConf methods)
    over problems, and for every method but parallel ``delta_pass_at_k_vs_parallel``: the paired
    interval of (its Pass@k - parallel's) over the problems both ran at the same M (its point value
    is ``row["delta_pass_at_k_vs_parallel"]``), and likewise ``delta_cons_at_k_vs_parallel``. DeepConf
    methods add ``delta_weighted_cons_at_k_vs_parallel`` (their weighted vote against parallel's
    majority) and ``delta_weighted_vs_majority`` (their two votes on the same traces). ``row["matched_parallel"]``: parallel (the run with
    the largest M) subsampled to the row's #T on the same problems (``stats.matched_parallel``).
    """
    parallel = {row["max_sequences"]: recs for row, recs in pairs if row["method"] == "parallel"}
    widest = parallel[max(parallel)] if parallel else None
    for row, recs in pairs:
        outcomes = [prompt_outcomes(r) for r in recs]
        ci = {"pass_at_k": bootstrap_ci([o["pass"] for o in outcomes], n_boot, seed),
              "cons_at_k": bootstrap_ci([o["cons"] for o in outcomes], n_boot, seed)}
        weighted = row.get("weighted_cons_at_k") is not None
        if weighted:
            ci["weighted_cons_at_k"] = bootstrap_ci([o["weighted_cons"] for o in outcomes], n_boot, seed)
            ci["delta_weighted_vs_majority"] = paired_bootstrap_ci(
                [o["weighted_cons"] for o in outcomes], [o["cons"] for o in outcomes], n_boot, seed)
        if row["method"] != "parallel":
            same_m = parallel.get(row["max_sequences"])
            if same_m:
                mine, base = _aligned(recs, same_m)
                a = [prompt_outcomes(r) for r in mine]
                b = [prompt_outcomes(r) for r in base]
                ci["delta_pass_at_k_vs_parallel"] = paired_bootstrap_ci(
                    [x["pass"] for x in a], [y["pass"] for y in b], n_boot, seed)
                row["delta_pass_at_k_vs_parallel"] = (sum(x["pass"] - y["pass"] for x, y in zip(a, b)) / len(a)
                                                      if a else None)
                ci["delta_cons_at_k_vs_parallel"] = paired_bootstrap_ci(
                    [x["cons"] for x in a], [y["cons"] for y in b], n_boot, seed)
                if weighted:   # DeepConf's vote against parallel's plain majority (self-consistency)
                    ci["delta_weighted_cons_at_k_vs_parallel"] = paired_bootstrap_ci(
                        [x["weighted_cons"] for x in a], [y["cons"] for y in b], n_boot, seed)
            if widest:
                mine, base = _aligned(recs, widest)
                row["matched_parallel"] = matched_parallel(base, mine, [prompt_outcomes(r)["pass"] for r in mine],
                                                           n_boot, seed)
        row["ci95"] = ci


def _aligned(records: Sequence[dict], other: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The records of the problems both lists hold, in ``records``' order, paired by prompt id."""
    by_id = {r["prompt_id"]: r for r in other}
    mine = [r for r in records if r["prompt_id"] in by_id]
    return mine, [by_id[r["prompt_id"]] for r in mine]


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

    ``records_by_setting`` maps ``(method, theta, M, extra)`` (``Setting``'s fields) to that setting's records. The entropy
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
        for (method, theta, mm, *extra), recs in records_by_setting.items():
            if mm == m and (theta is None or theta == ref):
                label = method if theta is None else f"{method} θ={theta:g}"
                label += "".join(extra_label(part) for part in extra)
                counts[label] = [r["num_sequences"] for r in recs]
        if counts:
            name = f"sequences_per_prompt_M{m}.png"
            plot_sequences_per_prompt(counts, os.path.join(out_dir, name))
            written[f"sequences_per_prompt_M{m}"] = name
    written["sequences_theta"] = ref
    return written
