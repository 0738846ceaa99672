"""Compatibility with other engines' APIs. ``install_vllm_alias()`` makes ``import vllm`` load
``eager_core.compat.vllm``, so a program written for vLLM's offline API runs here unchanged
(docs/compat.md says what is supported)."""

from __future__ import annotations

import sys


def install_vllm_alias() -> None:
    """Register eager_core under vLLM's module names: ``vllm``, ``vllm.outputs``,
    ``vllm.sampling_params``, and ``vllm.sequence`` / ``vllm.logprobs`` (for ``Logprob``).

    Nothing happens to an installed vLLM on disk; only this process's imports are redirected.
    """
    from eager_core.compat import vllm

    sys.modules["vllm"] = vllm
    sys.modules["vllm.outputs"] = vllm.outputs
    sys.modules["vllm.sampling_params"] = vllm.sampling_params
    sys.modules["vllm.sequence"] = vllm.outputs
    sys.modules["vllm.logprobs"] = vllm.outputs
