"""fabric.spool.RecordArena: record arrays handed out of arenas whose pages a helper thread maps
ahead; what was written into one array stays as written while the helper maps the pages after it."""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.fabric import spool
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
