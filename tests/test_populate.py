"""kernels.populate: an array's pages mapped on the helper thread (madvise MADV_POPULATE_WRITE)
take memory at once and keep every byte as it was, also while another thread writes them."""
from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from madpipe.pipeline.kernels import populate

needs_populate = pytest.mark.skipif(not sys.platform.startswith("linux") or populate._madvise() is None,
                                    reason="madvise(MADV_POPULATE_WRITE) needs Linux 5.14 or later")


def resident_pages(array: np.ndarray) -> int:
    """How many of the whole pages inside ``array`` are resident (mincore): the array's own, so
    memory another thread frees or takes meanwhile does not count (the process's RSS did)."""
    import ctypes

    start = (array.ctypes.data + populate.PAGE - 1) & ~(populate.PAGE - 1)
    pages = (array.ctypes.data + array.nbytes - start) // populate.PAGE
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(pages * populate.PAGE), vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec)


@needs_populate
def test_a_fresh_array_is_mapped_at_once():
    size = 64 << 20
    fresh = np.empty(size, np.uint8)  # mapped lazily: no page is resident yet
    assert resident_pages(fresh) < size // populate.PAGE // 4
    populate.ahead(fresh).result()
    assert resident_pages(fresh) >= size // populate.PAGE - 2


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


def test_workers_give_each_call_its_value_or_its_exception():
    """kernels.workers: what the helper threads of the snoop (event formatting, arena mapping) and of
    populate.ahead rely on, in place of concurrent.futures."""
    from madpipe.pipeline.kernels.workers import Workers

    with Workers(2, "madpipe-test") as pool:
        jobs = [pool.submit(pow, 3, i) for i in range(50)]
        bad = pool.submit(int, "not a number")
    assert [job.result() for job in jobs] == [3 ** i for i in range(50)]
    with pytest.raises(ValueError, match="not a number"):
        bad.result()
    assert not any(t.name.startswith("madpipe-test") for t in threading.enumerate())  # shut down, joined
