"""eager_core: a small, readable PyTorch inference engine with native entropy-aware branching."""

from eager_core.errors import CheckpointError, ConfigError, DatasetError, EagerError, RequestError

__all__ = ["EagerError", "CheckpointError", "ConfigError", "RequestError", "DatasetError",
           "LLM", "LLMEngine", "SamplingParams", "EagerParams", "RequestOutput", "CompletionOutput",
           "EngineArgs", "RunStats", "Decision", "StepController"]

_LAZY = {
    "LLM": ("eager_core.llm", "LLM"),
    "LLMEngine": ("eager_core.engine.llm_engine", "LLMEngine"),
    "EngineArgs": ("eager_core.engine.engine_args", "EngineArgs"),
    "SamplingParams": ("eager_core.sampling_params", "SamplingParams"),
    "EagerParams": ("eager_core.eager.params", "EagerParams"),
    "RequestOutput": ("eager_core.engine.outputs", "RequestOutput"),
    "CompletionOutput": ("eager_core.engine.outputs", "CompletionOutput"),
    "RunStats": ("eager_core.engine.stats", "RunStats"),
    "Decision": ("eager_core.engine.controller", "Decision"),
    "StepController": ("eager_core.engine.controller", "StepController"),
}


def __getattr__(name: str):
    # Lazy so that `import eager_core.errors` (used by the loaders) never drags in torch models.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(name)
