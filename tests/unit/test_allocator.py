"""The C allocator keeps freed blocks for the next batch instead of mapping fresh pages."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from pipeline.allocator import keep_freed_memory

# 40 MiB blocks (over glibc's own 32 MiB ceiling on its mmap threshold, as batch 8's larger
# activations of EfficientNet-Lite0 are): allocated, written and freed 20 times
_FAULTS = """
import ctypes, resource, sys
sys.path.insert(0, {root!r})
if {keep}:
    from pipeline.allocator import keep_freed_memory
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
n = 40 * 1024 * 1024
def touch():
    p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)
touch()  # the first block faults in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    root = str(pathlib.Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", _FAULTS.format(root=root, keep=keep)],
                         capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_instead_of_mapped_and_faulted_in_again() -> None:
    kept, default = _faults(True), _faults(False)
    assert default > 20 * 5_000, default  # each block mapped afresh: 10,240 pages of 4 KiB
    assert kept < 1_000, (kept, default)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_it_is_set_once_and_says_so() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
