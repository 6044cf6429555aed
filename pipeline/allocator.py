"""The C allocator's settings for inference on a CPU: freed memory kept for the next batch.

glibc's malloc hands blocks above its mmap threshold (128 KiB at first) to ``mmap`` and
gives them back on ``free``; the threshold then rises to the largest block freed, up to
32 MiB. A CNN's activations for a batch are a few MiB a layer, so until the threshold has
grown past each of them, every forward maps fresh pages and faults them in: which batch
sizes ran fast depended on the order they first ran in. EfficientNet-Lite0 on this
project's 2-core CPU, one intra-op thread, six forwards a size (one-off script,
2026-12-07): batch 4 took 14-15 ms a frame and batch 8 19-20 when run after 1 and 2, and
7.8-8.7 and 8.3-8.6 with the settings here (batch 2: 8.4-9.5); with two intra-op threads,
batch 8 went from 14 to 4.6 ms a frame. ``keep_freed_memory`` fixes the mmap threshold at
256 MiB (which also stops it moving; 32 MiB, glibc's own ceiling, where that is refused:
batch 8's larger activations are over it) and raises the trim threshold, so freed
activations stay in the heap for the next batch. The cost is memory: a worker keeps the
peak of what its batches used. The model alone of the bench runs with the same settings
(``Runner.start`` sets them), so its ceiling is not the weaker for it.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("streaminfer.allocator")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024 * 1024
FALLBACK_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's own ceiling on 64-bit
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); False where the C
    library is not glibc or refuses them (then nothing changes)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, no library search
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) or bool(
        mallopt(_M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD_BYTES))
    _done = mapped and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not _done:
        log.info("the C allocator kept its own thresholds (not glibc, or refused)")
    return _done
