"""Evaluation datasets: reasoning-gym generators and JSONL files, as a list of ``Problem``.

A dataset spec is either

* a reasoning-gym task name, optionally with config overrides after a colon:
  ``chain_sum``, ``products:max_digits=1``,
  ``chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1``,
  ``basic_arithmetic:operators=+|-,allow_parentheses=false`` (list values separated by ``|``;
  values are coerced to the type of the config field). The task yields ``limit`` problems (or
  ``DEFAULT_TASK_SIZE``), generated deterministically from ``seed``;
* a path to a JSONL file (a spec that ends in ``.jsonl``/``.json`` or names an existing file),
  one JSON object per line, in GSM8K format (``question``, ``answer`` ending in
  ``#### <number>``; a plain single-line ``answer`` is accepted too) or MATH format
  (``problem`` and ``answer``, or ``solution`` containing a ``\\boxed{}``). Blank lines are
  ignored; a malformed line is skipped and reported as a ``SkippedLine`` naming the file and
  line, and the other lines still load. Files keep their order; ``limit`` takes the first
  problems and ``seed`` is not used.

``load_dataset_with_errors`` returns both the problems and the skipped lines;
``load_dataset`` returns the problems and emits one ``DatasetWarning`` per skipped line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from eager_core.errors import DatasetError, RequestError
from eager_core.eval.answers import last_boxed

DEFAULT_TASK_SIZE = 200
DEFAULT_PROMPT_TEMPLATE = (
    "{question}\n"
    "Please reason step by step, and put your final answer within \\boxed{}."
)


@dataclass
class Problem:
    """One evaluation item. ``id`` is unique within a loaded dataset and stable across runs."""

    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SkippedLine:
    """A JSONL line that could not be turned into a ``Problem``."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class DatasetWarning(UserWarning):
    """Emitted by ``load_dataset`` for each skipped JSONL line."""


@dataclass
class LoadedDataset:
    """Result of ``load_dataset_with_errors``: the problems and the lines that were skipped."""

    problems: list[Problem]
    skipped: list[SkippedLine]


def load_dataset(spec: str, limit: int | None = None, seed: int = 0,
                 **task_kwargs: Any) -> list[Problem]:
    """Problems from a reasoning-gym task or a JSONL file (see the module docstring).

    Skipped JSONL lines are reported as ``DatasetWarning``s; use ``load_dataset_with_errors``
    to get them as data. Raises ``DatasetError`` for an unknown task, a bad task config, a
    missing or unreadable file, or a file with no valid problem.
    """
    loaded = load_dataset_with_errors(spec, limit=limit, seed=seed, **task_kwargs)
    for skipped in loaded.skipped:
        warnings.warn(f"skipped {skipped}", DatasetWarning, stacklevel=2)
    return loaded.problems


def load_dataset_with_errors(spec: str, limit: int | None = None, seed: int = 0,
                             **task_kwargs: Any) -> LoadedDataset:
    """Like ``load_dataset``, but returns the skipped lines instead of warning about them.

    ``task_kwargs`` are reasoning-gym config fields; they override the same fields given in
    the spec string. They are rejected for JSONL files.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise DatasetError(f"dataset {spec!r}: limit must be a positive integer or None, got {limit!r}")
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError(f"dataset spec must be a task name or a JSONL path, got {spec!r}")
    spec = spec.strip()
    if _looks_like_path(spec):
        if task_kwargs:
            raise DatasetError(f"dataset {spec!r}: task options {sorted(task_kwargs)} only apply "
                               "to reasoning-gym tasks, not to files")
        return _load_jsonl(spec, limit)
    name, overrides = _parse_task_spec(spec)
    overrides.update(task_kwargs)
    return LoadedDataset(_load_task(name, overrides, limit or DEFAULT_TASK_SIZE, seed), [])


def build_prompt(problem: Problem, template: str | None = None) -> list[dict]:
    """Chat messages for ``problem``: one user turn, ``template`` with ``{question}`` filled.

    Only the ``{question}`` placeholder is substituted, so literal braces (``\\boxed{}``, LaTeX
    in the question) need no escaping. The default asks for the final answer in ``\\boxed{}``.
    """
    template = DEFAULT_PROMPT_TEMPLATE if template is None else template
    if "{question}" not in template:
        raise RequestError(f"prompt template must contain '{{question}}', got {template!r}")
    return [{"role": "user", "content": template.replace("{question}", problem.question)}]


# ---------------------------------------------------------------- reasoning-gym tasks


def _looks_like_path(spec: str) -> bool:
    # Task options may contain "/" (operators=+|/), so decide on the part before ":".
    if os.path.isfile(spec):
        return True
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec.partition(":")[0].strip()) is None


def _parse_task_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``"name:k=v,k2=v2"`` -> ``("name", {"k": "v", "k2": "v2"})`` (values still strings)."""
    name, _, options = spec.partition(":")
    overrides: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DatasetError(f"dataset spec {spec!r}: option {item!r} is not of the form key=value")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


