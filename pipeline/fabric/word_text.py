"""Text appended a word at a time: the machinery of the event writers.

``madpipe snoop``'s event lines (text_kernels.event_lines) and JSON Lines
(json_kernels.event_json_lines) are mostly the decimals and hex digits of small numbers, ~550
and ~700 bytes an event of 32 changes; written a byte at a time, the stores and the digit loops
were the cost. Here:

- text is appended as words of up to 8 bytes (16 with :func:`put16`) to a ``uint8`` output:
  each append stores all 8 bytes of its word at the position, unaligned, and moves the
  position by its length; the bytes past it are written over by the next append
  (kernels.unaligned.put8). Pieces are copied 8 bytes at a load (kernels.unaligned.get8). An earlier accumulator of aligned words made every append wait for the one
  before it (which word, which shift): 2x slower;
- decimals come from a table of the 10000 four-digit strings, one word each (40 KB; indexed
  unsigned: no test for a negative index), hex digits from arithmetic on the nibbles
  (:func:`hex4`);
- every text appended is ASCII, so a word's top bit is 0 and all arithmetic stays in int64,
  meaning the same as plain Python (NUMBA_DISABLE_JIT=1) once masked to 63 bits.

An output must have SLACK bytes past what is appended, and a text pieces are copied from
PIECE_PAD bytes past its last piece (fabric.event_lines sees to both).
"""
import numpy as np

from madpipe.pipeline.kernels.jit import njit
from madpipe.pipeline.kernels.unaligned import get8, put8

#: Bits below the top one: every word of ASCII text fits, and masking with it keeps plain
#: Python's unbounded shifts equal to numba's 64-bit ones.
LOW63 = (1 << 63) - 1


def text_word(text: str) -> int:
    """Up to 8 ASCII bytes as one little-endian word."""
    return int.from_bytes(text.encode("ascii"), "little")


def text_words(text: str) -> tuple[np.ndarray, int]:
    """A constant text (up to 24 bytes) as words of 8 bytes (the last one shorter), for
    append_text, and its length."""
    if len(text) > 24:
        raise ValueError(f"append_text takes up to 24 bytes, not {len(text)}: {text!r}")
    return np.array([text_word(text[i:i + 8]) for i in range(0, len(text), 8)], np.int64), len(text)


def _four_digit_words() -> np.ndarray:
    """"0000".."9999", each as one word of 4 bytes (computed by numpy: 10000 text_word calls took
    10 ms of every start-up)."""
    i = np.arange(10000, dtype=np.int32)
    return sum((48 + i // 10 ** (3 - d) % 10) << (8 * d) for d in range(4)).astype(np.int32)


#: "0000".."9999", each as one word of 4 bytes.
FOUR_DIGITS = _four_digit_words()

#: Bytes a text of pieces must have past its last one: put_piece copies 8 bytes at a time.
PIECE_PAD = 8
#: Bytes an output must have past the last one appended: put16 stores 16 bytes.
SLACK = 16

@njit
def put(out, pos, value, k):
    """Append k bytes (0..8, ``value`` little-endian, ASCII) at out[pos]; returns the position
    after them. All 8 bytes of the word are stored: those past k are written over by the next
    append, or lie past the end."""
    put8(out, pos, value)
    return pos + k


@njit
def put16(out, pos, lo, hi, k):
    """Append k bytes (0..16: ``lo`` then ``hi``), as :func:`put`."""
    put8(out, pos, lo)
    put8(out, pos + 8, hi)
    return pos + k


@njit
def put_text(out, pos, text, length):
    """Append a constant text of up to 24 bytes: ``text`` its words (text_words), ``length`` its
    bytes."""
    put8(out, pos, text[0])
    if length > 8:
        put8(out, pos + 8, text[1])
        if length > 16:
            put8(out, pos + 16, text[2])
    return pos + length


@njit
def short_decimal(v):
    """v (0..9999) in decimal: (its word, its length)."""
    k = 1 + (v >= 10) + (v >= 100) + (v >= 1000)
    return np.int64(FOUR_DIGITS[np.uint64(v)]) >> (8 * (4 - k)), np.int64(k)


@njit
def upto8(v):
    """v (0..99999999) in decimal: (its word, its length)."""
    if v < 10000:
        return short_decimal(v)
    hi = v // 10000
    word, k = short_decimal(hi)
    return word | (np.int64(FOUR_DIGITS[np.uint64(v - hi * 10000)]) << (8 * k)), k + 4


@njit
def eight_digits(v):
    """v (0..99999999) as exactly 8 digits: one word."""
    hi = v // 10000
    return (np.int64(FOUR_DIGITS[np.uint64(hi)]) | (np.int64(FOUR_DIGITS[np.uint64(v - hi * 10000)]) << 32)) & LOW63


@njit
def decimal16(v):
    """v (0..10**16 - 1) in decimal as two words: (first, its length, second, its length), the
    second empty (length 0) below 10**8. Arrays apart, so that a kernel's own loop can append
    them without a call."""
    if v < 100000000:
        word, k = upto8(v)
        return word, k, np.int64(0), np.int64(0)
    hi = v // 100000000
    word, k = upto8(hi)
    return word, k, eight_digits(v - hi * 100000000), np.int64(8)


@njit
def put_decimal(out, pos, v):
    """Append a non-negative int64 in decimal."""
    if v < 100000000:  # the common case, small enough to be compiled into the caller
        word, k = upto8(v)
        return put(out, pos, word, k)
    return _put_long_decimal(out, pos, v)


@njit
def _put_long_decimal(out, pos, v):
    """put_decimal of v >= 10**8."""
    low = v % 100000000
    v //= 100000000
    if v >= 100000000:
        middle = v % 100000000
        word, k = upto8(v // 100000000)
        pos = put(out, pos, word, k)
        pos = put(out, pos, eight_digits(middle), 8)
    else:
        word, k = upto8(v)
        pos = put(out, pos, word, k)
    return put(out, pos, eight_digits(low), 8)


@njit
def put_piece(out, pos, text, ends, n):
    """Append piece n of ASCII bytes cut by ends (text[ends[n - 1]:ends[n]], from 0 for n = 0),
    8 bytes at a copy: ``text`` must have 8 bytes past its last piece (:func:`padded`)."""
    p = ends[n - 1] if n > 0 else 0
    end = ends[n]
    at = pos - p
    while p < end:
        put8(out, at + p, get8(text, p))
        p += 8
    return at + end


@njit
def hex4(v):
    """v (0..0xFFFF) as four lower-case hex digits: one word of 4 bytes. Each nibble goes to its
    own byte; adding 6 carries into bit 4 of the byte exactly for a..f, which then moves up by
    the 0x27 from ":" to "a"."""
    x = ((v >> 12) & 0xF) | (((v >> 8) & 0xF) << 8) | (((v >> 4) & 0xF) << 16) | ((v & 0xF) << 24)
    return x + 0x30303030 + (((x + 0x06060606) >> 4) & 0x01010101) * 0x27
