"""numpy's BLAS kept to one thread in the serving processes.

The gateway's matrix products are small (a map upsampled as two products of a few hundred by a
few dozen) and run on several request threads at once; OpenBLAS's own thread pool spins up for
each and busy-waits on the other core. Measured here, one 32×32 map to 640×480: 5.0 ms wall and
5.5 ms CPU with OpenBLAS's default threads, 0.43 ms and 0.42 ms with one. OpenBLAS reads the
variable once, when numpy loads, so this must run before anything imports numpy: the CLI calls
it first thing in ``attnserve serve`` and ``attnserve gateway``. Triton and its backend stubs
inherit it. A value set by the operator is kept.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

BLAS_THREADS_VARIABLE = "OPENBLAS_NUM_THREADS"


def single_threaded_blas() -> bool:
    """Sets ``OPENBLAS_NUM_THREADS=1`` unless already set; False when numpy is loaded already
    (too late to take effect)."""
    if "numpy" in sys.modules:
        log.warning("numpy is loaded already: %s cannot limit its BLAS threads", BLAS_THREADS_VARIABLE)
        return False
    os.environ.setdefault(BLAS_THREADS_VARIABLE, "1")
    return True
