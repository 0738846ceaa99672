"""Evaluate EAGer against full parallel sampling on a dataset: a sweep of methods, theta and M.

    python tools/eval.py --dataset chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=2 \\
        --limit 100 --methods parallel,eager-init,eager,eager-adapt --theta 2.0,2.4 \\
        --max-sequences 8,16 --max-tokens 64 --out runs/chain_sum
    python tools/eval.py --dataset problems.jsonl --out runs/mine      # GSM8K- or MATH-style JSONL
    python tools/eval.py --dataset ... --methods parallel,deepconf,eager-deepconf \
        --confidence-percentile 10,90 --warmup-traces 4 --window-size 16 --out runs/conf   # DeepConf
    torchrun --nproc-per-node 4 tools/eval.py --dataset ... --out runs/x  # data parallel (docs/distributed.md)

Writes results.json (parameters, metrics per setting with 95% bootstrap intervals over problems,
environment), generations.jsonl (one line per prompt and setting) and PNG plots into --out, and
prints a summary table. Rerunning the same
command after an interruption resumes: finished batches are not redone. See
eager_core/eval/harness.py for the resume unit (--batch-prompts) and the budget semantics.
"""

from __future__ import annotations

import argparse
import os
import sys

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import add_model_flags, add_prefix_cache_flag, add_quantization_flag, check_output_dir, run_main


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    add_quantization_flag(p)
    add_prefix_cache_flag(p)
    p.add_argument("--dataset", required=True,
                   help="reasoning-gym task spec (e.g. 'products:min_digits=1,max_digits=1') or a JSONL path")
    p.add_argument("--limit", type=int, default=None, help="number of problems (task size / first N lines)")
    p.add_argument("--seed", type=int, default=0, help="dataset generation and sampling seed")
    p.add_argument("--methods", type=_names, default=["parallel", "eager-init", "eager", "eager-adapt"],
                   help="comma-separated: parallel, eager-init, eager, eager-adapt, deepconf, eager-deepconf")
    p.add_argument("--theta", type=_floats, default=[2.2], help="entropy threshold(s), comma-separated")
    p.add_argument("--theta-sweep-methods", type=_names, default=None,
                   help="comma-separated methods that run every --theta; the other EAGer methods run only the "
                        "median theta (default: every EAGer method runs every theta)")
    p.add_argument("--max-sequences", type=_ints, default=[8], help="M value(s), comma-separated")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--max-tokens", type=int, default=64, help="per-sequence generation cap")
    p.add_argument("--top-k-entropy", type=int, default=20)
    dc = p.add_argument_group("DeepConf (methods deepconf, eager-deepconf; eager_core/eager/deepconf_params.py)")
    dc.add_argument("--confidence-percentile", type=_floats, default=[90.0],
                    help="threshold = this percentile of the warm-up traces' lowest group confidences; "
                         "90 = DeepConf-low, 10 = DeepConf-high; comma-separated values are settings of their own")
    dc.add_argument("--warmup-traces", type=int, default=4, help="warm-up traces per prompt (part of M)")
    dc.add_argument("--window-size", type=int, default=2048,
                    help="group size: tokens per sliding window of the group confidence (the paper's 2048 "
                         "assumes traces of tens of thousands of tokens: scale it to --max-tokens)")
    dc.add_argument("--top-k-confidence", type=int, default=20, help="k of the token confidence")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of every 95%% interval")
    p.add_argument("--prompt-template", default=None,
                   help="user-turn template with a {question} placeholder (default asks for \\boxed{})")
    p.add_argument("--batch-prompts", type=int, default=None,
                   help="prompts per llm.eager call (default: all). The resume unit, and the unit over which "
                        "eager/eager-adapt reallocate their M x N budget")
    p.add_argument("--out", required=True, help="results folder (created; reuse it to resume)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); on a shared machine use fewer than the free cores")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--tensor-parallel-size", type=int, default=1,
                   help="split the model over this many torchrun processes; the rest of the world size is "
                        "data parallelism (see docs/distributed.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eager_core import LLM
    from eager_core.eval.harness import EvalConfig, load_problems, run_eval

    config = EvalConfig(dataset=args.dataset, limit=args.limit, seed=args.seed, methods=args.methods,
                        thetas=args.theta, theta_sweep_methods=args.theta_sweep_methods,
                        max_sequences=args.max_sequences, temperature=args.temperature,
                        max_tokens=args.max_tokens, prompt_template=args.prompt_template,
                        batch_prompts=args.batch_prompts, top_k_entropy=args.top_k_entropy, ckpt=args.ckpt,
                        dtype=args.dtype, confidence_percentiles=args.confidence_percentile,
                        warmup_traces=args.warmup_traces, window_size=args.window_size,
                        top_k_confidence=args.top_k_confidence, bootstrap=args.bootstrap)
    config.validate()   # fail on bad flags before the model loads
    check_output_dir(args.out)   # and on an output folder that cannot be written
    if args.threads is not None:
        import torch

        if not 1 <= args.threads <= 4096:
            from eager_core.errors import ConfigError
            raise ConfigError(f"--threads {args.threads}: expected an integer in [1, 4096]")
        torch.set_num_threads(args.threads)
    rank0 = os.environ.get("RANK", "0") == "0"   # under torchrun, one process speaks
    log = lambda msg: print(msg, file=sys.stderr) if rank0 else None  # noqa: E731
    dataset = load_problems(config, log)   # dataset errors before the model loads
    from eager_core.model.process_group import rank_device
    from eager_core.eager.leader import run_data_parallel

    # Under torchrun, a bare "cuda" means this process's GPU (cuda:$LOCAL_RANK), not everyone's cuda:0.
    device = str(rank_device(args.device)) if "LOCAL_RANK" in os.environ and args.device == "cuda" else args.device
    llm = LLM(args.ckpt, dtype=args.dtype, device=device, num_kv_blocks=args.num_kv_blocks, seed=args.seed,
              tensor_parallel_size=args.tensor_parallel_size, enable_prefix_caching=args.enable_prefix_caching,
              quantization=args.quantization)
    try:   # under torchrun: run_eval on rank 0 only; the other ranks serve its llm.eager calls
        results = run_data_parallel(llm, lambda llm: run_eval(llm, config, args.out, progress=not args.no_progress,
                                                              log=log, dataset=dataset))
    except KeyboardInterrupt:
        if rank0:
            print(f"\ninterrupted: rerun the same command to resume into {args.out}", file=sys.stderr)
        raise
    if results is None:   # not rank 0: rank 0 wrote the results folder and prints the table
        return 0
    print(results["table"])
    print(f"\nresults: {args.out}/results.json, plots: "
          + ", ".join(v for k, v in results["plots"].items() if str(v).endswith(".png")))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
