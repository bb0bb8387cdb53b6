"""snoop.py's faster paths give what they replaced: init_pkeys as whole-array writes against the
reference's loops, and SnoopResult.slave_events made from the kernel's sparse rows and bits.

(The kernel and the reference are compared output for output in test_snoop.py, slave_events
included; here the pieces themselves.)
"""
import numpy as np
import pytest

from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.mlx4 import snoop_reference as reference_snoop


@pytest.mark.parametrize("num_vfs", [0, 1, 4, 79])
@pytest.mark.parametrize("num_ports", [1, 2])
@pytest.mark.parametrize("pkey_table_len", [1, 2, 64, 127, 128])
def test_init_pkeys_is_the_reference(num_vfs, num_ports, pkey_table_len):
    for master in sorted({0, min(1, num_vfs), num_vfs}):
        got = snoop.init_pkeys(num_vfs, num_ports, pkey_table_len, master)
        want = reference_snoop.init_pkeys(num_vfs, num_ports, pkey_table_len, master)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


def test_slave_events_from_rows_and_bits():
    rng = np.random.default_rng(1)
    res = snoop.SnoopResult.empty(300, None, None, None)
    want = rng.random((300, 80)) < 0.02
    rows = np.flatnonzero(want.any(axis=1))
    bits = np.zeros((len(rows), 2), np.uint64)
    for e, n in enumerate(rows):
        for f in np.flatnonzero(want[n]):
            bits[e, f >> 6] |= np.uint64(1) << np.uint64(f & 63)
    res.slave_rows, res.slave_bits = rows.astype(np.int64), bits
    got = res.slave_events
    assert got.dtype == np.bool_ and got.shape == (300, 80) and got.flags.c_contiguous
    assert np.array_equal(got, want)
    assert res.slave_events is got  # made once
    assert snoop.SnoopResult.empty(0, None, None, None).slave_events.shape == (0, 80)