def _coerce(task: str, key: str, value: Any, default: Any) -> Any:
    """Convert a spec-string value to the type of the config field's default."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError("expected true/false")
        if isinstance(default, int) or (default is None and value.lstrip("-").isdigit()):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            return type(default)(v for v in value.split("|") if v)
    except ValueError as exc:
        raise DatasetError(f"task {task!r}: option {key}={value!r} is not a valid "
                           f"{type(default).__name__} ({exc})") from exc
    return value


def _config_fields(name: str) -> dict[str, Any]:
    from reasoning_gym.factory import DATASETS

    if name not in DATASETS:
        close = difflib.get_close_matches(name, sorted(DATASETS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DatasetError(f"unknown dataset {name!r}: not a reasoning-gym task and not a JSONL "
                           f"file{hint}")
    config_cls = DATASETS[name][1]
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            defaults[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            defaults[f.name] = None
    return defaults


def _load_task(name: str, overrides: dict[str, Any], size: int, seed: int) -> list[Problem]:
    import reasoning_gym

    fields = _config_fields(name)
    config: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in ("size", "seed"):
            raise DatasetError(f"task {name!r}: set {key} with --limit/--seed, not in the spec")
        if key not in fields:
            raise DatasetError(f"task {name!r} has no option {key!r}; options: "
                               f"{', '.join(k for k in fields if k not in ('size', 'seed'))}")
        config[key] = _coerce(name, key, value, fields[key])
    try:
        data = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
        items = [data[i] for i in range(size)]
    except (AssertionError, TypeError, ValueError) as exc:
        raise DatasetError(f"task {name!r} rejected config {config}: {exc}") from exc
    problems = []
    for index, item in enumerate(items):
        meta = {"source": "reasoning_gym", "task": name, "seed": seed, "index": index,
                "config": dict(config), "metadata": item.get("metadata", {})}
        problems.append(Problem(id=f"{name}-s{seed}-{index}", question=str(item["question"]),
                                answer=str(item["answer"]).strip(), meta=meta))
    return problems


# ---------------------------------------------------------------- JSONL files


def _gsm8k_answer(raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise ValueError(f"'answer' must be a string or a number, got {type(raw).__name__}")
    text = str(raw)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    elif "\n" in text:
        raise ValueError("'answer' is a multi-line solution without a '#### <answer>' line")
    answer = text.strip().replace(",", "")
    if not answer:
        raise ValueError("'answer' is empty after '####'")
    return answer


def _math_answer(obj: dict) -> str:
    raw = obj.get("answer")
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError(f"'answer' must be a string or a number, got {type(raw).__name__}")
        if str(raw).strip():
            return str(raw).strip()
        raise ValueError("'answer' is empty")
    solution = obj.get("solution")
    if not isinstance(solution, str):
        raise ValueError("MATH-format line needs 'answer' or a 'solution' with \\boxed{}")
    boxed = last_boxed(solution)
    if boxed is None:
        raise ValueError("'solution' has no \\boxed{...} answer and there is no 'answer' field")
    return boxed


def _parse_line(obj: Any, path: str, lineno: int) -> Problem:
    """One JSON object -> Problem; raises ValueError with the reason when malformed."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    if "question" in obj:
        fmt, question = "gsm8k", obj["question"]
        if "answer" not in obj:
            raise ValueError("GSM8K-format line has 'question' but no 'answer'")
        answer = _gsm8k_answer(obj["answer"])
    elif "problem" in obj:
        fmt, question = "math", obj["problem"]
        answer = _math_answer(obj)
    else:
        raise ValueError(f"needs 'question' (GSM8K) or 'problem' (MATH); keys: {sorted(obj)}")
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"the {'question' if fmt == 'gsm8k' else 'problem'} must be a non-empty string")
    pid = obj.get("id", obj.get("unique_id"))
    pid = f"{os.path.basename(path)}:{lineno}" if pid is None else str(pid)
    meta = {"source": path, "line": lineno, "format": fmt}
    extra = {k: v for k, v in obj.items() if k not in ("question", "problem", "answer", "id")}
    if fmt == "gsm8k" and isinstance(obj["answer"], str) and "####" in obj["answer"]:
        extra["solution"] = obj["answer"].rsplit("####", 1)[0].strip()
    meta["fields"] = extra
    return Problem(id=pid, question=question, answer=answer, meta=meta)


