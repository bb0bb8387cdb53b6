"""The fabric snoop of a capture as it arrives (``madpipe snoop -r -``, ``--follow``): each change
event handed on when the frame that decides it has been read, the tables at the end.

One pass of :class:`~madpipe.pipeline.fabric.snoop_pass.SnoopPass` over a
:class:`~madpipe.pipeline.ingest.live.LiveStream`, batch by batch as data arrives. Under the
``set`` rule a Set is decided as soon as its GetResp has come (not when the pairing window has
run past it, as for a file), or unconfirmed once the capture's clock is ``ANSWER_WAIT_NS`` past
it with no answer. A port keeps the name it had when first met: there is no second pass to rename
it while the events are printed (a file's snoop makes one when a later answer names the LID behind
a path); the tables at the end carry the names the whole capture gives.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from madpipe.pipeline.fabric import kernels as kf
from madpipe.pipeline.fabric.model import Event, FabricSnoop, PortId, titled
from madpipe.pipeline.fabric.routes import Routes
from madpipe.pipeline.fabric.snoop import PAIR_WINDOW
from madpipe.pipeline.fabric.snoop_pass import SnoopPass, extract_buffers
from madpipe.pipeline.fabric.spool import EVENT_DTYPE, SPOOL_MEMORY, Spool, events_of
from madpipe.pipeline.ingest.live import LiveStream
from madpipe.pipeline.ingest.reader import DEFAULT_BATCH, Ingest

#: A Set still unanswered this long after it (capture time) is decided as unconfirmed. opensm
#: gives up on an answer after 200 ms (its transaction timeout) and sends again.
ANSWER_WAIT_NS = 1_000_000_000


class _HandedOn(Spool):
    """The events spool, which also hands each appended chunk to ``listener``."""

    def __init__(self, listener: Callable[[np.ndarray], None]):
        super().__init__(EVENT_DTYPE, SPOOL_MEMORY)
        self.listener = listener

    def append(self, records: np.ndarray) -> None:
        super().append(records)
        if len(records):
            self.listener(records)


def port_ids(run: SnoopPass) -> list[PortId]:
    """Every slot's port as the result will name it (its LID, its directed route, its port)."""
    return [run.port_id(slot) for slot in range(len(run.pids))]


def port_titles(run: SnoopPass) -> dict[PortId, str]:
    """Every slot's port with its node's NodeDescription as far as the capture has said it."""
    return {pid: titled(pid.label(), run.routes.names.of(run.slot_routes[slot]))
            for slot, pid in enumerate(port_ids(run))}


def answered(run: SnoopPass, now_ns: int) -> int:
    """How many of the waiting Sets, from the oldest, can be decided: their answer has come, or
    they have waited ANSWER_WAIT_NS. A Set still waiting holds back those after it (events stay
    in frame order)."""
    sets = run.pending.view()
    m = len(sets["seq"])
    if not m:
        return 0
    answers = run.answers.view()
    code = np.empty(m, np.int32)
    kf.pair_answers(sets["tid"], sets["slot"], sets["seq"], answers["tid"], answers["slot"], answers["seq"],
                    answers["status"], run.window, code)
    waiting = (code < 0) & (sets["ts_ns"] > now_ns - ANSWER_WAIT_NS)
    return int(np.argmax(waiting)) if waiting.any() else m


def snoop_stream(stream: LiveStream, on_events: Callable[[list[Event], int, dict[PortId, str]], None],
                 rule: str = "set", batch: int = DEFAULT_BATCH) -> FabricSnoop:
    """Snoop ``stream`` until it ends (or is stopped); ``on_events(events, first_ts_ns, titles)`` gets
    the events of each batch as they are found (times count from the capture's first frame;
    ``titles``: each port's label and node name so far, :func:`port_titles`)."""
    routes = Routes()
    run = SnoopPass(routes, rule, "new", PAIR_WINDOW, None, 0, 1, None, SPOOL_MEMORY, batch)
    run.events.close()
    run.events = _HandedOn(lambda records: on_events(events_of(records, port_ids(run)), run.first_ts_ns or 0,
                                                     port_titles(run)))
    buffers = extract_buffers(batch)
    ing = Ingest(stream, batch)
    for raw in ing.raw():
        run.batch(raw, buffers, learn=True)
        if rule == "set" and len(raw):
            run.decide(final=False, upto=answered(run, int(raw.ts_ns.max())))
    run.decide(final=True)
    routes.finish()
    rename_ports(run)
    return run.result(ing)


def rename_ports(run: SnoopPass) -> None:
    """Name every port as the whole capture names it (a LID learned after the port was met), where
    that name is not another port's already: the tables at the end carry the names a file's
    second pass would give (the events printed on the way keep the names they had)."""
    taken = set(run.pids)
    for (route, port), slot in zip(run.port_route, run.port_slot.tolist()):
        name = run.routes.port_id(route, port)
        if name != run.pids[slot] and name not in taken:
            taken.discard(run.pids[slot])
            run.pids[slot] = name
            taken.add(name)
