"""numba kernel writing ``repr(float)`` of many floats as ASCII: the JSON outputs' ``ts``.

Python's repr is the shortest decimal that reads back as the same double (David Gay's dtoa,
mode 0), ~600 ns a value; a capture's events or frames can be millions. ``float_reprs`` writes
the same bytes for the values it can prove, and leaves the rest to Python (``done[n] = 0``):

- x = M * 2**e (M the 53-bit significand); the doubles next to x bound the decimals that read
  back as x: (2M - 1) * 2**(e - 1) .. (2M + 1) * 2**(e - 1) (the lower one 2**(e - 2) away when
  M is a power of two: left to Python), ends included when M is even (round half to even);
- for j = 0, 1, ... fractional digits, the j-digit decimal nearest x, c / 10**j, is tested
  against those bounds in exact 128-bit integer arithmetic; the first j that passes gives
  Python's digits (a shorter decimal would have passed at a smaller j; the nearest of its
  length is the one dtoa picks). Passing is monotone in j, and from the first j with
  10**j > 2**-e on every j passes, so the search starts there and goes down (~2 tries, not
  ~10; ``_shortest_counting_up`` is the plain search, and the tests hold the two equal);
- only fixed notation (1e-4 <= x < 2**53, as repr writes it there), j <= 19; x halfway between
  two j-digit decimals that read back, or anything else outside that, is left to Python.

Every multiply splits into 32-bit halves and nothing wraps, so the code means the same as
plain Python (NUMBA_DISABLE_JIT=1). The tests compare it with ``repr`` on millions of values.
"""
import numpy as np

from madpipe.pipeline.kernels.jit import njit

POW10 = np.array([10 ** k for k in range(20)], dtype=np.uint64)
POW10_F = np.array([10.0 ** k for k in range(7)])  # exact doubles
MAX_DIGITS = 19  # fractional digits tried: 10**19 is the largest power of ten in a uint64
#: Bytes a value can take: "9007199254740991.0" or "0.0001" + 19 digits, and a sign.
REPR_BYTES = 32

_LOW32 = np.uint64(0xFFFFFFFF)
_THIRTY_TWO = np.uint64(32)
_ONE = np.uint64(1)
_ZERO = np.uint64(0)


@njit
def _mul(a, b):
    """(hi, lo) of the 128-bit product of two uint64."""
    a_lo = a & _LOW32
    a_hi = a >> _THIRTY_TWO
    b_lo = b & _LOW32
    b_hi = b >> _THIRTY_TWO
    low = a_lo * b_lo
    mid = a_hi * b_lo + (low >> _THIRTY_TWO)
    mid2 = a_lo * b_hi + (mid & _LOW32)
    hi = a_hi * b_hi + (mid >> _THIRTY_TWO) + (mid2 >> _THIRTY_TWO)
    lo = ((mid2 & _LOW32) << _THIRTY_TWO) | (low & _LOW32)
    return hi, lo


@njit
def _shift_left(hi, lo, k):
    """(hi, lo) << k for 0 <= k < 128, and whether bits fell off the top."""
    if k == 0:
        return hi, lo, False
    if k >= 64:
        if hi != _ZERO or (k > 64 and (lo >> np.uint64(128 - k)) != _ZERO):
            return _ZERO, _ZERO, True
        return lo << np.uint64(k - 64), _ZERO, False
    kk = np.uint64(k)
    if (hi >> np.uint64(64 - k)) != _ZERO:
        return _ZERO, _ZERO, True
    return (hi << kk) | (lo >> np.uint64(64 - k)), lo << kk, False


@njit
def _less(a_hi, a_lo, b_hi, b_lo):
    return a_hi < b_hi or (a_hi == b_hi and a_lo < b_lo)


