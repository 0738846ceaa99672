"""Run a function on W local processes that form a torch.distributed group (gloo, one thread each).

``run_ranks`` returns, per rank, what the function returned or the error it raised, plus the exit
code and the seconds it took: a test can then check that a failure on one rank made the others
stop with an error (not a hang), and how fast.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class RankResult:
    rank: int
    exitcode: int | None     # None: still running at the deadline (then killed)
    value: Any = None        # what fn returned
    error: str | None = None  # "ExceptionType: message" if fn raised
    seconds: float = 0.0


def rendezvous_store():
    """The ranks' rendezvous: a TCPStore served by this (the parent) process on a port the OS picks
    (port 0) and holds until the ranks are done. Nothing can take the port between choosing it and
    using it, as it could when a free port was probed, released, and bound again by rank 0.

    The ranks join it as clients, as under torchrun, whose agent serves the store the same way
    (TORCHELASTIC_USE_AGENT_STORE=True: env:// rendezvous then starts no server in rank 0)."""
    from torch.distributed import TCPStore

    return TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def _worker(rank: int, world: int, port: int, timeout_s: float, out: str, fn: Callable, args: tuple) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True",
                      EAGER_CORE_DIST_TIMEOUT=str(timeout_s), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)   # the ranks share the machine's cores
    t0 = time.perf_counter()
    try:
        result = dict(value=fn(rank, *args))
        code = 0
    except BaseException as e:  # reported to the parent, which asserts on it
        result = dict(error=f"{type(e).__name__}: {e}", trace=traceback.format_exc())
        code = 1
    result["seconds"] = time.perf_counter() - t0
    Path(out).write_bytes(pickle.dumps(result))
    os._exit(code)   # skip atexit hooks: a peer may already be gone, and the result is written


def run_ranks(fn: Callable, world: int, args: tuple = (), tmp: Path | None = None, timeout_s: float = 20.0,
              deadline_s: float = 60.0) -> list[RankResult]:
    """Start ``fn(rank, *args)`` on ``world`` processes; wait at most ``deadline_s``; kill leftovers."""
    import tempfile

    tmp = Path(tmp or tempfile.mkdtemp())
    store = rendezvous_store()
    ctx = mp.get_context("spawn")
    outs = [str(tmp / f"rank{r}.pkl") for r in range(world)]
    procs = [ctx.Process(target=_worker, args=(r, world, store.port, timeout_s, outs[r], fn, args))
             for r in range(world)]
    for p in procs:
        p.start()
    end = time.monotonic() + deadline_s
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    results = []
    for r, p in enumerate(procs):
        if p.is_alive():
            p.kill()
            p.join()
            results.append(RankResult(r, None, error="still running at the deadline (hang)"))
            continue
        data = (pickle.loads(Path(outs[r]).read_bytes()) if Path(outs[r]).exists()
                else dict(error=f"exited with code {p.exitcode} before reporting a result"))
        results.append(RankResult(r, p.exitcode, data.get("value"), data.get("error"), data.get("seconds", 0.0)))
    return results
