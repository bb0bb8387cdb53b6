"""Capture -> numpy batches, for the pipeline's kernels. Streams: memory stays bounded by the chunk.

>>> for batch in read_batches("pcaps/infiniband_endace_erf_2008.pcap"):   # doctest: +SKIP
...     mads, index = batch.mads()        # uint8[M, 256], rows of the frames that carry a MAD

Classic pcap is cut into records by a numba kernel over the raw bytes (no per-packet Python
objects); pcapng goes through the streaming reader and is packed into the same batches.
"""
from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, cast

import numpy as np

from madpipe.codecs.capture import (
    LINKTYPE_ERF,
    MAX_RECORD,
    PCAP_HEADER_SIZE,
    PCAP_TS_FRACTION,
    CaptureReader,
)
from madpipe.codecs.erf_records import ERF_EXT_RUNS_PAST, ERF_SHORT, erf_not_ib
from madpipe.pipeline.ingest import kernels as k
from madpipe.pipeline.ingest import progress
from madpipe.pipeline.ingest.live import LiveStream
from madpipe.pipeline.kernels import jit

# A MAD frame is at most LRH 8 + GRH 40 + BTH 12 + DETH 8 + MAD 256 + ICRC 4 + VCRC 2 = 330 bytes.
ROW_WIDTH = 336
DEFAULT_BATCH = 1 << 16
# Bytes read at a time. A chunk that stays in the CPU's caches between the read, the record walk
# and the kernels that follow is worth 3x over one that does not: 32 MiB chunks ran `madpipe
# snoop` at 1.8M frames/s on a 2-core EPYC VM (32 MiB L3), 4 MiB chunks at 3M/s.
CHUNK_BYTES = 4 << 20


def skip_reason(code: int) -> str:
    """The words for a kernels_ingest record code: the same the streaming reader uses."""
    if code >= k.REC_ERF_NOT_IB:
        return erf_not_ib(code - k.REC_ERF_NOT_IB)
    return {k.REC_ERF_SHORT: ERF_SHORT, k.REC_ERF_EXT_RUNS_PAST: ERF_EXT_RUNS_PAST,
            k.REC_TS_FRACTION: PCAP_TS_FRACTION}[code]


