"""Mutation testing of one module against the tests that should guard it (docs/testing.md).

    python tools/mutation_test.py eager_core/eager/budget.py tests/eager/test_budget.py tests/eager/test_reallocation.py
    python tools/mutation_test.py MODULE TESTS... --json out.json        # every mutant's fate
    python tools/mutation_test.py MODULE TESTS... --only L42:C8:Lt/LtE   # re-run some mutants

Each mutant is the module with one small change, made on its syntax tree: an operator swapped
(+ -, * /, // /, % //, < <=, > >=, == !=, in / not in, is / is not, and / or), a ``not`` or unary
minus dropped (not from a literal: -1 is a number), a number plus one (-1 becomes -2), True / False flipped, a string wrapped in "XX", break / continue
swapped, min / max and any / all swapped, a call statement dropped, a returned value replaced by
None. Never mutated: docstrings, annotations, f-strings, the messages of exceptions and asserts,
imports (changing them is noise, not behaviour).

A mutant is *killed* when the tests fail (or run past ``--timeout-factor`` times the clean run: an
endless loop), and *survives* when they pass. Every mutant runs in a forked child of this process:
torch, pytest and the --preload modules are imported once, here; the child imports the mutated
module from memory through an import hook, so the files on disk never change (a shared working tree
is safe) and nothing is written but the optional JSON report. Hypothesis runs derandomized and
without its example database, so a run is reproducible. Mutants run one at a time.

Chosen over mutmut 3 (the ``mutation`` extra installs it for comparison): mutmut mutates a copy of
the package under ``mutants/`` in the project root, needs the whole package and the compiled
extension copied next to it to import, and mutates only the inside of functions (not, for example,
the regular expressions at the top of eval/answers.py).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.util
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.LShift: ast.RShift, ast.RShift: ast.LShift,
          ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitOr}
CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
          ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
NAMES = {"min": "max", "max": "min", "any": "all", "all": "any"}


@dataclass
class Mutant:
    id: str              # "L<line>:C<col>:<what>", stable while the module is unchanged
    line: int
    description: str
    index: int           # position of the node in ast.walk order
    kind: str
    status: str = ""     # killed / survived / timeout / invalid
    seconds: float = 0.0


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes never mutated: docstrings, annotations, f-strings, messages, imports."""
    skip: set[int] = set()

    def mark(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                mark(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mark(node.returns)
            for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                mark(a.annotation)
            for a in (node.args.vararg, node.args.kwarg):
                if a is not None:
                    mark(a.annotation)
        elif isinstance(node, ast.AnnAssign):
            mark(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            mark(node)
        elif isinstance(node, ast.Assert):
            mark(node.msg)
        elif isinstance(node, ast.Raise):
            mark(node.exc)   # what is raised is checked by the exception type of the tests, not its text
            skip.discard(id(node.exc))
            if isinstance(node.exc, ast.Call):
                skip.discard(id(node.exc.func))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mark(node)
    return skip


def find_mutants(tree: ast.AST) -> list[Mutant]:
    skip = _skipped_nodes(tree)
    out: list[Mutant] = []
    seen: set[str] = set()

    def add(index: int, node: ast.AST, kind: str, what: str) -> None:
        line, col = getattr(node, "lineno", 0), getattr(node, "col_offset", 0)
        mid = f"L{line}:C{col}:{what}"
        while mid in seen:   # nested nodes can start at the same column (a + b + c): number them
            mid += "'"
        seen.add(mid)
        out.append(Mutant(mid, line, what, index, kind))

    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINOPS:
            add(index, node, "binop", f"{type(node.op).__name__}/{BINOPS[type(node.op)].__name__}")
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in CMPOPS:
                    add(index, node, f"cmp{k}", f"{type(op).__name__}/{CMPOPS[type(op)].__name__}#{k}")
        elif isinstance(node, ast.BoolOp):
            add(index, node, "boolop", "And/Or" if isinstance(node.op, ast.And) else "Or/And")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)) and not (
                isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)):
            # (a negative literal such as dim=-1 is a number: its constant mutation makes it -2)
            add(index, node, "unary", f"drop-{type(node.op).__name__}")
        elif isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool):
                add(index, node, "const", f"{v}/{not v}")
            elif isinstance(v, (int, float)):
                add(index, node, "const", f"{v!r}/{v + 1!r}")
            elif isinstance(v, str):
                add(index, node, "const", f"str-XX{v[:12]!r}")
        elif isinstance(node, (ast.Break, ast.Continue)):
            add(index, node, "flow", "Break/Continue" if isinstance(node, ast.Break) else "Continue/Break")
        elif isinstance(node, ast.Name) and node.id in NAMES and isinstance(node.ctx, ast.Load):
            add(index, node, "name", f"{node.id}/{NAMES[node.id]}")
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            add(index, node, "drop-call", "drop-call")
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            add(index, node, "return", "return-None")
    return out


