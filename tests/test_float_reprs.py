"""decode.float_kernels.float_reprs writes repr(float) byte for byte, or leaves the value to
Python; fabric.event_lines.float_reprs (the JSON outputs' ts) is repr for every value either way."""
import numpy as np
import pytest

from madpipe.pipeline.decode import float_kernels as fk
from madpipe.pipeline.kernels import jit

N = 100_000 if jit.enabled() else 2_000  # plain Python: the same code, slowly


def written(values=None, ts_ns=None):
    """float_reprs of values (seconds_reprs of ts_ns / 1e9 when ts_ns is given): each text, or
    None where the kernel leaves it to Python."""
    if ts_ns is not None:
        ts_ns = np.ascontiguousarray(ts_ns, np.int64)
        values = ts_ns / 1e9
    values = np.ascontiguousarray(values, np.float64)
    n = len(values)
    out = np.empty(n * fk.REPR_BYTES, np.uint8)
    ends = np.empty(n, np.int64)
    done = np.empty(n, np.uint8)
    if ts_ns is None:
        used = fk.float_reprs(values, out, ends, done)
    else:
        used = fk.seconds_reprs(ts_ns, values, out, ends, done)
    text = out[:used].tobytes().decode("ascii")
    starts = [0] + ends[:-1].tolist()
    return [text[a:b] if ok else None for a, b, ok in zip(starts, ends.tolist(), done.tolist())]


def workloads(rng):
    return {
        "epoch ns": (1_700_000_000_000_000_000 + rng.integers(0, 10 ** 17, N)) / 1e9,
        "a capture's run": (1_700_000_000_000_000_000 + np.cumsum(rng.integers(1, 3000, N))) / 1e9,
        "seconds from zero": rng.integers(0, 10 ** 12, N) / 1e9,
        "any magnitude": np.exp(rng.uniform(np.log(1e-4), np.log(9e15), N)),
        "short decimals": rng.integers(1, 10 ** 6, N) / 10.0 ** rng.integers(0, 7, N),
        "negative": -rng.uniform(0, 1e10, N),
        "any bits": rng.integers(0, 2 ** 63, N).view(np.float64),
    }


@pytest.mark.parametrize("name", list(workloads(np.random.default_rng(0))))
def test_kernel_writes_repr_or_leaves_it(name):
    values = workloads(np.random.default_rng(7))[name]
    got = written(values)
    want = [repr(x) for x in values.tolist()]
    assert [g for g, w in zip(got, want) if g is not None and g != w] == []
    left = sum(g is None for g in got)
    if name in ("epoch ns", "a capture's run", "seconds from zero", "negative"):
        assert left <= N // 1000, left  # what timestamps look like: nearly all written


def test_edges():
    edges = [1e-4, 0.00010000000000000002, 9007199254740991.0, 9007199254740992.0, 0.1, 0.5, 1.0, 2.0, 3.0,
             1.5, 1700000000.015625, 1700000000.0000014, 123456789.0, 0.0, -0.0, float("nan"), float("inf"),
             1e16, 5e-324, 2.2250738585072014e-308, 0.3, 2 / 3, 1 / 3, 1e15 + 0.3]
    got = written(edges)
    for x, g in zip(edges, got):
        assert g is None or g == repr(x), x
    assert got[edges.index(1700000000.0000014)] == "1700000000.0000014"
    assert got[edges.index(0.1)] == "0.1" and got[edges.index(123456789.0)] == "123456789.0"


def test_json_times_are_repr_also_where_the_kernel_leaves_them():
    from madpipe.pipeline.fabric import event_lines
    from madpipe.pipeline.fabric.spool import EVENT_DTYPE

    chunk = np.zeros(7, EVENT_DTYPE)
    # 0 is left to Python (zero); 2**30 s, a power of two the search leaves, is whole microseconds
    chunk["ts_ns"] = [1_700_000_000_000_001_400, 2 ** 30 * 10 ** 9, 0, 5, 1_700_000_000_015_625_000,
                      1_073_741_824_000_000_000, 1_700_000_000_000_000_000]
    data, ends = event_lines.float_reprs(chunk)
    text = data.tobytes().decode("ascii")
    pieces = [text[a:b] for a, b in zip([0] + ends[:-1].tolist(), ends.tolist())]
    assert pieces == [repr(x) for x in (chunk["ts_ns"] / 1e9).tolist()]
    assert written(chunk["ts_ns"] / 1e9)[1] is None  # the search leaves it
    assert written(ts_ns=chunk["ts_ns"])[1] == "1073741824.0" and written(ts_ns=chunk["ts_ns"])[2] is None


def test_seconds_from_whole_microseconds_are_repr():
    """seconds_reprs writes whole microseconds in [1 s, 2**33 s) from the integer, the rest by the
    search: repr(ts_ns / 1e9) either way, at the range's ends and every count of trailing zeros."""
    rng = np.random.default_rng(5)
    lo, hi = fk.MICROSECONDS_FROM, fk.MICROSECONDS_BELOW
    micro = rng.integers(lo // 1000, hi // 1000, N) * 1000
    zeros = micro // 10 ** rng.integers(3, 10, N) * 10 ** rng.integers(3, 10, N)  # 0..6 trailing zeros of µs
    edges = np.array([lo, lo - 1000, lo + 1000, hi - 1000, hi, hi + 1000, 2 ** 32 * 10 ** 9, 2 ** 31 * 10 ** 9 + 1000,
                      1_700_000_000_000_000_000, 1_700_000_000_000_001_000, 1_700_000_000_100_000_000, 0, 1000,
                      -1_700_000_000_000_000_000, 2 ** 63 - 1, 1_700_000_000_000_000_001], np.int64)
    for ts in (micro, zeros[zeros >= lo], edges, rng.integers(0, 2 ** 62, N), micro + rng.integers(1, 1000, N)):
        got = written(ts_ns=ts)
        want = [repr(x) for x in (ts / 1e9).tolist()]
        assert [w if g is None else g for g, w in zip(got, want)] == want
    assert sum(g is None for g in written(ts_ns=micro)) <= N // 1000  # nearly all written


def test_search_going_down_finds_what_counting_up_finds():
    """_shortest starts at the digit count where a decimal surely reads back and goes down; the
    plain search counts up from 0 digits. The same digits, and the same values left to Python
    (ties, decimals over 64 bits), on every workload (plain Python: a sample of each)."""
    # Called as they are bound (compiled under MADPIPE_JIT=1): a plain Python search calling
    # compiled helpers would mix two arithmetics (its ints typed int64 by numba, not uint64).
    shortest, counting_up = fk._shortest, fk._shortest_counting_up
    rng = np.random.default_rng(11)
    values = [v for w in workloads(rng).values() for v in w[:400].tolist()]
    values += [0.5, 2.5, 0.125, 1e-4 * 3, 1700000000.5, 4503599627370495.5, 1e15 + 0.5, 0.0001220703125,
               9007199254740991.0, 123.456, 2 / 3]
    compared = 0
    for x in values:
        bits = np.array([x], np.float64).view(np.uint64)[0]
        a = abs(x)
        m = (int(bits) & ((1 << 52) - 1)) | (1 << 52)
        if x != x or a < 1e-4 or a >= 2.0 ** 53 or m == 1 << 52:
            continue  # left to Python before either search
        s = 1075 - ((int(bits) >> 52) & 0x7FF)
        got = shortest(x, bits)
        want = counting_up(np.uint64(m), s, m % 2 == 0)
        assert (int(got[0]), int(got[1]), bool(got[2])) == (int(want[0]), int(want[1]), bool(want[2])), x
        compared += 1
    assert compared > 2000
