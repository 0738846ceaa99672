"""Which compiled decode kernels this process can run, and the skip / fail rules of their tests.

EAGER_CORE_REQUIRE_EXT=1 (CI, the README's test command) means "the build must exist": a missing
eager_core._C, or one without the op under test, fails the test. It does not mean "this CPU has
every instruction set": a kernel the CPU cannot run (or that EAGER_CORE_CPU_ISA caps off, to
emulate such a CPU on a bigger one) is skipped with a reason naming the missing instruction set,
and test_small_linear.py::test_dispatch_follows_instruction_set checks the fallback instead.
"""

from __future__ import annotations

import os

import pytest
import torch
from entropy_gate_cases import REQUIRE_EXT, need_backend

ISA_ENV = "EAGER_CORE_CPU_ISA"

# What csrc/small_linear_cpu.cpp checks before it runs, per operand dtype.
SMALL_LINEAR_ISA = {torch.float32: "AVX-512F", torch.bfloat16: "AVX512-BF16 (with AVX-512F and AVX-512BW)"}


def isa_cap() -> str | None:
    """The EAGER_CORE_CPU_ISA cap in force ("avx2", "baseline", ...), or None when uncapped."""
    cap = os.environ.get(ISA_ENV, "")
    return None if cap in ("", "avx512") else cap


def need_op(name: str) -> None:
    """Skip (or, under EAGER_CORE_REQUIRE_EXT=1, fail) when eager_core._C or its op `name` is missing."""
    __tracebackhide__ = True                             # report the skip at the calling test
    need_backend("cpp")                                  # _C itself; fails under REQUIRE_EXT
    if not hasattr(torch.ops.eager_core, name):
        message = f"eager_core._C has no op eager_core::{name} (a stale build? rebuild it)"
        if REQUIRE_EXT:
            pytest.fail(f"EAGER_CORE_REQUIRE_EXT=1 but {message}")
        pytest.skip(message)


def small_linear_missing_isa(dtype: torch.dtype = torch.float32) -> str | None:
    """None when the small-M kernel runs here for `dtype` operands, else why not (naming the ISA).

    Needs the op (need_op rules). The answer is the extension's own check, read once per process.
    """
    __tracebackhide__ = True
    need_op("small_linear")
    if dtype == torch.bfloat16:
        supported = torch.ops.eager_core.small_linear_supported_bf16()
    else:
        supported = torch.ops.eager_core.small_linear_supported()
    if supported:
        return None
    isa = SMALL_LINEAR_ISA[dtype]
    cap = isa_cap()
    where = f"{ISA_ENV}={cap} caps it off, as on a CPU without it" if cap else "this CPU lacks it"
    return f"the small-M linear kernel needs {isa}: {where}; ops.linear takes F.linear there"


def need_small_linear(dtype: torch.dtype = torch.float32) -> None:
    """Skip with the missing instruction set when the small-M kernel cannot run here."""
    __tracebackhide__ = True
    reason = small_linear_missing_isa(dtype)
    if reason is not None:
        pytest.skip(reason)