def mutate(tree: ast.AST, m: Mutant) -> ast.AST:
    tree = copy.deepcopy(tree)
    node = list(ast.walk(tree))[m.index]
    if m.kind == "binop":
        node.op = BINOPS[type(node.op)]()
    elif m.kind.startswith("cmp"):
        k = int(m.kind[3:])
        node.ops[k] = CMPOPS[type(node.ops[k])]()
    elif m.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif m.kind == "unary":   # `not x` -> `(x)`, `-x` -> `(+x)`: same node count, same positions
        node.op = ast.UAdd() if isinstance(node.op, ast.USub) else _Identity()
    elif m.kind == "const":
        v = node.value
        node.value = (not v) if isinstance(v, bool) else (v + 1 if isinstance(v, (int, float)) else f"XX{v}XX")
    elif m.kind == "flow":
        node.__class__ = ast.Continue if isinstance(node, ast.Break) else ast.Break
    elif m.kind == "name":
        node.id = NAMES[node.id]
    elif m.kind == "drop-call":
        node.value = ast.Constant(None)
    elif m.kind == "return":
        node.value = ast.Constant(None)
    return _fix(tree)


class _Identity(ast.UAdd):
    """Marker: ``not x`` becomes ``x`` (rewritten in _fix)."""


class _DropNot(ast.NodeTransformer):
    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return node.operand if isinstance(node.op, _Identity) else node


def _fix(tree: ast.AST) -> ast.AST:
    tree = _DropNot().visit(tree)
    return ast.fix_missing_locations(tree)


class _MutantFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports module ``name`` from ``code`` (the mutant) instead of its file."""

    def __init__(self, name: str, path: str, code):
        self.name, self.path, self.code = name, path, code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.path)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__file__ = self.path
        exec(self.code, module.__dict__)


def _child(module_name: str, path: str, code, tests: list[str], quiet: bool) -> None:
    """In the forked child: install the mutant, run the tests, exit with pytest's code."""
    import pytest
    from hypothesis import settings

    settings.register_profile("mutation", derandomize=True, database=None, deadline=None)
    settings.load_profile("mutation")
    if code is not None:
        sys.meta_path.insert(0, _MutantFinder(module_name, path, code))
    if quiet:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests])
    os._exit(int(code))


def run_one(module_name: str, path: str, code, tests: list[str], limit: float, quiet: bool = True) -> tuple[str, float]:
    """Fork, run the tests against ``code`` (None: the unmutated module); (status, seconds)."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _child(module_name, path, code, tests, quiet)
        finally:
            os._exit(99)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > limit:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - t0
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    exitcode = os.waitstatus_to_exitcode(status)
    return ("survived" if exitcode == 0 else "killed"), seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", help="path of the module to mutate, e.g. eager_core/eager/budget.py")
    ap.add_argument("tests", nargs="+", help="test files (or node ids) that should kill its mutants")
    ap.add_argument("--json", help="write every mutant and its status here")
    ap.add_argument("--only", nargs="*", help="run only these mutant ids")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--preload", nargs="*", default=[], help="modules to import once in the parent (e.g. transformers)")
    ap.add_argument("--timeout-factor", type=float, default=5.0)
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    path = str((ROOT / args.module).resolve())
    module_name = str(Path(args.module).with_suffix("")).replace(os.sep, ".")
    source = Path(path).read_text()
    tree = ast.parse(source, filename=path)
    mutants = find_mutants(tree)
    if args.only:
        mutants = [m for m in mutants if m.id in set(args.only)]
    if args.list:
        for m in mutants:
            print(m.id)
        return 0

    import torch  # noqa: F401  (imported once, before any fork)
    import hypothesis  # noqa: F401
    import pytest  # noqa: F401
    for name in args.preload:
        __import__(name)
    assert module_name not in sys.modules, f"{module_name} must not be imported before the mutants run"

    status, clean_s = run_one(module_name, path, None, args.tests, limit=1800, quiet=False)
    if status != "survived":
        print(f"the tests fail on the unmutated module ({status}): fix that first", file=sys.stderr)
        return 2
    limit = max(20.0, args.timeout_factor * clean_s)
    print(f"{module_name}: {len(mutants)} mutants; clean run {clean_s:.1f} s, limit {limit:.0f} s", flush=True)
    for i, m in enumerate(mutants, 1):
        try:
            code = compile(mutate(tree, m), path, "exec")
        except (SyntaxError, ValueError, TypeError) as e:
            m.status = "invalid"
            print(f"[{i}/{len(mutants)}] {m.id}: invalid ({e})", flush=True)
            continue
        m.status, m.seconds = run_one(module_name, path, code, args.tests, limit)
        print(f"[{i}/{len(mutants)}] {m.id}: {m.status} ({m.seconds:.1f} s)", flush=True)

    valid = [m for m in mutants if m.status != "invalid"]
    killed = [m for m in valid if m.status in ("killed", "timeout")]
    survived = [m for m in valid if m.status == "survived"]
    score = 100.0 * len(killed) / len(valid) if valid else 100.0
    print(f"\n{module_name}: {len(killed)} of {len(valid)} mutants killed ({score:.1f}%), "
          f"{len(survived)} survived", flush=True)
    lines = source.splitlines()
    for m in survived:
        print(f"  survived {m.id}: {lines[m.line - 1].strip()[:100]}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(
            module=args.module, tests=args.tests, clean_seconds=clean_s, killed=len(killed), valid=len(valid),
            score=score, mutants=[asdict(m) for m in mutants]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
