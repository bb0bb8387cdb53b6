"""Baseline kernels for `madpipe bench`: the least work that still touches the same memory."""
import numpy as np

from madpipe.pipeline.kernels.jit import njit


@njit
def touch_lines(mads):
    """Read one byte in each of the two cache lines the snoop reads (header, P_Key block)."""
    total = np.int64(0)
    for n in range(mads.shape[0]):
        total += np.int64(mads[n, 1]) + np.int64(mads[n, 64])
    return total
