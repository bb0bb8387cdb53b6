"""`madpipe craft`: write SMPs built from infiniband-diags-style flags, or frames from JSON records.

The frames are built by the scapy layers (``madpipe.codecs.craft``: ``smp_packet``,
``smp_set_pkeys``) and by ``madpipe.codecs.encode.encode_record`` for ``--from-json``, so the
command, the Python API and ``madpipe decode -T json`` agree on every field.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from madpipe.codecs.capture import LINKTYPES, CaptureWriter, linktype_arg
from madpipe.codecs.errors import MadpipeError

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
  madpipe decode -r in.pcap -T json -Y mad > m.json; (edit m.json);
  madpipe craft --from-json m.json -w out.pcap                     # same bytes where unedited"""

MAX_FRAMES = 1 << 20  # a sweep larger than this is a typo, not a capture anyone wants

METHODS = {"get": 0x01, "set": 0x02, "getresp": 0x81, "send": 0x03, "trap": 0x05,
           "report": 0x06, "trap-repress": 0x07, "report-resp": 0x86}


def register(sub) -> None:
    p = sub.add_parser(
        "craft",
        help="write crafted SMPs (or frames from decode's JSON) to a capture tshark opens",
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
    out.add_argument("--raw", action="store_true",
                     help="send impossible values on purpose (cut to their field's width)")
    out.add_argument("-V", dest="verbose", action="store_true",
                     help="print each frame as madpipe decode -V does")
    p.set_defaults(func=run)


class CraftArgError(MadpipeError):
    """A flag with a value madpipe cannot use."""


# ------------------------------------------------------------------------------ value parsing

def number(flag: str, text: str) -> int:
    try:
        value = int(text, 0)
    except (TypeError, ValueError):
        raise CraftArgError(f"{flag} {text!r} is not a number (decimal or 0x hex)") from None
    if value < 0:
        raise CraftArgError(f"{flag} {text!r} is negative")
    return value


def numbers(flag: str, text: str) -> list[int]:
    """'0-3' -> [0, 1, 2, 3]; '1,3' -> [1, 3]; '0x10' -> [16]."""
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if sep:
            first, last = number(flag, lo), number(flag, hi)
            if last < first:
                raise CraftArgError(f"{flag} range {part!r} runs backwards")
            if last - first >= 65536:
                raise CraftArgError(f"{flag} range {part!r} is too long")
            out.extend(range(first, last + 1))
        else:
            out.append(number(flag, part))
    return out


def dr_path(text: str) -> list[int]:
    """-D 0,1,3 -> hops [1, 3]: entry 0 is the local port (infiniband-diags' form)."""
    entries = [number("-D", part) for part in text.split(",")]
    if entries[0] != 0:
        raise CraftArgError(f"-D {text}: a directed route starts at the local port 0 "
                            "(infiniband-diags' form, e.g. -D 0,1,3)")
    hops = entries[1:]
    if len(hops) > 63:
        raise CraftArgError(f"-D {text}: {len(hops)} hops, a directed route holds at most 63 "
                            "(--hop-cnt with --raw sends a larger hop count)")
    bad = [p for p in hops if p > 0xFF]
    if bad:
        raise CraftArgError(f"-D {text}: port {bad[0]} does not fit a byte (0..255)")
    return hops


# How --block and -P make the attribute modifier (IBA 14.2.5), and the last valid block.
# attr_id -> (block max or None if the attribute has no blocks, takes -P, modifier(block, port))
_ATTR_MOD = {
    0x0014: (31, False, lambda b, p: b),                   # GUIDInfo: 8 GUIDs a block, 256 GUIDs
    0x0015: (None, True, lambda b, p: p),                  # PortInfo: the port
    0x0016: (2047, True, lambda b, p: p << 16 | b),        # P_KeyTable: switch port, block
    0x0017: (None, True, lambda b, p: p),                  # SLtoVLMappingTable: output port
    0x0018: (4, True, lambda b, p: b << 16 | p),           # VLArbitrationTable: block 1-4, port
    0x0019: (767, False, lambda b, p: b),                  # LinearForwardingTable: 64 LIDs a block
    0x001A: (3071, False, lambda b, p: b),                 # RandomForwardingTable: 16 LIDs a block
    0x001B: (511, False, lambda b, p: b),                  # MulticastForwardingTable: 32 MLIDs a block
    0x0030: (0xFFFF, False, lambda b, p: b),               # VendorDiag: diag index
}


def attr_mods(args, attr_id: int, name: str) -> list[int]:
    if args.attr_mod is not None:
        if args.block is not None or args.port is not None:
            raise CraftArgError("--attr-mod sets the whole modifier: leave out --block and -P")
        mod = number("--attr-mod", args.attr_mod)
        if mod > 0xFFFFFFFF:
            raise CraftArgError(f"--attr-mod {args.attr_mod} does not fit 32 bits")
        return [mod]
    block_max, takes_port, make = _ATTR_MOD.get(attr_id, (None, False, None))
    blocks = numbers("--block", args.block) if args.block is not None else [0]
    ports = numbers("-P", args.port) if args.port is not None else [0]
    if args.block is not None and block_max is None:
        raise CraftArgError(f"{name} has no blocks: leave out --block (--attr-mod sets the modifier)")
    if args.port is not None and not takes_port:
        raise CraftArgError(f"{name} takes no port: leave out -P (--attr-mod sets the modifier)")
    if make is None:
        return [0]
    from madpipe.codecs.craft import check_range
    from madpipe.codecs.errors import CraftError

    out = []
    try:
        for block, port in itertools.product(blocks, ports):
            if block_max is not None:
                block = check_range(f"{name} block", block, block_max, args.raw, 16)
            port = check_range("port", port, 0xFF, args.raw, 16 if attr_id == 0x0016 else 8)
            out.append(make(block, port))
    except CraftError as exc:
        raise CraftArgError(str(exc)) from None
    return out


def method_arg(text: str) -> int:
    key = text.lower().replace("_", "-")
    if key in METHODS:
        return METHODS[key]
    value = number("--method", text)
    if value > 0xFF:
        raise CraftArgError(f"--method {text}: a method is one byte")
    return value


def field_values(layer, assignments: list[str], raw: bool) -> dict:
    """-f NAME=VALUE for the attribute layer's fields, values checked against the field width."""
    from scapy.fields import BitField, FieldListField, PacketListField, StrFixedLenField, ThreeBytesField

    out: dict = {}
    names = [f.name for f in layer.fields_desc]
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep:
            raise CraftArgError(f"-f {text!r}: write NAME=VALUE")
        fld = next((f for f in layer.fields_desc if f.name == name), None)
        if fld is None:
            raise CraftArgError(f"{layer.__name__} has no field {name!r} (fields: {', '.join(names)})")
        if isinstance(fld, PacketListField):
            raise CraftArgError(f"-f {name}: a list of entries; build it with --from-json or the Python API")
        if isinstance(fld, StrFixedLenField):
            data = bytes.fromhex(value[4:]) if value.startswith("hex:") else value.encode()
            if len(data) > fld.length_from(None):
                raise CraftArgError(f"-f {name}: {len(data)} bytes, the field holds {fld.length_from(None)}")
            out[name] = data
            continue
        inner = fld.field if isinstance(fld, FieldListField) else fld
        if isinstance(inner, BitField):
            width = inner.size
        elif isinstance(inner, ThreeBytesField):
            width = 24
        else:
            width = int(inner.sz * 8)
        items = numbers(f"-f {name}", value) if isinstance(fld, FieldListField) else [number(f"-f {name}", value)]
        if isinstance(fld, FieldListField) and len(items) > fld.max_count:
            raise CraftArgError(f"-f {name}: {len(items)} values, the field holds {fld.max_count}")
        for v in items:
            if v >= 1 << width and not raw:
                raise CraftArgError(f"-f {name}={v:#x} does not fit its {width} bits (--raw cuts it)")
        items = [v & ((1 << width) - 1) for v in items]
        out[name] = items if isinstance(fld, FieldListField) else items[0]
    return out


def parse_time(text) -> int:
    """Seconds (text or Decimal) -> integer nanoseconds, exactly."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise CraftArgError(f"time {text!r} is not a number of seconds") from None
    if not value.is_finite() or value < 0:
        raise CraftArgError(f"time {text!r} must be a non-negative number of seconds")
    return int((value * 1_000_000_000).to_integral_value(ROUND_HALF_EVEN))


# ------------------------------------------------------------------------------ building

def smp_frames(args) -> list[tuple[bytes, int]]:
    """(packet, ts_ns) for the SMPs the flags ask for."""
    from madpipe.codecs.craft import check_pkeys, smp_attribute, smp_packet
    from madpipe.codecs.errors import CraftError

    if args.attr is None:
        raise CraftArgError("say what to build: --attr ATTR (or --from-json FILE)")
    if args.lid is None and args.dr_path is None:
        raise CraftArgError("give a destination: -L LID (LID routed) or -D PATH (directed route)")
    try:
        attr_id, layer = smp_attribute(args.attr)
    except CraftError as exc:
        raise CraftArgError(str(exc)) from None
    name = layer.__name__ if layer.__name__ != "Raw" else f"attribute {attr_id:#06x}"
    method = method_arg(args.method)
    lid = number("-L", args.lid) if args.lid is not None else None
    if lid is not None and lid > 0xFFFF:
        raise CraftArgError(f"-L {args.lid}: a LID is 16 bits")
    hops = dr_path(args.dr_path) if args.dr_path is not None else None
    kw = dict(tid=number("--tid", args.tid), m_key=number("--m-key", args.m_key), raw=args.raw,
              hop_ptr=number("--hop-ptr", args.hop_ptr))
    if kw["m_key"] > 0xFFFFFFFFFFFFFFFF:
        raise CraftArgError("--m-key is 64 bits")
    if kw["hop_ptr"] > 0xFF:
        raise CraftArgError("--hop-ptr is one byte")
    if args.slid is not None:
        kw["slid"] = number("--slid", args.slid)
        if kw["slid"] > 0xFFFF:
            raise CraftArgError(f"--slid {args.slid}: a LID is 16 bits")
    if args.hop_cnt is not None:
        if hops is None:
            raise CraftArgError("--hop-cnt goes with a directed route (-D)")
        kw["hop_cnt"] = number("--hop-cnt", args.hop_cnt)
    if args.pkeys is not None and attr_id != 0x0016:
        raise CraftArgError(f"--pkeys fills a P_KeyTable block, not {name}")
    fields = field_values(layer, args.fields, args.raw) if args.fields else {}
    if args.pkeys is not None:
        if "pkeys" in fields:
            raise CraftArgError("give the P_Keys once: --pkeys or -f pkeys=...")
        try:
            fields["pkeys"] = check_pkeys(numbers("--pkeys", args.pkeys), args.raw)
        except CraftError as exc:
            raise CraftArgError(str(exc)) from None
    mods = attr_mods(args, attr_id, name)
    if len(mods) > MAX_FRAMES:
        raise CraftArgError(f"--block and -P ask for {len(mods)} frames; at most {MAX_FRAMES} at once")
    start = parse_time(args.time)
    frames = []
    try:
        for i, attr_mod in enumerate(mods):
            pkt = smp_packet(method, attr_id, lid, hops, attr_mod,
                             **{**kw, "tid": kw["tid"] + i}, data=fields)
            frames.append((bytes(pkt), start + i * 1000))
    except CraftError as exc:
        raise CraftArgError(str(exc)) from None
    if kw["tid"] + len(mods) - 1 > 0xFFFFFFFFFFFFFFFF:
        raise CraftArgError("--tid runs past 64 bits")
    return frames


def json_frames(args) -> list[tuple[bytes, int]]:
    """(packet, ts_ns) for each JSON Lines record of --from-json."""
    from madpipe.codecs.encode import EncodeError, encode_record

    if args.attr is not None or args.lid is not None or args.dr_path is not None:
        raise CraftArgError("--from-json builds frames from the records alone: leave out --attr, -L, -D")
    name = args.from_json
    try:
        f = sys.stdin if name == "-" else open(name, encoding="utf-8")
    except OSError as exc:
        raise CraftArgError(f"{name}: cannot open: {exc.strerror or exc}") from None
    start = parse_time(args.time)
    frames = []
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise CraftArgError(f"{name} line {lineno}: not JSON: {exc.msg} at column {exc.colno}") from None
            try:
                packet = encode_record(record)
            except EncodeError as exc:
                raise CraftArgError(f"{name} line {lineno}: {exc}") from None
            ts = record.get("ts") if isinstance(record, dict) else None
            ts_ns = parse_time(ts) if ts is not None else start + len(frames) * 1000
            frames.append((packet, ts_ns))
    return frames


def run(args) -> int:
    try:
        linktype = linktype_arg(args.linktype)
    except ValueError as exc:
        raise CraftArgError(str(exc)) from None
    frames = json_frames(args) if args.from_json is not None else smp_frames(args)
    try:
        with CaptureWriter(args.write, linktype=linktype, append=args.append) as w:
            for packet, ts_ns in frames:
                w.write(packet, ts_ns)
    except OSError as exc:
        raise CraftArgError(f"{args.write}: cannot write: {exc.strerror or exc}") from None
    if args.verbose:
        _show(frames)
    verb = "appended" if args.append else "wrote"
    print(f"madpipe craft: {verb} {len(frames)} frame{'s' if len(frames) != 1 else ''} to "
          f"{args.write} (link type {linktype} {LINKTYPES[linktype]})", file=sys.stderr)
    return 0


def _show(frames) -> None:
    from madpipe.codecs.frame import decode_frame
    from madpipe.pipeline.decode.text import line
    from madpipe.pipeline.decode.output import tree

    first = frames[0][1] / 1e9 if frames else 0.0
    for i, (packet, ts_ns) in enumerate(frames, 1):
        record = decode_frame(packet, i, ts_ns / 1e9)
        sys.stdout.write(line(record, first) + "\n")
        tree({k: v for k, v in record.items() if k not in ("frame", "ts")}, sys.stdout, 1)
