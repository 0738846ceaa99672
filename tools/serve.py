"""Serve a checkpoint over OpenAI's HTTP API (chat and completions, streaming, EAGer as an extension).

    python tools/serve.py                                  # the default SmolLM2 on 127.0.0.1:8000
    python tools/serve.py --ckpt DIR --port 0              # any free port (printed on stdout)
    curl -s localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "Hi"}]}'

Needs the serve extra: pip install --no-build-isolation -e ".[serve]". See docs/serving.md.
"""

from __future__ import annotations

import argparse
import sys

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import add_model_flags, add_prefix_cache_flag, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_prefix_cache_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (printed on stdout)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--max-num-seqs", type=int, default=256, help="most sequences decoded in one step")
    p.add_argument("--max-queue", type=int, default=None,
                   help="most unfinished requests (running + waiting); more get HTTP 429 (default: no limit)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--served-model-name", default=None,
                   help="the model name clients send and see (default: the checkpoint folder's name)")
    p.add_argument("--seed", type=int, default=0, help="engine seed (requests without a seed draw from it)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eager_core.serve.server import ServeConfig, run

    return run(ServeConfig(ckpt=args.ckpt, host=args.host, port=args.port, dtype=args.dtype, device=args.device,
                           threads=args.threads, num_kv_blocks=args.num_kv_blocks, max_num_seqs=args.max_num_seqs,
                           max_queue=args.max_queue, api_key=args.api_key, served_model_name=args.served_model_name,
                           seed=args.seed, log_level=args.log_level,
                           enable_prefix_caching=args.enable_prefix_caching))


if __name__ == "__main__":
    sys.exit(run_main(main))
