"""entropy_gate: EAGer's per-step decision in one fused call.

For logits [B, V] it computes, per row and in one pass over the row, the full entropy, the top-k
entropy, the two most likely tokens and the branch decision (see EntropyGateResult). Dispatch by
device: the compiled CPU kernel ("cpp") or CUDA kernel ("cuda") of eager_core._C when built,
otherwise the PyTorch reference ("torch", with a one-time warning). EAGER_CORE_DISABLE_EXT=1
forces the reference (read at every call).
"""

from __future__ import annotations

import torch

from eager_core.errors import EagerError, RequestError
from eager_core.ops._extension import load_extension, resolve_backend
from eager_core.ops.entropy_reference import entropy_gate_reference
from eager_core.ops.entropy_result import EntropyGateResult

KINDS = ("topk", "full")
MAX_RETURN_TOPK = 32   # EG_MAX_OUT_K in csrc/entropy_gate.h: the kernels' lists hold this many
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check(logits: torch.Tensor, threshold: float | torch.Tensor, top_k: int, kind: str,
           return_topk: int) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise EagerError(f"entropy_gate: logits must be a [B, V] tensor, got {shape}")
    if logits.dtype not in _DTYPES:
        raise EagerError(f"entropy_gate: logits must be float32, bfloat16 or float16, got {logits.dtype}")
    if logits.shape[1] < 1:
        raise EagerError(f"entropy_gate: logits {tuple(logits.shape)} have no vocabulary column")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise RequestError(f"entropy_gate: top_k must be an int >= 1, got {top_k!r}")
    if isinstance(return_topk, bool) or not isinstance(return_topk, int) or not 0 <= return_topk <= MAX_RETURN_TOPK:
        raise RequestError(f"entropy_gate: return_topk must be an int in [0, {MAX_RETURN_TOPK}], got {return_topk!r}")
    if kind not in KINDS:
        raise RequestError(f"entropy_gate: kind must be one of {KINDS}, got {kind!r}")
    if isinstance(threshold, torch.Tensor):
        if threshold.dim() > 1 or (threshold.dim() == 1 and threshold.shape[0] != logits.shape[0]):
            raise RequestError(f"entropy_gate: threshold tensor must be a scalar or [B] = "
                               f"[{logits.shape[0]}], got {tuple(threshold.shape)}")
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise RequestError(f"entropy_gate: threshold must be a float or a [B] tensor, got {threshold!r}")


def entropy_gate(
    logits: torch.Tensor,
    threshold: float | torch.Tensor,
    top_k: int = 20,
    kind: str = "topk",
    return_topk: int = 0,
) -> EntropyGateResult:
    """Entropy, top-k entropy, top-2 tokens and the branch decision of each row of `logits`.

    logits    [B, V] float32 / bfloat16 / float16, on CPU or CUDA; its last dimension need
              not be contiguous (a copy is made if it is not)
    threshold a float, or a 0-d or [B] tensor: branch = entropy of `kind` > threshold
    top_k     tokens kept for entropy_topk (top_k >= V means the whole vocabulary)
    kind      "topk" (branch on entropy_topk, the EAGer paper's choice) or "full"
    return_topk  how many of the row's most likely tokens to return with their log-probabilities
              (topk_ids / topk_logprobs, 0 .. MAX_RETURN_TOPK): the kernel keeps that list during
              its one pass anyway, so logprobs and DeepConf's confidence need no second pass

    Raises EagerError for malformed logits, RequestError for bad top_k / kind / threshold.
    """
    _check(logits, threshold, top_k, kind, return_topk)
    if resolve_backend(logits.device) == "torch":
        return entropy_gate_reference(logits, threshold, top_k, kind, return_topk=return_topk)
    load_extension()  # registers torch.ops.eager_core
    if isinstance(threshold, torch.Tensor):
        thresholds = threshold.to(device=logits.device, dtype=torch.float32).reshape(-1)
        thresholds = thresholds.expand(logits.shape[0]).contiguous()
        scalar = 0.0
    else:
        thresholds, scalar = None, float(threshold)
    outs = torch.ops.eager_core.entropy_gate(logits, thresholds, scalar, int(top_k), kind == "topk",
                                             int(return_topk))
    return EntropyGateResult(*outs)
