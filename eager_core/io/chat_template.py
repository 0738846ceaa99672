"""Rendering a chat template (Jinja2) the way transformers renders it.

Chat templates ship inside checkpoints, so they are untrusted code: they run in Jinja2's immutable
sandbox. The environment mirrors transformers' so the same template gives the same text:
``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter that keeps
non-ASCII characters and HTML unescaped, and the globals ``raise_exception``, ``strftime_now``,
``dict`` and ``namespace``. The template sees ``messages``, ``tools``, ``documents``,
``add_generation_prompt``, the special tokens (``bos_token``, ``eos_token``...) and any extra keyword.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from eager_core.errors import CheckpointError, RequestError


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML, which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _DictFactory:
    """``dict(...)`` and ``dict.fromkeys(...)`` for templates, without handing them the ``dict`` type itself."""

    def __call__(self, *args, **kwargs) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses underscore names, so a template cannot reach interpreter internals."""

    def __init__(*args, **kwargs):  # noqa: N805 (same signature trick as jinja2's Namespace)
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates may not set underscore attribute {name!r}")


@lru_cache(maxsize=16)
def compile_chat_template(source: str) -> jinja2.Template:
    """Compile ``source`` once (cached); a syntax error raises ``CheckpointError``."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _DictFactory()
    env.globals["namespace"] = _Namespace
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise CheckpointError(f"chat template has a syntax error at line {e.lineno}: {e.message}") from e


def _plain(value: object) -> object:
    """A copy made of plain JSON types, so the template can neither mutate nor reach the caller's objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    # Subclasses (enums, numpy scalars...) carry methods the sandbox does not know; strip to the base type.
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return f"<{type(value).__name__}>"


def render_chat_template(source: str, messages: list[dict], add_generation_prompt: bool = True,
                         special_tokens: dict[str, str] | None = None, **kwargs) -> str:
    """Render ``messages`` with the template ``source``.

    Messages must be dicts; keys whose value is None are dropped (as transformers does, since many
    templates print "None" otherwise). A template that fails to render, including one that calls
    ``raise_exception``, raises ``RequestError`` with the template's message.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise RequestError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be a dict with 'role' and 'content', got {type(message).__name__}")
    chat = [{k: _plain(v) for k, v in m.items() if v is not None} for m in messages]
    variables = {**(special_tokens or {}), **{k: _plain(v) for k, v in kwargs.items()}}
    variables.setdefault("tools", None)
    variables.setdefault("documents", None)
    template = compile_chat_template(source)
    try:
        return template.render(messages=chat, add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.exceptions.TemplateError as e:
        raise RequestError(f"chat template failed to render these messages: {e}") from e
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError) as e:
        # Template code is arbitrary: e.g. `'x' + message['content']` with non-string content.
        raise RequestError(f"chat template failed to render these messages: {type(e).__name__}: {e}") from e
