"""Crash-safe result files: atomic JSON writes and a resumable append-only JSONL log.

Invariants:
* ``write_json_atomic`` either leaves the old file untouched or replaces it with the complete
  new one (temp file in the same folder, fsync, ``os.replace``); never a half-written file.
* ``JsonlLog`` appends one record per line and fsyncs each line before ``append`` returns, so
  a record that was reported written survives a crash. On reopen, only the tail after the
  last complete line can be damaged (an interrupted write): it is cut off and reported in
  ``dropped_tail``; every complete record is kept and its key is in ``done_keys``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, IO

from eager_core.errors import EagerError

DEFAULT_KEY_FIELDS = ("prompt_id", "method", "setting")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and torch tensors expose item()/tolist(); paths and dataclasses are
    # common in run parameters. Anything else is a bug in the caller and should fail loudly.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform/filesystem; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON (no NaN/Infinity) to ``path`` atomically.

    Serialisation happens before anything touches the disk, so an unserialisable object
    raises (``TypeError``/``ValueError``) and leaves any existing file as it was.
    """
    text = json.dumps(obj, indent=indent, default=_json_default, allow_nan=False, ensure_ascii=False)
    write_atomic(path, lambda fh: fh.write((text + "\n").encode("utf-8")), suffix=".json")


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object], suffix: str = "") -> None:
    """Write a file atomically: ``write(fh)`` fills a temp file in the same folder, which is fsynced
    and renamed over ``path``. On any error (interrupt included) the old file is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; a results file should read like any other
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _key_part(value: Any) -> str:
    # Settings are often dicts ({"theta": 2.0, "M": 8}); canonical JSON makes them hashable
    # and independent of key order.
    return json.dumps(value, sort_keys=True, default=_json_default)


def record_key(record: dict, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS) -> tuple[str, ...]:
    """The resume key of ``record``: its ``key_fields`` values in canonical JSON."""
    missing = [f for f in key_fields if f not in record]
    if missing:
        raise KeyError(f"record lacks key field(s) {missing}; has {sorted(record)}")
    return tuple(_key_part(record[f]) for f in key_fields)


class JsonlLog:
    """Append-only JSONL file of result records that can be resumed after an interruption.

    ``JsonlLog(path)`` reads what is already there (``records``, ``done_keys``), cuts off a
    damaged last line (``dropped_tail`` holds its bytes, empty if none), and opens the file for
    appending. A damaged line *before* the last one is not an interruption but corruption, and
    raises ``EagerError`` naming the line. Appending a record whose key is already done raises
    ``ValueError``, so a resumed run cannot count a prompt twice.
    """

    def __init__(self, path: str | os.PathLike, key_fields: Sequence[str] = DEFAULT_KEY_FIELDS):
        self.path = os.fspath(path)
        self.key_fields = tuple(key_fields)
        self.records: list[dict] = []
        self.done_keys: set[tuple[str, ...]] = set()
        self.dropped_tail = b""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        if os.path.exists(self.path):
            self._recover()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _recover(self) -> None:
        with open(self.path, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        good_end = 0  # byte offset just after the last good line
        offset = 0
        missing_newline = False
        for index, raw in enumerate(lines):
            is_last = index == len(lines) - 1
            end = offset + len(raw) + (0 if is_last else 1)
            if raw.strip():
                try:
                    record = json.loads(raw.decode("utf-8"))
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                    key = record_key(record, self.key_fields)
                except (ValueError, UnicodeDecodeError, KeyError) as exc:
                    if any(rest.strip() for rest in lines[index + 1:]):
                        raise EagerError(f"{self.path}:{index + 1}: corrupt record in the middle of "
                                         f"the results log ({exc}); fix or remove that line") from exc
                    break  # the interrupted last write: everything from here is dropped
                # A complete object lacking only its newline (the write stopped right after
                # the "}"): keep it and restore the newline so the next append starts a line.
                missing_newline = is_last
                self.records.append(record)
                self.done_keys.add(key)
            good_end = end
            offset = end
        self.dropped_tail = data[good_end:]
        if self.dropped_tail:
            os.truncate(self.path, good_end)
        if missing_newline:
            with open(self.path, "ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())

    def is_done(self, *key_values: Any) -> bool:
        """Whether a record with these key values (in ``key_fields`` order) is in the log."""
        if len(key_values) != len(self.key_fields):
            raise ValueError(f"is_done expects {len(self.key_fields)} values "
                             f"({', '.join(self.key_fields)}), got {len(key_values)}")
        return tuple(_key_part(v) for v in key_values) in self.done_keys

    def append(self, record: dict) -> None:
        """Write ``record`` as one line and fsync it; its key becomes done."""
        key = record_key(record, self.key_fields)
        if key in self.done_keys:
            raise ValueError(f"{self.path}: a record with key {key} is already written")
        line = json.dumps(record, default=_json_default, allow_nan=False, ensure_ascii=False)
        self._fh.write(line + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.records.append(record)
        self.done_keys.add(key)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "JsonlLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
