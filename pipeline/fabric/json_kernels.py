"""numba kernel writing ``madpipe snoop -T json``'s event records, eight bytes at a store.

``event_json_lines`` is the byte-for-byte twin of fabric.output._EVENT_JSON (the tests compare
them on random input). A Set that rewrites a block is an event of 32 changes, ~700 bytes of
JSON of which nearly all are the decimals of 96 small numbers; written a byte at a time, the
stores and the digit loops were the cost (~700 MB/s). Here:

- the output is a ``uint64`` array (the bytes little-endian): text is appended as words of up
  to 8 bytes into an accumulator, and each append stores one aligned word, with no branch on
  where the word boundary falls (:func:`_append`);
- decimals come from a table of the 10000 four-digit strings, one word each (40 KB): a P_Key
  is at most a table word and a digit, a change's index with its ``,[`` and ``,`` one word, a
  frame number up to 10**8 one word; a change is two appends (its index, then both P_Keys);
  (the digits computed in lanes, without the table, ran slower);
- every text appended is ASCII, so a word's top bit is 0 and all arithmetic stays in int64,
  meaning the same as plain Python (NUMBA_DISABLE_JIT=1) once masked to 63 bits.
"""
import numpy as np

from madpipe.pipeline.kernels.jit import njit

#: Bits below the top one: every word of ASCII text fits, and masking with it keeps plain
#: Python's unbounded shifts equal to numba's 64-bit ones.
LOW63 = (1 << 63) - 1


def _word(text: str) -> int:
    """Up to 8 ASCII bytes as one little-endian word."""
    return int.from_bytes(text.encode("ascii"), "little")


def _words(text: str) -> tuple[np.ndarray, int]:
    """A constant text as words of 8 bytes (the last one shorter), for _append_text, and its length."""
    return np.array([_word(text[i:i + 8]) for i in range(0, len(text), 8)], np.int64), len(text)


