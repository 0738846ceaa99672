"""Answer extraction and checking for generated solutions.

Extraction (``extract_answer``) follows the paper: the content of the last ``\\boxed{...}`` with
brace matching. Small models rarely follow formats, so when there is no usable box we fall back,
in order, to a text that *is* a bare answer ("42", "\\frac{1}{2}"), an "Answer: 42" / "the answer
is 42" marker, and finally the last number in the text.

Checking (``is_correct``) uses ``math_verify`` (parse + verify) on the extracted answer, then an
exact numeric comparison as a fallback for the cases math_verify cannot parse. Invariants:
``extract_answer`` and ``is_correct`` never raise on any string input (junk gives ``None`` /
``False``), and they work from any thread (math_verify's signal-based timeouts are only enabled
on the main thread, where ``signal.alarm`` is allowed).
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

# Answers longer than this are compared by string/number only: sympy on long LaTeX can take
# seconds, and off the main thread math_verify runs without a timeout.
MAX_VERIFY_CHARS = 200
# Per-call budget for math_verify's parse and verify (whole seconds: signal.alarm granularity).
VERIFY_TIMEOUT_S = 3

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_NUMBER = (r"(?:(?<![\w)\]}])-)?(?<![\d.,])"
           r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?:[eE][+-]?\d+|/\d+)?(?!\d)")
_NUMBER_RE = re.compile(_NUMBER)
_MARKER_RE = re.compile(r"answer\**\s*(?:is\b|[:=])[\s*:=]*", re.IGNORECASE)
# A whole text that is just an answer: a plain number / fraction, or LaTeX without spaces.
_BARE_NUMBER_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+|/\d+)?")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACED_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?")  # SI style: 1 234
_FRAC_RE = re.compile(r"([+-]?)\\[dt]?frac\{([+-]?\d+)\}\{(\d+)\}")
# Scientific notation: 1.5e3 / 1.5E-3, or LaTeX / typed 1.5 \times 10^{3}, 1.5 × 10^3, 1.5*10^3.
_SCI_RE = re.compile(r"([+-]?\d+(?:\.\d+)?)(?:[eE]([+-]?\d+)|\s*(?:\\times|\\cdot|×|\*|x)\s*10\^\{?([+-]?\d+)\}?"
                     r"|\s*(?:\\times|×)\s*10\^\{([+-]?\d+)\})")
MAX_EXPONENT = 10_000   # beyond it a "number" is compared as text (its exact value would not fit in memory)
_TEXT_WRAP_RE = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")
# Power towers, huge exponents and big factorials make sympy evaluate for seconds or forever.
_EXPENSIVE_RE = re.compile(r"\^\s*\{[^}]*\^|\^\s*\{?\s*\d{4,}|\d{3,}\s*!|\*\*")


def _brace_content(text: str, start: int) -> tuple[str, int] | None:
    """Content of the ``{...}`` group opening at ``text[start]``, and the index after it.

    ``None`` when ``text[start]`` is not ``{`` or the group never closes (a truncated output).
    """
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last non-empty, properly closed ``\\boxed{...}`` (or ``\\fbox{...}``).

    Empty boxes are skipped because models often echo the instruction "put your answer in
    \\boxed{}" after the real answer. ``\\boxed 5`` (no braces) yields ``"5"``.
    """
    starts = sorted(m.start() for cmd in _BOX_COMMANDS for m in re.finditer(re.escape(cmd), text))
    for pos in reversed(starts):
        cmd_len = len("\\boxed") if text.startswith("\\boxed", pos) else len("\\fbox")
        i = pos + cmd_len
        if i < len(text) and (text[i].isalpha()):
            continue  # a longer command such as \boxedfoo
        while i < len(text) and text[i] == " ":
            i += 1
        group = _brace_content(text, i)
        if group is not None:
            content = group[0].strip()
        else:
            bare = re.match(r"[^\s${}]+", text[i:]) if i > pos + cmd_len else None
            content = bare.group(0) if bare else ""
        if content:
            return content
    return None


def _strip_wrappers(s: str) -> str:
    """Remove math delimiters, a trailing full stop and LaTeX spacing around an answer."""
    s = s.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].strip()
    s = s.rstrip(".").strip()
    return s.replace("\\!", "").replace("\\,", "").replace("{,}", ",")


def _bare_answer(text: str) -> str | None:
    """``text`` itself when it is nothing but an answer, else ``None``."""
    s = _strip_wrappers(text)
    if not s or len(s) > MAX_VERIFY_CHARS:
        return None
    if _BARE_NUMBER_RE.fullmatch(s) or _SCI_RE.fullmatch(s.rstrip(".")):
        return s.rstrip(".") if _SCI_RE.fullmatch(s.rstrip(".")) else s
    # LaTeX such as \frac{1}{2} or -\sqrt{3}: no spaces, no sentence, starts like math.
    if re.fullmatch(r"[+-]?\\[A-Za-z]+\{[^\s]*", s) and _brace_content(s, s.index("{")):
        return s
    return None


