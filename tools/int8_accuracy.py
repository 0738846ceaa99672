#!/usr/bin/env python
"""How much weight-only int8 changes the model, measured against float32 (docs/performance.md).

    python tools/int8_accuracy.py                        # default model: int8 and bf16 vs float32
    python tools/int8_accuracy.py --variants int8,int8-per-channel,int8-float-head,bfloat16 --json out.json

For each variant, against the float32 model on the same checkpoint:
  * top-1 agreement: share of positions of a fixed English text (tools/data/int8_eval_text.txt,
    896 tokens with SmolLM2's tokenizer) where the argmax of the next-token logits is the same;
  * perplexity on that text (the float32 one is printed too), and the mean KL(float32 || variant);
  * greedy agreement: 32-token greedy continuations of 16 prompts, identical or not, and the
    share of tokens before the first difference;
  * EAGer branch points: the top-20 entropy (EAGer's signal, EagerParams defaults) at every
    position of the text; a branch point "moves" where entropy > theta holds in one model and not
    in the other (theta = 2.2, EagerParams' default; also 1.5 and 2.6 by default: the top-20
    entropy cannot exceed ln 20 = 3.0).
Variants: int8 (the default layout: groups of 32, asymmetric where that halves a matrix's error,
int8 LM head; float32 activations), int8-bf16 (the same weights, bfloat16 activations and KV
cache), int8-symmetric (no offsets anywhere: Q8_0's layout), int8-per-channel (one scale per row,
symmetric), int8-float-head (LM head kept in float32), bfloat16 (no quantization: a yardstick).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import run_main

TEXT = Path(__file__).resolve().parent / "data" / "int8_eval_text.txt"
PROMPTS = ["The capital of France is", "Once upon a time, in a small village,", "def fibonacci(n):",
           "The three primary colors are", "Water boils at", "In 1969, the first humans",
           "A good recipe for pancakes starts with", "The main difference between a virus and a bacterium is",
           "My favourite season of the year is", "To change a flat tyre, you first need to",
           "The largest planet in the solar system", "Photosynthesis is the process by which",
           "Dear hiring manager, I am writing to", "The French Revolution began in",
           "import numpy as np\n", "Three reasons to learn a second language:"]
VARIANTS = ("int8", "int8-bf16", "int8-symmetric", "int8-per-channel", "int8-float-head", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="HF checkpoint folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--thetas", default="1.5,2.2,2.6", help="EAGer entropy thresholds to count branch moves at")
    p.add_argument("--max-tokens", type=int, default=32, help="greedy tokens per prompt")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--debug", action="store_true")
    return p


def load(ckpt: str | None, variant: str):
    """An LLM for the variant; the layout knobs are module constants read at load time."""
    from eager_core import LLM
    from eager_core.model import quantized
    from eager_core.ops import int8_linear

    group, head, gain = int8_linear.DEFAULT_GROUP_SIZE, quantized.INT8_LM_HEAD, int8_linear.ASYMMETRIC_GAIN
    try:
        int8_linear.DEFAULT_GROUP_SIZE = None if variant == "int8-per-channel" else group
        quantized.INT8_LM_HEAD = variant != "int8-float-head"
        if variant in ("int8-symmetric", "int8-per-channel"):
            int8_linear.ASYMMETRIC_GAIN = math.inf   # offsets never pay
        if variant == "float32":
            return LLM(ckpt, dtype="float32", num_kv_blocks=256)
        if variant == "bfloat16":
            return LLM(ckpt, dtype="bfloat16", num_kv_blocks=256)
        if variant == "int8-bf16":
            return LLM(ckpt, dtype="bfloat16", quantization="int8", num_kv_blocks=256)
        return LLM(ckpt, dtype="float32", quantization="int8", num_kv_blocks=256)
    finally:
        int8_linear.DEFAULT_GROUP_SIZE, quantized.INT8_LM_HEAD, int8_linear.ASYMMETRIC_GAIN = group, head, gain


def topk_entropy(logits, k: int = 20):
    import torch

    v = logits.topk(k, dim=-1).values.double()
    logp = torch.log_softmax(v, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def measure(llm, ids: list[int], max_tokens: int) -> dict:
    """Logits at every position of the text (float32 [T, V]) and greedy continuations of PROMPTS."""
    from eager_core import SamplingParams

    logits = llm.logits(ids)
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True))
    return {"logits": logits, "greedy": [o.outputs[0].token_ids for o in outs]}


def compare(ref: dict, got: dict, ids: list[int], thetas: list[float]) -> dict:
    import torch

    a, b = ref["logits"][:-1].double(), got["logits"][:-1].double()   # position t predicts token t + 1
    target = torch.tensor(ids[1:])
    la, lb = torch.log_softmax(a, -1), torch.log_softmax(b, -1)
    nll = -lb.gather(1, target[:, None]).mean().item()
    kl = (la.exp() * (la - lb)).sum(-1).mean().item()
    same = [x == y for x, y in zip(ref["greedy"], got["greedy"])]
    prefix = [next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), len(x)) for x, y in zip(ref["greedy"], got["greedy"])]
    ha, hb = topk_entropy(a), topk_entropy(b)
    moves = {str(t): int(((ha > t) != (hb > t)).sum()) for t in thetas}
    points = {str(t): int((ha > t).sum()) for t in thetas}
    return {"positions": len(target), "top1_agreement": (a.argmax(-1) == b.argmax(-1)).double().mean().item(),
            "perplexity": math.exp(nll), "kl_mean": kl, "greedy_identical": f"{sum(same)}/{len(same)}",
            "greedy_prefix_share": sum(prefix) / sum(len(x) for x in ref["greedy"]),
            "entropy_abs_diff_mean": (ha - hb).abs().mean().item(), "branch_points_fp32": points,
            "branch_points_moved": moves}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eager_core.errors import ConfigError

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        raise ConfigError(f"--variants {args.variants!r}: expected a comma-separated subset of {','.join(VARIANTS)}")
    thetas = [float(t) for t in args.thetas.split(",")]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    ref_llm = load(args.ckpt, "float32")
    ids = ref_llm.tokenizer.encode(TEXT.read_text(encoding="utf-8"))
    ref = measure(ref_llm, ids, args.max_tokens)
    logp = torch.log_softmax(ref["logits"][:-1].double(), -1)
    nll = -logp.gather(1, torch.tensor(ids[1:])[:, None]).mean().item()
    report = {"text": TEXT.name, "positions": len(ids) - 1, "float32_perplexity": math.exp(nll), "variants": {}}
    print(f"float32: perplexity {math.exp(nll):.3f} over {len(ids) - 1} positions")
    del ref_llm
    for v in variants:
        res = compare(ref, measure(load(args.ckpt, v), ids, args.max_tokens), ids, thetas)
        report["variants"][v] = res
        print(f"{v}: top-1 {100 * res['top1_agreement']:.2f}%, perplexity {res['perplexity']:.3f}, "
              f"KL {res['kl_mean']:.5f}, greedy {res['greedy_identical']} identical "
              f"({100 * res['greedy_prefix_share']:.1f}% of tokens before the first difference), "
              f"|dH| {res['entropy_abs_diff_mean']:.4f}, branch points moved {res['branch_points_moved']} "
              f"of {res['branch_points_fp32']} (float32 points per theta)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
