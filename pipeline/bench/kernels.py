"""Baseline kernels for `madpipe bench`: the least work that still touches the same memory."""
import numpy as np

from madpipe.codecs.wire import IB_SMP_DATA_SIZE, MAD_MGMT_CLASS, SMP_DATA
from madpipe.pipeline.kernels.jit import njit


@njit
def touch_lines(mads):
    """Read one byte in each of two cache lines: the header's and the P_Key block's first."""
    total = np.int64(0)
    for n in range(mads.shape[0]):
        total += np.int64(mads[n, MAD_MGMT_CLASS]) + np.int64(mads[n, SMP_DATA])
    return total


@njit
def touch_snooped(mads):
    """Read the header's byte and the P_Key block's first and last: every cache line the snoop
    reads, wherever the rows start. numpy starts an array 16 bytes into a line, so the 64-byte
    block spans two lines, and the snoop reads three a MAD where ``touch_lines`` reads two."""
    total = np.int64(0)
    for n in range(mads.shape[0]):
        total += (np.int64(mads[n, MAD_MGMT_CLASS]) + np.int64(mads[n, SMP_DATA])
                  + np.int64(mads[n, SMP_DATA + IB_SMP_DATA_SIZE - 1]))
    return total