@dataclass
class FrameBatch:
    """Up to ``batch`` consecutive frames of a capture, as fixed-width rows.

    frame: int64[N] 1-based frame numbers; ts_ns: int64[N]; length: int64[N] bytes of the IB
    packet (rows longer than ROW_WIDTH are cut, length says so); orig_len: int64[N] on the wire;
    data: uint8[N, ROW_WIDTH] from the LRH, zero-padded; mad_offset: int16[N] where the MAD starts
    in the row, -1 when the frame carries none. Skipped records are not rows: ``skipped`` counts them.
    """

    frame: np.ndarray
    ts_ns: np.ndarray
    length: np.ndarray
    orig_len: np.ndarray
    data: np.ndarray
    mad_offset: np.ndarray
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.frame)

    def mads(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8[M, 256] MADs, int64[M] row index of each) for the frames that carry a MAD."""
        m = int(np.count_nonzero(self.mad_offset >= 0))
        mads = np.empty((m, 256), np.uint8)
        index = np.empty(m, np.int64)
        k.gather_mads(self.data, self.mad_offset, mads, index)
        return mads, index


@dataclass
class RawBatch:
    """Up to ``batch`` consecutive records, not yet copied out of the read buffer.

    Record ``i`` is ``buf[pkt_off[i]:pkt_off[i] + pkt_len[i]]`` (the IB packet from the LRH) when
    ``code[i] == REC_OK``; other codes are records that yield no packet (kernels_ingest's REC_*).
    ``frame``, ``ts_ns`` and ``orig_len`` are per record. The arrays and ``buf`` are only valid
    until the next batch is read: kernels that need nothing but a few fields (``madpipe snoop``)
    read them here and never pay for the fixed-width rows of a FrameBatch.
    """

    buf: np.ndarray
    pkt_off: np.ndarray
    pkt_len: np.ndarray
    orig_len: np.ndarray
    ts_ns: np.ndarray
    code: np.ndarray
    frame: np.ndarray
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.pkt_off)

    def rows(self) -> FrameBatch:
        """The records that hold a packet, copied into a FrameBatch."""
        keep = self.code == k.REC_OK
        if keep.all():
            off, length = self.pkt_off, self.pkt_len
            frame, ts, orig = self.frame.copy(), self.ts_ns.copy(), self.orig_len.copy()
        else:
            off, length = np.ascontiguousarray(self.pkt_off[keep]), self.pkt_len[keep]
            frame, ts, orig = self.frame[keep], self.ts_ns[keep], self.orig_len[keep]
        length = np.ascontiguousarray(length)
        m = len(off)
        rows = np.empty((m, ROW_WIDTH), np.uint8)
        mad_offset = np.empty(m, np.int16)
        k.gather_rows(self.buf, off, length, m, rows, mad_offset)
        return FrameBatch(frame, ts, length.copy(), orig, rows, mad_offset, self.skipped)


class Ingest:
    """Iterate FrameBatch objects over a capture; after the loop, ``skipped``, ``frames`` and
    ``error`` (a fatal reason that ended the file early, or None) describe the whole file.

    ``raw()`` iterates the same batches as RawBatch objects (no row copy)."""

    def __init__(self, path: str | os.PathLike | LiveStream, batch: int | None = None,
                 chunk_bytes: int | None = None):
        self.stream = path if isinstance(path, LiveStream) else None
        self.path = path.name if isinstance(path, LiveStream) else os.fspath(path)
        self.batch = batch or DEFAULT_BATCH
        self.chunk_bytes = max(chunk_bytes or CHUNK_BYTES, MAX_RECORD + 16)
        self.skipped: Counter[str] = Counter()
        self.frames = 0
        self.error: str | None = None
        # Validates magic and link type up front; a stream is read on from where the probe stopped.
        probe = CaptureReader(cast(BinaryIO, self.stream) if self.stream is not None else self.path)
        self.format = probe.format
        self.linktype = probe.linktype
        self.nanosecond = probe.nanosecond
        self.big = getattr(probe, "byte_order", "<") == ">"
        self._live_reader = probe if self.stream is not None else None
        if self.stream is None:
            probe.close()
            # From Python nobody sized the inputs first: a small capture must not build the kernels.
            jit.note_inputs([self.path])

    def __iter__(self) -> Iterator[FrameBatch]:
        for raw in self.raw():
            yield raw.rows()

    def raw(self, sets: int = 1) -> Iterator[RawBatch]:
        """The capture as RawBatch objects; each stays valid until ``sets`` more are asked for
        (the reader cycles through that many buffers: 2 lets a thread read ahead)."""
        if self.format == "pcap":
            return self._pcap(sets)
        return self._generic()

    def _pcap(self, sets: int = 1) -> Iterator[RawBatch]:
        n_cap = self.batch
        arrays = [tuple(np.empty(n_cap, t) for t in (np.int64,) * 5 + (np.uint8,)) for _ in range(sets)]
        bufs = [np.empty(self.chunk_bytes, np.uint8) for _ in range(sets)]
        scale = 1 if self.nanosecond else 1000
        erf = self.linktype == LINKTYPE_ERF
        turn = 0
        buf = bufs[0]
        file_pos = PCAP_HEADER_SIZE
        have = 0
        with self._records() as (f, size):
            eof = False
            while True:
                if not eof and have < len(buf):
                    got = f.readinto(buf.data[have:])  # a stream: what has arrived, so batches follow it
                    eof = got == 0
                    have += got
                    if size:
                        progress.update(self.path, file_pos + have, size)
                rec_off, pkt_off, pkt_len, orig, ts, code = arrays[turn]
                n, used, bad, _ = k.scan_pcap(buf, have, self.big, scale, erf, MAX_RECORD,
                                           rec_off, pkt_off, pkt_len, orig, ts, code)
                if n:
                    yield self._raw_batch(buf, n, pkt_off, pkt_len, orig, ts, code)
                if bad:
                    incl = self._u32(buf, used + 8)
                    self.error = (f"frame {self.frames + 1}, offset {file_pos + used}: "
                                  f"record length {incl} is corrupt (over {MAX_RECORD})")
                    return
                if n:  # the batch just given out keeps its buffers: the rest goes to the next set
                    turn = (turn + 1) % sets
                    nxt = bufs[turn]
                    nxt[: have - used] = buf[used:have]
                    buf = nxt
                else:
                    buf[: have - used] = buf[used:have]
                have -= used
                file_pos += used
                if n == 0 and eof:
                    # The words are CaptureReader's, so that every reader says the same.
                    if have and have < 16:
                        self.error = (f"frame {self.frames + 1}, offset {file_pos}: "
                                      f"truncated record header ({have} of 16 bytes)")
                    elif have:
                        self.error = (f"frame {self.frames + 1}, offset {file_pos}: "
                                      f"truncated record: {have - 16} of {self._u32(buf, 8)} bytes")
                    return

    @contextmanager
    def _records(self) -> Iterator[tuple[Any, int]]:
        """The capture past its header, and its size (0 for a live stream, which the probe has
        read past its header already)."""
        if self.stream is not None:
            yield self.stream, 0
            return
        with open(self.path, "rb") as f:
            f.seek(PCAP_HEADER_SIZE)
            yield f, os.fstat(f.fileno()).st_size

    def _u32(self, buf, pos) -> int:
        return int.from_bytes(buf[pos:pos + 4].tobytes(), "big" if self.big else "little")

    def _raw_batch(self, buf, n, pkt_off, pkt_len, orig, ts, code) -> RawBatch:
        codes = code[:n]
        skipped: Counter[str] = Counter()
        if codes.any():
            for c, cnt in zip(*np.unique(codes[codes != k.REC_OK], return_counts=True)):
                skipped[skip_reason(int(c))] += int(cnt)
        self.skipped.update(skipped)
        frames = np.arange(self.frames + 1, self.frames + n + 1, dtype=np.int64)
        self.frames += n
        return RawBatch(buf, pkt_off[:n], pkt_len[:n], orig[:n], ts[:n], codes, frames, skipped)

    def _generic(self) -> Iterator[RawBatch]:
        """pcapng (and anything the streaming reader handles): pack packets into one buffer."""
        stream = self.stream
        with self._live_reader or CaptureReader(self.path) as cap:
            pending = []
            skipped: Counter[str] = Counter()
            for pkt in cap:
                if pkt.data is None:
                    skipped[pkt.skip] += 1
                    self.skipped[pkt.skip] += 1
                else:
                    pending.append(pkt)
                if pending and (len(pending) >= self.batch or (stream is not None and not stream.ready())):
                    yield self._pack(pending, skipped)
                    pending, skipped = [], Counter()
            if pending or skipped:
                yield self._pack(pending, skipped)
            self.frames = cap.frames
            self.error = cap.error

    def _pack(self, pkts, skipped) -> RawBatch:
        blob = np.frombuffer(b"".join(p.data for p in pkts), np.uint8) if pkts else np.empty(0, np.uint8)
        length = np.array([len(p.data) for p in pkts], np.int64)
        off = np.zeros(len(pkts), np.int64)
        if len(pkts):
            off[1:] = np.cumsum(length)[:-1]
        return RawBatch(blob, off, length, np.array([p.orig_len for p in pkts], np.int64),
                        np.array([p.ts_ns for p in pkts], np.int64), np.zeros(len(pkts), np.uint8),
                        np.array([p.frame for p in pkts], np.int64), skipped)


def read_batches(path, batch: int | None = None) -> Iterator[FrameBatch]:
    """Shortcut for ``iter(Ingest(path, batch))``."""
    return iter(Ingest(path, batch))
