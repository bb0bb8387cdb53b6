"""`madpipe replay`: send a capture's MADs into a fabric (ibsim, or a umad device) and record the answers.

The engine is :func:`replay`, over a transport (``send(item)``, ``poll(timeout) -> [Answer]``,
``close()``): :class:`SimTransport` speaks ibsim's protocol directly (attached as a client, as
umad2sim does); ``madpipe.pipeline.umad.UmadTransport`` goes through libibumad. A MAD that asks
for an answer (a request other than TrapRepress and Send) is matched to it by TID bits 0-31
(the kernel and umad2sim rewrite bits 32-47 with the agent, ibsim 48-63 with its client slot),
class and attribute.
"""
from __future__ import annotations

import argparse
import json
import select
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from madpipe.codecs import mad as madc
from madpipe.codecs.capture import CaptureReader, CaptureWriter
from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline import sim
from madpipe.pipeline.display_filter import compile_filter

EXAMPLE = """pacing (one of): --as-captured (default: the capture's gaps between MADs), --pps N
(N MADs a second), --top (as fast as answers come back). At most --window MADs wait for an answer
at a time; one not answered within --timeout ms counts as timed out.

which MADs: every frame that carries a MAD on QP0/QP1, or --only requests (no responses), and/or
-Y FILTER (madpipe decode's display filter). --map-lid OLD=NEW sends to NEW what went to OLD.
A directed-route request is re-originated: its hop pointer starts at 0 again. In --sim mode MADs
go from the node given by --node (a directed route's path starts there), default ibsim's.

summary: sent; answered (and how many answers carry a non-zero MAD status); timed out; errors
(returned undeliverable by the fabric, or not sendable); no answer expected (responses,
TrapRepress, Send); came back (a response the fabric delivered to the replaying port itself).
-T json prints one record per MAD and the summary as JSON Lines. Progress goes to stderr once
a second. Exit status: 0 when the replay ran, whatever the fabric answered; 2 on bad arguments,
an unreadable capture or no fabric to talk to.

examples:
  madpipe replay -r pcaps/opensm_partitions.pcap --sim 127.0.0.1:7070 --node Hca1 --only requests
  madpipe replay -r cap.pcap --sim 7070 -Y 'mad.attr_id==0x16 && mad.method==0x02' --top -w answers.pcap
  LD_PRELOAD=.../libumad2sim.so madpipe replay -r cap.pcap --umad ibsim0 --pps 1000"""

NO_ANSWER_METHODS = (madc.IB_MGMT_METHOD_TRAP_REPRESS, madc.IB_MGMT_METHOD_SEND)
TID_MATCH_MASK = 0xFFFF_FFFF
POLL_EVERY = 32  # at full speed, read answers after this many sends even when the window has room
SMP_CLASSES = (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="send a capture's MADs into a fabric (ibsim or a umad device), record the answers",
        description="Replay the MADs of a capture into a fabric: ibsim (--sim HOST:PORT, its own "
        "protocol) or a umad device through libibumad (--umad DEVICE). Prints a summary of sent, "
        "answered, timed out and errors; -w writes the answers as a capture.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-r", dest="read", metavar="FILE", required=True, help="capture to replay")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--sim", metavar="HOST:PORT", help="ibsim's control socket (remote mode)")
    target.add_argument("--umad", metavar="DEVICE",
                        help="umad device (CA name, e.g. mlx5_0; ibsim0 under libumad2sim.so)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--pps", metavar="N", type=float, help="send N MADs a second")
    pace.add_argument("--as-captured", action="store_true",
                      help="keep the capture's timing (the default)")
    pace.add_argument("--top", action="store_true", help="as fast as the fabric answers")
    p.add_argument("--only", choices=("requests",), help="requests: leave responses out")
    p.add_argument("-Y", dest="filter", metavar="FILTER", help="replay only frames matching FILTER")
    p.add_argument("--map-lid", metavar="OLD=NEW", action="append", default=[], type=_lid_pair,
                   help="send what was addressed to LID OLD to LID NEW (repeatable)")
    p.add_argument("-w", dest="write", metavar="FILE", help="write the answers as a capture")
    p.add_argument("--node", metavar="NAME", help="--sim: the node to attach to (as SIM_HOST)")
    p.add_argument("-P", dest="port_num", metavar="PORT", type=int, default=0,
                   help="--umad: the CA port (default 0: the first active one)")
    p.add_argument("--timeout", metavar="MS", type=float, default=1000.0,
                   help="wait this long for each answer (default 1000)")
    p.add_argument("--window", metavar="N", type=int, default=64,
                   help="at most N MADs waiting for an answer (default 64)")
    p.add_argument("-c", dest="count", metavar="COUNT", type=int, help="replay at most COUNT MADs")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="text (summary table) or json (JSON Lines: one record per MAD, then the summary)")
    p.set_defaults(func=run)


