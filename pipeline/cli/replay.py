"""`madpipe replay`: send a capture's MADs into a fabric (ibsim, or a umad device) and record the answers.

Arguments only: the engine (pacing, matching answers to requests, the transports) is
:mod:`madpipe.pipeline.sim.replay`, what it prints :mod:`madpipe.pipeline.sim.output`.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.cli.args import add_force, check_new_output
from madpipe.pipeline.sim.output import (
    changed_ports_text,
    failure_line,
    print_dry_run,
    print_json,
    print_summary,
    replay_progress,
    write_answers,
)
from madpipe.pipeline.sim.protocol import SimError
from madpipe.pipeline.sim.replay import SimTransport, load_items, origin_node, replay
from madpipe.pipeline.sim.replay_safety import changes_state, refusal_line

EXAMPLE = """pacing (one of): --as-captured (default: the capture's gaps between MADs), --pps N
(N MADs a second), --top (as fast as answers come back). At most --window MADs wait for an answer
at a time; one not answered within --timeout ms counts as timed out.

which MADs: every frame that carries a MAD on QP0/QP1, or --only requests (no responses), and/or
-Y FILTER (madpipe decode's display filter). --map-lid OLD=NEW sends to NEW what went to OLD.
A directed-route request is re-originated: its hop pointer starts at 0 again. In --sim mode MADs
go from the node given by --node (a directed route's path starts there); by default from the node
the capture's own directed routes start at (the NodeDescription its SM read of its own node, which
is the node's name in ibsim), else ibsim's default node.

safety: on a umad device (real hardware) MADs that set or announce state (Set, Trap,
TrapRepress, SA Delete: a SubnSet(P_KeyTable) rewrites a port's partitions) are refused unless
--allow-set is given: nothing is sent, one line says how many there are and which ports they
would change (exit 2). --dry-run prints each MAD, where it would go (LID, or DR path as smpquery
-D takes it) and the port a Set would change, without opening the device or attaching to ibsim.
--sim sends everything, as a simulated fabric is there to be changed. The summary names the
ports the Sets sent addressed.

summary: sent; answered (and how many answers carry a non-zero MAD status); timed out; errors
(returned undeliverable by the fabric, or not sendable); no answer expected (responses,
TrapRepress, Send); came back (a response the fabric delivered to the replaying port itself).
-T json prints one record per MAD and the summary as JSON Lines. Progress goes to stderr once
a second. Exit status: 0 when every MAD got through (answers with a non-zero MAD status
included: the fabric answered); 1 when any came back undeliverable, timed out or could not be
sent (one line on stderr says how many, and the first frame); 2 on bad arguments, an unreadable
capture or no fabric to talk to (each step that waits for ibsim or umad2sim has a timeout).

examples:
  ibsim -s -n -r -l 7070 /usr/share/doc/ibsim-utils/net-examples/net.2sw2path4hca &   # a fabric to send to
  madpipe replay -r pcaps/opensm_partitions.pcap --sim 127.0.0.1:7070 --node Hca1 --only requests
  madpipe replay -r cap.pcap --sim 7070 -Y 'mad.attr_id==0x16 && mad.method==0x02' --top -w answers.pcap
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/umad2sim/libumad2sim.so IBSIM_SERVER_NAME=127.0.0.1 \\
      IBSIM_SERVER_PORT=7070 SIM_HOST=Hca1 madpipe replay -r cap.pcap --umad ibsim0 --only requests --allow-set
  madpipe replay -r pcaps/opensm_partitions.pcap --umad mlx5_0 --only requests --dry-run"""


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
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
    p.add_argument("--allow-set", action="store_true",
                   help="--umad: send Set, Trap, TrapRepress and Delete MADs too (refused without it)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be sent where (and which ports a Set would change); open nothing")
    add_force(p)
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


def run(args) -> int:
    check_new_output(args.write, args.force)  # before anything is sent
    if args.pps is not None and args.pps <= 0:
        raise MadpipeError(f"--pps must be positive, got {args.pps:g}")
    if args.window < 1 or args.timeout <= 0:
        raise MadpipeError("--window must be at least 1 and --timeout positive")
    load_counts: Counter[str] = Counter()
    items = load_items(args.read, args.only, args.filter, dict(args.map_lid), args.count, load_counts)
    if args.dry_run:
        return _dry_run(args, items, load_counts)
    if args.umad and not args.allow_set and any(map(changes_state, items)):
        raise MadpipeError(refusal_line(items, args.umad))
    origin = ""
    if args.sim:
        node = args.node or origin_node(args.read)
        if args.node is None:
            origin = (" (where the capture's directed routes start; --node to choose)" if node else
                      " (ibsim's default: the capture names no node; --node to choose)")
        try:
            transport = SimTransport(args.sim, node)
        except SimError as exc:
            if args.node is None and node is not None:
                raise SimError(f"{exc}; the capture's directed routes start at {node!r}: give "
                               "--node NAME, a node of this fabric") from None
            raise
    else:
        from madpipe.pipeline.sim.umad import UmadTransport

        transport = UmadTransport(args.umad, args.port_num, timeout_ms=args.timeout)
    err = sys.stderr
    print(f"madpipe replay: {len(items)} MADs of {load_counts['frames']} frames into {transport.name}"
          f"{origin}", file=err)
    try:
        result = replay(items, transport, pps=args.pps, top=args.top, timeout=args.timeout / 1000,
                        window=args.window, progress=replay_progress(err))
    finally:
        transport.close()
    if args.write:
        write_answers(args.write, result)
    out = sys.stdout
    (print_json if args.format == "json" else print_summary)(result, load_counts, out)
    if args.format == "text":
        out.write(changed_ports_text([o.item for o in result.outcomes if o.result != "send error"], "sent to"))
    for line in result.errors[:3]:
        print(f"madpipe replay: could not send {line}", file=err)
    failed = failure_line(result)
    if failed:
        print(f"madpipe replay: {failed}", file=err)
        return 1
    return 0


def _dry_run(args, items, load_counts) -> int:
    """--dry-run: each MAD and where it would go, then what a run would change; nothing opened."""
    if args.umad:
        target = f"umad device {args.umad}" + ("" if args.allow_set or not any(map(changes_state, items))
                                              else " (its Sets refused without --allow-set)")
    else:
        target = f"ibsim {args.sim} from {args.node or origin_node(args.read) or 'its default node'}"
    print(f"madpipe replay: dry run: {len(items)} MADs of {load_counts['frames']} frames for {target}; "
          "nothing sent", file=sys.stderr)
    print_dry_run(items, load_counts, args.format, sys.stdout)
    return 0
