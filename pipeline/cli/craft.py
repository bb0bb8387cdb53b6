"""`madpipe craft`: write SMPs built from infiniband-diags-style flags, or frames from JSON records.

The frames are built by :mod:`madpipe.pipeline.craft.build` (the scapy layers' ``smp_packet``, and
``madpipe.codecs.encode.encode_record`` for ``--from-json``), so the command, the Python API and
``madpipe decode -T json`` agree on every field.
"""
from __future__ import annotations

import argparse
import sys

from madpipe.codecs.capture import LINKTYPES, linktype_arg
from madpipe.pipeline.cli.args import add_force, check_new_output
from madpipe.pipeline.craft.values import METHODS, CraftArgError

EXAMPLE = """values: LIDs, ports, blocks, TIDs and field values take decimal or 0x hex; --block and
-P also take lists and ranges (0-3, 1,3), one frame per combination, TIDs counting up from --tid.
-D is infiniband-diags' directed route: 0 (the local port), then one output port per hop.
Without --raw, impossible values are errors: a P_Key over 0xFFFF, a hop count over 63, a block
past the table (P_KeyTable 2047, GUIDInfo 31...), a port over 255, a field value too wide.
--raw sends them anyway, cut to the width of their field.

examples:
  madpipe craft --method set --attr pkey-table --block 0 --pkeys 0xffff,0x8001 -L 4 -w set.pcap
  madpipe craft --attr port-info -D 0,1,3 -P 1 -w get.pcap         # SubnGet(PortInfo), 2 hops
  madpipe craft --attr pkey-table --block 0-3 -L 4 -P 1-2 -w sweep.pcap   # 8 SubnGets
  madpipe craft --method set --attr port-info -L 4 -P 1 -f port_state=1 -w down.pcap
  madpipe craft --attr node-info -D 0,1 --hop-cnt 200 --raw -w bad.pcap   # on purpose
  madpipe decode -r in.pcap -T json -Y mad > m.json               # edit m.json, then
  madpipe craft --from-json m.json -w out.pcap                     # same bytes where unedited"""


