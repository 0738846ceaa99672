"""A fuzzer of the command-line tools: random flags and values for tools/generate.py and tools/eval.py,
run as real subprocesses (the way a user runs them). Every run ends with exit code 0 or 2 and never
prints a traceback; never exit code 1 (a bug) or a signal. The cases are drawn from a seeded
stream, so a failure names a reproducible command line.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from reliability_helpers import REPO

VALUES = ["0", "1", "-1", "2", "0.5", "1e-300", "1e308", "nan", "inf", "-inf", "9" * 40, "", "x", "1,2", "a\udcffb"]
GENERATE_FLAGS = {   # flag -> extra candidate values that are valid for it
    "--temperature": ["0", "0.7"], "--top-k": ["0", "5"], "--top-p": ["0.9", "1"], "--min-p": ["0.1"],
    "--max-tokens": ["2", "3"], "-n": ["1", "2"], "--seed": ["3", str(2**70)], "--theta": ["0.5", "2.2"],
    "--max-sequences": ["2", "300"], "--mode": ["sample", "eager", "parallel"], "--threads": ["1"],
    "--num-kv-blocks": ["64", str(10**15)], "--dtype": ["float32", "bfloat16"], "--method": ["eager-adapt"],
    "--prompt": ["hi", "a\udcffb"], "--output": ["{tmp}/o.json", "/proc/x/o.json", "{tmp}"], "--json": None,
    "--stats": None, "--chat": None, "--no-prefix-caching": None,
}
EVAL_FLAGS = {
    "--limit": ["2"], "--seed": ["1"], "--methods": ["parallel", "eager-init", "beam"], "--theta": ["2.5", "x,1"],
    "--max-sequences": ["2", "0"], "--temperature": ["0.6"], "--max-tokens": ["3"], "--top-k-entropy": ["5"],
    "--out": ["{tmp}/ev", "/proc/x/ev"], "--threads": ["1"], "--num-kv-blocks": ["64"], "--no-progress": None,
}
CASES_PER_TOOL = int(os.environ.get("FUZZ_CLI_CASES", 6))


def draw(rng: random.Random, flags: dict, base: list[str]) -> list[str]:
    argv = list(base)
    for flag in rng.sample(sorted(flags), k=rng.randint(1, 5)):
        if flags[flag] is None:
            argv.append(flag)
        else:
            pool = flags[flag] * 3 + VALUES
            argv += [flag, rng.choice(pool)]
    return argv


def cases(tiny_ckpt, tmp) -> list[list[str]]:
    rng = random.Random(int(os.environ.get("FUZZ_CLI_SEED", 7)))
    gen_base = ["tools/generate.py", "--ckpt", str(tiny_ckpt), "--prompt", "hello", "--max-tokens", "2"]
    eval_base = ["tools/eval.py", "--ckpt", str(tiny_ckpt), "--dataset", str(REPO / "tests/eval/fixtures/gsm8k_small.jsonl"),
                 "--max-tokens", "2", "--max-sequences", "2", "--methods", "parallel", "--no-progress",
                 "--out", f"{tmp}/base", "--threads", "1", "--bootstrap", "20"]
    out = [draw(rng, GENERATE_FLAGS, gen_base) for _ in range(CASES_PER_TOOL)]
    out += [draw(rng, EVAL_FLAGS, eval_base) for _ in range(CASES_PER_TOOL)]
    return [[a.replace("{tmp}", str(tmp)) for a in argv] for argv in out]


def test_random_command_lines_exit_0_or_2_without_a_traceback(tiny_ckpt, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    results = []
    for batch_start in range(0, 2 * CASES_PER_TOOL, 4):   # four at a time: each spends seconds importing torch
        procs = []
        for i, argv in enumerate(cases(tiny_ckpt, tmp_path)[batch_start:batch_start + 4]):
            folder = tmp_path / f"case{batch_start + i}"
            folder.mkdir()
            argv = [a.replace(str(tmp_path), str(folder)) for a in argv]
            argv[0] = str(REPO / argv[0])   # run from the case's own folder: relative paths land there
            procs.append((argv, subprocess.Popen([sys.executable, *argv], cwd=folder, stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)))
        for argv, proc in procs:
            out, err = proc.communicate(timeout=240)
            results.append((argv, proc.returncode, err.decode("utf-8", "replace")))
    for argv, code, err in results:
        shown = " ".join(repr(a) if " " in a or not a else a for a in argv)
        assert code in (0, 2), f"exit {code} for: {shown}\n{err[-2000:]}"
        assert "Traceback" not in err, f"traceback for: {shown}\n{err[-2000:]}"
        if code == 2:
            last = err.strip().splitlines()[-1] if err.strip() else ""
            assert last.startswith("error: ") or "usage:" in err, f"no one-line error for: {shown}\n{err}"


@pytest.mark.parametrize("argv", [["--output", "{tmp}/deep/new/o.json"], ["--json", "--stats"]])
def test_output_and_json_contracts(tiny_ckpt, tmp_path, argv):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    proc = subprocess.run([sys.executable, "tools/generate.py", "--ckpt", str(tiny_ckpt), "--prompt", "hi",
                           "--max-tokens", "2", *argv], cwd=REPO, capture_output=True, text=True, timeout=240,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    if "--json" in argv:
        import json
        doc = json.loads(proc.stdout)   # exactly one JSON document, stats inside it
        assert set(doc) >= {"mode", "params", "stats", "prompts"}
    else:
        assert (tmp_path / "deep" / "new" / "o.json").exists()   # its folder was created, in sample mode too


def test_a_failed_final_write_keeps_the_result(tiny_ckpt, tmp_path, capsys, monkeypatch):
    """The path was fine at the start, the write fails at the end: the document is kept and named."""
    import importlib.util
    import json

    import eager_core.eval.io_utils as io_utils

    sys.path.insert(0, str(REPO / "tools"))
    try:
        spec = importlib.util.spec_from_file_location("generate_tool", REPO / "tools" / "generate.py")
        tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tool)

        def full_disk(path, obj, indent=2):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(io_utils, "write_json_atomic", full_disk)
        code = tool.run_main(tool.main, ["--ckpt", str(tiny_ckpt), "--prompt", "hi", "--max-tokens", "2",
                                         "--output", str(tmp_path / "o.json")])
    finally:
        sys.path.remove(str(REPO / "tools"))
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "written to " in err, err
    rescue = err.split("written to ", 1)[1].split(" instead", 1)[0]
    assert json.loads(open(rescue).read())["prompts"][0]["prompt"] == "hi"
    os.unlink(rescue)


@pytest.mark.parametrize("out, needle", [("/proc/nope/ev", "cannot write there"), ("{file}", "is a file")])
def test_eval_checks_its_output_folder_before_loading(tmp_path, out, needle):
    """A checkpoint that does not exist: if --out were checked after loading, that error would come first."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    proc = subprocess.run([sys.executable, str(REPO / "tools/eval.py"), "--ckpt", str(tmp_path / "no-such-ckpt"),
                           "--dataset", str(REPO / "tests/eval/fixtures/gsm8k_small.jsonl"),
                           "--out", out.replace("{file}", str(afile)), "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
