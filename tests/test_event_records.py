"""The snoop's event records: fabric.record_kernels.event_records writes what numpy's field
assignments write, and fabric.spool.RecordArena hands out arrays of arenas whose pages a helper
thread maps ahead (what was written into one stays as written while the helper maps the pages
after it)."""
from __future__ import annotations

import numpy as np
import pytest

from madpipe.pipeline.fabric import record_kernels, spool
from madpipe.pipeline.fabric.spool import EVENT_DTYPE, RecordArena


def test_arrays_from_arenas_keep_what_was_written(monkeypatch):
    monkeypatch.setattr(spool, "ARENA_AFTER", 1000)
    monkeypatch.setattr(spool, "MAP_AHEAD", 3 * spool.PAGE + 100)  # many helper ranges, none page-aligned
    arena = RecordArena(EVENT_DTYPE, arena_bytes=400 * EVENT_DTYPE.itemsize)
    rng = np.random.default_rng(3)
    handed = []
    for _ in range(300):
        n = int(rng.integers(1, 450))  # some larger than an arena
        records = arena.take(n)
        assert records.shape == (n,) and records.dtype == EVENT_DTYPE
        bytes_ = records.view(np.uint8)
        bytes_[:] = rng.integers(1, 256, bytes_.shape)  # no zero byte: a helper's 0 would show
        handed.append((records, bytes_.copy()))
    arena.close()
    for records, written in handed:
        assert np.array_equal(records.view(np.uint8), written)
    arenas = {id(r.base) for r, _ in handed if r.base is not None}
    assert len(arenas) > 50  # views of many arenas (and plain arrays first and when too large)
    assert arena.pool is None


def test_a_small_capture_never_starts_the_helper():
    arena = RecordArena(EVENT_DTYPE)
    for _ in range(10):
        arena.take(1000)
    assert arena.pool is None and arena.arena is None


@pytest.mark.parametrize("seed", range(4))
def test_event_records_kernel_writes_what_numpy_writes(seed):
    rng = np.random.default_rng(seed)
    n = 500
    frame = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    ts_ns = rng.integers(-2**62, 2**62, n, dtype=np.int64)
    slot = rng.integers(-1, 2**31 - 1, n, dtype=np.int32)
    block = rng.integers(0, 1 << 16, n).astype(np.uint16)
    bitmap = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    unconfirmed = rng.random(n) < 0.5
    old = rng.integers(0, 1 << 16, (n, 32)).astype(np.uint16)
    data = rng.integers(0, 256, (n, 64)).astype(np.uint8)
    for changed in (np.arange(n), np.flatnonzero(rng.random(n) < 0.3), np.array([n - 1, 0]), np.arange(0)):
        want = record_kernels.records_by_numpy(changed, frame, ts_ns, slot, block, bitmap, unconfirmed, old, data)
        got = np.empty(len(changed), EVENT_DTYPE)
        got.view(np.uint8)[:] = 0xA5  # the padding too is written
        record_kernels.event_records(changed.astype(np.int64), frame, ts_ns, slot, block, bitmap, unconfirmed,
                                     old.view(np.int64), data.view(np.int64), record_kernels.words(got))
        assert got.tobytes() == want.tobytes()
