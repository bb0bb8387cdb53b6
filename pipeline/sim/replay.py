"""Replay a capture's MADs into a fabric and match each request to its answer.

The engine is :func:`replay`, over a transport (``send(item)``, ``poll(timeout) -> [Answer]``,
``close()``): :class:`SimTransport` speaks ibsim's protocol directly (attached as a client, as
umad2sim does); :class:`madpipe.pipeline.sim.umad.UmadTransport` goes through libibumad. A MAD
that asks for an answer (a request other than TrapRepress and Send) is matched to it by TID bits
0-31 (the kernel and umad2sim rewrite bits 32-47 with the agent, ibsim 48-63 with its client
slot), class and attribute. ``madpipe replay`` (:mod:`madpipe.pipeline.cli.replay`) is its CLI.
"""
from __future__ import annotations

import select
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs import wire
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.decode.display_filter import compile_filter
from madpipe.pipeline.sim.protocol import SIM_STATUS_UNDELIVERABLE, SimClient, SimRequest, parse_sim_address

NO_ANSWER_METHODS = (madc.IB_MGMT_METHOD_TRAP_REPRESS, madc.IB_MGMT_METHOD_SEND)


TID_MATCH_MASK = 0xFFFF_FFFF


POLL_EVERY = 32  # at full speed, read answers after this many sends even when the window has room


SMP_CLASSES = (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)


@dataclass(slots=True)
class Item:
    """One MAD of the capture, as it will be sent."""

    frame: int
    ts_ns: int
    mad: bytes
    dlid: int
    slid: int
    dqp: int
    sqp: int

    @property
    def method(self) -> int:
        return self.mad[3]

    @property
    def expects_answer(self) -> bool:
        return not self.method & madc.IB_MGMT_METHOD_RESP and self.method not in NO_ANSWER_METHODS

    def key(self) -> tuple:
        return _match_key(self.mad)


def _match_key(mad: bytes) -> tuple:
    tid = int.from_bytes(mad[8:16], "big") & TID_MATCH_MASK
    return tid, mad[1], mad[16:18]


def mad_of_frame(data: bytes) -> tuple[bytes, int, int, int, int] | None:
    """(MAD, DLID, SLID, dest QP, source QP) of a UD packet carrying a MAD on QP0/QP1, else None."""
    start = wire.mad_start(data, 0, len(data))
    if start < 0:
        return None
    bth = wire.bth_offset(data[1] & 3)
    dqp = int.from_bytes(data[bth + wire.BTH_DEST_QP:bth + wire.BTH_DEST_QP + 3], "big")
    sqp_at = bth + wire.BTH_SIZE + wire.DETH_SRC_QP
    return (bytes(data[start:start + wire.MAD_SIZE]),
            int.from_bytes(data[wire.LRH_DLID:wire.LRH_DLID + 2], "big"),
            int.from_bytes(data[wire.LRH_SLID:wire.LRH_SLID + 2], "big"),
            dqp, int.from_bytes(data[sqp_at:sqp_at + 3], "big"))


def load_items(path: str, only: str | None = None, display_filter: str | None = None,
               map_lid: dict[int, int] | None = None, count: int | None = None,
               counts: Counter | None = None) -> list[Item]:
    """The MADs of a capture to replay, in frame order, LIDs mapped and DR requests re-originated."""
    pred = compile_filter(display_filter) if display_filter else None
    map_lid = map_lid or {}
    counts = Counter() if counts is None else counts
    items = []
    with CaptureReader(path) as cap:
        for pkt in cap:
            counts["frames"] += 1
            found = mad_of_frame(pkt.data) if pkt.data is not None else None
            if found is None:
                counts["not a MAD"] += 1
                continue
            mad, dlid, slid, dqp, sqp = found
            if only == "requests" and mad[3] & madc.IB_MGMT_METHOD_RESP:
                counts["responses left out"] += 1
                continue
            if pred is not None and not pred(decode_frame(pkt.data, pkt.frame, pkt.ts_ns / 1e9)):
                counts["filtered out"] += 1
                continue
            if mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE and not mad[3] & madc.IB_MGMT_METHOD_RESP:
                mad = mad[:6] + b"\0" + mad[7:]  # hop_ptr (byte 6) starts at 0 again
            items.append(Item(pkt.frame, pkt.ts_ns, mad, map_lid.get(dlid, dlid),
                              map_lid.get(slid, slid), dqp, sqp))
            if count is not None and len(items) >= count:
                break
        if cap.error:
            counts["capture error"] += 1
            print(f"madpipe replay: {path}: {cap.error}; replaying the {len(items)} MADs before it",
                  file=sys.stderr)
    return items


def origin_node(path: str) -> str | None:
    """The node a capture's directed routes start from, as ibsim names it, or None.

    That is the node whose SM (or tool) made the capture's requests: an SM reads its own node's
    NodeDescription with a directed route of no hops first, and ibsim's NodeDescriptions are its
    node names. Reads the capture up to the first such answer.
    """
    with CaptureReader(path) as cap:
        for pkt in cap:
            found = mad_of_frame(pkt.data) if pkt.data is not None else None
            if found is None:
                continue
            mad = found[0]
            if (mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE and mad[3] == madc.IB_MGMT_METHOD_GET_RESP
                    and mad[wire.SMP_HOP_CNT] == 0 and mad[16:18] == smpc.IB_SMP_ATTR_NODE_DESC.to_bytes(2, "big")):
                name = smpc.node_description_text(mad[wire.SMP_DATA:wire.SMP_DATA + wire.IB_SMP_DATA_SIZE])
                return name or None
    return None


