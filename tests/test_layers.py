"""Imports point down the layers (docs/architecture.md), checked on the source of every module.

    tools -> eval -> eager -> llm -> engine -> cache, model, io, ops -> errors, sampling_params

A module may import its own layer and any layer below; never one above. Lazy imports inside
functions count too (``LLM.eager`` reaching up into the EAGer layer is the one allowed exception,
``EagerParams.request_plan`` reaching its own layer's controller is not an exception at all).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "eager_core"
# Rank of each layer: a module may import only modules of equal or lower rank.
RANKS = {"errors": 0, "validation": 0, "sampling_params": 0, "_C": 0, "ops": 1, "io": 1, "cache": 2, "model": 2, "engine": 3,
         "llm": 4, "eager": 5, "compat": 5, "eval": 6, "serve": 7}
ALLOWED_UPWARD = {("llm", "eager")}   # LLM.eager: a convenience entry that delegates (lazy import)


def layer_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "eager_core"
    return parts[1] if len(parts) > 1 else ""


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eager_core"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("eager_core")}
    return found


MODULES = sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path):
    here = layer_of("eager_core." + ".".join(path.relative_to(PKG).with_suffix("").parts))
    here = here.removesuffix(".py")
    assert here in RANKS, f"{path}: unknown layer {here!r} (add it to RANKS and the docs)"
    for module in imports_of(path):
        there = layer_of(module)
        if not there or (here, there) in ALLOWED_UPWARD:
            continue
        assert RANKS[there] <= RANKS[here], f"{path.relative_to(PKG)} ({here}) imports {module} ({there})"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from eager_core.engine.llm_engine import LLMEngine\n")
    assert "eager_core.engine.llm_engine" in imports_of(bad)   # lazy imports are found too
