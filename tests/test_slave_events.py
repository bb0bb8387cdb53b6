"""SlaveEvents, the compact slave events of smp_snoop: its views against a dense matrix built
bit by bit, and the deprecated dense=True form. (Kernel and reference are compared, and the dense
view against release 0.1's matrix on random and hypothesis batches, in test_snoop.py.)"""
import numpy as np
import pytest

from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.mlx4.slave_events import SlaveEvents


def packed(want: np.ndarray) -> SlaveEvents:
    rows = np.flatnonzero(want.any(axis=1))
    bits = np.zeros((len(rows), 2), np.uint64)
    for e, n in enumerate(rows):
        for f in np.flatnonzero(want[n]):
            bits[e, f >> 6] |= np.uint64(1) << np.uint64(f & 63)
    return SlaveEvents(rows.astype(np.int64), bits, *want.shape)


@pytest.mark.parametrize("functions", [80, 128])
def test_views_of_the_packed_bits(functions):
    want = np.random.default_rng(functions).random((300, functions)) < 0.02
    want[7, [0, 63, 64, functions - 1]] = True  # both words, their edges
    events = packed(want)
    dense = events.dense()
    assert dense.dtype == np.bool_ and dense.shape == (300, functions) and dense.flags.c_contiguous
    assert np.array_equal(dense, want)
    assert np.array_equal(np.asarray(events), want)
    rows, funcs = events.pairs()
    assert rows.dtype == funcs.dtype == np.int64
    assert np.array_equal(rows, np.nonzero(want)[0]) and np.array_equal(funcs, np.nonzero(want)[1])
    for f in range(functions):
        assert np.array_equal(events.of_function(f), np.flatnonzero(want[:, f]))
    assert events.any() and events == packed(want) and events != packed(~want)


def test_empty_and_bad_function():
    none = SlaveEvents(np.zeros(0, np.int64), np.zeros((0, 2), np.uint64), 5, 80)
    assert not none.any() and none.dense().shape == (5, 80) and not none.dense().any()
    assert [len(a) for a in none.pairs()] == [0, 0] and len(none.of_function(3)) == 0
    with pytest.raises(ValueError, match="function must be in 0..79"):
        none.of_function(80)
    assert snoop.SnoopResult.empty(0, None, None, None).slave_events.shape == (0, 128)   # mainline
    assert snoop.SnoopResult.empty(0, None, None, None, num_functions=80).slave_events.shape == (0, 80)


def test_result_is_compact_unless_dense_is_asked_for():
    cache, v2p = snoop.init_pkeys(num_vfs=4)
    mads = np.zeros((3, 256), np.uint8)
    mads[:, [0, 1, 2, 3, 17]] = [1, 0x01, 1, 0x02, 0x16]  # SubnSet(P_KeyTable) block 0
    mads[:, 64:66] = 0xFF  # entry 0 restated as the default 0xFFFF (no change) ...
    mads[1, 64:66] = [0x80, 0x01]  # ... but changed, and back: every VF's row maps entry 0
    res = snoop.smp_snoop(cache.copy(), v2p, mads, 1, 0, num_vfs=4, profile="new")
    assert isinstance(res.slave_events, SlaveEvents)
    rows, functions = res.slave_events.pairs()
    assert rows.tolist() == [1] * 4 + [2] * 4 and functions.tolist() == [1, 2, 3, 4] * 2
    with pytest.warns(DeprecationWarning, match="slave_events.dense()"):
        old = snoop.smp_snoop(cache.copy(), v2p, mads, 1, 0, num_vfs=4, profile="new", dense=True)
    assert isinstance(old.slave_events, np.ndarray) and old.slave_events is old.slave_events  # made once
    assert np.array_equal(old.slave_events, res.slave_events.dense())
