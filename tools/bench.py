"""Benchmark eager_core against transformers' generate, side by side in one run.

    python tools/bench.py                       # every workload, float32, 256 new tokens
    python tools/bench.py --quick               # smoke run: 32 new tokens, fewer prompts in (c) and (d)
    python tools/bench.py --dtype bfloat16 --workloads b,c --json bench.json
    python tools/bench.py --peer llamacpp       # against llama.cpp instead (tools/bench_llamacpp.py)

Both engines get the same checkpoint (default: the converted SmolLM2-135M-Instruct folder that
transformers loads with from_pretrained), dtype, device and token ids. Workloads (bench_workloads.py):
(a) one sequence, (b) n=8 samples of one prompt, (c) 32 prompts of mixed lengths, (d) EAGer-init
and full parallel sampling with M=8 on 16 math prompts, and a ~512-token prefill. Greedy workloads
report whether the engine's tokens equal transformers'. Each measurement runs in its own process,
so peak RSS belongs to one engine. The machine's memory bandwidth is measured first, by a large
tensor copy, so that the achieved decode bandwidth can be read against it. Column definitions are
in bench_table.py; timings on a shared machine are noisy: use --repeats to keep the best of several,
and read the load column. Without --num-kv-blocks the engine's KV pool is sized to each workload.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import add_model_flags, add_quantization_flag, run_main

from bench_runners import ChildFailed, measure, measure_in_child
from bench_table import (build_rows, check_targets, format_table, linear_floor_ms, machine_bandwidth,
                         machine_matmul_gflops, source_revision)
from bench_workloads import (DESCRIPTIONS, ENGINES, NUM_MATH_PROMPTS, NUM_MIXED_PROMPTS, WORKLOADS, build,
                             kv_bytes_per_token)

ELEM_SIZE = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class BenchConfig:
    """What to measure. ``in_process`` runs every measurement here (tests); peak RSS is then shared."""

    ckpt: str | None = None
    dtype: str = "float32"
    device: str = "cpu"
    quantization: str | None = None   # eager_core only (transformers runs unquantized in --dtype)
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    max_tokens: int = 256
    repeats: int = 1
    num_kv_blocks: int | None = None
    threads: int | None = None
    bandwidth_bytes: int = 1 << 30
    matmul_size: int = 1024
    in_process: bool = False
    num_mixed_prompts: int = NUM_MIXED_PROMPTS   # (c); fewer only in tests
    num_math_prompts: int = NUM_MATH_PROMPTS     # (d); fewer only in tests


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_quantization_flag(p)
    for action in p._actions:   # the shared flag's help describes LLM's default, which the bench replaces
        if action.dest == "num_kv_blocks":
            action.help = "engine KV pool size in blocks (default: sized to each workload's need)"
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="new tokens per sequence (default 256; 32 with --quick)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed runs per measurement after one warm-up; the fastest is kept (prefill: at least 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in both engines (default: torch's)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 32 new tokens, 8 prompts in (c), 4 in (d), 256 MiB bandwidth probe")
    p.add_argument("--in-process", action="store_true", help="measure in this process (peak RSS is then shared)")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="also write the results as JSON to OUT (rewritten after every measurement)")
    p.add_argument("--peer", choices=["transformers", "llamacpp"], default="transformers",
                   help="llamacpp: compare with llama.cpp instead (tools/bench_llamacpp.py; its flags follow)")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    from eager_core.errors import ConfigError

    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise ConfigError(f"--workloads {args.workloads!r}: expected a comma-separated subset of {','.join(WORKLOADS)}")
    max_tokens = args.max_tokens if args.max_tokens is not None else (32 if args.quick else 256)
    if max_tokens < 2:
        raise ConfigError(f"--max-tokens {max_tokens}: expected at least 2 (one prefill token, one decode step)")
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats}: expected at least 1")
    return BenchConfig(ckpt=args.ckpt, dtype=args.dtype, device=args.device, quantization=args.quantization,
                       workloads=names, max_tokens=max_tokens,
                       repeats=args.repeats, num_kv_blocks=args.num_kv_blocks, threads=args.threads,
                       bandwidth_bytes=(256 << 20) if args.quick else (1 << 30), in_process=args.in_process,
                       # --quick is a smoke run: fewer prompts in (c) and (d), so it takes about a minute
                       num_mixed_prompts=8 if args.quick else NUM_MIXED_PROMPTS,
                       num_math_prompts=4 if args.quick else NUM_MATH_PROMPTS)


def run_bench(cfg: BenchConfig, log=print, on_result=None) -> dict[str, Any]:
    """Measure every requested workload in both engines; return the report (rows, notes, targets).

    ``on_result(report)`` (optional) gets the report so far after every measurement: a long run
    that is interrupted still leaves what it measured.
    """
    from eager_core.io.checkpoint import read_config
    from eager_core.llm import LLM

    if cfg.ckpt is None:
        from eager_core.io.default_model import default_checkpoint
        cfg.ckpt = str(default_checkpoint())
    hf_cfg = read_config(Path(cfg.ckpt))
    kvb = kv_bytes_per_token(hf_cfg, ELEM_SIZE[cfg.dtype])
    machine = dict(bandwidth_gbs=machine_bandwidth(cfg.device, cfg.bandwidth_bytes),
                   matmul_gflops=machine_matmul_gflops(cfg.device, cfg.dtype, cfg.matmul_size),
                   linear_floor_ms=linear_floor_ms(hf_cfg, cfg.device, cfg.dtype))
    log(f"machine copy bandwidth: {machine['bandwidth_gbs']:.2f} GB/s ({cfg.bandwidth_bytes >> 20} MiB copy, "
        f"read+write, best of 10); {cfg.dtype} matmul {machine['matmul_gflops']:.1f} GFLOP/s "
        f"({cfg.matmul_size}^3, best of 5); {_floor_text(machine)}")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    notes: list[str] = []
    for name in cfg.workloads:
        if name == "d" and not hasattr(LLM, "eager"):
            notes.append("(d) skipped: LLM.eager not available")
            log(notes[-1])
            continue
        wl = build(name, Path(cfg.ckpt), cfg.max_tokens, hf_cfg.get("max_position_embeddings", 2048),
                   cfg.num_mixed_prompts, cfg.num_math_prompts)
        results[name] = {}
        for engine in ENGINES[name]:
            log(f"({name}) {DESCRIPTIONS[name]} [{len(wl.prompt_ids)} prompts x {wl.n}, "
                f"{wl.max_tokens} new tokens]: {engine} ...")
            spec = dict(engine=engine, workload=wl.to_dict(), ckpt=cfg.ckpt, dtype=cfg.dtype, device=cfg.device,
                        repeats=max(cfg.repeats, 3) if name == "prefill" else cfg.repeats,
                        num_kv_blocks=cfg.num_kv_blocks, threads=cfg.threads,
                        quantization=cfg.quantization if engine.startswith("eager_core") else None)
            try:
                results[name][engine] = measure(spec) if cfg.in_process else measure_in_child(spec)
            except ChildFailed as exc:
                notes.append(f"({name}) {engine} failed: {exc}")
                log(notes[-1])
            if on_result is not None:
                on_result(_report(cfg, hf_cfg, machine, kvb, results, notes))
    return _report(cfg, hf_cfg, machine, kvb, results, notes)


def _report(cfg: BenchConfig, hf_cfg: dict[str, Any], machine: dict[str, float], kvb: int,
            results: dict[str, dict[str, dict[str, Any]]], notes: list[str]) -> dict[str, Any]:
    head = hf_cfg["vocab_size"] * hf_cfg["hidden_size"]
    rows = build_rows(results, kvb, machine["bandwidth_gbs"], ELEM_SIZE[cfg.dtype], head)
    threads = sorted({r["threads"] for by in results.values() for r in by.values() if r.get("threads")})
    return dict(config=asdict(cfg), revision=source_revision(), machine=dict(machine, torch_threads=threads),
                kv_bytes_per_position=kvb,
                rows=rows, notes=list(notes), targets=check_targets(rows),
                raw={n: {e: {k: v for k, v in r.items() if k != "token_ids"} for e, r in by.items()}
                     for n, by in results.items()})


def _floor_text(machine: dict[str, Any]) -> str:
    floor = ", ".join(f"{b} rows {ms:.1f}" for b, ms in machine["linear_floor_ms"].items())
    return f"F.linear over the weights alone, ms per step: {floor}"


def format_report(report: dict[str, Any]) -> str:
    cfg, machine = report["config"], report["machine"]
    head = (f"eager_core {report['revision']}  checkpoint {cfg['ckpt']}\n"
            f"dtype {cfg['dtype']}{'  eager_core quantization ' + cfg['quantization'] if cfg.get('quantization') else ''}"
            f"  device {cfg['device']}  max_tokens {cfg['max_tokens']}"
            f"  torch threads {','.join(map(str, machine['torch_threads'])) or '?'}\n"
            f"machine: copy bandwidth {machine['bandwidth_gbs']:.2f} GB/s (read+write), {cfg['dtype']} matmul "
            f"{machine['matmul_gflops']:.1f} GFLOP/s; KV bytes per cached position {report['kv_bytes_per_position']}\n"
            f"{_floor_text(machine)}")
    parts = [head, format_table(report["rows"])]
    if report["notes"]:
        parts.append("\n".join(report["notes"]))
    if report["targets"]:
        parts.append("targets (issue 7):\n" + "\n".join("  " + t for t in report["targets"]))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    peer = argparse.ArgumentParser(add_help=False)
    peer.add_argument("--peer", choices=["transformers", "llamacpp"], default="transformers")
    chosen, rest = peer.parse_known_args(argv)
    if chosen.peer == "llamacpp":   # the llama.cpp comparison is its own tool, with its own flags
        import bench_llamacpp
        return bench_llamacpp.main(rest)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    def save(report: dict[str, Any]) -> None:
        Path(args.json).write_text(json.dumps(report, indent=1))

    report = run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                       on_result=save if args.json else None)
    print(format_report(report))
    if args.json:
        save(report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