@njit
def _nearest(m, j, s):
    """(c, state): c = round(m * 10**j / 2**s) and state 0; on an exact tie c rounded down and
    state 1; state 2 when c needs more than 64 bits."""
    hi, lo = _mul(m, POW10[j])
    if s >= 128:
        return _ZERO, 2
    if s == 0:
        return lo, 0 if hi == _ZERO else 2
    if s < 64:
        ss = np.uint64(s)
        c_hi = hi >> ss
        c = (lo >> ss) | (hi << np.uint64(64 - s))
        rem_hi = _ZERO
        rem_lo = lo & ((_ONE << ss) - _ONE)
        half_hi = _ZERO
        half_lo = _ONE << np.uint64(s - 1)
    else:
        c_hi = _ZERO
        c = hi >> np.uint64(s - 64) if s < 128 else _ZERO
        rem_hi = hi & ((_ONE << np.uint64(s - 64)) - _ONE) if s > 64 else _ZERO
        rem_lo = lo
        half_hi = _ONE << np.uint64(s - 65) if s > 64 else _ZERO
        half_lo = _ZERO if s > 64 else _ONE << np.uint64(63)
    if c_hi != _ZERO or c == np.uint64(0xFFFFFFFFFFFFFFFF):
        return _ZERO, 2
    if rem_hi == half_hi and rem_lo == half_lo:
        return c, 1
    if _less(half_hi, half_lo, rem_hi, rem_lo):
        c += _ONE
    return c, 0


@njit
def _reads_back(c, j, m, s, even):
    """Whether c / 10**j reads back as m * 2**-s: inside the bounds (ends when ``even``)."""
    # Scaled by 2**(s + 2) * 10**j: c * 2**(s + 2) against 10**j * (4m +- 2).
    l_hi, l_lo, over = _shift_left(_ZERO, c, s + 2)
    if over:
        return False
    four_m = m << np.uint64(2)
    up_hi, up_lo = _mul(POW10[j], four_m + np.uint64(2))
    down_hi, down_lo = _mul(POW10[j], four_m - np.uint64(2))
    if even:
        return not _less(l_hi, l_lo, down_hi, down_lo) and not _less(up_hi, up_lo, l_hi, l_lo)
    return _less(down_hi, down_lo, l_hi, l_lo) and _less(l_hi, l_lo, up_hi, up_lo)


@njit
def _shortest(x, bits):
    """repr(x)'s digits (``bits``: x's IEEE bits): (c, j, True) for |x| = c / 10**j, or (0, 0,
    False) where Python must write it. No array: float_reprs' loop calls it for every value."""
    if x != x or x == 0.0:
        return _ZERO, np.int64(0), False
    negative = x < 0.0
    a = -x if negative else x
    if a < 1e-4 or a >= 9007199254740992.0:
        return _ZERO, np.int64(0), False
    exponent = np.int64((bits >> np.uint64(52)) & np.uint64(0x7FF))
    m = (bits & np.uint64(0xFFFFFFFFFFFFF)) | (_ONE << np.uint64(52))
    if m == (_ONE << np.uint64(52)):
        # A power of two: the bounds are closer below than above, so the nearest decimal of a
        # length can fail where a farther one above passes; rare enough to leave to Python.
        return _ZERO, np.int64(0), False
    s = 1075 - exponent  # x = m * 2**-s, 0 <= s < 67 in this range
    even = (m & _ONE) == _ZERO
    # The decimals that read back fill an interval 2**-s wide around x: from the first j with
    # 10**j > 2**s on, the nearest j-digit decimal is always inside, and whenever one of j
    # digits is inside so is one of j + 1 (the nearest of j + 1 digits is no farther). So the
    # shortest is found going down from that j while the one below still reads back: about two
    # tries where counting up from j = 0 took ten, and the same answer as counting up.
    top = ((s * 78913) >> 18) + 1  # floor(s * log10(2)) + 1, exact for s < 1651
    if top > MAX_DIGITS:
        return _shortest_counting_up(m, s, even)
    j = top
    c, state = _nearest(m, j, s)
    if state == 2:
        return _shortest_counting_up(m, s, even)
    while j > 0:
        below, below_state = _nearest(m, j - 1, s)  # below 2**64 as c is: fewer digits
        if not _reads_back(below, j - 1, m, s, even):  # (on a tie, both neighbours or neither)
            break
        j -= 1
        c, state = below, below_state
    if state == 1:  # x halfway between two decimals that read back: dtoa's choice, Python's job
        return _ZERO, np.int64(0), False
    return c, np.int64(j), True


@njit
def _shortest_counting_up(m, s, even):
    """_shortest's search the plain way, j = 0, 1, ...: for the values where the shortcut does not
    apply (more than MAX_DIGITS digits, a decimal over 64 bits)."""
    for j in range(MAX_DIGITS + 1):
        c, state = _nearest(m, j, s)
        if state == 2:
            return _ZERO, np.int64(0), False
        if state == 1:  # x halfway between two decimals of this length: if either reads back,
            if _reads_back(c, j, m, s, even) or _reads_back(c + _ONE, j, m, s, even):
                return _ZERO, np.int64(0), False  # dtoa's choice; else a longer one will read back
            continue
        if _reads_back(c, j, m, s, even):
            return c, np.int64(j), True
    return _ZERO, np.int64(0), False


