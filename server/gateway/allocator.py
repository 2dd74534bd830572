"""The C allocator told to give large blocks back to the system when they are freed.

glibc serves allocations above a threshold with their own `mmap`, returned to the system on
`free` — but it raises that threshold (up to 32 MiB) each time such a block is freed, so after
one large image the next ones come from the heap, which keeps its high-water mark: the gateway
stayed 170 MiB above idle after one 40-megapixel image. Fixing the threshold keeps the dynamic
adjustment off; decoded images, rendered maps and answers (all ≥ 1 MiB at the sizes where memory
matters) then leave the process when they are freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_blocks() -> bool:
    """Sets glibc's mmap and trim thresholds; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES)
    )
    log.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, ok)
    return ok
