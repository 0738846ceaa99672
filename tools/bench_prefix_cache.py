"""Prefix caching, measured: the same work with the cache on and off, side by side in one run.

    python tools/bench_prefix_cache.py                   # default model, float32, 2 threads
    python tools/bench_prefix_cache.py --prefix-tokens 1000 --problems 8 --json out.json

1. Time to first token of a short question after a long shared prompt (a system prompt or a
   few-shot block): the engine has served one request with that prompt before; with the cache the
   new request computes only its question, without it the whole prompt again.
2. EAGer with labels (method "eager") on math problems, as tools/eval.py runs it: reallocation
   rounds restart from the bare prompt, so with the cache their prompts cost nothing. Wall time and
   the share of prefill tokens saved.
Both runs give the same tokens (checked here too); only the time differs.
"""

from __future__ import annotations

import argparse
import json
import time

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import add_model_flags, run_main

QUESTION = "\n\nQuestion: what is {a} + {b}? Answer with a number."


def long_prompt(tokenizer, n_tokens: int) -> list[int]:
    """About ``n_tokens`` of plain instructions (a stand-in for a real system prompt)."""
    line = ("You are a careful assistant. Read the question, think step by step, check each step, "
            "and give the final answer on its own line. ")
    ids: list[int] = []
    while len(ids) < n_tokens:
        ids += tokenizer.encode(line, add_special_tokens=False)
    return ids[:n_tokens]


def time_to_first_token(engine, prompt: list[int]) -> float:
    from eager_core import SamplingParams

    t0 = time.perf_counter()
    engine.add_request("ttft", prompt, SamplingParams(temperature=0, max_tokens=1))
    while engine.has_unfinished_requests():
        engine.step()
    return time.perf_counter() - t0


def bench_ttft(args, LLM) -> dict:
    out = {}
    for cached in (True, False):
        llm = LLM(args.ckpt, dtype=args.dtype, num_kv_blocks=args.num_kv_blocks, enable_prefix_caching=cached)
        tok = llm.tokenizer
        system = long_prompt(tok, args.prefix_tokens)
        engine = llm.llm_engine
        time_to_first_token(engine, system + tok.encode(QUESTION.format(a=1, b=2), add_special_tokens=False))
        best = min(time_to_first_token(engine, system + tok.encode(QUESTION.format(a=i, b=7 * i),
                                                                  add_special_tokens=False))
                   for i in range(3, 3 + args.repeats))
        out["cached" if cached else "uncached"] = round(best * 1000, 1)
    out["speedup"] = round(out["uncached"] / out["cached"], 2)
    return out


def bench_eager(args, LLM) -> dict:
    from eager_core import EagerParams

    out = {}
    trees = {}
    for cached in (True, False):
        llm = LLM(args.ckpt, dtype=args.dtype, num_kv_blocks=args.num_kv_blocks, enable_prefix_caching=cached)
        prompts = [[{"role": "user", "content": f"What is {13 * i + 7} * {i + 3}? Think step by step."}]
                   for i in range(args.problems)]
        answers = [str((13 * i + 7) * (i + 3)) for i in range(args.problems)]
        params = EagerParams(theta=args.theta, max_sequences=args.max_sequences, max_tokens=args.max_tokens, seed=1)
        t0 = time.perf_counter()
        res = llm.eager(prompts, params, method="eager", answers=answers,
                        checker=lambda text, answer: answer in text)
        wall = time.perf_counter() - t0
        trees[cached] = [[s.token_ids for s in o.sequences] for o in res]
        st = llm.last_stats
        out["cached" if cached else "uncached"] = dict(
            wall_s=round(wall, 2), rounds=st["rounds"], prefill_tokens=st["prefill_tokens"],
            prefix_cache_hit_tokens=st["prefix_cache_hit_tokens"], generated_tokens=st["generated_tokens"])
    c, u = out["cached"], out["uncached"]
    out["same_tokens"] = trees[True] == trees[False]
    out["wall_speedup"] = round(u["wall_s"] / c["wall_s"], 2)
    out["prefill_saved"] = round(1 - c["prefill_tokens"] / max(u["prefill_tokens"], 1), 3)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--prefix-tokens", type=int, default=1000, help="length of the shared prompt (default 1000)")
    p.add_argument("--repeats", type=int, default=3, help="timed requests per setting; the fastest is kept")
    p.add_argument("--problems", type=int, default=8, help="math problems in the EAGer run (0: skip it)")
    p.add_argument("--max-sequences", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--theta", type=float, default=2.0)
    p.add_argument("--json", default=None, help="also write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from eager_core import LLM

    torch.set_num_threads(args.threads)
    result = {"ttft_ms": bench_ttft(args, LLM)}
    print(f"time to first token after a {args.prefix_tokens}-token shared prompt: "
          f"{result['ttft_ms']['cached']} ms cached, {result['ttft_ms']['uncached']} ms uncached "
          f"({result['ttft_ms']['speedup']}x)")
    if args.problems:
        e = result["eager"] = bench_eager(args, LLM)
        print(f"EAGer with labels, {args.problems} problems, M={args.max_sequences}: "
              f"{e['cached']['wall_s']} s cached vs {e['uncached']['wall_s']} s ({e['wall_speedup']}x), "
              f"{100 * e['prefill_saved']:.1f}% of prefill saved, {e['cached']['rounds']} rounds, "
              f"same tokens: {e['same_tokens']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
