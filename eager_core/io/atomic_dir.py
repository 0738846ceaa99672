"""Publishing a folder atomically: build it under a temporary name, then rename it into place.

A reader therefore sees either no folder or a complete one, never a half-written checkpoint, even if
the writer is interrupted (Ctrl-C, kill, crash): the leftover is a ``.<name>.partial-*`` folder that
never looks like a checkpoint and is removed on the next failure-free run of ``remove_stale_partials``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from eager_core.errors import CheckpointError


def partial_prefix(final: Path) -> str:
    return f".{final.name}.partial-"


@contextmanager
def atomic_directory(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``final``; on normal exit it becomes ``final``.

    If the body raises (or is interrupted) the temporary folder is deleted and ``final`` is untouched.
    ``final`` must not exist unless ``overwrite``; if another writer publishes ``final`` first, this one
    raises ``FileExistsError`` and discards its own copy.
    """
    final = Path(final).expanduser().absolute()
    if final.exists() and not overwrite:
        raise CheckpointError(f"output folder {final} already exists; remove it or choose another")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(final), dir=final.parent))
    try:
        yield tmp
        _publish(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish(tmp: Path, final: Path, overwrite: bool) -> None:
    old = None
    if overwrite and final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    try:
        os.rename(tmp, final)  # atomic on POSIX; fails if a non-empty final appeared meanwhile
    except OSError as e:
        if final.exists():
            raise FileExistsError(f"{final} was created by another process during conversion") from e
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_partials(final: str | Path) -> None:
    """Delete leftovers of interrupted writers of ``final``. Call only while no writer is active."""
    final = Path(final).expanduser().absolute()
    if final.parent.is_dir():
        for leftover in final.parent.glob(partial_prefix(final) + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
