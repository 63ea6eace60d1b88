"""Giving freed memory back to the system after a job (issue 8, item 3): a thin adapter over glibc's allocator.

A job's big buffers (a 2048² request is 21 MB of planes, and each variant's arrays and frame are as large again)
are allocated with ``malloc`` by NumPy, msgpack and Python's ``bytes``. glibc serves an allocation of at least its
*mmap threshold* with its own ``mmap``, unmapped again by ``free``; smaller ones come from the heap, whose freed
space it keeps for later. The threshold starts at 128 KiB but is *dynamic*: every ``free`` of an mmapped block
raises it to that block's size (up to 32 MiB on 64-bit systems, mallopt(3), ``M_MMAP_THRESHOLD``), so after the
first job every buffer below 32 MiB comes from the heap, and the daemon's resident memory stays near the job's
peak while it idles. Two remedies, both glibc-only and no-ops elsewhere (macOS, Windows, musl):

- :func:`limit_mmap_threshold`, once at start: a fixed threshold of :data:`MMAP_THRESHOLD` (setting it turns the
  dynamic adjustment off), so image-sized buffers are always mapped and unmapped, and a fixed trim threshold of
  :data:`TRIM_THRESHOLD`, so that the heap keeps the free space that the next step of a model reuses;
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

M_TRIM_THRESHOLD = -1
"""``mallopt``'s parameter number for the trim threshold (glibc's ``malloc.h``)."""

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the mmap threshold (glibc's ``malloc.h``)."""

MMAP_THRESHOLD = 8 << 20
"""Allocations of this many bytes or more get their own mapping (8 MiB): a 2048² job's planes (16 MiB of RGBA, its
21 MB frame) and everything larger are unmapped when freed, while the event loop's small objects and a CPU model's
activations stay on the heap. A fixed 1 MiB (issue 8) mapped every tensor of a tiny SD step afresh: 11,000–18,000
page faults and 16–28 ms of system time per 20-step call, 5–25 % of its CPU time; at 8 MiB the call takes one fault,
as with glibc's defaults (/proc rusage of the tiny pipeline called directly, 2026-12-02, ``bench/README.md``)."""

TRIM_THRESHOLD = 64 << 20
"""Free space at the heap's top that glibc keeps rather than return at once (64 MiB; fixing the mmap threshold
leaves this at its 128 KiB default, and the heap's top was then returned and faulted back in within each model step:
4,700 faults per call at a 32 MiB mmap threshold, 64 at a 32 MiB trim threshold, 1 at this one). What is kept is given
back after the job (:func:`release_free_memory`)."""


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


def limit_mmap_threshold(threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes and its trim threshold at ``trim_threshold`` bytes
    (``mallopt(M_MMAP_THRESHOLD, …)``, ``mallopt(M_TRIM_THRESHOLD, …)``), for the whole process, once at start.
    Never raises.

    Returns:
        True when glibc took both settings; False elsewhere or when it refused one.
    """
    if _LIBC is None:
        return False
    try:
        return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(_LIBC.mallopt(M_TRIM_THRESHOLD,
                                                                                     trim_threshold))
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