def _four_digit_words() -> np.ndarray:
    """"0000".."9999", each as one word of 4 bytes (computed by numpy: 10000 _word calls took
    10 ms of every start-up)."""
    i = np.arange(10000, dtype=np.int32)
    return sum((48 + i // 10 ** (3 - d) % 10) << (8 * d) for d in range(4)).astype(np.int32)


#: "0000".."9999", each as one word of 4 bytes.
FOUR_DIGITS = _four_digit_words()

# The constant parts of fabric.output._EVENT_JSON, in order: their words, and their lengths.
JSON_FRAME, FRAME_BYTES = _words('{"type":"event","frame":')
JSON_TS, TS_BYTES = _words(',"ts":')
JSON_BLOCK, BLOCK_BYTES = _words(',"block":')
JSON_BITMAP, BITMAP_BYTES = _words(',"bitmap":')
JSON_CHANGES, CHANGES_BYTES = _words(',"changes":[')
JSON_TRUE, TRUE_BYTES = _words('],"unconfirmed":true}\n')
JSON_FALSE, FALSE_BYTES = _words('],"unconfirmed":false}\n')
COMMA = 0x2C
CLOSE = 0x5D  # "]"
OPEN_INDEX = 0x5B2C  # ",[" as a word


@njit
def _append(words, w, acc, fill, value, k):
    """Append k bytes (1..8, ``value`` little-endian, ASCII) to the text in ``words``: ``w`` the
    word being filled, ``fill`` its bytes used, ``acc`` those bytes. Returns the new (w, acc, fill).
    Word w is stored every time; the bytes carried into the next word are stored by the next
    append, or at the end by the caller (``words[w] = acc``)."""
    acc |= (value << (8 * fill)) & LOW63
    words[np.uint64(w)] = acc  # (an unsigned index: no test for a negative one)
    total = fill + k
    if total >= 8:  # the bytes past the word start the next one (a select, not a branch)
        acc = (value >> (56 - 8 * fill)) >> 8
    return w + (total >> 3), acc, total & 7


@njit
def _append_text(words, w, acc, fill, text, length):
    """Append a constant text: ``text`` its words (_words), ``length`` its bytes."""
    for j in range(text.shape[0] - 1):
        w, acc, fill = _append(words, w, acc, fill, np.int64(text[j]), 8)
    return _append(words, w, acc, fill, np.int64(text[text.shape[0] - 1]), length - 8 * (text.shape[0] - 1))


@njit
def _short(v):
    """v (0..9999) in decimal: (its word, its length)."""
    k = 1 + (v >= 10) + (v >= 100) + (v >= 1000)
    return np.int64(FOUR_DIGITS[v]) >> (8 * (4 - k)), np.int64(k)


@njit
def _upto8(v):
    """v (0..99999999) in decimal: (its word, its length)."""
    if v < 10000:
        return _short(v)
    hi = v // 10000
    word, k = _short(hi)
    return word | (np.int64(FOUR_DIGITS[v - hi * 10000]) << (8 * k)), k + 4


@njit
def _eight(v):
    """v (0..99999999) as exactly 8 digits: one word."""
    hi = v // 10000
    return (np.int64(FOUR_DIGITS[hi]) | (np.int64(FOUR_DIGITS[v - hi * 10000]) << 32)) & LOW63


@njit
def _append_decimal(words, w, acc, fill, v):
    """Append a non-negative int64 in decimal."""
    if v >= 100000000:
        low = v % 100000000
        v //= 100000000
        if v >= 100000000:
            middle = v % 100000000
            word, k = _upto8(v // 100000000)
            w, acc, fill = _append(words, w, acc, fill, word, k)
            w, acc, fill = _append(words, w, acc, fill, _eight(middle), 8)
        else:
            word, k = _upto8(v)
            w, acc, fill = _append(words, w, acc, fill, word, k)
        return _append(words, w, acc, fill, _eight(low), 8)
    word, k = _upto8(v)
    return _append(words, w, acc, fill, word, k)


@njit
def _pkey(v, after):
    """A uint16 in decimal followed by the byte ``after``: (its word, its length)."""
    if v >= 10000:
        hi = v // 10000
        return (48 + hi) | (np.int64(FOUR_DIGITS[v - hi * 10000]) << 8) | (after << 40), np.int64(6)
    word, k = _short(v)
    return word | (after << (8 * k)), k + 1


@njit
def _append_piece(words, w, acc, fill, text, ends, n):
    """Append piece n of ASCII bytes cut by ends (text[ends[n - 1]:ends[n]], from 0 for n = 0)."""
    p = ends[n - 1] if n > 0 else 0
    end = ends[n]
    while p < end:
        k = min(8, end - p)
        word = np.int64(0)
        for j in range(k):
            word |= np.int64(text[p + j]) << (8 * j)
        w, acc, fill = _append(words, w, acc, fill, word, k)
        p += k
    return w, acc, fill


@njit
def _append16(words, w, acc, fill, lo, hi, k):
    """Append k bytes (1..16: ``lo`` then ``hi``, little-endian, ASCII), as _append."""
    acc |= (lo << (8 * fill)) & LOW63
    words[np.uint64(w)] = acc
    spill = (lo >> (56 - 8 * fill)) >> 8
    nxt = spill | ((hi << (8 * fill)) & LOW63)
    words[np.uint64(w + 1)] = nxt
    total = fill + k
    if total >= 16:
        acc = (hi >> (56 - 8 * fill)) >> 8
    elif total >= 8:
        acc = nxt
    return w + (total >> 3), acc, total & 7


@njit
def _append_changes(words, w, acc, fill, bits, index, old, new, n):
    """Event n's changes, "[index + i,old,new]" for the bits i of ``bits``, joined by commas."""
    first = True
    for i in range(32):
        if not (bits >> i) & 1:
            continue
        at = index + i
        if at < 10000:
            word, k = _short(at)
            word = OPEN_INDEX | (word << 16) | (COMMA << (8 * k + 16))
            k += 3
            if first:
                word >>= 8  # no comma before the first
                k -= 1
            w, acc, fill = _append(words, w, acc, fill, word, k)
        else:
            if first:
                w, acc, fill = _append(words, w, acc, fill, np.int64(OPEN_INDEX >> 8), 1)
            else:
                w, acc, fill = _append(words, w, acc, fill, np.int64(OPEN_INDEX), 2)
            w, acc, fill = _append_decimal(words, w, acc, fill, at)
            w, acc, fill = _append(words, w, acc, fill, np.int64(COMMA), 1)
        first = False
        lo, ko = _pkey(np.int64(old[n, i]), COMMA)
        word, kn = _pkey(np.int64(new[n, i]), CLOSE)
        hi = (word >> (56 - 8 * ko)) >> 8
        lo = lo | ((word << (8 * ko)) & LOW63)
        w, acc, fill = _append16(words, w, acc, fill, lo, hi, ko + kn)
    return w, acc, fill


@njit
def event_json_lines(frame, times, time_ends, slot, ports, port_ends, block, bitmap, old, new, unconfirmed,
                     words):
    """Event n's JSON Lines record (fabric.output._EVENT_JSON), one after another, into ``words``
    (uint64, the bytes little-endian); returns the bytes used. Pieces are ASCII texts cut by ends:
    time n (Python's float reprs), the JSON members of port slot[n] (negative counts from the
    end). ``words`` must hold the pieces plus 26 bytes a change and 128 bytes a record, and 8
    bytes more."""
    w = 0
    acc = np.int64(0)
    fill = 0
    n_ports = port_ends.shape[0]
    for n in range(frame.shape[0]):
        w, acc, fill = _append_text(words, w, acc, fill, JSON_FRAME, FRAME_BYTES)
        w, acc, fill = _append_decimal(words, w, acc, fill, np.int64(frame[n]))
        w, acc, fill = _append_text(words, w, acc, fill, JSON_TS, TS_BYTES)
        w, acc, fill = _append_piece(words, w, acc, fill, times, time_ends, n)
        w, acc, fill = _append(words, w, acc, fill, np.int64(COMMA), 1)
        s = np.int64(slot[n])
        w, acc, fill = _append_piece(words, w, acc, fill, ports, port_ends, s + n_ports if s < 0 else s)
        w, acc, fill = _append_text(words, w, acc, fill, JSON_BLOCK, BLOCK_BYTES)
        b = np.int64(block[n])
        w, acc, fill = _append_decimal(words, w, acc, fill, b)
        w, acc, fill = _append_text(words, w, acc, fill, JSON_BITMAP, BITMAP_BYTES)
        bits = np.int64(bitmap[n])
        w, acc, fill = _append_decimal(words, w, acc, fill, bits)
        w, acc, fill = _append_text(words, w, acc, fill, JSON_CHANGES, CHANGES_BYTES)
        w, acc, fill = _append_changes(words, w, acc, fill, bits, b * 32, old, new, n)
        if unconfirmed[n]:
            w, acc, fill = _append_text(words, w, acc, fill, JSON_TRUE, TRUE_BYTES)
        else:
            w, acc, fill = _append_text(words, w, acc, fill, JSON_FALSE, FALSE_BYTES)
    words[w] = acc  # the bytes an append carried into the next word
    return 8 * w + fill
