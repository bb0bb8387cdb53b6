"""From the datagrams the relay recorded to the native IB packets they stand for.

ibsim answers SMA/PMA requests itself (LIDs and QPs swapped), fills a LID-routed request's
``slid`` 0 ("auto") with the client's LID, sets TID bits 48-63 of every request to the client's
slot, forwards other MADs to the client attached at the destination, and returns what it cannot
deliver to the sender with ``status`` 110. :func:`datagrams_to_packets` does to each recorded
request what ibsim did on arrival, so that requests and answers agree as on a real wire.
"""
from __future__ import annotations

from collections import Counter

from madpipe.codecs import build
from madpipe.codecs import mad as madc
from madpipe.pipeline.sim.protocol import SIM_REQUEST_SIZE, SIM_STATUS_UNDELIVERABLE, SimRequest
from madpipe.pipeline.sim.relay import FROM_SIM, TO_SIM, Connection, Datagram

# -- from recorded datagrams to IB packets -------------------------------------------------------

def _lid_timeline(datagrams: list[Datagram], connections: list[Connection]) -> dict[int, list]:
    """Per connection, (ts_ns, lid) of its own port, as ibsim showed it.

    ibsim fills a LID-routed request's ``slid`` 0 with the sender's LID, so everything it sends to
    a client names that client's LID: ``dlid`` of an answer, a forward or a trap, ``slid`` of a
    request returned undeliverable. GET_PORTINFO answers at attach time give the first value.
    """
    seen: dict[int, list] = {c.index: list(c.lids) for c in connections}
    for d in datagrams:
        if d.direction != FROM_SIM or len(d.data) != SIM_REQUEST_SIZE:
            continue
        req = SimRequest.unpack(d.data)
        if req.mgmt_class == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
            continue
        lid = req.slid if req.status == SIM_STATUS_UNDELIVERABLE else req.dlid
        if lid not in (0, build.ibh.IB_PERMISSIVE_LID):
            seen[d.conn].append((d.ts_ns, lid))
    for marks in seen.values():
        marks.sort()
    return seen


def _lid_at(marks: list, ts: int) -> int:
    """The first LID seen at or after ``ts`` (the request's own answer), else the last before."""
    last = 0
    for t, lid in marks:
        if lid and t >= ts:
            return lid
        if lid:
            last = lid
    return last


def sim_request_frame(req: SimRequest) -> bytes:
    """The native IB packet of one ``struct sim_request``: SMPs on VL15 QP0, other MADs on VL0 QP1."""
    mad = bytes(req.mad[:min(req.length, madc.MAD_SIZE)]).ljust(madc.MAD_SIZE, b"\0")
    if req.mgmt_class in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        return build.build_smp_frame(mad, slid=req.slid, dlid=req.dlid)
    return build.build_gmp_frame(mad, slid=req.slid, dlid=req.dlid, dqp=req.dqp, sqp=req.sqp)


#: Datagrams :func:`datagrams_to_packets` leaves out, by the count that names them.
LEFT_OUT = ("returned undeliverable", "not a sim_request")


def datagrams_to_packets(datagrams: list[Datagram], connections: list[Connection],
                         counts: Counter | None = None) -> list[tuple[int, bytes]]:
    """(ts_ns, packet) for every recorded MAD, as it would cross the link at the client's port.

    What ibsim does to a request on arrival is done here too, so that requests and answers agree
    as on a real wire: TID bits 48-63 become the sender's slot, and a LID-routed request's
    ``slid`` 0 becomes the sender's LID. Directed-route SMPs keep the permissive LID 0xFFFF.
    Datagrams ibsim returned as undeliverable (status 110) never crossed a link: they are counted
    and left out, as are datagrams that are not a ``struct sim_request``.
    """
    counts = Counter() if counts is None else counts
    marks = _lid_timeline(datagrams, connections)
    slot_of = {c.index: c.slot for c in connections}
    out = []
    for d in datagrams:
        if len(d.data) != SIM_REQUEST_SIZE:
            counts["not a sim_request"] += 1
            continue
        req = SimRequest.unpack(d.data)
        if req.status == SIM_STATUS_UNDELIVERABLE and d.direction == FROM_SIM:
            counts["returned undeliverable"] += 1
            continue
        if d.direction == TO_SIM:
            if not req.response:
                tid = (req.tid & 0xFFFF_FFFF_FFFF) | (slot_of[d.conn] << 48)
                req.mad = req.mad[:8] + tid.to_bytes(8, "big") + req.mad[16:]
            if req.slid == 0 and req.mgmt_class != madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
                req.slid = _lid_at(marks[d.conn], d.ts_ns)
                if req.slid == 0:
                    counts["source LID unknown"] += 1
        out.append((d.ts_ns, sim_request_frame(req)))
        counts["packets"] += 1
    return out
