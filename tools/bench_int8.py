#!/usr/bin/env python
"""Decode speed of weight-only int8 against eager_core's own float32 and bfloat16 (no transformers).

    python tools/bench_int8.py                              # workloads a,b,c; 4 configurations; 128 new tokens
    python tools/bench_int8.py --workloads a --repeats 3 --threads 2 --json int8.json
    python tools/bench_int8.py --workloads a --configs bfloat16,int8-bf16 --rounds 5   # x bf16, drift-proof
    python tools/bench_int8.py --kernels --threads 2       # one decode step's matmuls alone, 1/8/32 rows

Configurations: float32, bfloat16, int8 (int8 weights, float32 activations and KV cache) and
int8-bf16 (int8 weights, bfloat16 activations and KV cache). Workloads are tools/bench.py's:
(a) one sequence, (b) n=8 samples of one prompt, (c) 32 prompts of mixed lengths. Each
measurement runs in its own process (tools/bench_runners.py), best of --repeats; `ms/step` is the
decode window over pure decode steps, `x bf16` its ratio to the bfloat16 row of the same workload
(> 1: faster). `load` is the 1-minute load average at the end of the measurement: on the 2-core
reference machine, rows measured above ~2 were disturbed by other processes.

--rounds N runs the configurations N times in turn (bf16, int8, bf16, int8, ...), each time in a
fresh process, and reports each configuration's median round: this machine's memory bandwidth moves
by up to ~1.4x from one minute (and one process) to the next, so one process per configuration,
run one after the other, can put a ratio anywhere from 1.3 to 1.8. `x bf16` is then the ratio of
the medians; the per-round ratios (each configuration against the bfloat16 run next to it) follow.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import run_main

from bench_runners import MARKER
from bench_workloads import DESCRIPTIONS, build

RUNNER = Path(__file__).resolve().parent / "bench_runners.py"
CONFIGS = {"float32": ("float32", None), "bfloat16": ("bfloat16", None), "int8": ("float32", "int8"),
           "int8-bf16": ("bfloat16", "int8")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="HF checkpoint folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--workloads", default="a,b,c", help="comma-separated subset of a,b,c")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1,
                   help="run the configurations this many times in turn, each in a fresh process; report the "
                        "median round (default 1)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per measurement (default 2)")
    p.add_argument("--kernels", action="store_true",
                   help="instead: time one decode step's matmuls alone (SmolLM2-135M shapes, random weights) "
                        "for 1, 8 and 32 rows, float32 / bfloat16 / int8 with float32 or bfloat16 x")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    p.add_argument("--debug", action="store_true")
    return p


def run_child(spec: dict[str, Any]) -> dict[str, Any] | None:
    proc = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(spec), stdout=subprocess.PIPE, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    return None


def row(workload: str, config: str, res: dict[str, Any]) -> dict[str, Any]:
    steps, decode_s = res.get("decode_steps") or 0, res.get("decode_s")
    return dict(workload=workload, config=config, tokens=res["tokens"], wall_s=res["wall_s"],
                tok_s=res["tokens"] / res["wall_s"], ms_step=1e3 * decode_s / steps if steps and decode_s else None,
                weight_mb=res["weight_bytes"] / 1e6, load=res.get("load_avg"), threads=res.get("threads"))


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (workload, config): the round with the median ms/step (the lower of the two middle
    ones for an even count, so it is a real measurement), with ``rounds`` and the ms/step range added."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rows in rounds:
        for r in rows:
            by_key.setdefault((r["workload"], r["config"]), []).append(r)
    out = []
    for got in by_key.values():
        timed = sorted((r for r in got if r["ms_step"]), key=lambda r: r["ms_step"])
        pick = dict(timed[(len(timed) - 1) // 2] if timed else got[0])
        pick.update(rounds=len(got), ms_step_min=timed[0]["ms_step"] if timed else None,
                    ms_step_max=timed[-1]["ms_step"] if timed else None)
        out.append(pick)
    return out


def paired_ratios(rounds: list[list[dict[str, Any]]], ref: str = "bfloat16") -> dict[tuple[str, str], list[float]]:
    """Per (workload, config): ref's ms/step over the config's, round by round (the two ran minutes
    apart at most), for every round where both were measured."""
    out: dict[tuple[str, str], list[float]] = {}
    for rows in rounds:
        refs = {r["workload"]: r for r in rows if r["config"] == ref and r["ms_step"]}
        for r in rows:
            o = refs.get(r["workload"])
            if r["config"] != ref and o is not None and r["ms_step"]:
                out.setdefault((r["workload"], r["config"]), []).append(o["ms_step"] / r["ms_step"])
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | config | tokens | wall s | tok/s | ms/step | x bf16 | x f32 | weights MB | load |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        same = {o["config"]: o for o in rows if o["workload"] == r["workload"]}

        def ratio(ref: str) -> str:
            o = same.get(ref)
            return f"{o['ms_step'] / r['ms_step']:.2f}" if o and o["ms_step"] and r["ms_step"] else "-"
        ms = f"{r['ms_step']:.2f}" if r["ms_step"] else "-"
        if r.get("rounds", 1) > 1 and r.get("ms_step_min") is not None:
            ms += f" ({r['ms_step_min']:.2f}-{r['ms_step_max']:.2f}, {r['rounds']} rounds)"
        load = f"{r['load']:.2f}" if r["load"] is not None else "?"
        lines.append(f"| {r['workload']} | {r['config']} | {r['tokens']} | {r['wall_s']:.2f} | {r['tok_s']:.1f} | "
                     f"{ms} | {ratio('bfloat16')} | {ratio('float32')} | {r['weight_mb']:.0f} | {load} |")
    return "\n".join(lines)


def kernel_step_ms(threads: int, rows: tuple[int, ...] = (1, 8, 32), repeats: int = 7) -> list[dict[str, Any]]:
    """Best-of-``repeats`` time of one decode step's weight matmuls through ops.linear (what the model
    calls), per weight format and rows: 30 x (q/k/v, o, gate/up, down) + the LM head of SmolLM2-135M."""
    import time

    import torch

    from eager_core.ops import linear, quantize_int8
    from eager_core.ops.int8_linear import int8_swiglu

    torch.set_num_threads(threads)
    h, inter, layers, vocab = 576, 1536, 30, 49152
    shapes = [(960, h), (h, h), (2 * inter, h), (h, inter)] * layers + [(vocab, h)]
    g = torch.Generator().manual_seed(0)
    floats = [torch.randn(n, k, generator=g) * 0.02 for n, k in shapes]
    formats = {"float32": (floats, torch.float32), "bfloat16": ([w.bfloat16() for w in floats], torch.bfloat16),
               "int8 (x float32)": ([quantize_int8(w) for w in floats], torch.float32)}
    formats["int8 (x bfloat16)"] = (formats["int8 (x float32)"][0], torch.bfloat16)
    out = []
    for name, (weights, dtype) in formats.items():
        nbytes = sum(w.nbytes if hasattr(w, "qweight") else w.numel() * w.element_size() for w in weights)
        for m in rows:
            xs = {k: torch.randn(m, k, generator=g).to(dtype) for k in (h, inter)}

            def step() -> None:
                for i, w in enumerate(weights):
                    if i % 4 == 2 and hasattr(w, "qweight"):   # gate/up: the fused SwiGLU op the model calls
                        int8_swiglu(xs[w.shape[1]], w)
                    else:
                        linear(xs[w.shape[1]], w)
            step()
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                best = min(best, time.perf_counter() - t0)
            out.append(dict(format=name, rows=m, ms=best * 1e3, gb_s=nbytes / best / 1e9, weight_mb=nbytes / 1e6))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kernels:
        import os

        rows = kernel_step_ms(args.threads)
        load = os.getloadavg()[0]
        print(f"one decode step's matmuls, {args.threads} threads, best of 7, load {load:.2f} at the end")
        print("| weights | rows | ms | GB/s of weights | weights MB |\n|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['format']} | {r['rows']} | {r['ms']:.2f} | {r['gb_s']:.1f} | {r['weight_mb']:.0f} |")
        if args.json:
            Path(args.json).write_text(json.dumps(dict(rows=rows, load=load), indent=1) + "\n", encoding="utf-8")
        return 0
    from eager_core.errors import ConfigError
    from eager_core.io.checkpoint import read_config

    workloads = [w for w in args.workloads.split(",") if w]
    configs = [c for c in args.configs.split(",") if c]
    if not workloads or any(w not in ("a", "b", "c") for w in workloads):
        raise ConfigError(f"--workloads {args.workloads!r}: expected a subset of a,b,c")
    if not configs or any(c not in CONFIGS for c in configs):
        raise ConfigError(f"--configs {args.configs!r}: expected a subset of {','.join(CONFIGS)}")
    if args.rounds < 1:
        raise ConfigError(f"--rounds {args.rounds}: expected at least 1")
    if args.ckpt is None:
        from eager_core.io.default_model import default_checkpoint
        args.ckpt = str(default_checkpoint())
    max_pos = read_config(Path(args.ckpt)).get("max_position_embeddings", 2048)
    rounds: list[list[dict[str, Any]]] = []
    for k in range(args.rounds):
        rows: list[dict[str, Any]] = []
        rounds.append(rows)
        for name in workloads:
            wl = build(name, Path(args.ckpt), args.max_tokens, max_pos, 32, 16)
            for config in configs:
                dtype, quant = CONFIGS[config]
                tag = f" (round {k + 1} of {args.rounds})" if args.rounds > 1 else ""
                print(f"({name}) {DESCRIPTIONS[name]}: {config}{tag} ...", file=sys.stderr, flush=True)
                spec = dict(engine="eager_core", workload=wl.to_dict(), ckpt=args.ckpt, dtype=dtype, device="cpu",
                            repeats=args.repeats, num_kv_blocks=None, threads=args.threads, quantization=quant)
                res = run_child(spec)
                if res is None:
                    print(f"({name}) {config} failed (see its error output above)", file=sys.stderr)
                    continue
                rows.append(row(name, config, res))
        if args.json:
            Path(args.json).write_text(json.dumps(dict(rounds=rounds, rows=median_rows(rounds)), indent=1) + "\n",
                                       encoding="utf-8")
    print(format_rows(median_rows(rounds)))
    if args.rounds > 1:
        for (name, config), ratios in paired_ratios(rounds).items():
            print(f"({name}) {config} x bfloat16 per round: " + " ".join(f"{x:.2f}" for x in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