def _lid_pair(text: str) -> tuple[int, int]:
    old, sep, new = text.partition("=")
    try:
        pair = int(old, 0), int(new, 0)
    except ValueError:
        pair = (-1, -1)
    if not sep or not all(0 <= v <= 0xFFFF for v in pair):
        raise argparse.ArgumentTypeError(f"--map-lid {text!r}: expected OLD=NEW, two LIDs (0x.. allowed)")
    return pair


# -- what to send -----------------------------------------------------------------------------------

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
    if len(data) < 8:
        return None
    lnh = data[1] & 3
    pos = 8 + (40 if lnh == 3 else 0)
    if lnh < 2 or len(data) < pos + 20:
        return None
    opcode = data[pos]
    if opcode not in (0x64, 0x65):  # UD SEND only, with immediate
        return None
    dqp = int.from_bytes(data[pos + 5:pos + 8], "big")
    sqp = int.from_bytes(data[pos + 17:pos + 20], "big")
    pos += 20 + (4 if opcode == 0x65 else 0)
    if (dqp > 1 and sqp > 1) or len(data) < pos + madc.MAD_SIZE + 6:
        return None
    return (bytes(data[pos:pos + madc.MAD_SIZE]), int.from_bytes(data[2:4], "big"),
            int.from_bytes(data[6:8], "big"), dqp, sqp)


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


# -- transports ---------------------------------------------------------------------------------------

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
        host, port = sim.parse_sim_address(address)
        self.client = sim.SimClient(host, port, node)
        self.name = f"ibsim {host}:{port} as client {self.client.slot} on {self.client.node}"

    def send(self, item: Item) -> None:
        permissive = item.dlid == 0xFFFF
        self.client.send(sim.SimRequest(item.dlid, 0xFFFF if permissive else 0, item.dqp,
                                        item.sqp, 0, item.mad))

    def poll(self, timeout: float) -> list[Answer]:
        """Everything ibsim has sent us, waiting up to ``timeout`` seconds for the first."""
        ready, _, _ = select.select([self.client], [], [], timeout)
        answers = []
        while ready and (req := self.client.recv(0)) is not None:
            answers.append(Answer(time.time_ns(), req.mad, req.dlid, req.slid, req.dqp, req.sqp,
                                  req.status == sim.SIM_STATUS_UNDELIVERABLE))
        return answers

    def close(self) -> None:
        self.client.close()


# -- the replay loop -------------------------------------------------------------------------------------

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
            o = _match(answer, waiting, recent)
            if o is None:
                c["unmatched answers"] += 1
                continue
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
        if o.result == "answered" and _status(o.answer.mad):
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


