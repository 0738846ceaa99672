"""Turn raw measurements into the benchmark table: rates, ratios, bandwidth, greedy agreement.

Definitions (every row of a workload is compared with the transformers row of the same workload):
    tok/s     generated tokens / wall time (prefill row: prompt tokens / wall time)
    ms/step   decode time / pure decode steps; (d): wall / steps (no per-token clock there);
              prefill row: the whole call
    x HF      transformers' wall time / this wall time, same prompts and length. With equal work
              (a, b, c, prefill: EOS ignored) it equals the tok/s ratio; for (d) it is the wall-time
              speedup the issue's target is about.
    GB/s      (decode steps x weight bytes + attended positions x KV bytes per position) / decode time:
              the bytes a decode step cannot avoid reading, whatever the engine does on top
    % BW      GB/s over the machine's copy bandwidth measured in the same run
    load      1-minute load average when the measurement ended (the bench's own threads included);
              above the number of cores, other processes were competing and the row is disturbed
    GFLOP/s   2 x weight parameters x tokens through the model / time (decode rows: decode tokens over
              decode time; (d): generated tokens over wall; prefill: the LM head only for the last
              prompt position, as both engines compute it). Attention's own FLOPs are not counted.
              Read it against the measured matmul rate.
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any

from bench_workloads import DESCRIPTIONS, ENGINES

COLUMNS = [("workload", "workload"), ("engine", "engine"), ("tokens", "tokens"), ("wall_s", "wall s"),
           ("tok_s", "tok/s"), ("ms_step", "ms/step"), ("x_hf", "x HF"), ("peak_mib", "peak MiB"),
           ("bw_gbs", "GB/s"), ("bw_pct", "% BW"), ("gflops", "GFLOP/s"), ("load", "load"),
           ("match", "greedy = HF")]


def machine_bandwidth(device: str = "cpu", nbytes: int = 1 << 30, tries: int = 10) -> float:
    """Copy bandwidth in GB/s: bytes read + bytes written by ``dst.copy_(src)``, best of ``tries``."""
    import torch

    n = max(1, nbytes // 4)
    src = torch.ones(n, dtype=torch.float32, device=device)   # ones, not empty: pages must be resident
    dst = torch.zeros_like(src)
    best = math.inf
    for _ in range(tries):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    del src, dst
    return 2 * n * 4 / best / 1e9


def machine_matmul_gflops(device: str = "cpu", dtype: str = "float32", n: int = 1024, tries: int = 5) -> float:
    """Matmul throughput in GFLOP/s: an n x n by n x n product (2 n^3 FLOPs), best of ``tries``."""
    import torch

    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    a @ b   # warm-up: thread pool, kernel selection
    best = math.inf
    for _ in range(tries):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def linear_floor_ms(cfg: dict[str, Any], device: str = "cpu", dtype: str = "float32",
                    batches: tuple[int, ...] = (1, 8, 32, 128), tries: int = 3) -> dict[int, float]:
    """Milliseconds one decode step's weight matmuls take with plain ``F.linear``, per batch size.

    Random weights of the checkpoint's shapes (q, k, v, o, gate, up, down per layer, then the LM
    head), applied one after another to ``batch`` rows, best of ``tries``: what torch's own kernels
    need for the weights alone, without attention, norms, sampling or Python around them.
    """
    import torch

    dt = getattr(torch, dtype)
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads = cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // heads
    kv = (cfg.get("num_key_value_heads") or heads) * hd
    shapes = [(heads * hd, h), (kv, h), (kv, h), (h, heads * hd), (inter, h), (inter, h), (h, inter)] * layers
    weights = [torch.randn(o, i, device=device).to(dt) for o, i in shapes + [(cfg["vocab_size"], h)]]
    floor = {}
    for batch in batches:
        xs = {i: torch.randn(batch, i, device=device).to(dt) for i in {w.shape[1] for w in weights}}
        best = math.inf
        for _ in range(tries):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for w in weights:
                torch.nn.functional.linear(xs[w.shape[1]], w)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        floor[batch] = best * 1e3
    return floor


def match_rate(ours: list[list[int]], ref: list[list[int]]) -> dict[str, Any]:
    """Sequences identical to the reference, and the share of tokens before the first difference."""
    equal = sum(a == b for a, b in zip(ours, ref))
    common = 0
    for a, b in zip(ours, ref):
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        common += k
    total = sum(len(b) for b in ref)
    return dict(equal=equal, total=len(ref), token_rate=common / total if total else 1.0)


def build_rows(results: dict[str, dict[str, dict[str, Any]]], kv_bytes_per_pos: int,
               bandwidth_gbs: float, elem_size: int, head_params: int = 0) -> list[dict[str, Any]]:
    """One row per (workload, engine) measured; ``results[workload][engine]`` is a runner result.

    ``elem_size`` (bytes per weight) turns weight bytes into parameters for the GFLOP/s column;
    ``head_params`` (vocab x hidden) is the LM head, which a prefill applies to one position only."""
    rows = []
    for name, by_engine in results.items():
        ref = by_engine.get("transformers")
        for engine in ENGINES[name]:
            res = by_engine.get(engine)
            if res is None:
                continue
            row = _row(name, engine, res, ref, kv_bytes_per_pos, bandwidth_gbs, elem_size, head_params)
            rows.append(row)
    return rows


def _row(name: str, engine: str, res: dict[str, Any], ref: dict[str, Any] | None, kvb: int,
         bandwidth_gbs: float, elem_size: int, head_params: int) -> dict[str, Any]:
    wall = res["wall_s"]
    tokens = res["prompt_tokens"] if name == "prefill" else res["tokens"]
    steps, decode_s = res.get("decode_steps") or 0, res.get("decode_s")
    if name == "prefill":
        ms_step = wall * 1e3
    elif name == "d":   # the engine's llm.eager has no per-token clock: time every row the same way
        ms_step = wall / steps * 1e3 if steps else None
    elif decode_s and steps:
        ms_step = decode_s / steps * 1e3
    else:
        ms_step = None
    bw = None
    if name != "prefill" and decode_s and steps and res.get("kv_ctx") is not None:
        bw = (steps * res["weight_bytes"] + res["kv_ctx"] * kvb) / decode_s / 1e9
    flops_per_token = 2 * res["weight_bytes"] / elem_size
    if name == "prefill":
        gflops = ((flops_per_token - 2 * head_params) * tokens + 2 * head_params) / wall / 1e9
    elif name == "d":
        gflops = flops_per_token * tokens / wall / 1e9
    elif decode_s and res.get("decode_tokens"):
        gflops = flops_per_token * res["decode_tokens"] / decode_s / 1e9
    else:
        gflops = None
    match = None
    if engine != "transformers" and ref is not None and res.get("token_ids") and ref.get("token_ids"):
        match = match_rate(res["token_ids"], ref["token_ids"])
    peak = res.get("peak_rss_mib")
    return dict(workload=name, description=DESCRIPTIONS[name], engine=engine, tokens=tokens, wall_s=wall,
                tok_s=tokens / wall if wall > 0 else None, ms_step=ms_step,
                x_hf=(ref["wall_s"] / wall) if ref is not None and wall > 0 else None,
                peak_mib=peak, gpu_peak_mib=res.get("gpu_peak_mib"), bw_gbs=bw,
                bw_pct=(100 * bw / bandwidth_gbs) if bw is not None and bandwidth_gbs else None, gflops=gflops,
                match=match, load=res.get("load_avg"), decode_steps=steps, weight_bytes=res.get("weight_bytes"),
                sequences=res.get("sequences"))


def _cell(key: str, row: dict[str, Any]) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key == "match":
        return f"{v['equal']}/{v['total']} seq, {100 * v['token_rate']:.1f}% tok"
    if key == "peak_mib":
        gpu = row.get("gpu_peak_mib")
        return f"{v:.0f}" + (f" (gpu {gpu:.0f})" if gpu is not None else "")
    if key in ("wall_s", "x_hf", "bw_gbs", "load"):
        return f"{v:.2f}"
    if key in ("tok_s", "ms_step", "bw_pct", "gflops"):
        return f"{v:.1f}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table with every column of COLUMNS, aligned."""
    cells = [[title for _, title in COLUMNS]] + [[_cell(k, r) for k, _ in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def check_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each as one line saying whether this run met it."""
    def find(name: str, engine: str) -> dict[str, Any] | None:
        return next((r for r in rows if r["workload"] == name and r["engine"] == engine), None)

    lines = []

    def report(label: str, value: float | None, ok: bool) -> None:
        shown = "n/a" if value is None else f"{value:.2f}"
        lines.append(f"{'met    ' if ok else 'NOT met'}  {label}: {shown}")

    for name in ("b", "c"):
        row = find(name, "eager_core")
        if row is not None:
            report(f"({name}) x HF >= 2", row["x_hf"], (row["x_hf"] or 0) >= 2)
    row = find("a", "eager_core")
    if row is not None:
        report("(a) decode bandwidth >= 70% of measured (%)", row["bw_pct"], (row["bw_pct"] or 0) >= 70)
    row = find("d", "eager_core:eager-init")
    if row is not None:
        report("(d) EAGer-init wall <= 1/3 of HF parallel (x HF >= 3)", row["x_hf"], (row["x_hf"] or 0) >= 3)
    row = find("prefill", "eager_core")
    if row is not None:
        report("prefill tok/s >= HF (x HF >= 1)", row["x_hf"], (row["x_hf"] or 0) >= 1)
    return lines


def source_revision() -> str:
    """The commit measured, with ``+dirty`` when eager_core/ or csrc/ differ from it ("?" outside git)."""
    def git(*cmd: str) -> str:
        repo = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", *cmd], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "eager_core", "csrc")
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty else "")
