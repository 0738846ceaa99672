"""eager_core: a small, readable PyTorch inference engine with native entropy-aware branching."""

from eager_core.errors import CheckpointError, ConfigError, DatasetError, EagerError, RequestError

__all__ = ["EagerError", "CheckpointError", "ConfigError", "RequestError", "DatasetError",
           "LLM", "SamplingParams", "EagerParams"]


def __getattr__(name: str):
    # Lazy so that `import eager_core.errors` (used by the loaders) never drags in torch models.
    if name == "LLM":
        from eager_core.llm import LLM
        return LLM
    if name == "SamplingParams":
        from eager_core.sampling_params import SamplingParams
        return SamplingParams
    if name == "EagerParams":
        from eager_core.eager.params import EagerParams
        return EagerParams
    raise AttributeError(name)
