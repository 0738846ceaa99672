"""vLLM's offline API, served by eager_core: the names a vLLM program imports, in one module.

    import eager_core.compat; eager_core.compat.install_vllm_alias()
    from vllm import LLM, SamplingParams          # now eager_core's

The classes are eager_core's own (they already use vLLM's names and meanings): ``LLM`` takes
vLLM's constructor arguments (``model=``, ``tokenizer=``, ``dtype="auto"``, ``seed``,
``gpu_memory_utilization``, ...), ``generate(prompts, sampling_params, use_tqdm=...)`` takes text,
``{"prompt": ...}`` / ``{"prompt_token_ids": ...}`` prompts and one or a list of SamplingParams,
and outputs carry ``logprobs`` / ``cumulative_logprob`` / ``prompt_logprobs`` with vLLM's meaning.
"""

from __future__ import annotations

from eager_core import sampling_params
from eager_core.engine import outputs
from eager_core.engine.engine_args import EngineArgs
from eager_core.engine.llm_engine import LLMEngine
from eager_core.engine.outputs import CompletionOutput, Logprob, RequestOutput
from eager_core.llm import LLM
from eager_core.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob", "LLMEngine", "EngineArgs",
           "outputs", "sampling_params"]
