"""Spooled event records into ``madpipe snoop``'s event lines, a chunk at a time (what
:mod:`~madpipe.pipeline.fabric.output` runs on its threads). The line kernels are
text_kernels.event_lines and json_kernels.event_json_lines, both appending words of up to 8
bytes (fabric.word_text): texts they copy from are padded, and buffers have slack, for that.
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.decode import float_kernels
from madpipe.pipeline.fabric import json_kernels as kj
from madpipe.pipeline.fabric import record_kernels as kr
from madpipe.pipeline.fabric import text_kernels as kt
from madpipe.pipeline.fabric.model import PortId
from madpipe.pipeline.fabric.word_text import PIECE_PAD, SLACK

#: Events formatted at a time: their text (~700 bytes an event of 32 JSON changes) is still in
#: the CPU's caches when it is written out.
FORMAT_RECORDS = 1 << 13

#: Bytes a JSON line takes besides its time, its port and its changes (json_kernels' bound).
JSON_EXTRA = 128


def port_json(pid: PortId) -> str:
    """``**pid.as_json()`` inside a JSON Lines record, as jsonl writes it."""
    import json  # here: text output never needs it

    return json.dumps(pid.as_json(), separators=(",", ":"))[1:-1]


def pieces(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """ASCII bytes of texts end to end, and where each ends (UnicodeEncodeError if not ASCII)."""
    data = np.frombuffer(bytearray("".join(texts).encode("ascii")), np.uint8)  # writable, as kernels take
    return data, np.cumsum(np.fromiter(map(len, texts), np.int64, len(texts)))


def padded(text: np.ndarray) -> np.ndarray:
    """ASCII bytes with PIECE_PAD bytes of 0 after them, as the kernels copy pieces from."""
    out = np.zeros(len(text) + PIECE_PAD, np.uint8)
    out[:len(text)] = text
    return out


def column(chunk: np.ndarray, name: str) -> np.ndarray:
    """A field of spooled records as a C-contiguous copy (a view steps over whole records)."""
    return chunk[name].copy()


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def change_count(chunk: np.ndarray) -> int:
    """How many changes the chunk's events hold (bits set in their bitmaps)."""
    return int(_POPCOUNT[column(chunk, "bitmap").view(np.uint8)].sum(dtype=np.int64))


class Ports:
    """The port pieces of the lines: ``texts[slot]`` each port's text (the last, "", for slot -1),
    as the kernels take them, and the longest's length (to size a chunk's buffer)."""

    def __init__(self, texts: list[str]):
        data, self.ends = pieces(texts)
        self.data = padded(data)
        self.longest = max(map(len, texts))


def format_chunk(chunk: np.ndarray, buf: np.ndarray, ports: Ports, times_of, kernel,
                 extra: int) -> tuple[np.ndarray, int]:
    """A chunk of event records as lines by ``kernel`` into ``buf`` (``uint8``; a larger one
    when it is too small): (the buffer, the bytes used). ``times_of(chunk)`` gives the ASCII bytes
    of each time and where each ends; ``extra`` bytes a line besides those pieces and the changes.
    Port texts are ASCII by construction (labels of integers; json.dumps escapes the rest)."""
    times, time_ends = times_of(chunk)
    room = len(times) + kt.CHANGE_BYTES * change_count(chunk) + len(chunk) * (ports.longest + extra) + SLACK
    if len(buf) < room:
        buf = np.empty(room, np.uint8)
    used = kernel(kr.words(chunk), padded(times), time_ends, ports.data, ports.ends, buf)
    return buf, used


def json_chunk(chunk: np.ndarray, buf: np.ndarray, ports: Ports) -> tuple[np.ndarray, int]:
    """A chunk's JSON Lines (fabric.output._EVENT_JSON), as :func:`format_chunk`."""
    return format_chunk(chunk, buf, ports, float_reprs, kj.event_json_lines, JSON_EXTRA)


def relative_times(chunk: np.ndarray, t0_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """text_kernels.relative_times of the chunk's events: (ASCII bytes, where each ends)."""
    buf = np.empty(24 * len(chunk), np.uint8)
    ends = np.empty(len(chunk), np.int64)
    used = kt.relative_times(column(chunk, "ts_ns"), t0_ns, buf, ends)
    return buf[:used], ends


def float_reprs(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """repr() of each event's ts in seconds, as ASCII bytes end to end and where each ends: by
    decode.float_kernels.seconds_reprs, and Python's repr for the values it leaves (exact ties,
    powers of two)."""
    ts_ns = column(chunk, "ts_ns")
    seconds = ts_ns / 1e9
    n = len(seconds)
    out = np.empty(n * float_kernels.REPR_BYTES, np.uint8)
    ends = np.empty(n, np.int64)
    done = np.empty(n, np.uint8)
    used = float_kernels.seconds_reprs(ts_ns, seconds, out, ends, done)
    if done.all():
        return out[:used], ends
    left = np.flatnonzero(done == 0)
    texts = [repr(x) for x in seconds[left].tolist()]
    extra, extra_ends = pieces(texts)
    at = np.concatenate(([0], ends[:-1]))[left]  # where each belongs in what the kernel wrote
    lengths = np.diff(np.concatenate(([0], extra_ends)))
    data = np.insert(out[:used], np.repeat(at, lengths), extra)
    lengths_all = np.diff(np.concatenate(([0], ends)))
    lengths_all[left] = lengths
    return data, np.cumsum(lengths_all)
