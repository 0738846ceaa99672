"""Starting tools/serve.py in a subprocess on a port the OS chose (--port 0), and talking to it.

Every wait has a timeout, so a server that fails to start or to stop fails the test instead of
hanging it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "tools" / "serve.py"
READY = re.compile(r"eager_core serve: listening on (http://\S+)")
NUM_KV_BLOCKS = 1024            # 16-token blocks: room for a few 8k-token requests at once
LONG = 6000                     # max_tokens of a request that runs for seconds


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=5).json()

    def wait_idle(self, within: float) -> dict:
        """Poll /health until every KV block is free and no request is left (or fail)."""
        deadline = time.monotonic() + within
        while True:
            h = self.health()
            if h["kv_blocks_free"] == h["kv_blocks_total"] and h["unfinished"] == 0 and h["running"] == 0:
                return h
            assert time.monotonic() < deadline, f"not idle after {within}s: {h}"
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def run_server(ckpt: Path, tmp_dir: Path, *flags: str, timeout: float = 60) -> Iterator[Server]:
    """Start tools/serve.py --port 0 and wait for its 'listening on' line; SIGTERM it afterwards."""
    log = tmp_dir / f"server-{time.monotonic_ns()}.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(SERVE), "--ckpt", str(ckpt), "--port", "0", "--threads", "1",
                                 "--num-kv-blocks", str(NUM_KV_BLOCKS), "--log-level", "warning", *flags],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            match = READY.search(log.read_text(errors="replace"))
            if match:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start (rc={proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield Server(proc, match.group(1), log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
