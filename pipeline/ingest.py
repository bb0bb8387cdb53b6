"""Capture -> numpy batches, for the pipeline's kernels. Streams: memory stays bounded by the chunk.

>>> for batch in read_batches("pcaps/infiniband_endace_erf_2008.pcap"):   # doctest: +SKIP
...     mads, index = batch.mads()        # uint8[M, 256], rows of the frames that carry a MAD

Classic pcap is cut into records by a numba kernel over the raw bytes (no per-packet Python
objects); pcapng goes through the streaming reader and is packed into the same batches.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from madpipe.codecs.capture import (
    LINKTYPE_ERF, MAX_RECORD, PCAP_HEADER_SIZE, CaptureReader,
)
from madpipe.codecs.erf import ERF_EXT_RUNS_PAST, ERF_SHORT, erf_not_ib
from madpipe.pipeline import kernels_ingest as k

# A MAD frame is at most LRH 8 + GRH 40 + BTH 12 + DETH 8 + MAD 256 + ICRC 4 + VCRC 2 = 330 bytes.
ROW_WIDTH = 336
DEFAULT_BATCH = 1 << 16


def skip_reason(code: int) -> str:
    """The words for a kernels_ingest record code: the same the streaming reader uses."""
    if code >= k.REC_ERF_NOT_IB:
        return erf_not_ib(code - k.REC_ERF_NOT_IB)
    return {k.REC_ERF_SHORT: ERF_SHORT, k.REC_ERF_EXT_RUNS_PAST: ERF_EXT_RUNS_PAST}[code]


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


class Ingest:
    """Iterate FrameBatch objects over a capture; after the loop, ``skipped``, ``frames`` and
    ``error`` (a fatal reason that ended the file early, or None) describe the whole file."""

    def __init__(self, path: str | os.PathLike, batch: int = DEFAULT_BATCH, chunk_bytes: int = 32 << 20):
        self.path = os.fspath(path)
        self.batch = batch
        self.chunk_bytes = max(chunk_bytes, MAX_RECORD + 16)
        self.skipped: Counter[str] = Counter()
        self.frames = 0
        self.error: str | None = None
        with CaptureReader(self.path) as probe:  # validates magic and link type up front
            self.format = probe.format
            self.linktype = probe.linktype
            self.nanosecond = probe.nanosecond
            self.big = getattr(probe, "byte_order", "<") == ">"

    def __iter__(self) -> Iterator[FrameBatch]:
        if self.format == "pcap":
            return self._pcap()
        return self._generic()

    def _pcap(self) -> Iterator[FrameBatch]:
        n_cap = self.batch
        rec_off = np.empty(n_cap, np.int64)
        pkt_off = np.empty(n_cap, np.int64)
        pkt_len = np.empty(n_cap, np.int64)
        orig = np.empty(n_cap, np.int64)
        ts = np.empty(n_cap, np.int64)
        code = np.empty(n_cap, np.uint8)
        scale = 1 if self.nanosecond else 1000
        erf = self.linktype == LINKTYPE_ERF
        buf = np.empty(self.chunk_bytes, np.uint8)
        file_pos = PCAP_HEADER_SIZE
        have = 0
        with open(self.path, "rb") as f:
            f.seek(PCAP_HEADER_SIZE)
            eof = False
            while True:
                if not eof and have < len(buf):
                    got = f.readinto(memoryview(buf)[have:])
                    eof = got == 0
                    have += got
                n, used, bad = k.scan_pcap(buf, have, self.big, scale, erf, MAX_RECORD,
                                           rec_off, pkt_off, pkt_len, orig, ts, code)
                if n:
                    yield self._batch(buf, n, pkt_off, pkt_len, orig, ts, code)
                if bad:
                    self.error = (f"frame {self.frames + 1}, offset {file_pos + used}: "
                                  "record length is corrupt (over 1 MiB)")
                    return
                buf[: have - used] = buf[used:have]
                have -= used
                file_pos += used
                if n == 0 and eof:
                    if have:
                        what = "record header" if have < 16 else "record"
                        self.error = (f"frame {self.frames + 1}, offset {file_pos}: "
                                      f"truncated {what} ({have} bytes left at end of file)")
                    return

    def _batch(self, buf, n, pkt_off, pkt_len, orig, ts, code) -> FrameBatch:
        keep = code[:n] == k.REC_OK
        frames = np.arange(self.frames + 1, self.frames + n + 1, dtype=np.int64)
        skipped: Counter[str] = Counter()
        if not keep.all():
            for c, cnt in zip(*np.unique(code[:n][~keep], return_counts=True)):
                skipped[skip_reason(int(c))] += int(cnt)
        self.skipped.update(skipped)
        self.frames += n
        off = np.ascontiguousarray(pkt_off[:n][keep])
        length = np.ascontiguousarray(pkt_len[:n][keep])
        m = len(off)
        rows = np.empty((m, ROW_WIDTH), np.uint8)
        mad_offset = np.empty(m, np.int16)
        k.gather_rows(buf, off, length, m, rows, mad_offset)
        return FrameBatch(frames[keep], ts[:n][keep].copy(), length, orig[:n][keep].copy(),
                          rows, mad_offset, skipped)

    def _generic(self) -> Iterator[FrameBatch]:
        """pcapng (and anything the streaming reader handles): pack packets into the same rows."""
        with CaptureReader(self.path) as cap:
            pending = []
            skipped: Counter[str] = Counter()
            for pkt in cap:
                if pkt.data is None:
                    skipped[pkt.skip] += 1
                    self.skipped[pkt.skip] += 1
                else:
                    pending.append(pkt)
                if len(pending) >= self.batch:
                    yield self._pack(pending, skipped)
                    pending, skipped = [], Counter()
            if pending or skipped:
                yield self._pack(pending, skipped)
            self.frames = cap.frames
            self.error = cap.error

    def _pack(self, pkts, skipped) -> FrameBatch:
        blob = np.frombuffer(b"".join(p.data for p in pkts), np.uint8) if pkts else np.empty(0, np.uint8)
        length = np.array([len(p.data) for p in pkts], np.int64)
        off = np.zeros(len(pkts), np.int64)
        if len(pkts):
            off[1:] = np.cumsum(length)[:-1]
        rows = np.empty((len(pkts), ROW_WIDTH), np.uint8)
        mad_offset = np.empty(len(pkts), np.int16)
        k.gather_rows(blob, off, length, len(pkts), rows, mad_offset)
        return FrameBatch(
            np.array([p.frame for p in pkts], np.int64), np.array([p.ts_ns for p in pkts], np.int64),
            length, np.array([p.orig_len for p in pkts], np.int64), rows, mad_offset, skipped,
        )


def read_batches(path, batch: int = DEFAULT_BATCH) -> Iterator[FrameBatch]:
    """Shortcut for ``iter(Ingest(path, batch))``."""
    return iter(Ingest(path, batch))
