"""Compiled and reference ops of eager_core (bottom layer: imports nothing above torch).

entropy_gate            fused per-row entropy / top-k entropy / top-2 / branch decision
entropy_gate_reference  the same in plain PyTorch ops (fallback, benchmark baseline, test oracle)
backend                 which implementation entropy_gate uses: "cuda", "cpp" or "torch"
linear                  F.linear, or the compiled small-M CPU kernel for decode-sized float32 inputs
Int8Weight              a weight-only int8 linear weight (int8 values, float16 scales per group)
quantize_int8           float weight -> Int8Weight (ops.int8_linear: the op, kernels or dequantize + F.linear)
"""

from eager_core.ops._extension import backend
from eager_core.ops.entropy_gate import entropy_gate
from eager_core.ops.entropy_reference import entropy_gate_reference
from eager_core.ops.entropy_result import EntropyGateResult
from eager_core.ops.int8_linear import Int8Weight, quantize_int8
from eager_core.ops.linear import linear

__all__ = ["entropy_gate", "entropy_gate_reference", "backend", "EntropyGateResult", "linear", "Int8Weight",
           "quantize_int8"]
