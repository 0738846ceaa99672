"""Atomic JSON writes and the resumable JSONL results log."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from eager_core.errors import EagerError
from eager_core.eval.io_utils import JsonlLog, write_json_atomic

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rec(pid, method="eager", theta=2.0, **extra):
    return {"prompt_id": pid, "method": method, "setting": {"theta": theta, "M": 8}, **extra}


def test_write_json_atomic_roundtrip_and_numpy(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json_atomic(path, {"a": 1, "b": np.float32(0.5), "c": np.arange(3), "d": tmp_path})
    assert json.loads(path.read_text()) == {"a": 1, "b": 0.5, "c": [0, 1, 2], "d": str(tmp_path)}
    assert os.listdir(path.parent) == ["results.json"]


def test_write_json_atomic_failure_keeps_old_file(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"bad": math.nan})  # strict JSON: no NaN
    assert json.loads(path.read_text()) == {"ok": True}
    assert os.listdir(tmp_path) == ["results.json"]


def test_log_append_and_resume(tmp_path):
    path = tmp_path / "generations.jsonl"
    with JsonlLog(path) as log:
        log.append(_rec("p0", answers=["1"]))
        log.append(_rec("p1"))
        with pytest.raises(ValueError, match="already written"):
            log.append(_rec("p1"))
    log = JsonlLog(path)
    assert [r["prompt_id"] for r in log.records] == ["p0", "p1"]
    assert log.records[0]["answers"] == ["1"]
    # Setting dicts match regardless of key order; other settings are not done.
    assert log.is_done("p1", "eager", {"M": 8, "theta": 2.0})
    assert not log.is_done("p1", "eager", {"M": 8, "theta": 2.4})
    assert not log.is_done("p2", "eager", {"M": 8, "theta": 2.0})
    assert log.dropped_tail == b""
    log.close()
    with pytest.raises(KeyError):
        JsonlLog(tmp_path / "other.jsonl").append({"prompt_id": "p0"})


def test_truncated_last_line_is_dropped_and_appends_continue(tmp_path):
    path = tmp_path / "generations.jsonl"
    with JsonlLog(path) as log:
        for i in range(3):
            log.append(_rec(f"p{i}"))
    full = path.read_bytes()
    partial = json.dumps(_rec("p3")).encode()[:25]
    path.write_bytes(full + partial)  # a write interrupted mid-line
    with JsonlLog(path) as log:
        assert log.dropped_tail == partial
        assert len(log.records) == 3 and not log.is_done("p3", "eager", {"theta": 2.0, "M": 8})
        log.append(_rec("p3"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["prompt_id"] for line in lines] == ["p0", "p1", "p2", "p3"]


def test_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(_rec("p0")) + "\n" + json.dumps(_rec("p1")))
    with JsonlLog(path) as log:
        assert log.dropped_tail == b"" and len(log.records) == 2
        log.append(_rec("p2"))
    assert [json.loads(x)["prompt_id"] for x in path.read_text().splitlines()] == ["p0", "p1", "p2"]


def test_corrupt_middle_line_raises_with_line_number(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps(_rec("p0")) + "\n{broken\n" + json.dumps(_rec("p2")) + "\n")
    with pytest.raises(EagerError, match=r"g\.jsonl:2: corrupt record"):
        JsonlLog(path)


def test_records_survive_a_killed_process(tmp_path):
    # Each append is fsynced before returning: a process that dies abruptly loses nothing
    # it reported written.
    path = tmp_path / "g.jsonl"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {REPO!r})
        from eager_core.eval.io_utils import JsonlLog
        log = JsonlLog({str(path)!r})
        for i in range(5):
            log.append({{"prompt_id": f"p{{i}}", "method": "parallel", "setting": {{"M": 8}}}})
        log._fh.write('{{"prompt_id": "p5", "meth')
        log._fh.flush()
        os._exit(1)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 1
    with JsonlLog(path) as log:
        assert [r["prompt_id"] for r in log.records] == [f"p{i}" for i in range(5)]
        assert log.dropped_tail.startswith(b'{"prompt_id": "p5"')
