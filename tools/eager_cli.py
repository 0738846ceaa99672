"""The eager/parallel modes of tools/generate.py: run LLM.eager and show each prompt's branch tree."""

from __future__ import annotations

import argparse
import json
import sys

import cli_common  # noqa: F401  (sets up the import path)


def run_eager_mode(llm, prompts: list, args: argparse.Namespace) -> None:
    from eager_core import EagerParams

    method = "parallel" if args.mode == "parallel" else getattr(args, "method", "eager-init")
    params = EagerParams(theta=args.theta, max_sequences=args.max_sequences,
                         temperature=0.6 if args.temperature is None else args.temperature,
                         max_tokens=args.max_tokens, seed=args.seed)
    outs = llm.eager(prompts, params, method=method)
    if args.json or getattr(args, "output", None):
        emit_document(args, {"mode": args.mode, "method": method, "params": params.to_dict(), "stats": llm.last_stats,
                             "prompts": [o.to_dict() for o in outs]})
        if args.json:
            return
    for i, out in enumerate(outs):
        print(render_tree(i, out, method, params))


def emit_document(args: argparse.Namespace, doc: dict) -> None:
    """The run's one JSON document: on stdout with --json, into --output (atomically) when given.
    If the file write fails at the end, the document is kept elsewhere and the error says where."""
    from cli_common import write_or_keep
    from eager_core.eval.io_utils import write_json_atomic

    text = json.dumps(doc, ensure_ascii=False)
    if args.json:
        print(text)
    if getattr(args, "output", None):
        write_or_keep(args.output, lambda path: write_json_atomic(path, doc), text)


def branch_vote(out) -> str:
    """The majority answer over the branches (what a user of EAGer reports), with its count."""
    from collections import Counter

    from eager_core.eval.answers import canonical_answer, extract_answer

    answers = [a for a in (extract_answer(s.text) for s in out.sequences) if a is not None]
    if not answers:
        return "vote: no branch gave an answer"
    key, count = Counter(canonical_answer(a) for a in answers).most_common(1)[0]
    shown = next(a for a in answers if canonical_answer(a) == key)
    return f"vote: {shown} ({count} of {out.num_sequences} branches)"


def render_tree(index: int, out, method: str, params) -> str:
    """A prompt's sequences as a tree: where each branch split, the entropy, the two tokens, its answer."""
    from eager_core.eval.answers import extract_answer

    lines = [f"=== prompt {index} ({method}, theta={params.theta}, M={params.max_sequences}): "
             f"{out.num_sequences} sequences, {out.generated_tokens} tokens ==="]
    children: dict[int | None, list[int]] = {}
    for j, seq in enumerate(out.sequences):
        children.setdefault(seq.parent if seq.round == 0 or seq.parent is not None else None, []).append(j)
    events = {e["child"]: e for e in out.branch_events}

    def describe(j: int) -> str:
        seq = out.sequences[j]
        answer = extract_answer(seq.text)
        head = f"#{j}"
        if j in events:
            e = events[j]
            head += (f" at token {e['step']} (H={e['entropy']:.2f} > {e['threshold']:.2f}: "
                     f"{e['token_texts'][0]!r} | {e['token_texts'][1]!r})")
        elif seq.parent is None:
            head += f" root (round {seq.round})"
        text = seq.text.replace("\n", " ")
        text = text if len(text) <= 70 else text[:67] + "..."
        return f"{head} [{seq.finish_reason}, {len(seq.token_ids)} tok, answer={answer}] {text!r}"

    def walk(j: int, prefix: str, last: bool, depth: int) -> None:
        branch = "" if depth == 0 else ("└─ " if last else "├─ ")
        lines.append(prefix + branch + describe(j))
        kids = children.get(j, [])
        for k, c in enumerate(kids):
            walk(c, prefix + ("" if depth == 0 else ("   " if last else "│  ")), k == len(kids) - 1, depth + 1)

    for root in children.get(None, []):
        walk(root, "", True, 0)
    lines.append(branch_vote(out))
    longest = max(len(s.token_ids) for s in out.sequences)
    full = params.max_sequences * longest
    lines.append(f"tokens: {out.generated_tokens} generated vs {params.max_sequences} x {longest} (M x longest branch) "
                 f"= {full} for full parallel: {100 * (1 - out.generated_tokens / full):.0f}% saved")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit("run through tools/generate.py --mode eager")
