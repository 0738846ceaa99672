#!/usr/bin/env python
"""Paired comparison of two settings of one evaluation folder (tools/eval.py's --out).

    python tools/compare_settings.py --out runs/repro_products --a method=eager-adapt,theta=2.3,M=16 \\
        --b method=eager-init,theta=2.3,M=16
    python tools/compare_settings.py --out runs/repro_products --a method=eager-deepconf,M=8,confidence_percentile=10 \\
        --b method=eager-init,theta=2.3,M=8 --json delta.json

results.json gives every setting against parallel at the same M; claims such as "EAGer-adapt gains
over EAGer-init" compare two other settings. This pairs their records by problem (the problems both
ran) and prints, for Pass@k and Cons@k, the mean of (a - b) with its 95% paired bootstrap interval
(resampling problems; eager_core/eval/stats.py, the same estimator as results.json's), the problems
only a solved / only b solved, and each side's generated tokens.

A setting is given as comma-separated key=value: ``method`` matches the record's method, every
other key its ``setting`` (theta, M, confidence_percentile, ...; numbers compare as numbers). It
must select exactly one setting of the folder: none or several is an error naming the candidates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cli_common  # noqa: F401  (sets up the import path)
from cli_common import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="evaluation folder holding generations.jsonl")
    p.add_argument("--a", required=True, help="the setting to measure, e.g. method=eager-adapt,theta=2.3,M=16")
    p.add_argument("--b", required=True, help="the setting it is compared with")
    p.add_argument("--json", default=None, help="also write the comparison to this file")
    p.add_argument("--debug", action="store_true")
    return p


def parse_spec(spec: str) -> dict[str, str]:
    from eager_core.errors import ConfigError

    out = {}
    for part in filter(None, (s.strip() for s in spec.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"setting {spec!r}: expected comma-separated key=value, got {part!r}")
        out[key.strip()] = value.strip()
    if not out:
        raise ConfigError(f"setting {spec!r}: expected comma-separated key=value")
    return out


def _matches(value, wanted: str) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value) == float(wanted)
        except ValueError:
            return False
    return str(value) == wanted


def select(records: list[dict], spec: str) -> list[dict]:
    """The records of the one setting ``spec`` names (ConfigError if it names none or several)."""
    from eager_core.errors import ConfigError

    want = parse_spec(spec)
    groups: dict[str, list[dict]] = {}
    for r in records:
        fields = {"method": r["method"], **r["setting"]}
        if all(k in fields and _matches(fields[k], v) for k, v in want.items()):
            groups.setdefault(json.dumps({"method": r["method"], **r["setting"]}, sort_keys=True), []).append(r)
    if len(groups) != 1:
        found = "none" if not groups else "; ".join(sorted(groups))
        raise ConfigError(f"setting {spec!r} selects {len(groups)} settings of the folder, not one: {found}")
    return next(iter(groups.values()))


def compare(a: list[dict], b: list[dict]) -> dict:
    """Paired deltas (a - b) over the problems both settings ran."""
    from eager_core.eval.records import prompt_outcomes
    from eager_core.eval.stats import paired_bootstrap_ci

    b_by_id = {r["prompt_id"]: r for r in b}
    pairs = [(r, b_by_id[r["prompt_id"]]) for r in a if r["prompt_id"] in b_by_id]
    if not pairs:
        from eager_core.errors import ConfigError
        raise ConfigError("the two settings share no problem: nothing to pair")
    oa = [prompt_outcomes(x) for x, _ in pairs]
    ob = [prompt_outcomes(y) for _, y in pairs]
    out: dict = {"problems": len(pairs), "tokens_a": sum(x["generated_tokens"] for x, _ in pairs),
                 "tokens_b": sum(y["generated_tokens"] for _, y in pairs)}
    for metric in ("pass", "cons"):
        xa, xb = [o[metric] for o in oa], [o[metric] for o in ob]
        name = "pass_at_k" if metric == "pass" else "cons_at_k"
        out[name] = {"a": sum(xa) / len(xa), "b": sum(xb) / len(xb),
                     "delta": sum(p - q for p, q in zip(xa, xb)) / len(xa),
                     "delta_ci95": paired_bootstrap_ci(xa, xb),
                     "only_a": sum(p > q for p, q in zip(xa, xb)), "only_b": sum(q > p for p, q in zip(xa, xb))}
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from eager_core.errors import ConfigError

    path = Path(args.out) / "generations.jsonl"
    if not path.is_file():
        raise ConfigError(f"--out {args.out}: no generations.jsonl there (an evaluation folder of tools/eval.py)")
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = {"a": args.a, "b": args.b, **compare(select(records, args.a), select(records, args.b))}
    print(f"{result['problems']} problems in both; tokens a {result['tokens_a']:,}, b {result['tokens_b']:,}")
    for name in ("pass_at_k", "cons_at_k"):
        m = result[name]
        ci = m["delta_ci95"]
        interval = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"
        print(f"{name}: a {m['a']:.3f}, b {m['b']:.3f}, a - b {m['delta']:+.3f} {interval}; "
              f"solved only by a {m['only_a']}, only by b {m['only_b']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
