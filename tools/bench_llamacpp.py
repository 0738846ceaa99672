"""Benchmark eager_core against llama.cpp on this CPU, on the same weights, side by side in one run.

    tools/build_llamacpp.sh                              # once, ~20 min on 2 cores (not in CI)
    python tools/bench_llamacpp.py                       # 1 and 2 threads x float32, bfloat16 x every shape
    python tools/bench.py --peer llamacpp                # the same, through the main bench
    python tools/bench_llamacpp.py --quantization int8   # eager_core int8 against llama.cpp Q8_0
    python tools/bench_llamacpp.py --threads 2 --dtypes bfloat16 --shapes one,n8 --json out.json

llama.cpp runs the default model's own GGUF (Q4_1) requantized by its ``llama-quantize
--allow-requantize`` to F32 / BF16 (the same dequantized values eager_core loads) or Q8_0, cached
beside the binaries. Shapes, each measured in both engines at the same thread count:

    one      one sequence, greedy decode (llama-bench tg; eager_core from a 16-token prompt)
    n8       8 sequences sharing a 128-token prompt (llama-batched-bench -pps; eager_core n=8)
    p32      32 prompts of 128 tokens each, decoded together (llama-batched-bench)
    prefill  a 512-token prompt (llama-bench pp512; eager_core: prompt tokens / the call's wall time)

tok/s is decode tokens per second of decode time (prefill: prompt tokens per second); each engine
keeps its best of ``--repeats``. ``x peer`` is eager_core over llama.cpp. For ``one``, GB/s is weight
bytes x steps per second, and % BW that over the machine's copy bandwidth measured in the same run.
Peak RSS is each process's high-water mark (/proc VmHWM; llama.cpp's polled while it runs). Without
a built llama.cpp the tool says so and still measures eager_core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import run_main

from bench_runners import ChildFailed, kv_blocks_needed, measure_in_child
from bench_table import machine_bandwidth, source_revision
from bench_workloads import Workload, text_tokens

SHAPES = ("one", "n8", "p32", "prefill")
PEER_TYPE = {"float32": "F32", "bfloat16": "BF16", "int8": "Q8_0"}
BINARIES = ("llama-bench", "llama-batched-bench", "llama-quantize")
PREFILL, SHARED, PROMPTS = 512, 128, 32


def llamacpp_dir() -> Path:
    """Where tools/build_llamacpp.sh puts llama.cpp: $EAGER_CORE_CACHE/llamacpp (~/.cache/eager_core)."""
    cache = os.environ.get("EAGER_CORE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "eager_core")
    return Path(cache) / "llamacpp"


def peer_available(root: Path) -> bool:
    return all(os.access(root / "bin" / b, os.X_OK) for b in BINARIES)


def peer_model(root: Path, gguf: Path, peer_type: str) -> Path:
    """The default GGUF requantized to ``peer_type`` (made once, then cached)."""
    out = root / "models" / f"{gguf.stem}.{peer_type}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".part")
        proc = subprocess.run([str(root / "bin" / "llama-quantize"), "--allow-requantize", str(gguf), str(tmp),
                               peer_type], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            from eager_core.errors import ConfigError
            tail = proc.stderr.strip().splitlines()[-1:] or ["no message"]
            raise ConfigError(f"llama-quantize could not make {peer_type} from {gguf}: {tail[0]}")
        tmp.rename(out)
    return out


def run_with_peak_rss(cmd: list[str]) -> tuple[str, float]:
    """Run ``cmd``; return its stdout and its peak RSS in MiB. VmHWM is polled from /proc while it runs:
    the child's own rusage would include the forking Python process's pages."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak = 0.0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    peak = max(peak, next((int(x.split()[1]) / 1024 for x in f if x.startswith("VmHWM:")), 0.0))
            except (OSError, StopIteration):
                pass
            time.sleep(0.01)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise ChildFailed(f"{Path(cmd[0]).name} exit code {proc.returncode}: {err.read()[-400:].strip()}")
        return out.read(), peak


