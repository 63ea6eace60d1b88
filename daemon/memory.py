"""Giving freed memory back to the system after a job (issue 8, item 3): a thin adapter over glibc's allocator.

A job's big buffers (a 2048² request is 21 MB of planes, and each variant's arrays and frame are as large again)
are allocated with ``malloc`` by NumPy, msgpack and Python's ``bytes``. glibc serves an allocation of at least its
*mmap threshold* with its own ``mmap``, unmapped again by ``free``; smaller ones come from the heap, whose freed
space it keeps for later. The threshold starts at 128 KiB but is *dynamic*: every ``free`` of an mmapped block
raises it to that block's size (up to 32 MiB on 64-bit systems, mallopt(3), ``M_MMAP_THRESHOLD``), so after the
first job every buffer below 32 MiB comes from the heap, and the daemon's resident memory stays near the job's
peak while it idles. Two remedies, both glibc-only and no-ops elsewhere (macOS, Windows, musl):

- :func:`limit_mmap_threshold`, once at start: a fixed threshold of :data:`MMAP_THRESHOLD` (setting it turns the
  dynamic adjustment off), so buffers of a MiB or more are always mapped and unmapped;
- :func:`release_free_memory` after each job: ``malloc_trim(0)`` returns the heap's free pages (of every arena,
  the worker thread's too) to the system.

``bench/memory.py`` measures both (``bench/README.md``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the mmap threshold (glibc's ``malloc.h``)."""

MMAP_THRESHOLD = 1 << 20
"""Allocations of this many bytes or more get their own mapping (1 MiB): a 512×512 RGBA plane is 1 MiB, so every
image-sized buffer of a job is unmapped when freed, while the many small objects of the event loop stay on the
heap (an ``mmap`` and its page faults per allocation cost microseconds, nothing next to a job)."""


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # None, or ValueError, on another C library (musl)
            return None
        libc = ctypes.CDLL(None)  # the symbols already loaded into the process: the C library's among them
    except (ValueError, OSError):
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_LIBC = _glibc()


def limit_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (``mallopt(M_MMAP_THRESHOLD, threshold)``), for the whole
    process, once at start. Never raises.

    Returns:
        True when glibc took the setting; False elsewhere or when it refused it.
    """
    if _LIBC is None:
        return False
    try:
        return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, threshold))
    except Exception:  # never fail the daemon's start over an allocator tweak
        log.debug("mallopt(M_MMAP_THRESHOLD) failed", exc_info=True)
        return False


def release_free_memory() -> bool:
    """Hand the allocator's free heap pages back to the system (``malloc_trim(0)``), e.g. after a job. Never raises.

    Returns:
        True when glibc released some memory; False when there was none to release, or elsewhere.
    """
    if _LIBC is None:
        return False
    try:
        return bool(_LIBC.malloc_trim(0))
    except Exception:
        log.debug("malloc_trim failed", exc_info=True)
        return False
