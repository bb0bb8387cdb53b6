"""numba kernel writing the snoop's event records (fabric.spool.EVENT_DTYPE) straight into the
spool's memory: eight numpy field assignments, one of them a byte swap, took a fifth of the
snoop's own thread on a capture where every Set changes a table.
"""
from __future__ import annotations

from madpipe.pipeline.fabric.spool import EVENT_DTYPE
from madpipe.pipeline.kernels.jit import njit

# Where each field starts in a record (EVENT_DTYPE is packed, little-endian).
FRAME = EVENT_DTYPE.fields["frame"][1]
TS_NS = EVENT_DTYPE.fields["ts_ns"][1]
SLOT = EVENT_DTYPE.fields["slot"][1]
BLOCK = EVENT_DTYPE.fields["block"][1]
BITMAP = EVENT_DTYPE.fields["bitmap"][1]
UNCONFIRMED = EVENT_DTYPE.fields["unconfirmed"][1]
OLD = EVENT_DTYPE.fields["old"][1]
NEW = EVENT_DTYPE.fields["new"][1]


@njit
def _put(out, j, at, v, k):
    """k bytes of v, little-endian, at out[j, at]."""
    for b in range(k):
        out[j, at + b] = (v >> (8 * b)) & 0xFF


@njit
def event_records(changed, frame, ts_ns, slot, block, bitmap, unconfirmed, old, data, out):
    """Record j (``out[j]``, the bytes of an EVENT_DTYPE record) for item ``changed[j]``: its
    frame, ts_ns, slot, block, bitmap and unconfirmed, the 32 entries its block held before
    (``old``) and the P_Keys of its SMP data (big-endian on the wire) as the new ones."""
    for j in range(changed.shape[0]):
        i = changed[j]
        _put(out, j, FRAME, frame[i], 8)
        _put(out, j, TS_NS, ts_ns[i], 8)
        _put(out, j, SLOT, slot[i], 4)
        _put(out, j, BLOCK, block[i], 2)
        _put(out, j, BITMAP, bitmap[i], 4)
        out[j, UNCONFIRMED] = 1 if unconfirmed[i] else 0
        for e in range(32):
            v = old[i, e]
            out[j, OLD + 2 * e] = v & 0xFF
            out[j, OLD + 2 * e + 1] = v >> 8
            out[j, NEW + 2 * e] = data[i, 2 * e + 1]
            out[j, NEW + 2 * e + 1] = data[i, 2 * e]
