"""numba kernel writing the snoop's event records (fabric.spool.EVENT_DTYPE) straight into the
spool's memory, a 64-bit word at a store: eight numpy field assignments, one of them a byte swap,
took a fifth of the snoop's own thread on a capture where every Set changes a table, and a
byte at a store (the packed record of 0.1) a tenth.

The words are the record's bytes as a little-endian host holds them; numba runs on no other, and
fabric.snoop_pass uses :func:`records_by_numpy` on one.
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.fabric.spool import EVENT_DTYPE, RECORD_WORDS
from madpipe.pipeline.kernels.jit import njit

# The record's words (spool.EVENT_DTYPE: its fields' offsets are these words' bytes).
OLD = 0
NEW = 8
FRAME = 16
TS_NS = 17
SLOT_BITMAP = 18  # slot | bitmap << 32
BLOCK_UNCONFIRMED = 19  # block | unconfirmed << 16

# Swap the two bytes of every 16-bit lane of a word: four big-endian P_Keys as four uint16.
LANE_LOW_BYTES = 0x00FF00FF00FF00FF


def _check_layout() -> None:
    fields = EVENT_DTYPE.fields
    assert fields is not None and RECORD_WORDS == 20 and EVENT_DTYPE.itemsize == 8 * RECORD_WORDS
    for name, word in (("old", OLD), ("new", NEW), ("frame", FRAME), ("ts_ns", TS_NS), ("slot", SLOT_BITMAP),
                       ("block", BLOCK_UNCONFIRMED)):
        assert fields[name][1] == 8 * word, name
    assert fields["bitmap"][1] == 8 * SLOT_BITMAP + 4 and fields["unconfirmed"][1] == 8 * BLOCK_UNCONFIRMED + 2


_check_layout()


@njit
def event_records(changed, frame, ts_ns, slot, block, bitmap, unconfirmed, old, data, out):
    """Record j (``out[j]``, the RECORD_WORDS words of an EVENT_DTYPE record) for item
    ``changed[j]``: its frame, ts_ns, slot, block, bitmap and unconfirmed, the 32 entries its
    block held before (``old``, uint16[N, 32] as int64[N, 8]) and the P_Keys of its SMP data
    (``data``, 64 bytes a row as int64[N, 8]; big-endian on the wire) as the new ones. The
    record's 5 bytes of padding are written 0."""
    lane_low = np.int64(LANE_LOW_BYTES)
    for j in range(changed.shape[0]):
        i = changed[j]
        for q in range(8):
            out[j, OLD + q] = old[i, q]
            wire = data[i, q]
            out[j, NEW + q] = ((wire >> 8) & lane_low) | ((wire & lane_low) << 8)
        out[j, FRAME] = frame[i]
        out[j, TS_NS] = ts_ns[i]
        out[j, SLOT_BITMAP] = (np.int64(slot[i]) & 0xFFFFFFFF) | (np.int64(bitmap[i]) << 32)
        out[j, BLOCK_UNCONFIRMED] = np.int64(block[i]) | (np.int64(1 if unconfirmed[i] else 0) << 16)


def records_by_numpy(changed, frame, ts_ns, slot, block, bitmap, unconfirmed, old, data) -> np.ndarray:
    """The records :func:`event_records` writes, by numpy's field assignments (``old`` uint16[N,
    32], ``data`` uint8[N, 64]): the snoop's way on a big-endian host, and the tests' reference."""
    ev = np.zeros(len(changed), EVENT_DTYPE)
    ev["frame"] = frame[changed]
    ev["ts_ns"] = ts_ns[changed]
    ev["slot"] = slot[changed]
    ev["block"] = block[changed]
    ev["bitmap"] = bitmap[changed]
    ev["unconfirmed"] = unconfirmed[changed]
    ev["old"] = old[changed]
    ev["new"] = data[changed].view(">u2")
    return ev


def words(records: np.ndarray) -> np.ndarray:
    """EVENT_DTYPE records as the kernels take them: int64[N, RECORD_WORDS], a view of them (on a
    little-endian host, where :func:`event_records` writes through it; a copy elsewhere)."""
    little = np.ascontiguousarray(records).view("<i8").reshape(len(records), RECORD_WORDS)
    return np.ascontiguousarray(little, np.int64)