def _loads(line: str) -> Any:
    """``json.loads`` for datasets: numbers keep their written form when a float cannot hold them
    (``1e400``, a 5,000-digit integer: Python refuses to convert integers past 4,300 digits), and
    ``NaN`` / ``Infinity``, which are not JSON, are refused with a clear reason."""
    def parse_int(s: str) -> int | str:
        return int(s) if len(s.lstrip("-")) <= 4000 else s

    def parse_float(s: str) -> float | str:
        x = float(s)
        return x if math.isfinite(x) else s

    def parse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows (write the answer as a string)")
    return json.loads(line, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)


def _load_jsonl(path: str, limit: int | None) -> LoadedDataset:
    if not os.path.exists(path):
        raise DatasetError(f"dataset file {path!r} does not exist (nor is it a reasoning-gym task)")
    try:
        with open(path, "rb") as fh:
            raw_lines = fh.read().split(b"\n")
    except OSError as exc:
        raise DatasetError(f"cannot read dataset file {path!r}: {exc}") from exc
    if raw_lines and raw_lines[0].startswith(b"\xef\xbb\xbf"):   # a UTF-8 byte order mark (some editors write one)
        raw_lines[0] = raw_lines[0][3:]
    problems: list[Problem] = []
    skipped: list[SkippedLine] = []
    seen_ids: dict[str, int] = {}
    for lineno, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:   # one bad line is skipped, not the whole file
            skipped.append(SkippedLine(path, lineno, f"not valid UTF-8 (byte {exc.start + 1} of the line)"))
            continue
        if not line.strip():
            continue
        try:
            obj = _loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(SkippedLine(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        except RecursionError:   # nested deeper than the parser's stack: one bad line, not a crash
            skipped.append(SkippedLine(path, lineno, "invalid JSON (nested too deeply)"))
            continue
        except ValueError as exc:   # NaN / Infinity constants (see _loads)
            skipped.append(SkippedLine(path, lineno, str(exc)))
            continue
        try:
            problem = _parse_line(obj, path, lineno)
        except ValueError as exc:
            skipped.append(SkippedLine(path, lineno, str(exc)))
            continue
        if problem.id in seen_ids:
            skipped.append(SkippedLine(path, lineno, f"duplicate id {problem.id!r} "
                                                     f"(first on line {seen_ids[problem.id]})"))
            continue
        seen_ids[problem.id] = lineno
        problems.append(problem)
    if not problems:
        detail = f"; first skipped line: {skipped[0]}" if skipped else " (the file is empty)"
        raise DatasetError(f"dataset file {path!r} has no valid problem{detail}")
    return LoadedDataset(problems[:limit] if limit else problems, skipped)