def _status(mad: bytes) -> int:
    status = int.from_bytes(mad[4:6], "big")
    return status & 0x7FFF if mad[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE else status


# -- the command ---------------------------------------------------------------------------------------

def run(args) -> int:
    if args.pps is not None and args.pps <= 0:
        raise MadpipeError(f"--pps must be positive, got {args.pps:g}")
    if args.window < 1 or args.timeout <= 0:
        raise MadpipeError("--window must be at least 1 and --timeout positive")
    load_counts: Counter[str] = Counter()
    items = load_items(args.read, args.only, args.filter, dict(args.map_lid), args.count, load_counts)
    if args.sim:
        transport = SimTransport(args.sim, args.node)
    else:
        from madpipe.pipeline.umad import UmadTransport

        transport = UmadTransport(args.umad, args.port_num, timeout_ms=args.timeout)
    err = sys.stderr
    print(f"madpipe replay: {len(items)} MADs of {load_counts['frames']} frames into {transport.name}",
          file=err)
    try:
        result = replay(items, transport, pps=args.pps, top=args.top, timeout=args.timeout / 1000,
                        window=args.window, progress=_progress(err))
    finally:
        transport.close()
    if args.write:
        with CaptureWriter(args.write) as w:
            for a in result.answers:
                if not (a.returned or a.timed_out):
                    w.write(sim.sim_request_frame(sim.SimRequest(a.dlid, a.slid, a.dqp, a.sqp, 0, a.mad)),
                            a.ts_ns)
    out = sys.stdout
    if args.format == "json":
        for o in result.outcomes:
            out.write(json.dumps(_record(o), separators=(",", ":")) + "\n")
        out.write(json.dumps({"type": "summary", **_summary_dict(result, load_counts)},
                             separators=(",", ":")) + "\n")
    else:
        _print_summary(result, load_counts, out)
    for line in result.errors[:3]:
        print(f"madpipe replay: could not send {line}", file=err)
    return 0


def _progress(err):
    def show(result: ReplayResult, done: int, total: int) -> None:
        line = (f"replay: {done}/{total} sent, {_answered(result)} answered, "
                f"{_timed_out(result)} timed out")
        if err.isatty():
            err.write("\r" + line)
        else:
            err.write(line + "\n")
        err.flush()
    return show


def _answered(result: ReplayResult) -> int:
    return sum(o.result == "answered" for o in result.outcomes)


def _timed_out(result: ReplayResult) -> int:
    return sum(o.result == "timed out" for o in result.outcomes)


def _record(o: Outcome) -> dict:
    m = o.item.mad
    rec = {"type": "mad", "frame": o.item.frame, "mgmt_class": m[1], "method": m[3],
           "attr_id": int.from_bytes(m[16:18], "big"), "attr_mod": int.from_bytes(m[20:24], "big"),
           "tid": int.from_bytes(m[8:16], "big"), "dlid": o.item.dlid, "result": o.result}
    if o.answer is not None:
        rec["status"] = _status(o.answer.mad)
        rec["rtt_us"] = round((o.answer.ts_ns - o.sent_ns) / 1000, 1)
    return rec


SUMMARY_KEYS = ("sent", "answered", "answered with MAD status", "timed out", "undeliverable",
                "send error", "no answer expected", "came back", "unmatched answers")


def _summary_dict(result: ReplayResult, load: Counter) -> dict:
    d = {k.replace(" ", "_"): result.counts[k] for k in SUMMARY_KEYS}
    d.update(frames=load["frames"], replayed=len(result.outcomes), seconds=round(result.seconds, 6))
    for k in ("not a MAD", "responses left out", "filtered out"):
        d[k.replace(" ", "_")] = load[k]
    return d


def _print_summary(result: ReplayResult, load: Counter, out) -> None:
    c = result.counts
    rows = [("frames read", load["frames"]), ("  not a MAD", load["not a MAD"]),
            ("  responses left out", load["responses left out"]),
            ("  filtered out (-Y)", load["filtered out"]),
            ("MADs sent", c["sent"]), ("  answered", c["answered"]),
            ("    with a non-zero MAD status", c["answered with MAD status"]),
            ("  timed out", c["timed out"]), ("  no answer expected", c["no answer expected"]),
            ("  came back to us, the addressee", c["came back"]),
            ("errors: returned undeliverable", c["undeliverable"]),
            ("errors: could not send", c["send error"]),
            ("answers matching nothing sent", c["unmatched answers"])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.write(f"{k:<{width}} {v:8d}\n")
    rate = c["sent"] / result.seconds if result.seconds else 0.0
    out.write(f"{'seconds':<{width}} {result.seconds:8.3f}  ({rate:.0f} MADs/s)\n")
