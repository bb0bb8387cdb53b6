"""numba kernel writing ``madpipe snoop -T json``'s event records, eight bytes at a store.

``event_json_lines`` is the byte-for-byte twin of fabric.output._EVENT_JSON (the tests compare
them on random input). A Set that rewrites a block is an event of 32 changes, ~700 bytes of
JSON of which nearly all are the decimals of 96 small numbers. It appends words
(:mod:`madpipe.pipeline.fabric.word_text`): a P_Key is at most a table word and a digit, a
change's index with its ``,[`` and ``,`` one word, a frame number up to 10**8 one word; a
change is two appends (its index, then both P_Keys). (The digits computed in lanes, without
the four-digit table, ran slower.)
"""
import numpy as np

from madpipe.pipeline.fabric.record_kernels import BLOCK_UNCONFIRMED, FRAME, NEW, OLD, SLOT_BITMAP
from madpipe.pipeline.fabric.word_text import (
    FOUR_DIGITS,
    LOW63,
    append,
    append16,
    append_decimal,
    append_text,
    decimal16,
    short_decimal,
    text_words,
)
from madpipe.pipeline.kernels.jit import njit

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
def _append_long_index(words, w, acc, fill, at, first):
    """An index past 9999 (a block past the kernel's tables): "[at," (",[at," after the first)."""
    if first:
        w, acc, fill = append(words, w, acc, fill, np.int64(OPEN_INDEX >> 8), 1)
    else:
        w, acc, fill = append(words, w, acc, fill, np.int64(OPEN_INDEX), 2)
    w, acc, fill = append_decimal(words, w, acc, fill, at)
    return append(words, w, acc, fill, np.int64(COMMA), 1)


@njit
def event_json_lines(records, times, time_ends, ports, port_ends, words):
    """Event n's JSON Lines record (fabric.output._EVENT_JSON), one after another, into ``words``
    (uint64, the bytes little-endian); returns the bytes used. ``records``: the events
    (fabric.spool.EVENT_DTYPE) as fabric.record_kernels.words gives them. Pieces are ASCII texts
    cut by ends: time n (Python's float reprs), the JSON members of port ``slot`` (negative counts
    from the end). ``words`` must hold the pieces plus 26 bytes a change and 128 bytes a record,
    and 8 bytes more."""
    w = 0
    acc = np.int64(0)
    fill = 0
    n_ports = port_ends.shape[0]
    for n in range(records.shape[0]):
        w, acc, fill = append_text(words, w, acc, fill, JSON_FRAME, FRAME_BYTES)
        v = records[n, FRAME]
        if v < DECIMAL16:  # the decimals of this loop appended here, not by a call (see below)
            a, ka, c, kc = decimal16(v)
            w, acc, fill = append(words, w, acc, fill, a, ka)
            w, acc, fill = append(words, w, acc, fill, c, kc)
        else:
            w, acc, fill = append_decimal(words, w, acc, fill, v)
        w, acc, fill = append_text(words, w, acc, fill, JSON_TS, TS_BYTES)
        slot_bitmap = records[n, SLOT_BITMAP]
        s = slot_bitmap & 0xFFFFFFFF
        s = s - (1 << 32) + n_ports if s >= 1 << 31 else s  # an int32: negative counts from the end
        for piece in range(2):  # the time, a comma, the port (append_piece's loop, here: see below)
            if piece == 0:
                text, p, end = times, time_ends[n - 1] if n > 0 else 0, time_ends[n]
            else:
                text, p, end = ports, port_ends[s - 1] if s > 0 else 0, port_ends[s]
            while p < end:
                k = min(8, end - p)
                word = np.int64(0)
                for j in range(k):
                    word |= np.int64(text[p + j]) << (8 * j)
                w, acc, fill = append(words, w, acc, fill, word, k)
                p += k
            if piece == 0:
                w, acc, fill = append(words, w, acc, fill, np.int64(COMMA), 1)
        w, acc, fill = append_text(words, w, acc, fill, JSON_BLOCK, BLOCK_BYTES)
        block_unconfirmed = records[n, BLOCK_UNCONFIRMED]
        b = block_unconfirmed & 0xFFFF
        a, ka, c, kc = decimal16(b)
        w, acc, fill = append(words, w, acc, fill, a, ka)
        w, acc, fill = append(words, w, acc, fill, c, kc)
        w, acc, fill = append_text(words, w, acc, fill, JSON_BITMAP, BITMAP_BYTES)
        bits = (slot_bitmap >> 32) & 0xFFFFFFFF
        a, ka, c, kc = decimal16(bits)
        w, acc, fill = append(words, w, acc, fill, a, ka)
        w, acc, fill = append(words, w, acc, fill, c, kc)
        w, acc, fill = append_text(words, w, acc, fill, JSON_CHANGES, CHANGES_BYTES)
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
                w, acc, fill = append(words, w, acc, fill, word, k)
            else:
                w, acc, fill = _append_long_index(words, w, acc, fill, at, first)
            first = False
            lane = 16 * (i & 3)
            lo, ko = _pkey((records[n, OLD + (i >> 2)] >> lane) & 0xFFFF, COMMA)
            word, kn = _pkey((records[n, NEW + (i >> 2)] >> lane) & 0xFFFF, CLOSE)
            hi = (word >> (56 - 8 * ko)) >> 8
            lo = lo | ((word << (8 * ko)) & LOW63)
            w, acc, fill = append16(words, w, acc, fill, lo, hi, ko + kn)
        if (block_unconfirmed >> 16) & 0xFF:
            w, acc, fill = append_text(words, w, acc, fill, JSON_TRUE, TRUE_BYTES)
        else:
            w, acc, fill = append_text(words, w, acc, fill, JSON_FALSE, FALSE_BYTES)
    words[w] = acc  # the bytes an append carried into the next word
    return 8 * w + fill
