"""snoop.py's faster paths give what they replaced: init_pkeys as whole-array writes against the
reference's loops (SlaveEvents, the compact slave events, are tested in test_slave_events.py).

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
