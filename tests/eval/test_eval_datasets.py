"""Dataset loaders: GSM8K and MATH JSONL fixtures, malformed lines, reasoning-gym tasks, prompts."""

import re
import warnings
from pathlib import Path

import pytest

from eager_core.errors import DatasetError, RequestError
from eager_core.eval.datasets import (DEFAULT_TASK_SIZE, DatasetWarning, Problem, build_prompt,
                                      load_dataset, load_dataset_with_errors)

FIXTURES = Path(__file__).parent / "fixtures"
EASY_CHAIN = "chain_sum:min_terms=2,max_terms=2,min_digits=1,max_digits=1"


def test_gsm8k_jsonl():
    problems = load_dataset(str(FIXTURES / "gsm8k_small.jsonl"))
    assert [p.answer for p in problems] == ["72", "1234", "-7"]  # after ####, commas removed
    assert problems[0].question.startswith("Natalia sold clips")
    assert problems[0].id == "gsm8k_small.jsonl:1"
    assert problems[0].meta["format"] == "gsm8k" and problems[0].meta["line"] == 1
    assert problems[0].meta["fields"]["solution"].endswith("altogether in April and May.")
    assert len({p.id for p in problems}) == 3


def test_math_jsonl_answer_field_and_boxed_solution():
    problems = load_dataset(str(FIXTURES / "math_small.jsonl"))
    assert [p.answer for p in problems] == ["\\frac{1}{2}", "\\frac{\\sqrt{3}}{2}", "1024"]
    assert problems[0].id == "test/algebra/1.json"  # MATH's unique_id is kept
    assert problems[2].id == "math_small.jsonl:3"
    assert all(p.meta["format"] == "math" for p in problems)


def test_malformed_lines_are_reported_with_line_numbers_and_the_rest_loads():
    path = str(FIXTURES / "malformed.jsonl")
    loaded = load_dataset_with_errors(path)
    assert [p.answer for p in loaded.problems] == ["5", "2", "42"]
    assert [p.meta["line"] for p in loaded.problems] == [1, 5, 9]
    assert [s.line for s in loaded.skipped] == [2, 4, 6, 7, 8]  # line 3 is blank: not an error
    reasons = {s.line: s.reason for s in loaded.skipped}
    assert "invalid JSON" in reasons[2]
    assert "no 'answer'" in reasons[4]
    assert "JSON object" in reasons[6]
    assert "####" in reasons[7]
    assert "boxed" in reasons[8]
    assert str(loaded.skipped[0]).startswith(f"{path}:2: ")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(load_dataset(path)) == 3
    assert [w.category for w in caught] == [DatasetWarning] * 5
    assert re.search(r"malformed\.jsonl:2: invalid JSON", str(caught[0].message))


def test_file_limit_takes_the_first_problems():
    problems = load_dataset(str(FIXTURES / "gsm8k_small.jsonl"), limit=2)
    assert [p.answer for p in problems] == ["72", "1234"]


def test_file_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no valid problem.*empty"):
        load_dataset(str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\nnot json\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: needs 'question'"):
        load_dataset(str(bad))
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "problem": "p", "answer": "1"}\n{"id": "a", "problem": "q", "answer": "2"}\n')
    loaded = load_dataset_with_errors(str(dup))
    assert len(loaded.problems) == 1 and "duplicate id" in loaded.skipped[0].reason
    with pytest.raises(DatasetError, match="only apply to reasoning-gym"):
        load_dataset(str(FIXTURES / "gsm8k_small.jsonl"), max_terms=2)


def test_task_is_seeded_and_reproducible():
    a = load_dataset("products", limit=20, seed=3)
    b = load_dataset("products", limit=20, seed=3)
    c = load_dataset("products", limit=20, seed=4)
    assert [(p.id, p.question, p.answer) for p in a] == [(p.id, p.question, p.answer) for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    assert len({p.id for p in a}) == 20 and a[0].id == "products-s3-0"
    assert a[0].meta["source"] == "reasoning_gym" and a[0].meta["task"] == "products"


def test_task_default_size():
    assert len(load_dataset("chain_sum")) == DEFAULT_TASK_SIZE


def test_task_config_override_in_spec():
    problems = load_dataset(EASY_CHAIN, limit=30, seed=0)
    for p in problems:
        expr = p.meta["metadata"]["expression"]
        terms = re.findall(r"\d+", expr)
        assert len(terms) == 2 and all(len(t) == 1 for t in terms), expr
        assert int(p.answer) == eval(expr)  # the answer key matches the expression
    assert problems[0].meta["config"] == {"min_terms": 2, "max_terms": 2,
                                          "min_digits": 1, "max_digits": 1}
    # The defaults go up to 6 terms of 4 digits, so the override did change something.
    default = load_dataset("chain_sum", limit=30, seed=0)
    assert max(len(p.meta["metadata"]["expression"]) for p in default) > 9


def test_task_kwargs_override_spec_and_list_values():
    problems = load_dataset("products:max_digits=3", limit=10, seed=0, max_digits=1)
    assert all(len(t) == 1 for p in problems for t in re.findall(r"\d+", p.meta["metadata"]["expression"]))
    # "/" inside an option must not make the spec look like a file path.
    problems = load_dataset("basic_arithmetic:operators=+|-,allow_parentheses=false,max_terms=2",
                            limit=10, seed=0)
    assert all(set(re.findall(r"[*/]", p.meta["metadata"]["expression"])) == set() for p in problems)
    assert load_dataset("basic_arithmetic:operators=*|/,max_terms=2", limit=2)[0].meta["task"] == \
        "basic_arithmetic"


@pytest.mark.parametrize("spec, message", [
    ("chain_su", "unknown dataset 'chain_su'.*did you mean chain_sum"),
    ("chain_sum:foo=1", "has no option 'foo'.*min_terms"),
    ("chain_sum:min_terms=two", "min_terms='two' is not a valid int"),
    ("chain_sum:min_terms=5,max_terms=2", "rejected config"),
    ("chain_sum:size=5", "--limit"),
    ("chain_sum:min_terms", "key=value"),
    ("basic_arithmetic:allow_parentheses=maybe", "allow_parentheses"),
])
def test_task_errors(spec, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec, limit=2)


def test_limit_must_be_positive():
    with pytest.raises(DatasetError, match="limit"):
        load_dataset("chain_sum", limit=0)


def test_build_prompt_default_and_custom_template():
    problem = Problem(id="x", question="What is $\\frac{1}{2}$ of {4}?", answer="2", meta={})
    messages = build_prompt(problem)
    assert len(messages) == 1 and messages[0]["role"] == "user"
    assert messages[0]["content"].startswith(problem.question)
    assert "\\boxed{}" in messages[0]["content"]
    custom = build_prompt(problem, "Q: {question}\nEnd with \\boxed{ANSWER}.")
    assert custom[0]["content"] == f"Q: {problem.question}\nEnd with \\boxed{{ANSWER}}."
    with pytest.raises(RequestError, match="question"):
        build_prompt(problem, "no placeholder")
