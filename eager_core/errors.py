"""One error family for the whole project.

Every error a user can cause (bad checkpoint, bad config, bad request) is an ``EagerError``
subclass whose message names the file, tensor, field or parameter at fault and what was
expected. Command-line tools catch ``EagerError`` and print its message on one line
(exit code 2); anything else is a bug and keeps its traceback.
"""


class EagerError(Exception):
    """Base class of every error this project raises on purpose."""


class CheckpointError(EagerError):
    """A checkpoint folder, weight file, GGUF file or tokenizer is missing or malformed."""


class ConfigError(EagerError):
    """A model config is malformed, unsupported or inconsistent with the weights."""


class RequestError(EagerError):
    """A generation request or its parameters are invalid (empty prompt, bad temperature...)."""


class DatasetError(EagerError):
    """An evaluation dataset cannot be read."""