@dataclass(slots=True)
class Answer:
    """A MAD the fabric sent back: an answer, or our own MAD ``returned`` undeliverable (ibsim)
    or ``timed_out`` (the kernel's umad)."""

    ts_ns: int
    mad: bytes
    dlid: int
    slid: int
    dqp: int
    sqp: int
    returned: bool = False
    timed_out: bool = False


class SimTransport:
    """Replay into ibsim through its protocol, attached as one client."""

    def __init__(self, address: str, node: str | None = None):
        host, port = parse_sim_address(address)
        self.client = SimClient(host, port, node)
        self.name = f"ibsim {host}:{port} as client {self.client.slot} on {self.client.node}"

    def send(self, item: Item) -> None:
        permissive = item.dlid == wire.IB_PERMISSIVE_LID
        self.client.send(SimRequest(item.dlid, wire.IB_PERMISSIVE_LID if permissive else 0, item.dqp,
                                    item.sqp, 0, item.mad))

    def poll(self, timeout: float) -> list[Answer]:
        """Everything ibsim has sent us, waiting up to ``timeout`` seconds for the first."""
        ready, _, _ = select.select([self.client], [], [], timeout)
        answers = []
        while ready and (req := self.client.recv(0)) is not None:
            answers.append(Answer(time.time_ns(), req.mad, req.dlid, req.slid, req.dqp, req.sqp,
                                  req.status == SIM_STATUS_UNDELIVERABLE))
        return answers

    def close(self) -> None:
        self.client.close()


@dataclass
class Outcome:
    item: Item
    sent_ns: int = 0
    result: str = "pending"  # answered, timed out, undeliverable, no answer expected, send error
    answer: Answer | None = None


@dataclass
class ReplayResult:
    outcomes: list[Outcome]
    answers: list[Answer]
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # why sends failed, first ones


def replay(items: list[Item], transport, *, pps: float | None = None, top: bool = False,
           timeout: float = 1.0, window: int = 64, progress=None) -> ReplayResult:
    """Send ``items`` through ``transport``; match answers; never more than ``window`` outstanding.

    Pacing: ``top`` (no pause), ``pps`` (fixed rate) or, by default, the capture's own gaps.
    ``progress(result, done, total)`` is called about once a second.
    """
    outcomes = [Outcome(it) for it in items]
    result = ReplayResult(outcomes, [])
    waiting: dict[tuple, deque[Outcome]] = {}
    deadlines: deque[tuple[float, Outcome]] = deque()  # in send order, so in deadline order
    recent: dict[tuple, deque[Outcome]] = {}  # sent without awaiting an answer (for returns)
    outstanding = 0
    start = time.monotonic()
    t0_capture = items[0].ts_ns if items else 0
    next_progress = start + 1.0
    i = 0
    c = result.counts
    while i < len(outcomes) or outstanding:
        now = time.monotonic()
        due = None
        if i < len(outcomes) and outstanding < window:
            if top:
                due = now
            elif pps:
                due = start + i / pps
            else:
                due = start + (outcomes[i].item.ts_ns - t0_capture) / 1e9
        if due is not None and due <= now:
            o = outcomes[i]
            i += 1
            o.sent_ns = time.time_ns()
            try:
                transport.send(o.item)
            except (OSError, MadpipeError) as exc:
                o.result = "send error"
                result.errors.append(f"frame {o.item.frame}: {exc}")
                continue
            c["sent"] += 1
            if o.item.expects_answer:
                waiting.setdefault(o.item.key(), deque()).append(o)
                deadlines.append((now + timeout, o))
                outstanding += 1
            else:
                o.result = "no answer expected"
                recent.setdefault(o.item.key(), deque(maxlen=8)).append(o)
            if i % POLL_EVERY:
                continue
            due = now  # read what has come back so far, without waiting
        wait = timeout if due is None else max(due - now, 0)
        if deadlines:
            wait = min(wait, max(deadlines[0][0] - now, 0))
        wait = min(wait, max(next_progress - now, 0))
        for answer in transport.poll(wait):
            result.answers.append(answer)
            matched = _match(answer, waiting, recent)
            if matched is None:
                c["unmatched answers"] += 1
                continue
            o = matched
            if o.result == "pending":
                outstanding -= 1
            o.answer = answer
            if answer.timed_out:
                o.result = "timed out"
            elif answer.returned:
                o.result = "undeliverable"
            elif o.item.expects_answer:
                o.result = "answered"
            else:  # a response or TrapRepress that the fabric delivered to us, its addressee
                o.result = "came back"
        now = time.monotonic()
        while deadlines and (deadlines[0][1].result != "pending" or deadlines[0][0] <= now):
            _, o = deadlines.popleft()
            if o.result == "pending":
                o.result = "timed out"
                outstanding -= 1
                q = waiting.get(o.item.key())
                if q and o in q:
                    q.remove(o)
        if progress is not None and now >= next_progress:
            progress(result, i, len(outcomes))
            next_progress = now + 1.0
    result.seconds = time.monotonic() - start
    for o in outcomes:
        c[o.result] += 1
        if o.result == "answered" and o.answer is not None and mad_status(o.answer.mad):
            c["answered with MAD status"] += 1
    return result


def _match(answer: Answer, waiting: dict, recent: dict) -> Outcome | None:
    key = _match_key(answer.mad)
    q = waiting.get(key)
    if q:
        return q.popleft()
    if recent.get(key) and (answer.returned or answer.timed_out or answer.mad == recent[key][0].item.mad):
        return recent[key].popleft()
    return None


def mad_status(mad: bytes) -> int:
    status = int.from_bytes(mad[4:6], "big")
    return status & 0x7FFF if mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE else status
