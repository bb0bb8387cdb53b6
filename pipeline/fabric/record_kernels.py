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
def event_records(changed, frame, ts_ns, slot, block, bitmap, unconfirmed, old, data, out):
    """Record j (``out[j]``, the bytes of an EVENT_DTYPE record) for item ``changed[j]``: its
    frame, ts_ns, slot, block, bitmap and unconfirmed, the 32 entries its block held before
    (``old``) and the P_Keys of its SMP data (big-endian on the wire) as the new ones."""
    # Each field's bytes written here, not by a helper: a call with an array argument costs two
    # atomic reference counts, more than the bytes it writes.
    for j in range(changed.shape[0]):
        i = changed[j]
        f = frame[i]
        t = ts_ns[i]
        for b in range(8):
            out[j, FRAME + b] = (f >> (8 * b)) & 0xFF
            out[j, TS_NS + b] = (t >> (8 * b)) & 0xFF
        s = slot[i]
        m = bitmap[i]
        for b in range(4):
            out[j, SLOT + b] = (s >> (8 * b)) & 0xFF
            out[j, BITMAP + b] = (m >> (8 * b)) & 0xFF
        out[j, BLOCK] = block[i] & 0xFF
        out[j, BLOCK + 1] = block[i] >> 8
        out[j, UNCONFIRMED] = 1 if unconfirmed[i] else 0
        for e in range(32):
            v = old[i, e]
            out[j, OLD + 2 * e] = v & 0xFF
            out[j, OLD + 2 * e + 1] = v >> 8
            out[j, NEW + 2 * e] = data[i, 2 * e + 1]
            out[j, NEW + 2 * e + 1] = data[i, 2 * e]