@njit(inline="always")  # a call with the array costs more than the digits
def _put_repr(out, pos, c, j, negative):
    """Write c / 10**j as repr does in fixed notation ("x.0" for j = 0); returns the position after."""
    if negative:
        out[pos] = 45  # "-"
        pos += 1
    whole = c // POW10[j]
    frac = c - whole * POW10[j]
    count = 1
    while count < 20 and whole >= POW10[count]:
        count += 1
    for k in range(count - 1, -1, -1):
        out[pos + k] = 48 + np.int64(whole % np.uint64(10))
        whole //= np.uint64(10)
    pos += count
    out[pos] = 46  # "."
    if j == 0:
        out[pos + 1] = 48
        return pos + 2
    for k in range(j, 0, -1):
        out[pos + k] = 48 + np.int64(frac % np.uint64(10))
        frac //= np.uint64(10)
    return pos + j + 1


@njit(inline="always")
def _shortest_of_seconds(t, x, bits):
    """_shortest of x = t / 1e9 (``t`` int64 nanoseconds): for a whole number of microseconds
    from 1 s up to 2**33 s (what a pcap with microsecond times holds) the exact decimal d =
    s.uuuuuu, trailing zeros dropped, is tried first. When d reads back as x it is x's repr: a
    decimal with fewer digits, or another with as many, is at least 10**-6 from d, while any two
    decimals that read back as x are within a spacing of doubles (at most 2**-20 < 10**-6 here)
    of each other. It need not read back: t / 1e9 rounds t to a double first (past 2**53 ns),
    then the quotient; then the search decides."""
    if MICROSECONDS_FROM <= t < MICROSECONDS_BELOW and t % 1000 == 0:
        whole = t // 1000000000
        micro = (t - whole * 1000000000) // 1000
        j = np.int64(6)
        if micro == 0:
            j = 0
        else:
            while micro % 10 == 0:
                micro //= 10
                j -= 1
        c = np.uint64(whole) * POW10[j] + np.uint64(micro)  # below 2**53
        # d reads back as the double nearest it: an exact c over an exact 10**j, one rounding
        if np.float64(c) / POW10_F[j] == x:
            return c, j, True
    return _shortest(x, bits)


@njit(inline="always")
def _reprs(values, ts_ns, out, ends, done):
    """float_reprs, and seconds_reprs when ``ts_ns`` holds the values' nanoseconds."""
    pos = 0
    bits = values.view(np.uint64)
    from_ts = ts_ns.shape[0] > 0
    for n in range(values.shape[0]):
        if from_ts:
            c, j, ok = _shortest_of_seconds(ts_ns[n], values[n], bits[n])
        else:
            c, j, ok = _shortest(values[n], bits[n])
        if ok:
            pos = _put_repr(out, pos, c, j, values[n] < 0.0)
            done[n] = 1
        else:
            done[n] = 0
        ends[n] = pos
    return pos


#: Nanosecond counts whose ``repr(ts_ns / 1e9)`` seconds_reprs takes from the integer: whole
#: microseconds from 1 s up to 2**33 s (the year 2242), where doubles are at most 2**-20 s apart.
MICROSECONDS_FROM = 10 ** 9
MICROSECONDS_BELOW = 2 ** 33 * 10 ** 9
_NO_TS = np.zeros(0, np.int64)  # float_reprs' nanoseconds: none


@njit
def seconds_reprs(ts_ns, seconds, out, ends, done):
    """float_reprs of ``seconds`` (float64[N], ``ts_ns / 1e9``), the seconds of ``ts_ns``
    (int64[N] nanoseconds), most of a capture's times without the search
    (:func:`_shortest_of_seconds`)."""
    return _reprs(seconds, ts_ns, out, ends, done)


def float_reprs(values, out, ends, done):
    """repr() of each of values (float64[N]) into out (REPR_BYTES a value), ending at ends[n];
    done[n] 1 where written, 0 where not (the piece is empty: Python writes it). Returns the
    bytes used. The seconds_reprs kernel, with no nanoseconds: every value by the search."""
    return seconds_reprs(_NO_TS, values, out, ends, done)
