"""Device check of the CUDA entropy gate, for a session lent a GPU (one call, a few minutes).

    sh tools/device_check_entropy.sh        # builds the extension with CUDA, then runs this

1. backend("cuda") must be "cuda" (the CUDA kernel is compiled in and used);
2. correctness: the CUDA op against the float64 reference (same checks as tests/ops: 1e-4 for
   float32, 1e-2 for bf16/fp16, ids exact with ties to the lower id) over shapes, dtypes, top_k
   (both sides of the 32-entry list), -inf masks, ties, huge values, NaN/+inf rows, strided rows,
   and against the CPU kernel on the same logits;
3. benchmark: fused vs reference on B in {1, 8, 64, 256}, V in {49152, 151936}, float32 and
   bfloat16, with the % of the H200's 4.8 TB/s HBM bandwidth, plus a device-to-device copy
   measured in the same run as a practical ceiling.
Everything printed is also written to OUT/entropy_device_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ops"))
sys.path.insert(0, str(ROOT / "tools"))

from bench_entropy import HEADER, bench_shape, format_row  # noqa: E402
from entropy_gate_cases import assert_matches_reference, make_logits  # noqa: E402

from eager_core.ops import backend, entropy_gate  # noqa: E402

PEAK_GBS = 4800.0


def correctness_cases():
    """(name, logits on CPU, threshold, top_k, kind) tuples covering the kernel's paths."""
    shapes = [(1, 1), (3, 2), (7, 17), (5, 2047), (64, 49152), (64, 151936), (5, 200003), (300, 32000),
              (2, 1_000_003)]
    for i, (rows, vocab) in enumerate(shapes):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for top_k in sorted({1, 2, 20, 32, 33, 100, vocab}):
                if top_k > vocab + 1 or (vocab > 100_000 and top_k not in (20, 33)):
                    continue
                x = make_logits(rows, vocab, seed=i * 100 + top_k, dtype=dtype, mask_frac=0.3 * (top_k % 2),
                                ties=top_k == 32, huge=top_k == 100)
                yield f"B={rows} V={vocab} {dtype} k={top_k}", x, 2.0, top_k, "topk"
    x = make_logits(8, 5000, seed=7)
    x[1, 10] = float("nan")
    x[2, 4999] = float("inf")
    x[3] = float("-inf")
    x[4] = float("-inf")
    x[4, 123] = 1.0
    x[5] = 0.0
    yield "special rows (NaN, +inf, all -inf, one finite, all equal)", x, 1.0, 20, "topk"
    yield "per-row thresholds, kind full", make_logits(16, 3000, seed=8), torch.rand(16) * 8, 20, "full"
    wide = make_logits(9, 3001, seed=9, dtype=torch.bfloat16)
    yield "strided unaligned rows", wide[:, 1:], 2.0, 20, "topk"


def run_correctness(device: str) -> list[dict]:
    results = []
    for name, x_cpu, thr, top_k, kind in correctness_cases():
        x = x_cpu.to(device)
        t = thr.to(device) if isinstance(thr, torch.Tensor) else thr
        entry = {"case": name, "ok": True}
        try:
            res = entropy_gate(x, t, top_k=top_k, kind=kind)
            assert_matches_reference(res, x, t, top_k, kind, exact_ties=True)
            cpu = entropy_gate(x_cpu, thr, top_k=top_k, kind=kind)
            ok = ~cpu.has_nan
            assert torch.equal(res.top2_ids.cpu()[ok], cpu.top2_ids[ok]), "ids differ from the CPU kernel"
            assert torch.equal(res.has_nan.cpu(), cpu.has_nan)
        except AssertionError as exc:
            entry = {"case": name, "ok": False, "error": str(exc)[:500]}
        except Exception:  # a launch failure etc.: report and go on with the other cases
            entry = {"case": name, "ok": False, "error": traceback.format_exc()[-800:]}
        print(("PASS " if entry["ok"] else "FAIL ") + name + ("" if entry["ok"] else ": " + entry["error"]),
              flush=True)
        results.append(entry)
    return results


def copy_bandwidth_gbs(device: str) -> float:
    """Device-to-device copy of 2 GiB, counting bytes read + written: the practical ceiling."""
    src = torch.empty(2**29, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    stop.record()
    stop.synchronize()
    return 2 * src.numel() * 4 * 10 / (start.elapsed_time(stop) / 1e3) / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".", help="folder for entropy_device_check.json")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    t0 = time.time()
    report = {"torch": torch.__version__, "cuda": torch.version.cuda,
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "backend_cuda": backend("cuda")}
    print(json.dumps(report), flush=True)
    if report["backend_cuda"] != "cuda":
        print("FAIL: the CUDA kernel is not built or not visible; nothing to check")
        return 1
    report["correctness"] = run_correctness("cuda")
    failures = sum(not r["ok"] for r in report["correctness"])
    print(f"correctness: {len(report['correctness']) - failures} passed, {failures} failed", flush=True)

    report["copy_gbs"] = copy_bandwidth_gbs("cuda")
    print(f"device-to-device copy: {report['copy_gbs']:.0f} GB/s (read + write)", flush=True)
    report["bench"] = []
    for dtype in (torch.float32, torch.bfloat16):
        print(HEADER + " %4.8TB/s")
        for vocab in (49152, 151936):
            for rows in (1, 8, 64, 256):
                r = bench_shape(rows, vocab, dtype, "cuda", args.repeats, 20)
                r["pct_hbm"] = 100 * r["fused_gbs"] / PEAK_GBS
                print(format_row(r, PEAK_GBS), flush=True)
                report["bench"].append(r)
    report["seconds"] = time.time() - t0
    out = Path(args.out) / "entropy_device_check.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out} in {report['seconds']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
