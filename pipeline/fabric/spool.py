"""Events and findings as fixed records, spooled in order (in memory, then a temporary file) and read back.

Memory stays bounded whatever the count (:func:`spool_memory`); a :class:`RecordList` shows the records as
:class:`~madpipe.pipeline.fabric.model.Event` and :class:`~madpipe.pipeline.fabric.model.Finding`
objects, one chunk at a time.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO

import numpy as np

from madpipe.pipeline.fabric.model import FINDING_TEXT, Event, Finding
from madpipe.pipeline.kernels import populate
from madpipe.pipeline.kernels.workers import Job, Workers

#: Bytes of event (and of finding) records kept in memory before they go to a temporary file:
#: at least this many, more when memory allows (:func:`spool_memory`).
SPOOL_MEMORY = 16 << 20
#: ... and at most this many.
SPOOL_MEMORY_MAX = 1 << 30


def spool_memory() -> int:
    """How many bytes of records a spool keeps in memory: an eighth of the memory available now,
    within SPOOL_MEMORY..SPOOL_MEMORY_MAX. A million events are 160 MB; spilled, writing and
    reading them back cost ~0.15 s of a 1-2 s ``madpipe snoop``."""
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return SPOOL_MEMORY
    return max(SPOOL_MEMORY, min(SPOOL_MEMORY_MAX, available // 8))

#: An event record: 160 bytes, every field at a multiple of its size and the record a multiple
#: of 8 (the last 5 bytes are 0), so kernels write and read it as RECORD_WORDS 64-bit words
#: (fabric.record_kernels): a packed 155-byte record took a store a byte.
EVENT_DTYPE = np.dtype({
    "names": ["old", "new", "frame", "ts_ns", "slot", "bitmap", "block", "unconfirmed"],
    "formats": [("<u2", (32,)), ("<u2", (32,)), "<i8", "<i8", "<i4", "<u4", "<u2", "u1"],
    "offsets": [0, 64, 128, 136, 144, 148, 152, 154],
    "itemsize": 160,
})
#: EVENT_DTYPE's words: old (0-7), new (8-15), frame, ts_ns, slot | bitmap << 32, block |
#: unconfirmed << 16.
RECORD_WORDS = EVENT_DTYPE.itemsize // 8
FINDING_DTYPE = np.dtype([("frame", "<i8"), ("slot", "<i4"), ("block", "<u2"), ("kind", "i1")])


#: Records a chunk read back holds at most.
CHUNK = 1 << 16

#: Records a RecordArena hands out as plain arrays before it starts an arena (a small capture
#: never starts its helper thread).
ARENA_AFTER = 1 << 14
#: Bytes an arena holds at most (EVENT_DTYPE: 1.7M records; never more than the spool keeps in
#: memory: a spilled spool's arena is freed with its last view); only pages written take memory.
ARENA_BYTES = 256 << 20
#: Bytes the helper thread maps ahead of what is handed out: at least this, else as much as the
#: last take (whose successor is likely the same size). A fixed 16 MiB mapped 32 MiB for the
#: 12.8 MB of records of a 1M-frame SM snoop: 4k page faults more on the core the reader needs.
MAP_AHEAD = 2 << 20
#: Bytes of a page (the smallest; a huge page is mapped by its first write).
PAGE = 4096


class RecordArena:
    """Record arrays whose pages are mapped already. A million events are 160 MB of fresh pages,
    and faulting them in (the kernel zeroes each) took a tenth of a snoop's time on the thread
    that writes the records. Here they are views, one after another, of an arena whose pages a
    helper thread maps (a write of 0 to each) ``MAP_AHEAD`` bytes ahead of what is handed out,
    on the other core. It never writes a page already handed out: a take waits for the helper's
    range that covers it (or maps it itself). The arena lives as long as any view of it."""

    def __init__(self, dtype: np.dtype, arena_bytes: int = ARENA_BYTES):
        self.dtype = np.dtype(dtype)
        self.arena_bytes = arena_bytes
        self.handed = 0
        self.arena: np.ndarray | None = None
        self.used = 0  # records handed out of the arena
        self.mapped = 0  # bytes of the arena mapped (written once), from its start
        self.pending: tuple[Job, int] | None = None  # the helper's range being mapped: (job, end)
        self.pool: Workers | None = None

    def take(self, n: int) -> np.ndarray:
        """An array of n records (their contents unset)."""
        self.handed += n
        size = self.dtype.itemsize
        if self.handed <= ARENA_AFTER or n * size > self.arena_bytes:
            return np.empty(n, self.dtype)
        if self.arena is None or (self.used + n) * size > self.arena_bytes:
            self._wait()
            self.arena = np.empty(self.arena_bytes // size, self.dtype)
            populate.small_pages(self.arena)  # see there: faster to map on a VM, after idle
            self.used, self.mapped = 0, 0
        end = (self.used + n) * size
        if end > self.mapped:
            self._wait()
        if end > self.mapped:  # the helper is behind: map the rest here
            map_pages(self.arena.view(np.uint8), self.mapped, end)
            self.mapped = end
        out = self.arena[self.used:self.used + n]
        self.used += n
        if self.pending is None:
            upto = min(self.mapped + max(MAP_AHEAD, n * size), self.arena.nbytes)
            if upto > self.mapped:
                if self.pool is None:  # only a large capture needs it
                    self.pool = Workers(1, "madpipe-map-ahead")
                self.pending = (self.pool.submit(map_pages, self.arena.view(np.uint8), self.mapped, upto), upto)
        return out

    def _wait(self) -> None:
        if self.pending is not None:
            future, end = self.pending
            future.result()
            self.mapped = max(self.mapped, end)
            self.pending = None

    def close(self) -> None:
        """No more takes: the helper finishes its range on its own (pages no view holds)."""
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None
        self.pending = None


def map_pages(data: np.ndarray, start: int, end: int) -> None:
    """Write 0 at data[start] and at each page after it, below ``end``: the kernel maps the pages
    (numpy releases the GIL meanwhile)."""
    data[start:end:PAGE] = 0


class Spool:
    """Fixed records appended in order and read back in order; past ``memory`` bytes they are
    written to an anonymous temporary file, so that memory stays bounded whatever the count."""

    def __init__(self, dtype: np.dtype, memory: int = SPOOL_MEMORY):
        self.dtype = np.dtype(dtype)
        self.memory = memory
        self.chunks: list[np.ndarray] = []
        self.held = 0
        self.file: IO[bytes] | None = None
        self.on_disk = 0
        self.count = 0

    def append(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.chunks.append(records)
        self.held += records.nbytes
        self.count += len(records)
        if self.held > self.memory:
            if self.file is None:
                import tempfile  # only a spill needs it

                self.file = tempfile.TemporaryFile(prefix="madpipe-spool-")
            self.file.seek(0, os.SEEK_END)
            for chunk in self.chunks:
                self.file.write(np.ascontiguousarray(chunk).view(np.uint8).data)  # its buffer, no copy
                self.on_disk += len(chunk)
            self.chunks, self.held = [], 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        """The records, as arrays of up to 64k records each."""
        if self.file is not None:
            done, size = 0, self.dtype.itemsize
            while done < self.on_disk:  # seek each time: another reader may have moved the file
                take = min(self.on_disk - done, CHUNK)
                self.file.seek(done * size)
                yield np.frombuffer(self.file.read(take * size), self.dtype)
                done += take
        for chunk in self.chunks:
            for start in range(0, len(chunk), CHUNK):
                yield chunk[start:start + CHUNK]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class RecordList(Sequence):
    """A read-only sequence of objects made from a Spool's records, one chunk at a time.

    ``ports[slot]`` is the PortId of the records' ``slot`` field; printers that want speed read
    ``spool`` chunk by chunk and never make the objects.
    """

    def __init__(self, spool: Spool, make, ports: list):
        self.spool = spool
        self.make = make  # (chunk of records, ports) -> list of objects
        self.ports = ports

    def __len__(self) -> int:
        return len(self.spool)

    def __iter__(self):
        for chunk in self.spool:
            yield from self.make(chunk, self.ports)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("record index out of range")
        for chunk in self.spool:
            if index < len(chunk):
                return self.make(chunk[index:index + 1], self.ports)[0]
            index -= len(chunk)
        raise IndexError("record index out of range")


def events_of(chunk: np.ndarray, ports: list) -> list[Event]:
    """EVENT_DTYPE records as Event objects."""
    out = []
    ts_ns = chunk["ts_ns"].tolist()
    olds, news = chunk["old"].tolist(), chunk["new"].tolist()
    for j, (frame, slot, block, bitmap, unconfirmed) in enumerate(zip(
            chunk["frame"].tolist(), chunk["slot"].tolist(), chunk["block"].tolist(), chunk["bitmap"].tolist(),
            chunk["unconfirmed"].tolist())):
        old, new = olds[j], news[j]
        changes = [(block * 32 + i, old[i], new[i]) for i in range(32) if bitmap >> i & 1]
        out.append(Event(frame, ts_ns[j], ports[slot], block, bitmap, changes, bool(unconfirmed)))
    return out


def findings_of(chunk: np.ndarray, ports: list) -> list[Finding]:
    """FINDING_DTYPE records as Finding objects."""
    return [Finding(frame, ports[slot], block, kind, FINDING_TEXT[kind]) for frame, slot, block, kind in zip(
        chunk["frame"].tolist(), chunk["slot"].tolist(), chunk["block"].tolist(), chunk["kind"].tolist())]
