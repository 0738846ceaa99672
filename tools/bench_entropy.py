"""Benchmark the fused entropy gate against its PyTorch reference, in the same run.

    python tools/bench_entropy.py                       # CPU, float32, B in {1,8,64}, V in {49152,151936}
    python tools/bench_entropy.py --dtype bfloat16 --device cuda

For each shape it prints the time per call (median of the samples, or --stat min) of
  fused     eager_core.ops.entropy_gate (the compiled backend),
  torch     the plain PyTorch way: log_softmax, exp, sums, topk (no NaN / -inf-row handling),
  reference entropy_gate_reference, the fallback with exactly the fused op's semantics,
the speedups of fused over both, and the logits bytes read per second (B * V * element size /
time; the PyTorch versions read and write several times that, the fused kernel reads each
logit once). On CUDA it cycles through
enough distinct logits buffers to exceed the L2 cache, so the numbers are HBM numbers, and
prints the fraction of --peak-gbs (H200 HBM3e: 4800 GB/s).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from eager_core.ops import backend, entropy_gate, entropy_gate_reference

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
L2_DEFEAT_BYTES = 512 * 2**20  # several times the H200's 60 MB L2


def torch_gate(x: torch.Tensor, threshold: float, top_k: int):
    """The baseline a PyTorch user would write: log_softmax, exp, sums, topk."""
    logp = torch.log_softmax(x.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    top = torch.topk(logp, min(top_k, x.shape[-1]), dim=-1)
    top_logp = torch.log_softmax(top.values, dim=-1)
    entropy_topk = -(top_logp.exp() * top_logp).sum(-1)
    return entropy, entropy_topk, top.indices[:, :2], top.values[:, :2], entropy_topk > threshold


def make_pool(rows: int, vocab: int, dtype: torch.dtype, device: str) -> list[torch.Tensor]:
    """Distinct random logits tensors: one on CPU, enough to overflow the L2 cache on CUDA."""
    nbytes = rows * vocab * torch.tensor([], dtype=dtype).element_size()
    count = 1 if device == "cpu" else max(2, min(256, L2_DEFEAT_BYTES // max(nbytes, 1)))
    g = torch.Generator(device=device).manual_seed(0)
    return [(torch.randn(rows, vocab, device=device, generator=g) * 3).to(dtype) for _ in range(count)]


def time_per_call(fn: Callable[[torch.Tensor], object], pool: list[torch.Tensor], repeats: int,
                  stat: str = "median") -> float:
    """Seconds per call of fn over `repeats` samples (their median or min), cycling through pool.

    min is the better estimate of the uncontended cost on a shared, oversubscribed machine."""
    reduce = statistics.median if stat == "median" else min
    for x in pool[:2]:
        fn(x)  # warm-up: extension load, allocator, caches of shapes
    if pool[0].is_cuda:
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        per_sample = len(pool)
        samples = []
        for _ in range(repeats):
            start.record()
            for x in pool:
                fn(x)
            stop.record()
            stop.synchronize()
            samples.append(start.elapsed_time(stop) / 1e3 / per_sample)
        return reduce(samples)
    samples = []
    for i in range(repeats):
        x = pool[i % len(pool)]
        t0 = time.perf_counter()
        fn(x)
        samples.append(time.perf_counter() - t0)
    return reduce(samples)


def bench_shape(rows: int, vocab: int, dtype: torch.dtype, device: str, repeats: int, top_k: int,
                threshold: float = 2.0, stat: str = "median") -> dict:
    """Time fused and reference on one shape; returns a dict of the measured numbers."""
    pool = make_pool(rows, vocab, dtype, device)
    nbytes = rows * vocab * pool[0].element_size()
    fused = time_per_call(lambda x: entropy_gate(x, threshold, top_k=top_k), pool, repeats, stat)
    slow_repeats = max(3, repeats // 4)  # the PyTorch versions are slow; fewer samples suffice
    plain = time_per_call(lambda x: torch_gate(x, threshold, top_k), pool, slow_repeats, stat)
    ref = time_per_call(lambda x: entropy_gate_reference(x, threshold, top_k=top_k), pool, slow_repeats, stat)
    return {"rows": rows, "vocab": vocab, "dtype": str(dtype).replace("torch.", ""), "device": device,
            "fused_s": fused, "torch_s": plain, "ref_s": ref, "speedup_torch": plain / fused,
            "speedup_ref": ref / fused, "fused_gbs": nbytes / fused / 1e9}


HEADER = (f"{'B':>4} {'V':>7} {'dtype':>9} {'fused ms':>9} {'torch ms':>9} {'x torch':>8} "
          f"{'ref ms':>9} {'x ref':>8} {'fused GB/s':>10}")


def format_row(r: dict, peak_gbs: float | None) -> str:
    line = (f"{r['rows']:>4} {r['vocab']:>7} {r['dtype']:>9} {r['fused_s'] * 1e3:>9.3f} "
            f"{r['torch_s'] * 1e3:>9.3f} {r['speedup_torch']:>7.1f}x {r['ref_s'] * 1e3:>9.3f} "
            f"{r['speedup_ref']:>7.1f}x {r['fused_gbs']:>10.1f}")
    if peak_gbs:
        line += f" {100 * r['fused_gbs'] / peak_gbs:>6.1f}%"
    return line


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--vocab", type=int, nargs="+", default=[49152, 151936])
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--stat", default="median", choices=["median", "min"],
                    help="summary of the timed samples (min: best case on a busy machine)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--peak-gbs", type=float, default=None,
                    help="bandwidth to report against (default 4800 on cuda, none on cpu)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    used = backend(args.device)
    peak = args.peak_gbs if args.peak_gbs else (4800.0 if args.device == "cuda" else None)
    print(f"backend: {used}  device: {args.device}  threads: {torch.get_num_threads()}  "
          f"top_k: {args.top_k}  stat: {args.stat}")
    if used == "torch":
        print("WARNING: the compiled extension is not used: 'fused' below is the reference itself")
    print(HEADER + (" %peak" if peak else ""))
    results = []
    for vocab in args.vocab:
        for rows in args.rows:
            r = bench_shape(rows, vocab, DTYPES[args.dtype], args.device, args.repeats, args.top_k,
                            stat=args.stat)
            print(format_row(r, peak), flush=True)
            results.append(r)
    return results


if __name__ == "__main__":
    main()
