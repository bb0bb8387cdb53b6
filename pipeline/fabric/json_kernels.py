"""numba kernel writing ``madpipe snoop -T json``'s event records, up to eight bytes at a store.

``event_json_lines`` is the byte-for-byte twin of fabric.output._EVENT_JSON (the tests compare
them on random input). A Set that rewrites a block is an event of 32 changes, ~700 bytes of
JSON of which nearly all are the decimals of 96 small numbers. It appends words
(:mod:`madpipe.pipeline.fabric.word_text`): a P_Key with the byte after it is at most a table
word and two bytes, a change's index with its ``,[`` and ``,`` one word (a table's), a frame
number up to 10**8 one word; a change is three appends (its index, then each P_Key). (The digits
computed in lanes, without the four-digit table, ran slower.)
"""
import numpy as np

from madpipe.pipeline.fabric.record_kernels import BLOCK_UNCONFIRMED, FRAME, NEW, OLD, SLOT_BITMAP
from madpipe.pipeline.fabric.word_text import (
    FOUR_DIGITS,
    decimal16,
    put,
    put_decimal,
    put_text,
    short_decimal,
    text_words,
)
from madpipe.pipeline.kernels.jit import njit
from madpipe.pipeline.kernels.unaligned import get8, put8

# The constant parts of fabric.output._EVENT_JSON, in order: their words, and their lengths.
JSON_FRAME, FRAME_BYTES = text_words('{"type":"event","frame":')
JSON_TS, TS_BYTES = text_words(',"ts":')
JSON_BLOCK, BLOCK_BYTES = text_words(',"block":')
JSON_BITMAP, BITMAP_BYTES = text_words(',"bitmap":')
JSON_CHANGES, CHANGES_BYTES = text_words(',"changes":[')
JSON_TRUE, TRUE_BYTES = text_words('],"unconfirmed":true}\n')
JSON_FALSE, FALSE_BYTES = text_words('],"unconfirmed":false}\n')
COMMA = 0x2C
CLOSE = 0x5D  # "]"
OPEN_INDEX = 0x5B2C  # ",[" as a word
DECIMAL16 = 10 ** 16  # below it decimal16 writes a number


def _index_words() -> np.ndarray:
    """",[0," .. ",[9999,": each a word, its length in the top byte (one load a change:
    computing them took ~14% of the kernel's time)."""
    i = np.arange(10000, dtype=np.int64)
    k = 1 + (i >= 10) + (i >= 100) + (i >= 1000)
    digits = FOUR_DIGITS.astype(np.int64) >> (8 * (4 - k))
    return OPEN_INDEX | (digits << 16) | (COMMA << (8 * k + 16)) | ((k + 3) << 56)


#: ",[index," for the indexes below 10000 (the kernel's tables have 128 entries): word | length << 56.
INDEX_WORDS = _index_words()


@njit
def _pkey(v, after):
    """A uint16 in decimal followed by the byte ``after``: (its word, its length)."""
    if v >= 10000:
        hi = v // 10000
        return (48 + hi) | (np.int64(FOUR_DIGITS[np.uint64(v - hi * 10000)]) << 8) | (after << 40), np.int64(6)
    word, k = short_decimal(v)
    return word | (after << (8 * k)), k + 1


@njit
def _put_long_index(out, pos, at, first):
    """An index past 9999 (a block past the kernel's tables): "[at," (",[at," after the first)."""
    if first:
        pos = put(out, pos, np.int64(OPEN_INDEX >> 8), 1)
    else:
        pos = put(out, pos, np.int64(OPEN_INDEX), 2)
    pos = put_decimal(out, pos, at)
    return put(out, pos, np.int64(COMMA), 1)


@njit
def event_json_lines(records, times, time_ends, ports, port_ends, out):
    """Event n's JSON Lines record (fabric.output._EVENT_JSON), one after another, into ``out``
    (uint8); returns the bytes used. ``records``: the events
    (fabric.spool.EVENT_DTYPE) as fabric.record_kernels.words gives them. Pieces are ASCII texts
    cut by ends: time n (Python's float reprs), the JSON members of port ``slot`` (negative counts
    from the end); each text has word_text.PIECE_PAD bytes past its last piece. ``out`` must hold
    the pieces plus 26 bytes a change and 128 bytes a record, and word_text.SLACK bytes more."""
    pos = 0
    n_ports = port_ends.shape[0]
    for n in range(records.shape[0]):
        pos = put_text(out, pos, JSON_FRAME, FRAME_BYTES)
        v = records[n, FRAME]
        if v < DECIMAL16:  # the decimals of this loop appended here, not by a call (see below)
            a, ka, c, kc = decimal16(v)
            pos = put(out, pos, a, ka)
            pos = put(out, pos, c, kc)
        else:
            pos = put_decimal(out, pos, v)
        pos = put_text(out, pos, JSON_TS, TS_BYTES)
        slot_bitmap = records[n, SLOT_BITMAP]
        s = slot_bitmap & 0xFFFFFFFF
        s = s - (1 << 32) + n_ports if s >= 1 << 31 else s  # an int32: negative counts from the end
        for piece in range(2):  # the time, a comma, the port (put_piece's loop, here: see below)
            if piece == 0:
                text, p, end = times, time_ends[n - 1] if n > 0 else 0, time_ends[n]
            else:
                text, p, end = ports, port_ends[s - 1] if s > 0 else 0, port_ends[s]
            at = pos - p
            while p < end:  # 8 bytes at a copy (the texts are padded)
                put8(out, at + p, get8(text, p))
                p += 8
            pos = at + end
            if piece == 0:
                pos = put(out, pos, np.int64(COMMA), 1)
        pos = put_text(out, pos, JSON_BLOCK, BLOCK_BYTES)
        block_unconfirmed = records[n, BLOCK_UNCONFIRMED]
        b = block_unconfirmed & 0xFFFF
        a, ka, c, kc = decimal16(b)
        pos = put(out, pos, a, ka)
        pos = put(out, pos, c, kc)
        pos = put_text(out, pos, JSON_BITMAP, BITMAP_BYTES)
        bits = (slot_bitmap >> 32) & 0xFFFFFFFF
        a, ka, c, kc = decimal16(bits)
        pos = put(out, pos, a, ka)
        pos = put(out, pos, c, kc)
        pos = put_text(out, pos, JSON_CHANGES, CHANGES_BYTES)
        # The changes, "[index,old,new]" for each bit i of bits (index = block * 32 + i), joined
        # by commas: written here, as the pieces above, not by helpers, whose calls (with arrays,
        # each counted in and out) cost more than the text.
        index = b * 32
        first = True
        for i in range(32):
            if not (bits >> i) & 1:
                continue
            at = index + i
            if at < 10000:
                word = INDEX_WORDS[np.uint64(at)]
                k = word >> 56
                word &= 0xFFFFFFFFFFFFFF
                if first:
                    word >>= 8  # no comma before the first
                    k -= 1
                pos = put(out, pos, word, k)
            else:
                pos = _put_long_index(out, pos, at, first)
            first = False
            lane = 16 * (i & 3)
            word, k = _pkey((records[n, OLD + (i >> 2)] >> lane) & 0xFFFF, COMMA)
            pos = put(out, pos, word, k)
            word, k = _pkey((records[n, NEW + (i >> 2)] >> lane) & 0xFFFF, CLOSE)
            pos = put(out, pos, word, k)
        if (block_unconfirmed >> 16) & 0xFF:
            pos = put_text(out, pos, JSON_TRUE, TRUE_BYTES)
        else:
            pos = put_text(out, pos, JSON_FALSE, FALSE_BYTES)
    return pos