def extract_answer(text: str | None) -> str | None:
    """The final answer in a generated text, or ``None`` when there is none.

    Order: last ``\\boxed{}``; the whole text when it is a bare answer; the rest of the line
    after the last "answer is" / "Answer:" marker; the last number in the text. The returned
    string is as written (e.g. ``"1,234"``, ``"\\frac{1}{2}"``); ``is_correct`` normalises.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    bare = _bare_answer(text)
    if bare is not None:
        return bare
    for marker in reversed(list(_MARKER_RE.finditer(text))):
        rest = text[marker.end():].split("\n", 1)[0]
        bare = _bare_answer(rest)
        if bare is not None:
            return bare
        first = _NUMBER_RE.search(rest)
        if first is not None:
            return first.group(0)
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def to_number(answer: str) -> Fraction | None:
    """Exact value of a plain numeric answer ("-1,234", "1 234", "0.5", "3/4", "\\frac{1}{2}").

    ``None`` for anything else, including digits separated by arbitrary spaces ("2 3").
    """
    s = _strip_wrappers(_TEXT_WRAP_RE.sub(r"\1", answer))
    s = re.sub(r"^([+-])\s+", r"\1", s)
    if _THOUSANDS_RE.fullmatch(s) or _SPACED_THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "").replace(" ", "")
    frac = _FRAC_RE.fullmatch(s)
    if frac:
        sign, num, den = frac.groups()
        s = f"{sign}{num}/{den}"
    sci = _SCI_RE.fullmatch(s)
    if sci:   # 1.5e3, 1.5E+3, 1.5 \times 10^{3}, 1.5×10^3: exact, via Decimal
        mantissa, exponent = sci.group(1), int(sci.group(2) or sci.group(3) or sci.group(4))
        if abs(exponent) > MAX_EXPONENT:   # 10**(10**9) would take the machine's memory
            return None
        return Fraction(Decimal(mantissa)) * Fraction(10) ** exponent
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)(?:/(\d+))?", s)
    if not m:
        return None
    try:   # Decimal, not int(): Python refuses int() of strings past 4,300 digits
        value = Fraction(Decimal(m.group(1)))
        return value / int(Decimal(m.group(2))) if m.group(2) else value
    except (ArithmeticError, ValueError, ZeroDivisionError):
        return None


def canonical_answer(answer: str) -> str:
    """A key under which equal answers collide, for majority voting.

    Numbers map to their exact value ("1,234", "1234.0" -> "1234"; "0.5", "\\frac{1}{2}" ->
    "1/2"); anything else to the answer without delimiters and spaces.
    """
    value = to_number(answer)
    if value is not None:
        try:
            return str(value)
        except ValueError:   # past 4,300 digits Python will not print an int: key on the digits instead
            return _strip_wrappers(answer).replace(",", "").replace(" ", "")
    return _strip_wrappers(answer).replace(" ", "")


def _timeouts() -> int | None:
    # math_verify uses signal.alarm, which raises off the main thread; there we disable it and
    # rely on MAX_VERIFY_CHARS to keep sympy's work small.
    return VERIFY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _mv_parse(answer: str, timeout: int | None) -> list:
    from math_verify import parse  # imported lazily: sympy costs ~0.5 s

    # Wrapping in \boxed{} makes math_verify read the string as LaTeX (fractions, \sqrt...);
    # a second plain parse catches expressions its LaTeX reader rejects.
    parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout)
    return parsed if parsed else parse(answer, parsing_timeout=timeout)


@lru_cache(maxsize=4096)
def _mv_parse_cached(answer: str, timeout: int | None) -> tuple:
    return tuple(_mv_parse(answer, timeout))


def _math_verify_equal(pred: str, gold: str) -> bool:
    """math_verify's verdict (False on any failure); the caller has bounded both strings."""
    from math_verify import verify
    from math_verify.errors import TimeoutException  # a BaseException, not an Exception

    timeout = _timeouts()
    try:
        gold_parsed = list(_mv_parse_cached(gold, timeout))
        pred_parsed = _mv_parse(pred, timeout)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout))
    except (Exception, TimeoutException):  # noqa: BLE001 - sympy fails in many ways on junk
        return False


def is_correct(prediction: str | None, gold: str) -> bool:
    """Whether ``prediction`` (a full generated text or an extracted answer) matches ``gold``.

    The answer is extracted with ``extract_answer`` (which returns a bare answer unchanged),
    compared with math_verify, and if that says no, compared exactly as numbers. Never raises:
    unparsable input or any internal error gives ``False``.
    """
    try:
        if not isinstance(gold, str) or not gold.strip():
            return False
        pred = extract_answer(prediction)
        if pred is None:
            return False
        gold_s = _strip_wrappers(gold)
        pred_s = _strip_wrappers(pred)
        if pred_s == gold_s and pred_s:
            return True
        if all(len(x) <= MAX_VERIFY_CHARS and not _EXPENSIVE_RE.search(x) for x in (pred_s, gold_s)):
            if _math_verify_equal(pred_s, gold_s):
                return True
        pred_num, gold_num = to_number(pred_s), to_number(gold_s)
        return pred_num is not None and pred_num == gold_num
    except Exception:  # noqa: BLE001 - the contract is "junk is wrong", never a crash mid-run
        return False
