"""Soak run (the harness behind tools/soak.py and tests/reliability/test_soak.py): many random requests against a small KV pool, then check that nothing leaked.

``run_soak(llm, num_requests, seed)`` drives one ``LLM`` with a seeded random mix of calls:

* ``generate`` with 1-8 prompts and random SamplingParams (n, temperature, top-k/p, min-p,
  max_tokens, stop strings and ids, seeds), so families fork and, in a small pool, get preempted;
* ``eager`` with random EagerParams and method (parallel, eager-init, eager-adapt, and eager with
  a checker), so branches fork at high entropy and reallocation rounds run;
* optionally, generate calls interrupted by a ``KeyboardInterrupt`` raised from the token callback.

After every call the engine must be idle and clean (``engine_problems``): every block back in the
pool with a reference count of 0, no request queued or running, no pending fork. Every output must be
well formed (finish reasons, lengths within max_tokens and the context, stop strings cut off, greedy
siblings equal). At the end no Sequence or Request object may have outlived its call, and the
process's resident memory may not have grown past a tolerance since the warm-up.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections import Counter
from typing import Callable

from eager_core.eager.params import EagerParams
from eager_core.errors import ConfigError
from eager_core.sampling_params import SamplingParams
from eager_core.engine.sequence import Request, Sequence  # noqa: F401  (counted as live objects)

_WORDS = ["the", "cat", "sat", "on", "a", "mat", "one", "two", "three", "plus", "is", "what", "why", "=", "7",
          "42", "Paris", "think", "so", "and", ".", "?", "\n", "é", "日本"]
_STOPS = ["the", ".", "\n", "a", "o", "1", "x"]


class InjectedInterrupt(KeyboardInterrupt):
    """The soak's own interrupt: caught by the soak, unlike a real Ctrl-C, which still stops it."""


def engine_problems(llm) -> list[str]:
    """What is wrong with an engine that should be idle (``LLMEngine.idle_problems``)."""
    return llm.llm_engine.idle_problems()


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux ``/proc/self/statm``), or None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def live_sequence_objects() -> int:
    """Sequence and Request objects alive in this process (after a full collection)."""
    gc.collect()
    kinds = (Sequence, Request)   # exact types: isinstance() would touch lazy module attributes
    return sum(1 for o in gc.get_objects() if type(o) in kinds)


def max_family(max_n: int, max_sequences: int) -> int:
    """Most sequences one request can have: n samples, or an EAGer-adapt reallocation run (up to 3M)."""
    return max(max_n, 3 * max_sequences)


