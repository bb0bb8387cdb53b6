"""numba kernels that write `madpipe snoop`'s integer-only text as ASCII bytes, for large outputs.

Each is the byte-for-byte twin of a Python format (the tests compare them on random input):

- ``pkey_lines``: fabric.text.format_pkeys's ``smpquery pkeys`` lines, ``"%4d: " + 8 x "0x%04x"``;
- ``relative_times``: an event's time, exact from integer nanoseconds: ``relative_time_text``;
- ``event_lines``: whole event lines, ``"%7d %s  %s %5d 0x%08x  %s%s\n"``, from texts made
  elsewhere for the parts that are not integers (the time, the port label); the changes,
  ``"[%d] 0x%04x->0x%04x"`` joined by spaces, two appends each.

(The same events as JSON Lines are fabric.json_kernels.event_json_lines.) Events with many
changes are most of the bytes (a Set that rewrites a block is 32 changes, ~550 bytes of text),
so ``event_lines`` appends words, as the JSON writer does (:mod:`madpipe.pipeline.fabric.word_text`):
written a byte at a time, a change took ~28 ns, in words ~17 (one thread, 8k events), stored
unaligned rather than through an accumulator of aligned words about half that.

Outputs are passed in; the Python side (fabric.output) sizes them, decodes once and slices.
"""
import numpy as np

from madpipe.pipeline.fabric.record_kernels import BLOCK_UNCONFIRMED, FRAME, NEW, OLD, SLOT_BITMAP
from madpipe.pipeline.fabric.word_text import (
    LOW63,
    hex4,
    put,
    put16,
    put_decimal,
    put_piece,
    put_text,
    short_decimal,
    text_words,
    upto8,
)
from madpipe.pipeline.kernels.jit import njit

PKEY_LINE_BYTES = 62  # "   0: " + 8 x "0xhhhh" with 7 spaces + "\n"


def _ascii(text: str) -> np.ndarray:
    """A constant text as bytes kernels copy (an array: numba freezes it as a constant)."""
    return np.frombuffer(text.encode("ascii"), np.uint8)


HEX_DIGITS = _ascii("0123456789abcdef")
DIGIT_PAIRS = _ascii("".join(f"{i:02d}" for i in range(100)))


@njit
def _hex4(out, pos, value):
    out[pos] = HEX_DIGITS[(value >> 12) & 15]
    out[pos + 1] = HEX_DIGITS[(value >> 8) & 15]
    out[pos + 2] = HEX_DIGITS[(value >> 4) & 15]
    out[pos + 3] = HEX_DIGITS[value & 15]


@njit
def _digits(value):
    """How many decimal digits a non-negative int has (compares first: most are P_Keys, indices)."""
    if value < 10:
        return 1
    if value < 100:
        return 2
    if value < 1000:
        return 3
    if value < 10000:
        return 4
    if value < 100000:
        return 5
    digits = 6
    limit = 1000000
    while value >= limit and digits < 19:
        digits += 1
        limit *= 10
    return digits


@njit
def _decimal(out, pos, value):
    """Write a non-negative int in decimal at out[pos]; returns the position after it."""
    end = pos + _digits(value)
    p = end
    while value >= 100:
        q = value // 100
        r = 2 * (value - 100 * q)
        out[p - 1] = DIGIT_PAIRS[r + 1]
        out[p - 2] = DIGIT_PAIRS[r]
        p -= 2
        value = q
    if value >= 10:
        out[p - 1] = DIGIT_PAIRS[2 * value + 1]
        out[p - 2] = DIGIT_PAIRS[2 * value]
    else:
        out[p - 1] = 48 + value
    return end


@njit
def pkey_lines(tables, entries, out):
    """For table p, lines 0..ceil(entries[p] / 8) - 1 of tables[p] (uint16[P, 128]), in order, into
    out (uint8[L, PKEY_LINE_BYTES], L the total line count). Each line is 8 whole P_Keys."""
    line = 0
    for p in range(tables.shape[0]):
        for start in range(0, entries[p], 8):
            row = out[line]
            for j in range(6):
                row[j] = 32
            _decimal(row, 4 - (1 if start < 10 else 2 if start < 100 else 3), start)
            row[4] = 58  # ":"
            for k in range(8):
                pos = 6 + 7 * k
                row[pos] = 48  # "0"
                row[pos + 1] = 120  # "x"
                _hex4(row, pos + 2, np.int64(tables[p, start + k]))
                row[pos + 6] = 32 if k < 7 else 10
            line += 1
    return line


#: At most this many bytes a change: "[2097151,65535,65535]" or "[2097151] 0xffff->0xffff" and a separator.
CHANGE_BYTES = 26


TIME_WIDTH = 12


def relative_time_text(ts_ns: int, t0_ns: int) -> str:
    """The text output's time column: (ts_ns - t0_ns) seconds, rounded half to even to the
    microsecond from the exact integer (no float on the way), right-aligned in 12 columns."""
    us, rest = divmod(abs(ts_ns - t0_ns), 1000)
    if rest > 500 or (rest == 500 and us & 1):
        us += 1
    sign = "-" if ts_ns < t0_ns and us else ""
    return f"{sign}{us // 1_000_000}.{us % 1_000_000:06d}".rjust(TIME_WIDTH)