def peer_command(root: Path, model: Path, shape: str, threads: int, max_tokens: int, repeats: int) -> list[str]:
    b = root / "bin"
    if shape in ("one", "prefill"):
        p, n = (0, max_tokens) if shape == "one" else (PREFILL, 0)
        return [str(b / "llama-bench"), "-m", str(model), "-p", str(p), "-n", str(n), "-t", str(threads),
                "-r", str(repeats), "-o", "jsonl"]
    npl = 8 if shape == "n8" else PROMPTS
    ctx = SHARED + npl * max_tokens if shape == "n8" else npl * (SHARED + max_tokens)
    cmd = [str(b / "llama-batched-bench"), "-m", str(model), "-c", str(-(-(ctx + 16) // 256) * 256),
           "-npp", str(SHARED), "-ntg", str(max_tokens), "-npl", str(npl), "-t", str(threads),
           "--output-format", "jsonl"]
    return cmd + (["-pps"] if shape == "n8" else [])


def measure_peer(root: Path, model: Path, shape: str, threads: int, max_tokens: int, repeats: int) -> dict[str, Any]:
    """One llama.cpp measurement: best tok/s over ``repeats``, and its peak RSS."""
    cmd = peer_command(root, model, shape, threads, max_tokens, repeats)
    runs = 1 if shape in ("one", "prefill") else repeats   # llama-bench repeats itself (-r)
    best, peak, size = 0.0, 0.0, None
    for _ in range(runs):
        text, rss = run_with_peak_rss(cmd)
        peak = max(peak, rss)
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            rec = json.loads(line)
            if "samples_ts" in rec:
                best, size = max([best, *rec["samples_ts"]]), rec.get("model_size")
            elif "speed_tg" in rec:
                best = max(best, rec["speed_tg"])
    if best <= 0:
        raise ChildFailed(f"no result in {Path(cmd[0]).name}'s output")
    return dict(tok_s=best, peak_mib=peak, weight_bytes=size, load=os.getloadavg()[0])


def eager_workload(shape: str, ckpt: Path, max_tokens: int) -> Workload:
    from eager_core.io.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(ckpt)
    eos = list(tok.eos_token_ids)
    common = dict(eos_ids=eos, pad_id=eos[0] if eos else 0)
    if shape == "one":
        return Workload("one", [text_tokens(tok, 16)], max_tokens, greedy=True, **common)
    if shape == "n8":
        return Workload("n8", [text_tokens(tok, SHARED)], max_tokens, greedy=False, n=8, temperature=1.0, **common)
    if shape == "p32":
        return Workload("p32", [text_tokens(tok, SHARED, offset=7 * i) for i in range(PROMPTS)], max_tokens,
                        greedy=True, **common)
    return Workload("prefill", [text_tokens(tok, PREFILL)], 1, greedy=True, **common)


def measure_eager(ckpt: Path, shape: str, dtype: str, quantization: str | None, threads: int, max_tokens: int,
                  repeats: int) -> dict[str, Any]:
    wl = eager_workload(shape, ckpt, max_tokens)
    r = measure_in_child(dict(engine="eager_core", workload=wl.to_dict(), ckpt=str(ckpt), dtype=dtype, device="cpu",
                              repeats=repeats, num_kv_blocks=kv_blocks_needed(wl), threads=threads,
                              quantization=quantization))
    tok_s = (r["prompt_tokens"] / r["wall_s"] if shape == "prefill"
             else r["decode_tokens"] / r["decode_s"] if r.get("decode_s") else 0.0)
    return dict(tok_s=tok_s, peak_mib=r["peak_rss_mib"], weight_bytes=r["weight_bytes"], load=r["load_avg"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts, each run in both engines")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    p.add_argument("--quantization", choices=["int8"], default=None,
                   help="int8: eager_core's weight-only int8 (activations in each --dtypes) against llama.cpp Q8_0")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {','.join(SHAPES)}")
    p.add_argument("--max-tokens", type=int, default=128, help="decode tokens per sequence (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; the best is kept")
    p.add_argument("--llamacpp-dir", default=None, help="llama.cpp build (default: where build_llamacpp.sh puts it)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the results as JSON to OUT")
    p.add_argument("--bandwidth-mib", type=int, default=1024, help="size of the copy that measures bandwidth")
    return p


def _list(text: str, allowed: tuple[str, ...] | None, flag: str) -> list[str]:
    from eager_core.errors import ConfigError

    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items or (allowed and any(x not in allowed for x in items)):
        raise ConfigError(f"{flag} {text!r}: expected a comma-separated subset of {','.join(allowed or ())}")
    return items


def run(args: argparse.Namespace, log=print, ckpt: Path | None = None, gguf: Path | None = None) -> dict[str, Any]:
    """Measure every (dtype, threads, shape) in both engines. ``ckpt``/``gguf``: the eager_core
    checkpoint and the GGUF llama.cpp requantizes (default: the default model's, which must match)."""
    from eager_core.errors import ConfigError
    from eager_core.io.default_model import default_checkpoint, default_gguf_path

    shapes = _list(args.shapes, SHAPES, "--shapes")
    dtypes = _list(args.dtypes, ("float32", "bfloat16"), "--dtypes")
    try:
        threads = [int(t) for t in _list(args.threads, None, "--threads")]
    except ValueError:
        raise ConfigError(f"--threads {args.threads!r}: expected comma-separated integers") from None
    if any(t < 1 for t in threads) or args.max_tokens < 2 or args.repeats < 1:
        raise ConfigError("--threads, --max-tokens (>= 2) and --repeats must be positive")
    root = Path(args.llamacpp_dir) if args.llamacpp_dir else llamacpp_dir()
    have_peer = peer_available(root)
    notes = [] if have_peer else [f"llama.cpp not built in {root} (run tools/build_llamacpp.sh): peer rows skipped"]
    for n in notes:
        log(n)
    ckpt = Path(ckpt or default_checkpoint())
    gguf = Path(gguf or default_gguf_path())
    bandwidth = machine_bandwidth("cpu", args.bandwidth_mib << 20)
    log(f"machine copy bandwidth {bandwidth:.2f} GB/s")
    rows = []
    for dtype in dtypes:
        peer_type = PEER_TYPE[args.quantization or dtype]
        model = peer_model(root, gguf, peer_type) if have_peer else None
        for t in threads:
            for shape in shapes:
                row = dict(shape=shape, dtype=dtype, quantization=args.quantization, peer_type=peer_type, threads=t)
                for engine in ("llama.cpp", "eager_core"):
                    if engine == "llama.cpp" and not have_peer:
                        continue
                    log(f"{shape} {dtype}{' int8' if args.quantization else ''} {t} thread(s): {engine} ...")
                    try:
                        if engine == "llama.cpp":
                            r = measure_peer(root, model, shape, t, args.max_tokens, args.repeats)
                        else:
                            r = measure_eager(ckpt, shape, dtype, args.quantization, t, args.max_tokens, args.repeats)
                    except ChildFailed as exc:
                        notes.append(f"{shape} {dtype} {t}t {engine} failed: {exc}")
                        log(notes[-1])
                        continue
                    if shape == "one" and r["weight_bytes"]:
                        r["bw_gbs"] = r["weight_bytes"] * r["tok_s"] / 1e9
                        r["bw_pct"] = 100 * r["bw_gbs"] / bandwidth
                    row[engine] = r
                if "llama.cpp" in row and "eager_core" in row and row["llama.cpp"]["tok_s"] > 0:
                    row["x_peer"] = row["eager_core"]["tok_s"] / row["llama.cpp"]["tok_s"]
                rows.append(row)
                if args.json:
                    Path(args.json).write_text(json.dumps(dict(rows=rows, notes=notes), indent=1))
    return dict(revision=source_revision(), bandwidth_gbs=bandwidth, max_tokens=args.max_tokens,
                repeats=args.repeats, rows=rows, notes=notes)


def _cell(r: dict | None, key: str, fmt: str) -> str:
    return format(r[key], fmt) if r and r.get(key) is not None else "-"


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"eager_core {rep['revision']} vs llama.cpp; {rep['max_tokens']} decode tokens, best of "
             f"{rep['repeats']}; copy bandwidth {rep['bandwidth_gbs']:.2f} GB/s",
             "| shape | dtype | peer | threads | llama.cpp tok/s | eager_core tok/s | x peer | "
             "llama.cpp % BW | eager_core % BW | llama.cpp peak MiB | eager_core peak MiB | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rep["rows"]:
        p, e = row.get("llama.cpp"), row.get("eager_core")
        dtype = row["dtype"] + (" int8" if row["quantization"] else "")
        lines.append(f"| {row['shape']} | {dtype} | {row['peer_type']} | {row['threads']} | "
                     f"{_cell(p, 'tok_s', '.1f')} | "
                     f"{_cell(e, 'tok_s', '.1f')} | {format(row['x_peer'], '.2f') if 'x_peer' in row else '-'} | "
                     f"{_cell(p, 'bw_pct', '.0f')} | {_cell(e, 'bw_pct', '.0f')} | {_cell(p, 'peak_mib', '.0f')} | "
                     f"{_cell(e, 'peak_mib', '.0f')} | {_cell(e, 'load', '.1f')} |")
    return "\n".join(lines + rep["notes"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rep = run(args, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_report(rep))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
