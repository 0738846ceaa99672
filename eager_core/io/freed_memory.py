"""Give memory that the process has freed back to the operating system (glibc's ``malloc_trim``).

Why it matters when loading weights: glibc serves allocations up to its mmap threshold from the
heap, and raises that threshold (up to 32 MiB) each time a large mapped block is freed. So after
the first large tensor is freed, the transient copies of loading (a float32 tensor read before its
bfloat16 cast, the parts of a fused QKV matrix) are heap blocks, and freeing them leaves holes the
heap keeps: resident memory that nothing uses, 80-100 MB for the default model. ``malloc_trim``
returns those free pages. Elsewhere (no glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return getattr(libc, "malloc_trim", None)
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS; True when the C library could do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
