"""The public boundary's checks, written once: every entry point (SamplingParams, EagerParams,
EngineArgs / LLM, LLMEngine.add_request, LLM.eager, the CLIs, the server) validates with these.

Rules they enforce, for every field:
- the type is the one documented: ``True`` is not a number, ``"yes"`` is not a bool, a string is
  not a list (it would be split into characters);
- numbers are finite unless said otherwise, and within their range; integers of any size are
  compared exactly (Python ints), so a value beyond int64 is refused by its range, never by an
  overflow deep inside torch;
- the message names the field as the caller spelled it and says what was expected, on one line.

Text that is not valid Unicode (lone surrogates, from ``surrogateescape``-decoded argv or a Python
string) is *replaced*, not refused: ``clean_text`` turns every such code point into U+FFFD, the
same thing a UTF-8 decoder does with invalid bytes, so the tokenizer never sees it.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable

from eager_core.errors import EagerError


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_int(err: type[EagerError], name: str, x: Any, lo: int | None = None, hi: int | None = None,
              optional: bool = False) -> None:
    """An integer in [lo, hi] (either bound may be None), or None when ``optional``."""
    if optional and x is None:
        return
    if not is_int(x) or (lo is not None and x < lo) or (hi is not None and x > hi):
        raise err(f"{name}={_show(x)}: expected {_int_range(lo, hi)}{' or None' if optional else ''}")


def check_number(err: type[EagerError], name: str, x: Any, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, optional: bool = False, what: str | None = None) -> None:
    """A finite number in [lo, hi] (``lo_open``: (lo, hi]), or None when ``optional``."""
    if optional and x is None:
        return
    ok = is_number(x) and math.isfinite(x)
    if ok and lo is not None:
        ok = x > lo if lo_open else x >= lo
    if ok and hi is not None:
        ok = x <= hi
    if not ok:
        raise err(f"{name}={_show(x)}: expected {what or _number_range(lo, hi, lo_open)}")


def check_bool(err: type[EagerError], name: str, x: Any) -> None:
    if not isinstance(x, bool):
        raise err(f"{name}={_show(x)}: expected True or False")


def check_choice(err: type[EagerError], name: str, x: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if not isinstance(x, str) or x not in choices:
        raise err(f"{name}={_show(x)}: expected one of {', '.join(choices)}")


def check_list(err: type[EagerError], name: str, x: Any, item_ok: Callable[[Any], bool], what: str) -> list:
    """A list or tuple (never a string, dict or set) whose every item passes ``item_ok``."""
    if not isinstance(x, (list, tuple)) or not all(item_ok(v) for v in x):
        raise err(f"{name}={_show(x)}: expected {what}")
    return list(x)


def check_callable(err: type[EagerError], name: str, x: Any, optional: bool = True) -> None:
    if (x is None and not optional) or (x is not None and not callable(x)):
        raise err(f"{name} is a {type(x).__name__}: expected a function{' or None' if optional else ''}")


_SURROGATES = re.compile("[\ud800-\udfff]")


def named_arguments(err: type[EagerError]):
    """Class decorator for a parameters dataclass: an unknown or extra argument raises ``err`` naming
    it (a vLLM field this engine does not have, a typo), not a ``TypeError`` from ``__init__``."""
    def wrap(cls):
        init = cls.__init__
        fields = list(cls.__dataclass_fields__)

        def __init__(self, *args, **kwargs):
            unknown = sorted(set(kwargs) - set(fields))
            if unknown:
                raise err(f"{cls.__name__} has no field {', '.join(unknown)} (its fields: {', '.join(fields)})")
            if len(args) > len(fields):
                raise err(f"{cls.__name__} takes at most {len(fields)} arguments, got {len(args)}")
            init(self, *args, **kwargs)
        __init__.__doc__, __init__.__wrapped__ = init.__doc__, init
        cls.__init__ = __init__
        return cls
    return wrap


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (so it is valid Unicode, encodable as
    UTF-8). A byte that was not UTF-8 in argv arrives as one surrogate (``surrogateescape``) and
    becomes one U+FFFD, as a UTF-8 decoder with ``errors="replace"`` would make it."""
    return _SURROGATES.sub("\ufffd", text)


def _show(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 60 else s[:57] + "..."   # a 5,000-digit number must not flood the message


def _int_range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer in [{lo}, {hi}]"
    if lo is not None:
        return f"an integer >= {lo}"
    if hi is not None:
        return f"an integer <= {hi}"
    return "an integer"


def _number_range(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"a number in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"a finite number {'>' if lo_open else '>='} {lo}"
    return "a finite number"
