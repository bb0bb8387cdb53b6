"""A snoop's events as JSON Lines, formatted on another core while the snoop still runs.

``madpipe snoop -T json`` of a capture where every SubnSet changes a table is mostly
formatting (~700 bytes an event of 32 changes), and its event lines cannot be written as they
are found: the port tables, known at the end only, come first. The snoop runs on one core, so
:class:`LinesAhead` formats each chunk of events on another meanwhile and keeps the bytes, at
most ``budget`` of them; ``print_json`` writes them and formats only the rest.

A port's text is taken when its first event is formatted. A port met first by LID and later
also by a directed route gets its ``dr_path`` only then: ``print_json`` uses the bytes only if
every port's final text is the one they were formatted with, and otherwise formats every
event at print time, as without this.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from madpipe.pipeline.fabric import event_lines as el
from madpipe.pipeline.fabric import text_kernels as kt

#: Bytes a line may take besides its changes and its port (its time, the JSON around).
_LINE_ROOM = 32 + el.JSON_EXTRA + 16


class LinesAhead:
    """Chunks of event records, in spool order, formatted by one thread (the snoop has the other
    core); ``records`` of them are covered from the first, then nothing more once ``budget``
    bytes of lines would be passed."""

    def __init__(self, budget: int):
        self.budget = budget
        self.pool: ThreadPoolExecutor | None = None
        self.parts: list[tuple[int, Future]] = []  # (records, future of (buffer, bytes used))
        self.records = 0
        self.room = 0
        self.texts: list[str] = []  # each slot's port text, taken at its first event
        self.ports: el.Ports | None = None
        self.full = False

    def add(self, events: np.ndarray, port_of) -> None:
        """Events just spooled (EVENT_DTYPE, the next in order); ``port_of(slot)`` their ports' PortIds."""
        if self.full or not len(events):
            return
        top = int(events["slot"].max())
        if top >= len(self.texts):
            self.texts += [el.port_json(port_of(slot)) for slot in range(len(self.texts), top + 1)]
            self.ports = el.Ports(self.texts + [""])
        for start in range(0, len(events), el.FORMAT_RECORDS):
            chunk = events[start:start + el.FORMAT_RECORDS]
            room = len(chunk) * (32 * kt.CHANGE_BYTES + self.ports.longest + _LINE_ROOM)
            if self.room + room > self.budget:
                self.full = True
                return
            if self.pool is None:
                self.pool = ThreadPoolExecutor(1, thread_name_prefix="madpipe-lines-ahead")
            self.room += room
            self.records += len(chunk)
            self.parts.append((len(chunk), self.pool.submit(el.json_chunk, chunk, np.empty(0, np.uint64),
                                                            self.ports)))

    def take(self, texts: list[str]) -> tuple[list[Future], int]:
        """What print_json writes first: the futures of the parts that have started (those still
        queued are cancelled: the printer's threads format them sooner) and how many records they
        cover; none if a port's final text (``texts`` by slot) is not the one they used."""
        if self.texts != texts[:len(self.texts)]:
            self.close()
            return [], 0
        kept, records = [], 0
        for n, future in self.parts:  # one thread takes them in order: those started come first
            if future.cancel():
                break
            kept.append(future)
            records += n
        self.close()
        return kept, records

    def close(self) -> None:
        for _, future in self.parts:
            future.cancel()
        self.parts = []
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None
