"""Soak the engine: many random requests, forks, preemptions and interrupts, then check nothing leaked.

    python tools/soak.py --requests 5000 --seed 1                 # the default model (SmolLM2), ~hours on CPU
    python tools/soak.py --ckpt path/to/ckpt --requests 500 --json

The KV pool defaults to the smallest size that holds the largest family, so that calls preempt.
Exit code 0 when every check passed, 1 when a problem was found (listed in the report), 2 on bad
input. See docs/reliability.md for what is checked.
"""

from __future__ import annotations

import argparse
import json
import sys

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import add_model_flags, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument("--requests", type=int, default=1000, help="prompts to run in total (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seeds the random mix of calls and the engine")
    p.add_argument("--block-size", type=int, default=4, help="KV block size (small blocks: more forks across blocks)")
    p.add_argument("--max-prompt-len", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-n", type=int, default=4, help="largest SamplingParams.n")
    p.add_argument("--max-sequences", type=int, default=4, help="largest EAGer M")
    p.add_argument("--eager-fraction", type=float, default=0.3, help="share of calls that are EAGer calls")
    p.add_argument("--interrupt-fraction", type=float, default=0.05,
                   help="share of generate calls interrupted by a KeyboardInterrupt from the token callback")
    p.add_argument("--rss-tolerance-mb", type=float, default=64.0,
                   help="allowed growth of resident memory after warm-up")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eager_core import LLM
    from soak_harness import max_family, pool_blocks_needed, run_soak

    blocks = args.num_kv_blocks or pool_blocks_needed(max_family(args.max_n, args.max_sequences),
                                                      args.max_prompt_len + args.max_new_tokens, args.block_size)
    llm = LLM(args.ckpt, dtype=args.dtype, device=args.device, block_size=args.block_size, num_kv_blocks=blocks,
              seed=args.seed)

    def progress(report: dict) -> None:
        if not args.quiet and report["calls"] % 20 == 0:
            print(f"[soak] {report['requests']}/{args.requests} requests, {report['generated_tokens']} tokens, "
                  f"{report['preemptions']} preemptions, {len(report['problems'])} problems", file=sys.stderr)

    report = run_soak(llm, num_requests=args.requests, seed=args.seed, max_prompt_len=args.max_prompt_len,
                      max_new_tokens=args.max_new_tokens, max_n=args.max_n, max_sequences=args.max_sequences,
                      eager_fraction=args.eager_fraction, interrupt_fraction=args.interrupt_fraction,
                      rss_tolerance_mb=args.rss_tolerance_mb, progress=progress)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for key, value in report.items():
            if key != "problems":
                print(f"{key}: {value}")
        for problem in report["problems"]:
            print(f"PROBLEM: {problem}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
