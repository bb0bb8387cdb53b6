"""Baseline kernels for `madpipe bench`: the least work that still touches the same memory."""
from madpipe.pipeline.jit import njit


@njit
def touch_lines(mads):
    """Read one byte in each of the two cache lines the snoop reads (header, P_Key block)."""
    total = 0
    for n in range(mads.shape[0]):
        total += mads[n, 1] + mads[n, 64]
    return total
