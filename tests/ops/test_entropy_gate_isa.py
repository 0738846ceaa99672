"""The CPU kernel's inner loops exist once per instruction set (AVX-512, AVX2, baseline) and
only the best one runs on a given machine. EAGER_CORE_CPU_ISA caps the choice at the first
call, so each path is checked here against the float64 reference in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from entropy_gate_cases import need_backend
from kernel_support import isa_cap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    import torch
    from entropy_gate_cases import assert_matches_reference, make_logits
    from eager_core import _C
    from eager_core.ops import backend, entropy_gate

    assert backend("cpu") == "cpp"
    print(_C.cpu_isa())
    for i, (rows, vocab, dtype, top_k) in enumerate([
        (3, 1, torch.float32, 20), (5, 17, torch.float32, 2), (4, 2049, torch.bfloat16, 20),
        (2, 40000, torch.float16, 64), (1, 70001, torch.float32, 300), (6, 5000, torch.float32, 20),
    ]):
        x = make_logits(rows, vocab, seed=i, dtype=dtype, mask_frac=0.3 * (i % 2), ties=i == 5)
        if i == 5:
            x[2, 77] = float("nan")
            x[4, 4999] = float("inf")
        for kind in ("topk", "full"):
            res = entropy_gate(x, 2.0, top_k=top_k, kind=kind)
            assert_matches_reference(res, x, 2.0, top_k, kind, exact_ties=True)
    """
)


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_each_instruction_set_matches_reference(isa: str) -> None:
    need_backend("cpp")
    env = dict(os.environ, EAGER_CORE_CPU_ISA=isa)
    env.pop("EAGER_CORE_DISABLE_EXT", None)
    code = SCRIPT.format(here=str(Path(__file__).parent))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    used = proc.stdout.split()[0]
    if isa == "avx2" and used == "baseline":
        # A cap is a ceiling: on a CPU without AVX2/FMA the baseline loops ran (and matched) instead.
        pytest.skip("this CPU lacks AVX2/FMA: the avx2 loops cannot run here (baseline ones checked instead)")
    assert used == isa


def test_in_process_instruction_set_follows_the_cap() -> None:
    """EAGER_CORE_CPU_ISA set for the whole run (the capped runs of .ci/run) reaches this process's
    kernel, so every entropy-gate test of that run checks the capped loops."""
    need_backend("cpp")
    from eager_core import _C

    used, cap = _C.cpu_isa(), isa_cap()
    allowed = {None: ("avx512", "avx2", "baseline"), "avx2": ("avx2", "baseline")}.get(cap, ("baseline",))
    assert used in allowed, f"EAGER_CORE_CPU_ISA={cap} but the entropy gate runs its {used} loops"
