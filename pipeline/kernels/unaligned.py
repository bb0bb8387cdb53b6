"""Eight bytes at any byte position of a ``uint8`` array, as one word: for kernels that copy or
append bytes a word at a time where rows and texts do not start on a word.

Byte loops over an unsigned index: LLVM makes each one unaligned load or store (no test for a
negative index), and plain Python (NUMBA_DISABLE_JIT=1) runs them as written. Inlined by numba
(``inline="always"``); straight-line code, so the reference counts of the array that binding its
parameter adds are pruned (a helper with a loop inlined so keeps them: one atomic operation in
and one out at each call, as in the first row copies of ingest.kernels and the paravirt row).
"""
import numpy as np

from madpipe.pipeline.kernels.jit import njit


@njit(inline="always")
def put8(out, pos, value):
    """Store the 8 bytes of ``value`` (little-endian) at out[pos]."""
    for j in range(8):
        out[np.uint64(pos + j)] = (value >> (8 * j)) & 0xFF


@njit(inline="always")
def get8(data, pos):
    """The 8 bytes at data[pos] as a word (little-endian)."""
    v = np.int64(0)
    for j in range(8):
        v |= np.int64(data[np.uint64(pos + j)]) << (8 * j)
    return v
