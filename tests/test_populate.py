"""kernels.populate: an array's pages mapped on the helper thread (madvise MADV_POPULATE_WRITE)
take memory at once and keep every byte as it was, also while another thread writes them."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from madpipe.pipeline.kernels import populate

needs_populate = pytest.mark.skipif(not sys.platform.startswith("linux") or populate._madvise() is None,
                                    reason="madvise(MADV_POPULATE_WRITE) needs Linux 5.14 or later")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * populate.PAGE


@needs_populate
def test_a_fresh_array_is_mapped_at_once():
    size = 64 << 20
    fresh = np.empty(size, np.uint8)  # mapped lazily: no page is resident yet
    before = resident_bytes()
    populate.ahead(fresh).result()
    assert resident_bytes() - before > size * 3 // 4


@needs_populate
def test_bytes_stay_as_written_while_another_thread_writes():
    rng = np.random.default_rng(5)
    arrays = [np.empty(n, np.uint8) for n in (3 << 20, 5 << 20 | 123)]
    arrays[1][:1 << 20] = rng.integers(0, 256, 1 << 20)  # written before, kept
    want = [a.copy() for a in arrays]
    mapping = populate.ahead(*arrays)
    for a, w in zip(arrays, want):  # written while the helper maps
        a[1 << 20:] = rng.integers(1, 256, len(a) - (1 << 20))
        w[1 << 20:] = a[1 << 20:]
    mapping.result()
    assert all(np.array_equal(a, w) for a, w in zip(arrays, want))


def test_small_arrays_are_left_to_the_kernel():
    assert populate.ahead(np.empty(1000, np.uint8), np.empty(1000, np.int32)) is None
