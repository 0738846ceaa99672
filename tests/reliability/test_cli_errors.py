"""The command-line tools on bad input: exit code 2 and one line on stderr, no traceback; with --debug
the traceback.

The main cases run as real subprocesses, the way a user runs them; they start together (each one
spends seconds importing torch). The remaining generate.py cases call its ``main`` through the same
``run_main`` wrapper in this process.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys

import pytest
from reliability_helpers import REPO

CASES = {   # name -> (tool, arguments); {ckpt} is the tiny checkpoint, {tmp} a fresh folder
    "missing-ckpt": ("generate.py", ["--ckpt", "{tmp}/nope", "--prompt", "hi"]),
    "bad-temperature": ("generate.py", ["--ckpt", "{ckpt}", "--prompt", "hi", "--temperature", "-1"]),
    "debug": ("generate.py", ["--ckpt", "{tmp}/nope", "--prompt", "hi", "--debug"]),
    "gguf-missing": ("convert_gguf.py", ["--gguf", "{tmp}/absent.gguf", "--out", "{tmp}/out"]),
}


@pytest.fixture(scope="module")
def runs(tiny_ckpt, tmp_path_factory) -> dict[str, tuple[int, str, str]]:
    tmp = tmp_path_factory.mktemp("cli")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")   # one thread each: the machine is shared
    procs = {}
    for name, (tool, args) in CASES.items():
        argv = [sys.executable, f"tools/{tool}", *[a.format(ckpt=tiny_ckpt, tmp=tmp) for a in args]]
        procs[name] = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, env=env)
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = (proc.returncode, out, err)
    return results


def _assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    for needle in needles:
        assert needle in err, err


def test_generate_missing_checkpoint(runs):
    _assert_one_line_error(*runs["missing-ckpt"], "checkpoint folder", "nope does not exist")


def test_generate_bad_temperature(runs):
    _assert_one_line_error(*runs["bad-temperature"], "SamplingParams.temperature=-1.0", "expected a finite number >= 0")


def test_generate_debug_shows_the_traceback(runs):
    code, _, err = runs["debug"]
    assert code == 1 and "Traceback" in err and "CheckpointError" in err


def test_convert_gguf_missing_file(runs):
    _assert_one_line_error(*runs["gguf-missing"], "absent.gguf", "does not exist")


# --- more generate.py cases, in process -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def generate_tool():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("generate_tool", REPO / "tools" / "generate.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(REPO / "tools"))


@pytest.mark.parametrize("args, stdin, needles", [
    (["--prompt", ""], "", ["empty prompt"]),
    ([], "  \n", ["empty prompt"]),   # no --prompt: read from stdin
    (["--prompt", "hi", "--mode", "eager", "--max-sequences", "0"], "", ["EagerParams.max_sequences=0"]),
    (["--prompt", "hi", "--top-p", "0"], "", ["SamplingParams.top_p=0.0", "(0, 1]"]),
], ids=["empty-prompt", "empty-stdin", "bad-eager-M", "bad-top-p"])
def test_generate_in_process_errors(generate_tool, tiny_ckpt, capsys, monkeypatch, args, stdin, needles):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = generate_tool.run_main(generate_tool.main, ["--ckpt", str(tiny_ckpt), *args])
    captured = capsys.readouterr()
    _assert_one_line_error(code, captured.out, captured.err, *needles)


def test_generate_in_process_good_input(generate_tool, tiny_ckpt, capsys):
    code = generate_tool.run_main(generate_tool.main, ["--ckpt", str(tiny_ckpt), "--prompt", "hi", "--max-tokens", "3",
                                                       "--temperature", "0", "--json"])
    assert code == 0 and '"finish_reason": "length"' in capsys.readouterr().out
