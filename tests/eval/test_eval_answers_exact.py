"""Answer extraction and checking at their edges, each pinned by an exact value: box syntax at the end
of a text, delimiters and LaTeX spacing, scientific notation, size limits, numbers too long to print,
and the never-raise contract when a dependency fails."""

from __future__ import annotations

import threading
from fractions import Fraction

import pytest

from eager_core.eval import answers
from eager_core.eval.answers import canonical_answer, extract_answer, is_correct, last_boxed, to_number


@pytest.mark.parametrize("text,expected", [
    ("\\boxed 5", "5"),                         # no braces: the next token
    ("\\boxed {12}+3", "12"),                   # a space before the braces
    ("\\boxed   {x+1}", "x+1"),
    ("\\boxed5", None),                         # no space, no brace: not a box
    ("\\boxed 5 and {7}", "5"),                 # a later brace group is not the box's
    ("\\boxed{2} then \\boxedfoo{1}", "2"),     # \boxedfoo is another command, skipped
    ("at the end \\boxed", None),               # nothing after the command
    ("at the end \\boxed   ", None),
    ("\\fbox{a{b}c}", "a{b}c"),
])
def test_last_boxed_syntax(text, expected):
    assert last_boxed(text) == expected


def test_brace_content_returns_the_group_and_the_index_after_it():
    assert answers._brace_content("a{b{c}}d", 1) == ("b{c}", 7)
    assert answers._brace_content("a{b", 1) is None and answers._brace_content("ab", 1) is None
    assert answers._brace_content("ab", 2) is None


@pytest.mark.parametrize("text,expected", [
    ("+5", "+5"),                                          # a bare answer keeps its sign as written
    ("1.5 \\times 10^{3}", "1.5 \\times 10^{3}"),          # scientific notation is one bare answer
    ("Answer: none\n7 apples and 3", "3"),                 # a marker reads the rest of its own line only
    ("Answer: 5\nthen 7", "5"),
])
def test_extract_answer_cases(text, expected):
    assert extract_answer(text) == expected


NUMBERS = [
    ("$$1,234$$", 1234), ("\\(5\\)", 5), ("\\[5\\]", 5), ("$-0.5$", Fraction(-1, 2)), ("5.", 5),
    ("1\\,234", 1234), ("1\\!234", 1234), ("1{,}234", 1234), ("\\text{5}", 5), ("\\mathrm{12}", 12),
    ("- 5", -5), ("+ 3/4", Fraction(3, 4)),
    ("1.5e3", 1500), ("2.5E-2", Fraction(1, 40)), ("1.5 \\times 10^{3}", 1500), ("2×10^3", 2000),
    ("3 \\cdot 10^{-1}", Fraction(3, 10)), ("1e10000", 10 ** 10000),
]


@pytest.mark.parametrize("text,value", NUMBERS, ids=[text for text, _ in NUMBERS])   # 10**10000 has no short str
def test_to_number_exact_values(text, value):
    assert to_number(text) == value


@pytest.mark.parametrize("text", ["1e10001", "$", "2 3", "x"])
def test_to_number_refuses(text):
    assert to_number(text) is None


def test_only_full_stops_are_trimmed():
    assert canonical_answer("TAX.") == "TAX"
    assert extract_answer("2e5X") == "2e5"            # a number glued to a letter is not a bare answer
    assert not is_correct("\\boxed{AX}", "A")


def test_single_dollar_is_not_a_pair_of_delimiters():
    assert canonical_answer("$") == "$"
    assert canonical_answer("$$") == ""


def test_canonical_answer_of_numbers_too_long_to_print():
    # 4,501 digits: Python refuses str() of such an int, so the key is the digits without separators
    digits = "1" + "000" * 1500
    assert canonical_answer("1" + ",000" * 1500) == digits == canonical_answer("1" + " 000" * 1500)
    assert canonical_answer("1e4500") == "1e4500"
    assert canonical_answer("1.5e3") == "1500" == canonical_answer("1,500")


def test_bare_answers_are_limited_in_length():
    assert answers._bare_answer("1" * answers.MAX_VERIFY_CHARS) == "1" * answers.MAX_VERIFY_CHARS
    assert answers._bare_answer("1" * (answers.MAX_VERIFY_CHARS + 1)) is None
    assert answers.MAX_VERIFY_CHARS == 200


def test_math_verify_sees_answers_up_to_the_limit_only(monkeypatch):
    asked = []
    monkeypatch.setattr(answers, "_math_verify_equal", lambda pred, gold: asked.append(len(pred)) or False)
    assert not is_correct("\\boxed{%s}" % ("a" * 200), "b")
    assert not is_correct("\\boxed{%s}" % ("a" * 201), "b")
    assert asked == [200]


def test_math_verify_budget_only_on_the_main_thread():
    assert answers._timeouts() == 3 == answers.VERIFY_TIMEOUT_S
    seen = []
    worker = threading.Thread(target=lambda: seen.append(answers._timeouts()))
    worker.start()
    worker.join()
    assert seen == [None]


def test_math_verify_verdicts_are_booleans():
    assert answers._math_verify_equal("\\frac{1}{2}", "0.5") is True
    assert answers._math_verify_equal("}", "5") is False       # nothing parsed
    assert answers._math_verify_equal("6", "5") is False


def test_a_failing_math_verify_is_a_wrong_answer(monkeypatch):
    import math_verify

    def broken(*args, **kwargs):
        raise RuntimeError("sympy exploded")
    monkeypatch.setattr(math_verify, "verify", broken)
    assert answers._math_verify_equal("x+1", "y") is False
    assert is_correct("\\boxed{x+1}", "y") is False
    assert is_correct("\\boxed{2}", "2.0") is True              # the exact-number fallback still decides


def test_is_correct_never_raises_and_says_false(monkeypatch):
    def broken(text):
        raise RuntimeError("bug")
    monkeypatch.setattr(answers, "extract_answer", broken)
    assert is_correct("\\boxed{5}", "5") is False


def test_scientific_notation_is_checked_by_value():
    assert is_correct("\\boxed{1.5 \\times 10^{3}}", "1500")
    assert is_correct("so it is 2.5e-2", "0.025")
