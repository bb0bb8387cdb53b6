"""`madpipe decode`: read a capture and print every frame, as text (one line each) or JSON Lines."""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from madpipe.codecs import mad
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.frame import decode_frame
from madpipe.codecs.ib_headers import opcode_name
from madpipe.pipeline.display_filter import compile_filter
from madpipe.pipeline.output import hexdump, jsonl, tree

#: -T json without -Y or -x goes through madpipe.pipeline.fast_json (the same bytes, ~10x faster);
#: False sends it through decode_frame and jsonl like everything else (the tests compare the two).
FAST_JSON = True

EXAMPLE = """exit status: 0 the whole file was read; 1 the file is cut short or corrupt after some frames
(those frames are still printed); 2 the file cannot be read at all, or bad arguments.

examples:
  madpipe decode -r pcaps/infiniband_endace_erf_2008.pcap
  madpipe decode -r capture.pcap -Y 'mad.attr_id==0x16 && mad.method==0x02' -V
  madpipe decode -r capture.pcap -T json -c 10 | jq .attr.pkeys"""


def register(sub) -> None:
    p = sub.add_parser(
        "decode",
        help="decode every frame of a capture (pcap/pcapng, link type 197 ERF or 247)",
        description="Decode a capture frame by frame: LRH, GRH, BTH, DETH, MAD header, SMP and "
        "its attribute, ICRC and VCRC checked. Text is one line per frame; -T json prints JSON Lines "
        "with fixed keys (frame, ts, lrh, grh, bth, deth, mad, smp, attr, icrc_ok, vcrc_ok, error).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-r", dest="read", metavar="FILE", required=True, help="capture to read")
    p.add_argument("-c", dest="count", metavar="COUNT", type=int, help="stop after COUNT frames")
    p.add_argument("-V", dest="verbose", action="store_true", help="print the full field tree")
    p.add_argument("-x", dest="hex", action="store_true", help="print each frame's bytes in hex")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="output format (default text; json = JSON Lines)")
    p.add_argument("-Y", dest="filter", metavar="FILTER",
                   help="display filter on the JSON keys, e.g. 'mad.attr_id==0x16'")
    p.set_defaults(func=run)


def run(args) -> int:
    pred = compile_filter(args.filter) if args.filter else None
    counts: Counter[str] = Counter()
    out = sys.stdout
    if FAST_JSON and args.format == "json" and pred is None and not args.hex:
        return _run_json(args, counts, out)
    with CaptureReader(args.read) as cap:
        first_ts = None
        for pkt in cap:
            if args.count is not None and counts["read"] >= args.count:
                break
            counts["read"] += 1
            ts = pkt.ts_ns / 1e9
            if first_ts is None:
                first_ts = ts
            if pkt.data is None:
                counts["skipped"] += 1
                record = {"frame": pkt.frame, "ts": ts, "skipped": pkt.skip}
            else:
                record = decode_frame(pkt.data, pkt.frame, ts)
                _count(record, counts)
            if pred is not None and not pred(record):
                continue
            counts["shown"] += 1
            if args.format == "json":
                jsonl(record, out)
            else:
                out.write(line(record, first_ts) + "\n")
                if args.verbose:
                    tree({k: v for k, v in record.items() if k not in ("frame", "ts")}, out, 1)
            if args.hex and pkt.data is not None:
                hexdump(pkt.data, out)
                if args.format == "text":
                    out.write("\n")
        out.flush()
        print(summary(args.read, counts), file=sys.stderr)
        if cap.error:
            print(f"madpipe decode: {args.read}: {cap.error}", file=sys.stderr)
            return 1
    return 0


def _run_json(args, counts: Counter, out) -> int:
    """-T json without -Y or -x: fast_json writes the same lines without a dict per frame."""
    from madpipe.pipeline import fast_json

    error = fast_json.write_json_lines(args.read, out, args.count, counts)
    out.flush()
    print(summary(args.read, counts), file=sys.stderr)
    if error:
        print(f"madpipe decode: {args.read}: {error}", file=sys.stderr)
        return 1
    return 0


def _count(record: dict, counts: Counter) -> None:
    counts["decoded"] += 1
    if "error" in record:
        counts["errors"] += 1
    for key in ("icrc_ok", "vcrc_ok"):
        if record.get(key) is True:
            counts[key] += 1
        elif record.get(key) is False:
            counts[key.replace("_ok", "_bad")] += 1
    if "mad" in record:
        counts["mads"] += 1


def summary(name: str, c: Counter) -> str:
    text = (f"{name}: {c['read']} frames read, {c['decoded']} decoded ({c['mads']} MADs), "
            f"{c['errors']} with errors, {c['skipped']} skipped; "
            f"ICRC {c['icrc_ok']} ok {c['icrc_bad']} bad, VCRC {c['vcrc_ok']} ok {c['vcrc_bad']} bad")
    if c["shown"] != c["read"]:
        text += f"; {c['shown']} shown"
    return text


def line(r: dict, first_ts: float) -> str:
    """One frame, one line: number, time, SLID -> DLID, class, method, attribute, modifier, TID, status."""
    head = f"{r['frame']:6d} {r['ts'] - first_ts:11.6f}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"
    lrh = r.get("lrh")
    if lrh is None:
        return f"{head} [error: {r.get('error')}]"
    parts = [head, f"{lrh['slid']:#06x} -> {lrh['dlid']:#06x}"]
    m = r.get("mad")
    if m is not None:
        attr = r.get("attr", {}).get("name") or f"0x{m['attr_id']:04x}"
        parts += [
            f"{mad.mgmt_class_name(m['mgmt_class']):<10}",
            f"{mad.method_name(m['method']):<11}",
            f"{attr:<20}",
            f"mod={m['attr_mod']:#010x}",
            f"tid={m['tid']:#018x}",
            mad.status_text(m["status"]) if m["mgmt_class"] != mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
            else _dr_status(m["status"]),
        ]
        smp = r.get("smp") or {}
        if "hop_cnt" in smp:
            parts.append(f"hops={smp['hop_ptr']}/{smp['hop_cnt']} path={','.join(map(str, smp['initial_path']))}")
        a = r.get("attr") or {}
        if "pkeys" in a:
            keys = " ".join(f"[{i}]0x{p:04x}" for i, p in enumerate(a["pkeys"]) if p)
            parts.append(f"block {a['block']}: {keys or '(all zero)'}")
    elif "bth" in r:
        parts.append(opcode_name(r["bth"]["opcode"]))
        parts.append(f"qp {r['bth']['dqp']:#x} psn {r['bth']['psn']}")
        if "payload_len" in r:
            parts.append(f"{r['payload_len']} bytes")
    elif "raw_len" in r:
        parts.append(f"raw packet, {r['raw_len']} bytes")
    if r.get("icrc_ok") is False or r.get("vcrc_ok") is False:
        parts.append(f"[bad CRC: icrc_ok={r.get('icrc_ok')} vcrc_ok={r.get('vcrc_ok')}]")
    if "error" in r:
        parts.append(f"[error: {r['error']}]")
    return " ".join(parts)


def _dr_status(status: int) -> str:
    text = mad.status_text(status)
    return f"{text} D" if status & mad.IB_SMP_DIRECTION else text
