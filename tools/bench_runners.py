"""One measurement: run one workload in one engine and time it.

Run as a child process (``python tools/bench_runners.py`` with the spec as JSON on stdin; it prints
one ``BENCH_RESULT {...}`` line), so that each engine's peak RSS is its own; ``measure`` can also be
called in-process (the smoke test does).

Timing, identical for both engines:
    wall_s     the whole generate call (prefill + decode), best of ``repeats``
    decode_s   from the token of the last step that still had prefill work to the last token:
               ``decode_steps`` pure decode steps (engine: read from its step counters;
               transformers: one streamer call per step)
    kv_ctx     cached positions attended over in those decode steps, summed over sequences
               (padding not counted): the KV bytes a step must read are kv_ctx x bytes/position
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cli_common  # noqa: F401  (sets up the import path)
from bench_workloads import Workload

MARKER = "BENCH_RESULT "
BLOCK_SIZE = 16
DTYPES = ("float32", "bfloat16", "float16")


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` = {engine, workload (dict), ckpt, dtype, device, repeats, num_kv_blocks, threads}."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    wl = Workload.from_dict(spec["workload"])
    engine, _, variant = spec["engine"].partition(":")
    if engine == "transformers":
        result = _run_transformers(spec, wl)
    elif engine == "eager_core":
        result = _run_engine(spec, wl, variant or None)
    else:
        raise ValueError(f"unknown engine {spec['engine']!r}")
    result["prompt_tokens"] = sum(len(p) for p in wl.prompt_ids)
    result["peak_rss_mib"] = peak_rss_mib()
    if spec["device"].startswith("cuda"):
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result["threads"] = torch.get_num_threads()
    # The 1-minute load average (this measurement included): on a shared machine, a row measured
    # under a load above the core count is disturbed and its timing should not be trusted.
    result["load_avg"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return result


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark, in MiB.

    Read from /proc (VmHWM), which starts afresh at exec; ``getrusage``'s ru_maxrss does not: it
    keeps the high-water mark of the parent at fork, so every child would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def _best_of(repeats: int, device: str, run) -> dict[str, Any]:
    """Call ``run()`` ``repeats`` times; keep the fastest (the least disturbed by other processes)."""
    best: dict[str, Any] | None = None
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        out = run()
        _sync(device)
        out["wall_s"] = time.perf_counter() - t0
        if best is None or out["wall_s"] < best["wall_s"]:
            best = out
    assert best is not None
    return best


# --- eager_core ---------------------------------------------------------------------------------

class EngineClock:
    """``on_token`` callback: timestamps every token with the engine step that produced it."""

    def __init__(self, llm: Any):
        self.engine = llm.llm_engine   # its live counters: (decode_steps, prefill_tokens) moves every step
        self.events: list[tuple[float, tuple[int, int], int]] = []

    def __call__(self, seq: Any, token: int) -> None:
        stats = self.engine.stats   # read now: each LLM call starts a fresh RunStats
        step = (stats.decode_steps, stats.prefill_tokens)
        # The step that produced this token attended over every position before it.
        self.events.append((time.perf_counter(), step, len(seq.token_ids) - 1))

    def decode_window(self) -> dict[str, Any]:
        if not self.events:
            return dict(decode_s=None, decode_steps=0, decode_tokens=0, kv_ctx=0)
        last_prefill = max(s[1] for _, s, _ in self.events)
        prefill_steps = [i for i, (_, s, _) in enumerate(self.events) if s[1] == last_prefill]
        # The first step whose prefill counter reached its final value did the last prefill work.
        first_final = self.events[prefill_steps[0]][1]
        start = max(t for t, s, _ in self.events if s == first_final)
        after = [(t, s, c) for t, s, c in self.events if s[0] > first_final[0]]
        steps = len({s for _, s, _ in after})
        return dict(decode_s=(self.events[-1][0] - start) if steps else None, decode_steps=steps,
                    decode_tokens=len(after), kv_ctx=sum(c for _, _, c in after))


def kv_blocks_needed(wl: Workload, block_size: int = BLOCK_SIZE) -> int:
    """A pool just large enough for the workload (so peak RSS reflects the work, not a default)."""
    longest = max(len(p) for p in wl.prompt_ids) + wl.max_tokens
    return wl.num_rows * (-(-longest // block_size) + 1) + 8


def _run_engine(spec: dict[str, Any], wl: Workload, variant: str | None) -> dict[str, Any]:
    from eager_core import LLM, SamplingParams

    blocks = spec.get("num_kv_blocks") or kv_blocks_needed(wl)
    # Prefix caching off unless asked: with it, every repeat after the first would find its prompt
    # already computed by the previous one, and the prefill row would time a cache hit.
    llm = LLM(spec["ckpt"], dtype=spec["dtype"], device=spec["device"], num_kv_blocks=blocks,
              block_size=BLOCK_SIZE, seed=0, quantization=spec.get("quantization"),
              enable_prefix_caching=bool(spec.get("prefix_caching", False)))
    warm = SamplingParams(temperature=0.0, max_tokens=min(4, wl.max_tokens), ignore_eos=True)
    llm.generate(prompt_token_ids=[wl.prompt_ids[0][:16]], params=warm)
    if variant is not None:
        result = _run_eager(llm, wl, variant, spec)
    else:
        params = SamplingParams(temperature=0.0 if wl.greedy else wl.temperature, max_tokens=wl.max_tokens,
                                n=wl.n, ignore_eos=wl.ignore_eos, seed=0)

        def run() -> dict[str, Any]:
            clock = EngineClock(llm)
            outs = llm.generate(prompt_token_ids=wl.prompt_ids, params=params, on_token=clock)
            ids = [c.token_ids for o in outs for c in o.outputs]
            return dict(tokens=sum(len(i) for i in ids), token_ids=ids if wl.greedy else None,
                        stats=dict(llm.last_stats), **clock.decode_window())

        result = _best_of(spec["repeats"], spec["device"], run)
    result["weight_bytes"] = llm.model.weight_bytes()
    result["num_kv_blocks"] = blocks
    return result


def _run_eager(llm: Any, wl: Workload, method: str, spec: dict[str, Any]) -> dict[str, Any]:
    """(d) in the engine: ``llm.eager`` with M = wl.n; steps and tokens from the engine's stats."""
    from eager_core import EagerParams

    params = EagerParams(max_sequences=wl.n, temperature=wl.temperature, max_tokens=wl.max_tokens, seed=0)

    def run() -> dict[str, Any]:
        outs = llm.eager(wl.messages, params, method=method)
        stats = dict(llm.last_stats)
        return dict(tokens=sum(o.generated_tokens for o in outs), decode_s=None,
                    decode_steps=stats.get("decode_steps", 0), kv_ctx=None, token_ids=None,
                    sequences=sum(o.num_sequences for o in outs), stats=stats)

    return _best_of(spec["repeats"], spec["device"], run)


