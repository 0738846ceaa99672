"""Benchmark the HTTP server under concurrent streaming load, against offline LLM.generate as the ceiling.

    python tools/bench_serve.py                          # starts tools/serve.py on the default SmolLM2
    python tools/bench_serve.py --url http://127.0.0.1:8000 --concurrency 1,4,16
    python tools/bench_serve.py --peer http://127.0.0.1:8080   # the same load against llama.cpp's llama-server

Every request is a streaming /v1/completions call, greedy, with ignore_eos so that it generates
exactly --max-tokens tokens. Per concurrency level C, --requests requests (default 2C, at least 4)
are sent by C closed-loop clients. Reported: time to first token (TTFT) and inter-token latency
(ITL: the gaps between content chunks, as vLLM's benchmark measures it; a chunk may carry several
tokens when the client reads slower than the server steps) p50/p99, time per output token (TPOT:
(end of stream - first chunk) / (tokens - 1) per request, as vLLM's benchmark) p50, and aggregate tokens/s (all tokens /
wall time).
The ceiling is the same requests through offline ``LLM.generate`` in this process, in waves of C
(the batch the server can have at concurrency C), after the server's load has ended. ``match`` is
the share of server texts equal to the offline ones (greedy: it should be 1.0; not computed for a
peer, whose weights and numerics differ). The bench client shares the machine with the server:
on a small machine it takes CPU time the server would otherwise have.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import run_main

SERVE = Path(__file__).resolve().parent / "serve.py"
READY = re.compile(r"eager_core serve: listening on (http://\S+)")
TOPICS = ["the sea", "a robot", "mountains", "a library", "the moon", "a cat", "trains", "winter", "a garden",
          "music", "a lighthouse", "bread", "rain", "a clock", "bees", "a bridge"]


@dataclass
class BenchConfig:
    url: str | None = None               # a running server; None: start tools/serve.py on ckpt
    ckpt: str | None = None              # the model of the started server and of the offline ceiling
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    requests: int | None = None          # per level; None: max(4, 2 * C)
    max_tokens: int = 64
    threads: int | None = None
    num_kv_blocks: int | None = None
    offline: bool = True
    peer: str | None = None              # an OpenAI-compatible server to run the same load against
    peer_model: str | None = None
    timeout_s: float = 600.0


def prompts_for(n: int) -> list[str]:
    return [f"Write a short story about {TOPICS[i % len(TOPICS)]} (number {i})." for i in range(n)]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np
    return float(np.percentile(values, q))


async def one_request(client, url: str, model: str | None, prompt: str, max_tokens: int) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    t0, times, pieces, tokens = time.perf_counter(), [], [], None
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if "error" in obj:
                raise RuntimeError(f"{url}: {obj['error']}")
            if obj.get("usage"):
                tokens = obj["usage"].get("completion_tokens")
            for c in obj.get("choices") or []:
                if c.get("text"):
                    times.append(time.perf_counter())
                    pieces.append(c["text"])
    end, n = time.perf_counter(), tokens if tokens is not None else len(times)
    # TPOT: time per output token after the first (defined whatever the chunking); ITL: chunk gaps.
    tpot = (end - times[0]) / (n - 1) if times and n > 1 else None
    return {"ttft": times[0] - t0 if times else None, "itl": [b - a for a, b in zip(times, times[1:])],
            "tpot": tpot, "tokens": n, "text": "".join(pieces)}


async def run_level(url: str, model: str | None, prompts: list[str], max_tokens: int, concurrency: int,
                    timeout_s: float) -> dict:
    import httpx

    results: list[dict | None] = [None] * len(prompts)
    todo = iter(range(len(prompts)))
    # TCP_NODELAY: a POST goes out as two writes (headers, body); with Nagle on, the body waits for
    # the server's delayed ACK of the headers, ~40 ms of TTFT that would be the client's, not the server's.
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                 limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        await one_request(client, url, model, "warm up", 2)

        async def worker() -> None:
            for i in todo:
                results[i] = await one_request(client, url, model, prompts[i], max_tokens)

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout_s)
        wall = time.perf_counter() - t0
    tokens = sum(r["tokens"] for r in results)
    ttft = [r["ttft"] for r in results if r["ttft"] is not None]
    itl = [g for r in results for g in r["itl"]]
    tpot = [r["tpot"] for r in results if r["tpot"] is not None]
    return {"requests": len(prompts), "tokens": tokens, "wall_s": wall, "tok_s": tokens / wall,
            "ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p99_ms": _ms(percentile(ttft, 99)),
            "itl_p50_ms": _ms(percentile(itl, 50)), "itl_p99_ms": _ms(percentile(itl, 99)),
            "tpot_p50_ms": _ms(percentile(tpot, 50)),
            "texts": [r["text"] for r in results]}


def _ms(x: float | None) -> float | None:
    return None if x is None else 1000 * x


def offline_level(llm, prompts: list[str], max_tokens: int, concurrency: int) -> dict:
    from eager_core import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    llm.generate(["warm up"], SamplingParams(temperature=0, max_tokens=2))
    texts, tokens, t0 = [], 0, time.perf_counter()
    for i in range(0, len(prompts), concurrency):   # waves of C: the batch the server can have
        for out in llm.generate(prompts[i:i + concurrency], params):
            texts.append(out.outputs[0].text)
            tokens += len(out.outputs[0].token_ids)
    wall = time.perf_counter() - t0
    return {"tokens": tokens, "wall_s": wall, "tok_s": tokens / wall, "texts": texts}


def start_server(cfg: BenchConfig, log) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, str(SERVE), "--port", "0", "--log-level", "warning"]
    for flag, value in (("--ckpt", cfg.ckpt), ("--threads", cfg.threads), ("--num-kv-blocks", cfg.num_kv_blocks)):
        if value is not None:
            cmd += [flag, str(value)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600   # the first start may convert the default model
    while True:
        match = READY.search(Path(log.name).read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the server did not start:\n{Path(log.name).read_text()[-2000:]}")
        time.sleep(0.1)


def served_model(url: str) -> str | None:
    import httpx

    data = httpx.get(url + "/v1/models", timeout=30).json().get("data") or []
    return data[0]["id"] if data else None


def run_bench(cfg: BenchConfig, log=print) -> dict:
    """Measure every level against the server (and the peer), then the offline ceiling."""
    import signal

    proc, logfile = None, None
    report: dict = {"max_tokens": cfg.max_tokens, "rows": [], "load_before": os.getloadavg()[0]}
    try:
        url = cfg.url
        if url is None:
            logfile = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
            proc, url = start_server(cfg, logfile)
            log(f"started {url}")
        targets = [("eager_core", url, served_model(url))]
        if cfg.peer:
            targets.append(("peer", cfg.peer, cfg.peer_model or served_model(cfg.peer)))
        for c in cfg.concurrency:
            prompts = prompts_for(cfg.requests or max(4, 2 * c))
            for name, target, model in targets:
                row = asyncio.run(run_level(target, model, prompts, cfg.max_tokens, c, cfg.timeout_s))
                report["rows"].append(dict(row, engine=name, concurrency=c, load=os.getloadavg()[0]))
                log(f"{name} C={c}: {row['tok_s']:.1f} tok/s")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    if cfg.offline:
        import torch

        from eager_core import LLM

        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        llm = LLM(cfg.ckpt, num_kv_blocks=cfg.num_kv_blocks)
        for row in report["rows"]:
            if row["engine"] != "eager_core":
                continue
            off = offline_level(llm, prompts_for(row["requests"]), cfg.max_tokens, row["concurrency"])
            row["offline_tok_s"], row["vs_offline"] = off["tok_s"], row["tok_s"] / off["tok_s"]
            row["match"] = sum(a == b for a, b in zip(row["texts"], off["texts"])) / len(off["texts"])
    for row in report["rows"]:
        row.pop("texts")
    return report


COLUMNS = [("engine", "engine", "{}"), ("concurrency", "C", "{}"), ("requests", "reqs", "{}"),
           ("tok_s", "tok/s", "{:.1f}"), ("ttft_p50_ms", "TTFT p50 ms", "{:.0f}"), ("ttft_p99_ms", "TTFT p99 ms", "{:.0f}"),
           ("itl_p50_ms", "ITL p50 ms", "{:.1f}"), ("itl_p99_ms", "ITL p99 ms", "{:.1f}"),
           ("tpot_p50_ms", "TPOT p50 ms", "{:.1f}"),
           ("offline_tok_s", "offline tok/s", "{:.1f}"), ("vs_offline", "vs offline", "{:.0%}"),
           ("match", "match", "{:.2f}"), ("load", "load", "{:.1f}")]


def format_report(report: dict) -> str:
    rows = [[title for _, title, _ in COLUMNS]]
    for r in report["rows"]:
        rows.append([fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines) + f"\n(max_tokens={report['max_tokens']}, greedy, ignore_eos; load = 1-min load average)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: start tools/serve.py on --ckpt)")
    p.add_argument("--ckpt", default=None, help="checkpoint of the started server and of the offline ceiling "
                                                "(default: SmolLM2-135M-Instruct)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts (default 1,4,16)")
    p.add_argument("--requests", type=int, default=None, help="requests per level (default: max(4, 2 x C))")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch threads of the server and the offline run")
    p.add_argument("--num-kv-blocks", type=int, default=None)
    p.add_argument("--no-offline", action="store_true", help="skip the offline ceiling")
    p.add_argument("--peer", default=None, help="an OpenAI-compatible server (llama.cpp's llama-server) to compare")
    p.add_argument("--peer-model", default=None, help="model name to send to the peer (default: its first model)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the report as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return p


def main(argv: list[str] | None = None) -> int:
    from eager_core.errors import ConfigError

    args = build_parser().parse_args(argv)
    try:
        levels = [int(x) for x in args.concurrency.split(",")]
    except ValueError:
        raise ConfigError(f"--concurrency {args.concurrency!r}: expected integers like 1,4,16") from None
    if not levels or min(levels) < 1 or args.max_tokens < 1 or (args.requests is not None and args.requests < 1):
        raise ConfigError("--concurrency, --requests and --max-tokens must be >= 1")
    cfg = BenchConfig(url=args.url.rstrip("/") if args.url else None, ckpt=args.ckpt, concurrency=levels,
                      requests=args.requests, max_tokens=args.max_tokens, threads=args.threads,
                      num_kv_blocks=args.num_kv_blocks, offline=not args.no_offline,
                      peer=args.peer.rstrip("/") if args.peer else None, peer_model=args.peer_model)
    report = run_bench(cfg, log=lambda msg: print(msg, file=sys.stderr))
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
