"""How the model's linear weights are stored: float tensors, or weight-only int8 (``Int8Weight``).

``Transformer(..., quantization="int8")`` stores every linear weight (fused q/k/v, o, fused
gate/up, down, and the LM head) as int8 with float16 scales per group of 32 along K and, where
they halve the error, offsets (eager_core/ops/int8_linear.py). Embeddings, norms and biases stay in
the model dtype: the embedding is a row lookup (one row per token, no bandwidth to save) and norms are vectors. The
model's call sites do not change: ``ops.linear`` dispatches on the weight's type.

Where the int8 weights come from, per linear layer (``<prefix>`` = e.g. ``model.layers.0.mlp.down_proj``):

* ``<prefix>.qweight`` (int8 [N, K]) and ``<prefix>.scales`` ([N, K / group]) in the checkpoint,
  with ``<prefix>.offsets`` (like the scales) for asymmetric groups: taken as they are (a GGUF's
  Q8_0 tensors, kept by ``tools/convert_gguf.py --keep-q8_0``), never through float. Without
  ``quantization`` they are dequantized to the model dtype at load.
* ``<prefix>.weight`` (float): quantized at load, from the checkpoint's own dtype (before any cast
  to a smaller model dtype), with ``quantize_int8``.

A tied LM head gets its own int8 copy of the embedding; the float embedding stays for the lookup.
"""

from __future__ import annotations

import torch

from eager_core.errors import CheckpointError, ConfigError
from eager_core.ops import int8_linear as int8_ops
from eager_core.ops.int8_linear import Int8Weight, quantize_int8

QUANTIZATIONS = ("int8",)
# The LM head is a quarter of SmolLM2-135M's weight bytes; float would cost a third of the speed-up.
INT8_LM_HEAD = True


def check_quantization(quantization: str | None) -> None:
    """None or one of QUANTIZATIONS; anything else is a ConfigError naming the argument."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ConfigError(f"quantization={quantization!r}: expected None or one of {', '.join(map(repr, QUANTIZATIONS))}")


def prequantized(weights: dict[str, torch.Tensor], prefix: str, shape: tuple[int, int]) -> Int8Weight | None:
    """The checkpoint's own int8 form of ``<prefix>.weight`` (qweight + scales), or None if it has none."""
    qname, sname = prefix + ".qweight", prefix + ".scales"
    if qname not in weights:
        return None
    q, s = weights[qname], weights.get(sname)
    if s is None:
        raise CheckpointError(f"checkpoint has {qname!r} but not its scales {sname!r}")
    if q.dtype != torch.int8 or tuple(q.shape) != tuple(shape):
        raise CheckpointError(f"tensor {qname!r} is {q.dtype} {list(q.shape)}, expected int8 {list(shape)}")
    if not s.is_floating_point() or s.dim() != 2 or s.shape[0] != shape[0] or shape[1] % max(s.shape[1], 1):
        raise CheckpointError(f"tensor {sname!r} is {s.dtype} {list(s.shape)}, expected float [{shape[0]}, groups] "
                              f"with groups dividing {shape[1]}")
    z = weights.get(prefix + ".offsets")
    bad_group = (shape[1] // max(s.shape[1], 1)) % 16 != 0
    if z is not None and (not z.is_floating_point() or tuple(z.shape) != tuple(s.shape) or bad_group):
        raise CheckpointError(f"tensor {prefix + '.offsets'!r} is {z.dtype} {list(z.shape)}, expected float "
                              f"{list(s.shape)} (like the scales) with groups that are a multiple of 16")
    try:   # scales / offsets are stored as float16 (rounded if the checkpoint has another dtype)
        return Int8Weight(q, s, z)
    except ValueError as e:
        raise CheckpointError(f"{prefix}: {e}") from None


def quantize_checked(name: str, weight: torch.Tensor, group_size: int | None) -> Int8Weight:
    """quantize_int8, with a bad weight reported as a CheckpointError naming the tensor."""
    try:
        return quantize_int8(weight, group_size)
    except ValueError as e:
        raise CheckpointError(f"tensor {name!r}: cannot quantize to int8: {e}") from e


def fused_int8(parts: list[tuple[str, Int8Weight | torch.Tensor]], device: torch.device) -> Int8Weight:
    """Stack the parts of one fused matrix (already int8, or float to quantize) along N, on ``device``.

    Float parts take the group size of any pre-quantized part, so that the rows can be stacked;
    otherwise DEFAULT_GROUP_SIZE (read at call time, so a measurement can change it).
    """
    groups = {w.group_size for _, w in parts if isinstance(w, Int8Weight)}
    group = groups.pop() if len(groups) == 1 else int8_ops.DEFAULT_GROUP_SIZE
    ints = [w if isinstance(w, Int8Weight) else quantize_checked(name, w, group) for name, w in parts]
    try:
        return Int8Weight.cat(ints).to(device)
    except ValueError as e:
        raise CheckpointError(f"cannot fuse {[n for n, _ in parts]}: {e}") from e


def weight_nbytes(w: torch.Tensor | Int8Weight) -> int:
    """Bytes a matmul with ``w`` reads."""
    return w.nbytes if isinstance(w, Int8Weight) else w.numel() * w.element_size()