@njit
def relative_times(ts_ns, t0_ns, out, ends):
    """relative_time_text of each ts_ns[n] (int64[N]) into out (at least 24 bytes a time), ending
    at ends[n] (int64[N], written). Returns the bytes used."""
    pos = 0
    for n in range(ts_ns.shape[0]):
        d = ts_ns[n] - t0_ns
        negative = d < 0
        if negative:
            d = -d
        us = d // 1000
        rest = d - us * 1000
        if rest > 500 or (rest == 500 and us & 1):
            us += 1
        sec = us // 1000000
        frac = us - sec * 1000000
        width = _digits(sec) + 7 + (1 if negative and us else 0)
        for _ in range(TIME_WIDTH - width):
            out[pos] = 32
            pos += 1
        if negative and us:
            out[pos] = 45  # "-"
            pos += 1
        pos = _decimal(out, pos, sec)
        out[pos] = 46  # "."
        for k in range(6, 0, -1):
            out[pos + k] = 48 + frac % 10
            frac //= 10
        pos += 7
        ends[n] = pos
    return pos


UNCONFIRMED_LF, UNCONFIRMED_LF_BYTES = text_words(" (unconfirmed)\n")
SPACES = 0x2020202020202020
HEX_PREFIX = 0x783020  # " 0x"
ARROW_HEX = 0x78303E2D  # "->0x"
CLOSE_HEX = 0x7830205D  # "] 0x"
OPEN = 0x5B  # "["
SPACE_OPEN = 0x5B20  # " ["


@njit
def _padded(v, width):
    """v (0..99999999) right-aligned in ``width`` (1..8) columns, as "%*d" (wider when it
    needs more): (its word, its length)."""
    word, k = upto8(v)
    if k >= width:
        return word, k
    pad = width - k
    return (SPACES >> (8 * (8 - pad))) | (word << (8 * pad)), np.int64(width)


@njit
def event_lines(records, times, time_ends, labels, label_ends, out):
    """Event n's line, one after another, into ``out`` (uint8, as word_text appends); returns
    the bytes used. ``records``: the events (fabric.spool.EVENT_DTYPE) as
    fabric.record_kernels.words gives them. Pieces are ASCII texts cut by ends (time n, the label
    of its slot (negative counts from the end)), each text with word_text.PIECE_PAD bytes past its
    last piece; ``out`` must hold them all plus CHANGE_BYTES a change and 48 +
    UNCONFIRMED_LF_BYTES bytes a line, and word_text.SLACK bytes more."""
    pos = 0
    n_labels = label_ends.shape[0]
    for n in range(records.shape[0]):
        f = records[n, FRAME]
        if f < 10000000:
            word, k = _padded(f, 7)
            pos = put(out, pos, word | (np.int64(32) << (8 * k)), k + 1)
        else:
            pos = put_decimal(out, pos, f)
            pos = put(out, pos, np.int64(32), 1)
        pos = put_piece(out, pos, times, time_ends, n)
        pos = put(out, pos, np.int64(0x2020), 2)
        slot_bitmap = records[n, SLOT_BITMAP]
        s = slot_bitmap & 0xFFFFFFFF
        s = s - (1 << 32) + n_labels if s >= 1 << 31 else s  # an int32: negative counts from the end
        pos = put_piece(out, pos, labels, label_ends, s)
        block_unconfirmed = records[n, BLOCK_UNCONFIRMED]
        b = block_unconfirmed & 0xFFFF
        word, k = _padded(b, 5)  # a uint16: at most 5 digits
        pos = put(out, pos, np.int64(32) | (word << 8), k + 1)
        bits = (slot_bitmap >> 32) & 0xFFFFFFFF
        lo = np.int64(HEX_PREFIX) | (hex4(bits >> 16) << 24) | ((hex4(bits & 0xFFFF) << 56) & LOW63)
        hi = (hex4(bits & 0xFFFF) >> 8) | (np.int64(0x2020) << 24)
        pos = put16(out, pos, lo, hi, 13)
        # The changes, "[index + i] 0x%04x->0x%04x" (old and new entry i) for the bits i of
        # bits, joined by spaces, two appends each: written here, not by an inlined helper, which
        # numba's reference counts of its two array parameters at each event cost more than.
        index = b * 32
        first = True
        for i in range(32):
            if not (bits >> i) & 1:
                continue
            at = index + i
            opening = np.int64(OPEN) if first else np.int64(SPACE_OPEN)
            k_open = 1 if first else 2
            first = False
            if at < 10000:
                word, k = short_decimal(at)
                lo = opening | (word << (8 * k_open)) | ((np.int64(CLOSE_HEX) << (8 * (k_open + k))) & LOW63)
                hi = np.int64(CLOSE_HEX) >> (64 - 8 * (k_open + k))
                pos = put16(out, pos, lo, hi, k_open + k + 4)
            else:
                pos = put(out, pos, opening, k_open)
                pos = put_decimal(out, pos, at)
                pos = put(out, pos, np.int64(CLOSE_HEX), 4)
            lane = 16 * (i & 3)
            lo = hex4((records[n, OLD + (i >> 2)] >> lane) & 0xFFFF) | (np.int64(ARROW_HEX) << 32)
            pos = put16(out, pos, lo, hex4((records[n, NEW + (i >> 2)] >> lane) & 0xFFFF), 12)
        if (block_unconfirmed >> 16) & 0xFF:
            pos = put_text(out, pos, UNCONFIRMED_LF, UNCONFIRMED_LF_BYTES)
        else:
            pos = put(out, pos, np.int64(10), 1)
    return pos