def pool_blocks_needed(max_family: int, max_len: int, block_size: int) -> int:
    """Blocks the largest family (``max_family`` sequences of ``max_len`` tokens) can hold at once."""
    return max_family * -(-max_len // block_size)


def run_soak(llm, num_requests: int = 200, seed: int = 0, max_prompt_len: int = 24, max_new_tokens: int = 32,
             max_n: int = 4, max_sequences: int = 6, eager_fraction: float = 0.3, interrupt_fraction: float = 0.05,
             rss_tolerance_mb: float = 64.0, warmup_fraction: float = 0.2,
             progress: Callable[[dict], None] | None = None) -> dict:
    """Run ``num_requests`` random prompts through ``llm`` and return a report dict.

    ``report["ok"]`` is True iff ``report["problems"]`` is empty. The pool must hold the largest
    family (``max_family(max_n, max_sequences)`` sequences of ``max_prompt_len + max_new_tokens`` tokens);
    a smaller pool is a ConfigError, a larger one only preempts less.
    """
    if num_requests < 1:
        raise ConfigError(f"num_requests={num_requests!r}: expected at least 1")
    max_len = min(max_prompt_len + max_new_tokens, llm.max_model_len)
    if max_prompt_len < 1 or max_prompt_len >= llm.max_model_len:
        raise ConfigError(f"max_prompt_len={max_prompt_len}: expected 1..{llm.max_model_len - 1} (the context)")
    need = pool_blocks_needed(max_family(max_n, max_sequences), max_len, llm.block_manager.block_size)
    if need > llm.block_manager.num_blocks:
        raise ConfigError(f"the KV pool has {llm.block_manager.num_blocks} blocks, the largest soak family needs "
                          f"{need}; raise num_kv_blocks or lower max_n/max_sequences/max_new_tokens")
    rng = random.Random(seed)
    t0 = time.perf_counter()
    live_before = live_sequence_objects()
    report: dict = dict(requests=0, calls=0, generate_calls=0, eager_calls=0, interrupted_calls=0,
                        generated_tokens=0, sequences=0, branch_events=0, preemptions=0, cow_copies=0,
                        kv_blocks_peak=0, num_blocks=llm.block_manager.num_blocks, finish_reasons=Counter(),
                        rss_warm_mb=None, rss_end_mb=None, rss_growth_mb=None, problems=[])
    problems: list[str] = report["problems"]
    warm_at = max(1, int(num_requests * warmup_fraction))
    while report["requests"] < num_requests and len(problems) < 20:
        batch = min(rng.randint(2, 8), num_requests - report["requests"])
        prompts = [_random_prompt(llm, rng, max_prompt_len) for _ in range(batch)]
        call = report["calls"]
        if rng.random() < eager_fraction:
            report["eager_calls"] += 1
            _eager_call(llm, rng, prompts, max_sequences, max_new_tokens, report, f"call {call} (eager)")
        else:
            report["generate_calls"] += 1
            interrupt_at = rng.randint(1, 3 * max_new_tokens) if rng.random() < interrupt_fraction else None
            _generate_call(llm, rng, prompts, max_n, max_new_tokens, interrupt_at, report, f"call {call} (generate)")
        problems += [f"call {call}: {p}" for p in engine_problems(llm)]
        for key in ("preemptions", "cow_copies"):
            report[key] += llm.last_stats.get(key, 0)
        report["kv_blocks_peak"] = max(report["kv_blocks_peak"], llm.last_stats.get("kv_blocks_peak", 0))
        report["calls"] += 1
        before = report["requests"]
        report["requests"] += batch
        if before < warm_at <= report["requests"]:
            gc.collect()
            report["rss_warm_mb"] = _mb(rss_bytes())
        if progress is not None:
            progress(report)
    leaked = live_sequence_objects() - live_before
    if leaked > 0:
        problems.append(f"{leaked} Sequence/Request objects outlived their calls")
    report["rss_end_mb"] = _mb(rss_bytes())
    if report["rss_warm_mb"] is not None and report["rss_end_mb"] is not None:
        report["rss_growth_mb"] = round(report["rss_end_mb"] - report["rss_warm_mb"], 1)
        if report["rss_growth_mb"] > rss_tolerance_mb:
            problems.append(f"resident memory grew by {report['rss_growth_mb']} MB after warm-up "
                            f"(tolerance {rss_tolerance_mb} MB)")
    report.update(free_blocks_end=llm.block_manager.num_free, leaked_objects=max(leaked, 0),
                  finish_reasons=dict(report["finish_reasons"]), wall_s=round(time.perf_counter() - t0, 2),
                  ok=not problems)
    return report


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def _random_prompt(llm, rng: random.Random, max_len: int) -> str | list[int]:
    """Text (which exercises the tokenizer and stop strings) or raw token ids, at most ``max_len`` tokens."""
    if rng.random() < 0.5:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, max_len)))
        while text and len(llm.tokenizer.encode(text, add_special_tokens=True)) > max_len:
            text = text[: len(text) // 2]
        if text.strip():
            return text
    return [rng.randrange(llm.config.vocab_size) for _ in range(rng.randint(1, max_len))]


def _length(rng: random.Random, most: int) -> int:
    """Mostly long generations (they fill the pool and force preemptions), sometimes very short ones."""
    return rng.randint(1, most) if rng.random() < 0.25 else rng.randint(max(1, most // 2), most)


def _random_sampling(rng: random.Random, max_n: int, max_new_tokens: int) -> SamplingParams:
    return SamplingParams(
        temperature=rng.choice([0.0, round(rng.uniform(0.2, 1.5), 3)]),
        top_k=rng.choice([0, rng.randint(1, 50)]), top_p=rng.choice([1.0, round(rng.uniform(0.3, 1.0), 3)]),
        min_p=rng.choice([0.0, round(rng.uniform(0.0, 0.3), 3)]), max_tokens=_length(rng, max_new_tokens),
        n=rng.randint(1, max_n), seed=rng.choice([None, rng.randrange(2**31)]),
        stop=rng.choice([None, rng.sample(_STOPS, rng.randint(1, 2))]),
        stop_token_ids=rng.choice([None, [rng.randrange(300)]]), ignore_eos=rng.random() < 0.5)


def _generate_call(llm, rng, prompts, max_n, max_new_tokens, interrupt_at, report, where) -> None:
    texts = [p for p in prompts if isinstance(p, str)]
    ids = [p for p in prompts if not isinstance(p, str)]
    params = _random_sampling(rng, max_n, max_new_tokens)
    seen = [0]

    def on_token(seq, token):
        seen[0] += 1
        if interrupt_at is not None and seen[0] >= interrupt_at:
            raise InjectedInterrupt()
    outs = []
    try:
        for group, kw in ((texts, "prompts"), (ids, "prompt_token_ids")):
            if group:
                outs += llm.generate(params=params, on_token=on_token, **{kw: group})
    except InjectedInterrupt:
        report["interrupted_calls"] += 1
        return
    for out in outs:
        report["problems"].extend(f"{where}: {p}" for p in _check_request(llm, out, params))
        report["sequences"] += len(out.outputs)
        for c in out.outputs:
            report["generated_tokens"] += len(c.token_ids)
            report["finish_reasons"][c.finish_reason] += 1


def _check_request(llm, out, params: SamplingParams) -> list[str]:
    problems = []
    if len(out.outputs) != params.n:
        problems.append(f"request {out.request_id}: {len(out.outputs)} outputs for n={params.n}")
    for c in out.outputs:
        total = len(out.prompt_token_ids) + len(c.token_ids)
        if c.finish_reason not in ("stop", "length"):
            problems.append(f"request {out.request_id}: finish_reason {c.finish_reason!r} ({c.error})")
        if len(c.token_ids) > params.max_tokens or total > llm.max_model_len:
            problems.append(f"request {out.request_id}: {len(c.token_ids)} tokens for max_tokens={params.max_tokens}")
        if c.finish_reason == "length" and len(c.token_ids) != params.max_tokens and total != llm.max_model_len:
            problems.append(f"request {out.request_id}: 'length' after {len(c.token_ids)} of {params.max_tokens}")
        if params.stop and any(s in c.text for s in params.stop):
            problems.append(f"request {out.request_id}: a stop string is left in {c.text!r}")
    if params.temperature == 0 and len({tuple(c.token_ids) for c in out.outputs}) > 1:
        problems.append(f"request {out.request_id}: greedy samples differ")
    return problems


def _eager_call(llm, rng, prompts, max_sequences, max_new_tokens, report, where) -> None:
    method = rng.choice(["parallel", "eager-init", "eager-init", "eager-adapt", "eager"])
    M = rng.randint(1, max_sequences)
    params = EagerParams(
        theta=round(rng.uniform(0.2, 3.0), 3), max_sequences=M, temperature=round(rng.uniform(0.3, 1.2), 3),
        top_k_entropy=rng.randint(2, 20), entropy=rng.choice(["topk", "full"]), max_tokens=_length(rng, max_new_tokens),
        no_branch_window=rng.randint(1, 50), dynamic_threshold=rng.random() < 0.5, think_only=rng.random() < 0.5,
        seed=rng.randrange(2**31), budget_tokens=rng.choice([None, rng.randint(1, 200)]), max_retries=rng.randint(0, 2))
    answers = [str(rng.randint(0, 9)) for _ in prompts] if method == "eager" else None
    checker = (lambda text, answer: answer in text) if method == "eager" else None
    outs = llm.eager(prompts, params, method=method, answers=answers, checker=checker)
    if len(outs) != len(prompts):
        report["problems"].append(f"{where}: {len(outs)} outputs for {len(prompts)} prompts")
    total = 0
    for out in outs:
        n = out.num_sequences
        total += n
        if n < 1 or (method in ("parallel", "eager-init") and n > M) or (method == "parallel" and n != M):
            report["problems"].append(f"{where}: {method} with M={M} gave {n} sequences")
        for s in out.sequences:
            if s.finish_reason not in ("stop", "length", "budget"):
                report["problems"].append(f"{where}: finish_reason {s.finish_reason!r} ({s.error})")
            if len(s.token_ids) > params.max_tokens or len(out.prompt_token_ids) + len(s.token_ids) > llm.max_model_len:
                report["problems"].append(f"{where}: a sequence of {len(s.token_ids)} tokens, "
                                          f"max_tokens={params.max_tokens}")
            report["finish_reasons"][s.finish_reason] += 1
        report["branch_events"] += len(out.branch_events)
        report["generated_tokens"] += out.generated_tokens
    if total > len(prompts) * M:   # the budget of every method is M sequences per prompt
        report["problems"].append(f"{where}: {total} sequences for {len(prompts)} prompts with M={M}")
    report["sequences"] += total


__all__ = ["run_soak", "engine_problems", "rss_bytes", "live_sequence_objects", "max_family", "pool_blocks_needed",
           "InjectedInterrupt"]
