"""Generate text with eager_core: plain sampling, full parallel sampling, or EAGer branching.

    python tools/generate.py --prompt "What is 7 * 8?" --chat
    python tools/generate.py --mode eager --chat --prompt "..." --theta 2.2 --max-sequences 8
    echo "Once upon a time" | python tools/generate.py --max-tokens 64
"""

from __future__ import annotations

import argparse
import json
import sys

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import add_model_flags, add_prefix_cache_flag, add_quantization_flag, check_output_path, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_quantization_flag(p)
    add_prefix_cache_flag(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); read from stdin when absent")
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn with the chat template")
    p.add_argument("--system", default=None, help="system message for --chat")
    p.add_argument("--mode", choices=["sample", "parallel", "eager"], default="sample",
                   help="sample: n samples per prompt; parallel: M independent samples (EAGer's baseline); "
                        "eager: entropy-gated branching up to M sequences")
    p.add_argument("--temperature", type=float, default=None, help="default 1.0 (sample) or 0.6 (parallel/eager)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("-n", type=int, default=1, help="samples per prompt (sample mode)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--theta", type=float, default=2.2, help="entropy threshold (eager mode)")
    p.add_argument("--max-sequences", type=int, default=8, help="M: sequences per prompt (parallel/eager)")
    p.add_argument("--method", choices=["eager-init", "eager-adapt"], default="eager-init",
                   help="eager mode: EAGer-init, or EAGer-adapt (label-free reallocation)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    p.add_argument("--output", default=None,
                   help="also write the JSON document (what --json prints: params, outputs, stats; in eager/parallel "
                        "modes sequences, entropies and branch events) to this file; checked before the model loads")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's). On a busy machine 1 can be several times faster: "
                        "OpenMP threads that wait for a descheduled peer stall every matmul")
    p.add_argument("--stats", action="store_true", help="print engine statistics (tokens, steps, KV blocks, time); "
                   "with --json they are part of the one JSON document")
    return p


def read_prompts(args: argparse.Namespace) -> list:
    from eager_core.errors import RequestError

    from eager_core.validation import clean_text

    if args.prompt:   # argv that was not UTF-8 arrives as lone surrogates: replaced by U+FFFD
        prompts = [clean_text(p) for p in args.prompt]
    else:             # bytes that are not UTF-8 are replaced too, never a decoding traceback
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        prompts = [raw.decode("utf-8", "replace") if isinstance(raw, bytes) else clean_text(raw)]
    if any(not p.strip() for p in prompts):
        raise RequestError("empty prompt: pass --prompt TEXT or text on stdin")
    if not args.chat:
        return prompts
    system = [{"role": "system", "content": args.system}] if args.system else []
    return [system + [{"role": "user", "content": p}] for p in prompts]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eager_core import LLM

    check_output_path(args.output)   # before anything is loaded: a bad path costs nothing
    prompts = read_prompts(args)
    if args.threads is not None:
        if not 1 <= args.threads <= 4096:
            from eager_core.errors import RequestError
            raise RequestError(f"--threads {args.threads}: expected an integer in [1, 4096]")
        import torch
        torch.set_num_threads(args.threads)
    llm = LLM(args.ckpt, dtype=args.dtype, device=args.device, num_kv_blocks=args.num_kv_blocks, seed=args.seed,
              enable_prefix_caching=args.enable_prefix_caching, quantization=args.quantization)
    if args.mode == "sample":
        run_sample(llm, prompts, args)
    else:
        from eager_cli import run_eager_mode
        run_eager_mode(llm, prompts, args)
    if args.stats and not args.json:   # with --json the stats are inside the one document
        print(format_stats(llm.last_stats), file=sys.stderr)
    return 0


def run_sample(llm, prompts: list, args: argparse.Namespace) -> None:
    from eager_core import SamplingParams

    params = SamplingParams(temperature=1.0 if args.temperature is None else args.temperature, top_k=args.top_k,
                            top_p=args.top_p, min_p=args.min_p, max_tokens=args.max_tokens, n=args.n, seed=args.seed)
    stream = len(prompts) == 1 and args.n == 1 and not args.json
    on_token = None
    if stream:   # one prompt, one sample: print text as it is generated
        decoder = llm.tokenizer.stream_decoder()

        def on_token(seq, token):
            if token not in llm.tokenizer.eos_token_ids:
                sys.stdout.write(decoder.push(token))
                sys.stdout.flush()
    outs = (llm.chat(prompts, params, on_token=on_token) if args.chat
            else llm.generate(prompts, params, on_token=on_token))
    if args.json or args.output:
        from eager_cli import emit_document
        emit_document(args, {"mode": "sample", "params": vars(params), "stats": llm.last_stats, "prompts": [
            {"prompt": o.prompt, "outputs": [{"text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason}
                                             for c in o.outputs]} for o in outs]})
    if args.json:
        return
    if stream:
        sys.stdout.write(decoder.flush() + "\n")
    else:
        for i, o in enumerate(outs):
            for c in o.outputs:
                print(f"--- prompt {i} sample {c.index} ({c.finish_reason}) ---\n{c.text}")


def format_stats(stats: dict) -> str:
    tok_s = stats["generated_tokens"] / stats["wall_s"] if stats.get("wall_s") else 0.0
    parts = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()]
    return "[stats] " + " ".join(parts) + f" tok/s={tok_s:.1f}"


if __name__ == "__main__":
    sys.exit(run_main(main))
