"""New output arrays' pages mapped on another core while a kernel fills them.

A call that returns a fresh array pays the first write to each of its pages, a fault and the
kernel zeroing the page, on the thread that runs the kernel: ``paravirt.rewrite`` without
``out=`` writes 256 MB of new mailboxes for a million, and mapping them on the other core
meanwhile takes its time to 0.83x (15 alternating calls, median; range 0.42-1.05x).
Linux (5.14 and later) maps pages writable without touching their bytes
(``madvise(MADV_POPULATE_WRITE)``), so a helper thread can map an array while a kernel writes
into it: nothing it does changes what the kernel writes or reads. Elsewhere, or where the kernel
refuses, nothing happens and the kernel maps the pages itself as before.

Only arrays a kernel writes nearly everywhere are worth it: a page nobody writes is never mapped
otherwise.

:func:`small_pages` asks for an array's pages to be 4 KiB ones, for the same cost: the first
write to a fresh page.
"""
from __future__ import annotations

import sys
import threading

import numpy as np

#: Bytes below which the hop to another thread costs more than it saves.
MIN_BYTES = 1 << 20
MADV_POPULATE_WRITE = 23  # <linux/mman.h>
MADV_NOHUGEPAGE = 15
PAGE = 4096

_lock = threading.Lock()
_state: dict = {}  # "madvise": libc's function (None where unavailable), "pool": the helper


def ahead(*arrays: np.ndarray):
    """Start mapping the arrays' pages on the helper thread; a job to wait on (its ``result()``,
    before the arrays are handed back), or None when nothing was started."""
    if sum(a.nbytes for a in arrays) < MIN_BYTES:
        return None
    madvise = _madvise()
    if madvise is None:
        return None
    with _lock:
        pool = _state.get("pool")
        if pool is None:
            from madpipe.pipeline.kernels.workers import Workers

            pool = _state["pool"] = Workers(1, "madpipe-populate")
    ranges = [(a.ctypes.data, a.nbytes) for a in arrays if a.nbytes]
    return pool.submit(_populate, madvise, ranges)


def small_pages(array: np.ndarray) -> None:
    """Ask for 4 KiB pages for ``array`` (``madvise(MADV_NOHUGEPAGE)``), before anything writes
    it; nothing where madvise is unavailable (as for ahead: Linux 5.14+). numpy asks for huge pages past 4 MiB, and on a VM
    whose balloon reports free 2 MiB blocks back to its host (virtio free page reporting) the first
    write to each huge page waits for the host to map all of it again: after a few seconds idle,
    writing 160 MB of fresh records took 180-300 ms in huge pages and 115-145 ms in small ones
    (three runs of each, alternating, 4 s apart)."""
    madvise = _madvise()
    if madvise is None or not array.nbytes:
        return
    import ctypes

    start = (array.ctypes.data + PAGE - 1) & ~(PAGE - 1)  # whole pages inside the array only
    end = (array.ctypes.data + array.nbytes) & ~(PAGE - 1)
    if end > start:
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_NOHUGEPAGE)


def _populate(madvise, ranges) -> None:
    import ctypes

    for address, size in ranges:
        start = address & ~(PAGE - 1)
        end = (address + size + PAGE - 1) & ~(PAGE - 1)
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_POPULATE_WRITE)


def _madvise():
    """libc's madvise where MADV_POPULATE_WRITE works (Linux 5.14+), else None; found once."""
    with _lock:
        if "madvise" in _state:
            return _state["madvise"]
        _state["madvise"] = None
        if not sys.platform.startswith("linux"):
            return None
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            madvise = libc.madvise
        except (OSError, AttributeError):
            return None
        madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        madvise.restype = ctypes.c_int
        probe = np.empty(PAGE * 2, np.uint8)
        start = (probe.ctypes.data + PAGE - 1) & ~(PAGE - 1)
        if madvise(ctypes.c_void_p(start), ctypes.c_size_t(PAGE), MADV_POPULATE_WRITE) != 0:
            return None  # an older kernel says EINVAL
        _state["madvise"] = madvise
        return madvise
