"""The P_Key-change events ``smp_snoop`` raises on VFs, kept compact.

Most MADs raise none (every one, at profile 3.7), so a batch records only the MADs that raised
any (``rows``) and, for each, the functions as bits (``bits``: function f is bit f % 64 of word
f // 64). A dense ``bool[N, F]`` is 80 bytes a MAD (160 MB for 2M MADs) to zero and fault in;
this is 24 bytes per MAD with events and nothing for the rest. ``dense()`` gives the full matrix
when a caller wants it, ``pairs()`` the ``(mad, function)`` pairs ``np.nonzero`` of it would.
"""
from __future__ import annotations

import numpy as np

#: Functions one row of ``bits`` holds (two 64-bit words: mainline's 128 functions).
BITS_CAPACITY = 128


class SlaveEvents:
    """Which functions got an IB_EVENT_PKEY_CHANGE for which MAD of a batch.

    rows  int64[E]      the MADs (indices into the batch) that raised any event, increasing
    bits  uint64[E, 2]  for each, the functions: f is bit f % 64 of word f // 64
    shape (N, F)        the batch's MADs and the profile's functions, as ``dense()`` has it
    """

    __slots__ = ("rows", "bits", "shape")

    def __init__(self, rows: np.ndarray, bits: np.ndarray, num_mads: int, num_functions: int):
        if num_functions > BITS_CAPACITY:
            raise ValueError(f"num_functions must be at most {BITS_CAPACITY}, got {num_functions}")
        self.rows = rows
        self.bits = bits
        self.shape = (int(num_mads), int(num_functions))

    def __repr__(self) -> str:
        count = len(self.rows)
        return f"SlaveEvents({count} MAD{'' if count == 1 else 's'} with events, shape={self.shape})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, SlaveEvents):
            return NotImplemented
        return (self.shape == other.shape and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.bits, other.bits))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """``np.asarray(events)``: the dense matrix (so numpy comparisons of old code still work)."""
        dense = self.dense()
        return dense if dtype is None else dense.astype(dtype)

    def any(self) -> bool:
        """Whether any function got an event in this batch."""
        return bool(len(self.rows))

    def dense(self) -> np.ndarray:
        """``bool[N, F]``: ``[n, f]`` is True when MAD n raised a P_Key-change event on function f."""
        num_mads, num_functions = self.shape
        events = np.zeros((num_mads, num_functions), dtype=np.bool_)
        if len(self.rows):
            events[self.rows] = self._unpacked()[:, :num_functions]
        return events

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mad, function)`` int64 arrays of every event, by MAD then function:
        ``np.nonzero(self.dense())`` without the dense matrix."""
        which, function = np.nonzero(self._unpacked()[:, :self.shape[1]])
        return self.rows[which], function.astype(np.int64)

    def of_function(self, function: int) -> np.ndarray:
        """The MADs (indices, increasing) that raised an event on ``function``."""
        if not 0 <= function < self.shape[1]:
            raise ValueError(f"function must be in 0..{self.shape[1] - 1}, got {function}")
        word = self.bits[:, function >> 6] if len(self.rows) else np.zeros(0, np.uint64)
        hit = (word >> np.uint64(function & 63)) & np.uint64(1)
        return self.rows[hit.astype(np.bool_)]

    def _unpacked(self) -> np.ndarray:
        """bool[E, 128] of bits, function f in column f."""
        as_bytes = np.ascontiguousarray(self.bits, dtype="<u8").view(np.uint8)
        return np.unpackbits(as_bytes, axis=1, bitorder="little").view(np.bool_)