# --- transformers -------------------------------------------------------------------------------

class StreamerClock:
    """A transformers streamer that only timestamps: ``put`` is called once with the prompt, then
    once per generated step."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: Any) -> None:
        if self._seen_prompt:
            self.times.append(time.perf_counter())
        self._seen_prompt = True

    def end(self) -> None:
        pass


def hf_weight_bytes(model: Any) -> int:
    """Bytes of weights a decode step reads: every parameter once (tied ones count once), except an
    untied input embedding, of which a step reads one row per token (negligible)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if emb.data_ptr() != head.data_ptr():
        total -= emb.numel() * emb.element_size()
    return total


def _run_transformers(spec: dict[str, Any], wl: Workload) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    dev = spec["device"]
    model = AutoModelForCausalLM.from_pretrained(spec["ckpt"], dtype=getattr(torch, spec["dtype"])).to(dev).eval()
    gc = model.generation_config
    gc.eos_token_id = None if wl.ignore_eos else list(wl.eos_ids)
    gc.pad_token_id = wl.pad_id
    width = max(len(p) for p in wl.prompt_ids)
    # Left padding, as transformers wants for batched generation; the mask hides the pads.
    ids = torch.tensor([[wl.pad_id] * (width - len(p)) + p for p in wl.prompt_ids], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in wl.prompt_ids], device=dev)
    kwargs: dict[str, Any] = dict(max_new_tokens=wl.max_tokens, num_return_sequences=wl.n, attention_mask=mask)
    if wl.greedy:
        kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
    else:   # plain sampling: no top-k (0 turns transformers' default of 50 off), no top-p
        kwargs.update(do_sample=True, temperature=wl.temperature, top_k=0, top_p=1.0)
    with torch.inference_mode():
        model.generate(ids[:1, -16:], attention_mask=mask[:1, -16:], max_new_tokens=min(4, wl.max_tokens),
                       do_sample=False, temperature=None, top_k=None, top_p=None)   # warm-up

    def run() -> dict[str, Any]:
        torch.manual_seed(0)
        clock = StreamerClock()
        with torch.inference_mode():
            out = model.generate(ids, streamer=clock, **kwargs)
        gen = out[:, width:].tolist()
        gen = [_until_eos(row, wl) for row in gen]
        steps = max(0, len(clock.times) - 1)
        prompt_lens = [len(p) for p in wl.prompt_ids for _ in range(wl.n)]
        # Step k (1-based) after the prefill produces token k+1 while attending over P + k positions.
        decoded = [min(steps, len(g) - 1) for g in gen]
        kv_ctx = sum(m * P + m * (m + 1) // 2 for P, m in zip(prompt_lens, decoded))
        return dict(tokens=sum(len(g) for g in gen), token_ids=gen if wl.greedy else None,
                    decode_s=(clock.times[-1] - clock.times[0]) if steps else None, decode_steps=steps,
                    decode_tokens=sum(decoded), kv_ctx=kv_ctx if wl.ignore_eos else None,
                    stats=dict(steps=len(clock.times)))

    result = _best_of(spec["repeats"], dev, run)
    result["weight_bytes"] = hf_weight_bytes(model)
    return result


def _until_eos(row: list[int], wl: Workload) -> list[int]:
    """The useful part of a transformers row: up to and including its first EOS (the rest is padding)."""
    if wl.ignore_eos:
        return row
    for i, t in enumerate(row):
        if t in wl.eos_ids:
            return row[:i + 1]
    return row


class ChildFailed(Exception):
    """A measurement's process ended without printing its result."""


def measure_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter (this file as a script), so its peak RSS is its
    own; its stderr goes straight to ours."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve())], input=json.dumps(spec),
                          stdout=subprocess.PIPE, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    raise ChildFailed(f"exit code {proc.returncode}, no result (see its error output above)")


def main() -> int:
    spec = json.loads(sys.stdin.read())
    result = measure(spec)
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