def register(sub) -> None:
    p = sub.add_parser(
        "craft",
        description="Build SMPs from infiniband-diags-style flags, or frames from the JSON Lines "
        "of `madpipe decode -T json` (--from-json), and write them to a capture: ERF "
        "(link type 197, what ibdump writes and tshark opens) or raw InfiniBand (247). "
        "LRH, BTH, DETH, PktLen, ICRC and VCRC are filled in: SMPs on QP0 and VL15; a "
        "directed-route SMP with the permissive LID 0xFFFF at both ends.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to build")
    what.add_argument("--from-json", metavar="FILE",
                      help="build one frame per JSON Lines record of `madpipe decode -T json` (- = stdin)")
    what.add_argument("--method", default="get",
                      help=f"SMP method: {', '.join(METHODS)}, or a number (default get)")
    what.add_argument("--attr", metavar="ATTR",
                      help="SMP attribute: pkey-table, port-info, node-info, node-description, "
                      "switch-info, guid-info, sm-info, sl2vl, vlarb, lft, rft, mft, led-info, "
                      "notice, vendor-diag, or a number")
    what.add_argument("--block", metavar="N", help="table block (P_KeyTable, GUIDInfo, forwarding "
                      "tables, VLArbitrationTable); a list or range gives one frame each")
    what.add_argument("--pkeys", metavar="LIST", help="P_KeyTable block contents, from index 0: "
                      "0xffff,0x8001 (the rest are 0)")
    what.add_argument("-f", "--field", dest="fields", action="append", default=[], metavar="NAME=VALUE",
                      help="set an attribute field (names as in madpipe decode -V); lists are "
                      "comma separated, bytes fields take text or hex:.. (repeatable)")
    what.add_argument("--attr-mod", metavar="N", help="attribute modifier as is (instead of --block/-P)")
    where = p.add_argument_group("where to send it")
    dest = where.add_mutually_exclusive_group()
    dest.add_argument("-L", dest="lid", metavar="LID", help="LID-routed SMP to this LID")
    dest.add_argument("-D", dest="dr_path", metavar="PATH",
                      help="directed-route SMP through this path: 0,1,3 = local port, then ports 1 and 3")
    where.add_argument("-P", dest="port", metavar="PORT",
                       help="port: PortInfo port, switch port of a P_KeyTable, output port of "
                       "SLtoVL/VLArb tables; a list or range gives one frame each")
    where.add_argument("--slid", metavar="LID", help="source LID (default 1 LID routed, 0xffff directed route)")
    fields = p.add_argument_group("header fields")
    fields.add_argument("--tid", metavar="N", default="1", help="transaction ID of the first frame (default 1)")
    fields.add_argument("--m-key", metavar="N", default="0", help="M_Key (default 0)")
    fields.add_argument("--hop-cnt", metavar="N", help="directed-route hop count as is (default: the path's)")
    fields.add_argument("--hop-ptr", metavar="N", default="0", help="directed-route hop pointer (default 0)")
    fields.add_argument("--time", metavar="SECONDS", default="0",
                        help="timestamp of the first frame, then 1 µs apart (default 0); "
                        "--from-json uses each record's ts")
    out = p.add_argument_group("output")
    out.add_argument("-w", dest="write", metavar="FILE", required=True, help="capture to write")
    out.add_argument("--linktype", default="erf", metavar="TYPE",
                     help="erf (197, default: ibdump's, tshark opens it) or infiniband (247)")
    out.add_argument("--append", action="store_true", help="add to FILE instead of replacing it")
    add_force(out)
    out.add_argument("--raw", action="store_true",
                     help="send impossible values on purpose (cut to their field's width)")
    out.add_argument("-V", dest="verbose", action="store_true",
                     help="print each frame as madpipe decode -V does")
    p.set_defaults(func=run)


def run(args) -> int:
    from madpipe.pipeline.craft.build import json_frames, smp_frames, write_frames

    try:
        linktype = linktype_arg(args.linktype)
    except ValueError as exc:
        raise CraftArgError(str(exc)) from None
    if args.from_json is not None:
        if args.attr is not None or args.lid is not None or args.dr_path is not None:
            raise CraftArgError("--from-json builds frames from the records alone: leave out --attr, -L, -D")
        frames = json_frames(args.from_json, args.time)
    else:
        frames = smp_frames(args.attr, method=args.method, lid=args.lid, dr_path=args.dr_path, block=args.block,
                            port=args.port, attr_mod=args.attr_mod, pkeys=args.pkeys, fields=args.fields,
                            slid=args.slid, tid=args.tid, m_key=args.m_key, hop_cnt=args.hop_cnt,
                            hop_ptr=args.hop_ptr, time=args.time, raw=args.raw)
    if not args.append:
        check_new_output(args.write, args.force)
    write_frames(args.write, frames, linktype, args.append)
    if args.verbose:
        _show(frames)
    verb = "appended" if args.append else "wrote"
    print(f"madpipe craft: {verb} {len(frames)} frame{'s' if len(frames) != 1 else ''} to "
          f"{args.write} (link type {linktype} {LINKTYPES[linktype]})", file=sys.stderr)
    return 0


def _show(frames) -> None:
    from madpipe.codecs.frame import decode_frame
    from madpipe.pipeline.decode.output import tree
    from madpipe.pipeline.decode.text import line

    first = frames[0][1] / 1e9 if frames else 0.0
    for i, (packet, ts_ns) in enumerate(frames, 1):
        record = decode_frame(packet, i, ts_ns / 1e9)
        sys.stdout.write(line(record, first) + "\n")
        tree({k: v for k, v in record.items() if k not in ("frame", "ts")}, sys.stdout, 1)
