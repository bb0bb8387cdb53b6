"""numba kernels that write `madpipe snoop`'s integer-only text as ASCII bytes, for large outputs.

Each is the byte-for-byte twin of a Python format (the tests compare them on random input):

- ``pkey_lines``: fabric.text.format_pkeys's ``smpquery pkeys`` lines, ``"%4d: " + 8 x "0x%04x"``;
- ``relative_times``: an event's time, exact from integer nanoseconds: ``relative_time_text``;
- ``event_lines``: whole event lines, ``"%7d %s  %s %5d 0x%08x  %s%s\n"``, from texts made
  elsewhere for the parts that are not integers (the time, the port label); the changes are
  written in place, ``"[%d] 0x%04x->0x%04x"`` joined by spaces;

(The same events as JSON Lines are fabric.json_kernels.event_json_lines.) Events with many
changes are most of the bytes (a Set that rewrites a block is 32 changes, ~550 bytes of text),
so the changes are written straight into the line, not into a buffer first and copied, and
decimals two digits at a time.

Outputs are passed in; the Python side (fabric.output) sizes them, decodes once and slices.
"""
import numpy as np

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


@njit
def _changes(out, pos, bitmap, block, old, new, n):
    """Event n's changes (bits of bitmap[n] in order: index block[n] * 32 + i, old[n, i],
    new[n, i]) at out[pos], "[%d] 0x%04x->0x%04x" joined by spaces; returns the position after."""
    b = np.int64(bitmap[n])
    index = np.int64(block[n]) * 32
    first = True
    for i in range(32):
        if not (b >> i) & 1:
            continue
        if not first:
            out[pos] = 32
            pos += 1
        first = False
        out[pos] = 91  # "["
        pos = _decimal(out, pos + 1, index + i)
        out[pos] = 93  # "]"
        out[pos + 1] = 32
        out[pos + 2] = 48
        out[pos + 3] = 120
        _hex4(out, pos + 4, np.int64(old[n, i]))
        out[pos + 8] = 45  # "-"
        out[pos + 9] = 62  # ">"
        out[pos + 10] = 48
        out[pos + 11] = 120
        _hex4(out, pos + 12, np.int64(new[n, i]))
        pos += 16
    return pos


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


UNCONFIRMED = _ascii(" (unconfirmed)")


@njit
def _constant(out, pos, text):
    for j in range(text.shape[0]):
        out[pos + j] = text[j]
    return pos + text.shape[0]


@njit
def _right(out, pos, value, width):
    """A non-negative int in decimal, right-aligned in ``width`` columns (more if it needs them)."""
    for _ in range(width - _digits(value)):
        out[pos] = 32
        pos += 1
    return _decimal(out, pos, value)


@njit
def _piece(out, pos, text, ends, n):
    """Copy text piece n (text[ends[n - 1]:ends[n]], from 0 for n = 0) to out[pos]."""
    start = ends[n - 1] if n > 0 else 0
    end = pos + ends[n] - start
    out[pos:end] = text[start:ends[n]]  # a slice copy: a byte loop took twice as long
    return end


@njit
def event_lines(frame, times, time_ends, slot, labels, label_ends, block, bitmap, old, new, unconfirmed, out):
    """Event n's line into out, one after another; returns the bytes used. Pieces are ASCII
    texts cut by ends (time n, label slot[n] (negative counts from the end)); out must hold them
    all plus CHANGE_BYTES a change and 48 + len(UNCONFIRMED) bytes a line."""
    pos = 0
    n_labels = label_ends.shape[0]
    for n in range(frame.shape[0]):
        pos = _right(out, pos, np.int64(frame[n]), 7)
        out[pos] = 32
        pos = _piece(out, pos + 1, times, time_ends, n)
        out[pos] = 32
        out[pos + 1] = 32
        s = np.int64(slot[n])
        pos = _piece(out, pos + 2, labels, label_ends, s + n_labels if s < 0 else s)
        out[pos] = 32
        pos = _right(out, pos + 1, np.int64(block[n]), 5)
        out[pos] = 32
        out[pos + 1] = 48
        out[pos + 2] = 120
        b = np.int64(bitmap[n])
        _hex4(out, pos + 3, b >> 16)
        _hex4(out, pos + 7, b & 0xFFFF)
        out[pos + 11] = 32
        out[pos + 12] = 32
        pos = _changes(out, pos + 13, bitmap, block, old, new, n)
        if unconfirmed[n]:
            pos = _constant(out, pos, UNCONFIRMED)
        out[pos] = 10
        pos += 1
    return pos
