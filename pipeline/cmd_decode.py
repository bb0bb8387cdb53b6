"""`madpipe decode`: read a capture and print every frame, as text (one line each) or JSON Lines."""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from madpipe.codecs import mad
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.frame import decode_frame
from madpipe.codecs.ib_headers import opcode_name
from madpipe.pipeline import many
from madpipe.pipeline.display_filter import compile_filter
from madpipe.pipeline.output import count_record, hexdump, jsonl, tree
from madpipe.pipeline.cli_args import add_capture_inputs

#: -T json without -Y or -x goes through madpipe.pipeline.fast_json (the same bytes, ~10x faster);
#: False sends it through decode_frame and jsonl like everything else (the tests compare the two).
FAST_JSON = True

EXAMPLE = """exit status: 0 the whole file was read; 1 the file is cut short or corrupt after some frames
(those frames are still printed); 2 the file cannot be read at all, or bad arguments.

examples:
  madpipe decode -r pcaps/infiniband_endace_erf_2008.pcap
  madpipe decode -r capture.pcap -Y 'mad.attr_id==0x16 && mad.method==0x02' -V
  madpipe decode -r capture.pcap -T json -c 10 | jq .attr.pkeys
  madpipe decode -r capture.pcap -T parquet -w frames.parquet
  madpipe decode -r monday/ -r today.pcap -T json | jq -c 'select(.capture=="today.pcap")'
  madpipe decode -r captures/ -T parquet -w frames/ --dask tcp://scheduler:8786"""


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
    add_capture_inputs(p)
    p.add_argument("-c", dest="count", metavar="COUNT", type=int, help="stop after COUNT frames (of each capture)")
    p.add_argument("-V", dest="verbose", action="store_true", help="print the full field tree")
    p.add_argument("-x", dest="hex", action="store_true", help="print each frame's bytes in hex")
    p.add_argument("-T", dest="format", choices=("text", "json", "csv", "parquet"), default="text",
                   help="output format (default text; json = JSON Lines; csv and parquet write -w FILE, "
                   "parquet with several captures a dataset directory partitioned by capture)")
    p.add_argument("-Y", dest="filter", metavar="FILTER",
                   help="display filter on the JSON keys, e.g. 'mad.attr_id==0x16'")
    p.add_argument("-w", dest="write", metavar="OUT", help="file (or dataset directory) for -T csv|parquet")
    p.add_argument("-j", dest="jobs", metavar="N", type=int,
                   help="processes for a dataset of several captures (default: the CPUs; 1 = this process)")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="write the -w dataset on dask.distributed: a scheduler address, or 'local' "
                   "for a LocalCluster of -j workers (pip install 'madpipe[dask]')")
    p.set_defaults(func=run)


def run(args) -> int:
    files = many.capture_files(args.read)
    if args.format in ("csv", "parquet") or args.dask:
        return _run_export(args, files)
    if args.write:
        raise MadpipeError("-w writes -T csv or -T parquet; text and json go to stdout")
    pred = compile_filter(args.filter) if args.filter else None
    if len(files) == 1:
        return run_one(args, files[0], pred, sys.stdout, None)
    progress = many.Progress.for_cli("decode", len(files))
    status = 0
    try:
        for path in files:
            if args.format == "json":
                out = many.CaptureTag(sys.stdout, path)
            else:
                out = sys.stdout
                progress.clear()
                out.write(f"==> {path} <==\n")
            try:
                status = max(status, run_one(args, path, pred, out, progress))
            except MadpipeError as exc:
                progress.note(f"madpipe decode: {exc}")
                status = 2
            progress.step(path)
    finally:
        progress.close()
    return status


def _run_export(args, files: list[str]) -> int:
    """-T csv|parquet -w OUT: export.export_frames; several captures (or --dask): a dataset."""
    from madpipe.pipeline.export import export_frames

    refused = [flag for flag, on in (("-Y", args.filter), ("-V", args.verbose), ("-x", args.hex)) if on]
    if refused:
        raise MadpipeError(f"{'/'.join(refused)} print frames: -T {args.format} writes every frame's columns "
                           "(filter the DataFrame instead)")
    if not args.write:
        raise MadpipeError(f"-T {args.format} writes a file: give -w OUT" if not args.dask
                           else "--dask writes a Parquet dataset: give -w DIR")
    if len(files) == 1 and not args.dask:
        result = export_frames(files[0], args.write, args.format, count=args.count)
        print(f"{files[0]}: {result.rows} frames written to {args.write} ({args.format})"
              + _skipped_text(result.skipped), file=sys.stderr)
        if result.file_error:
            print(f"madpipe decode: {files[0]}: {result.file_error}", file=sys.stderr)
            return 1
        return 0
    if args.format == "csv" or (args.dask and args.format not in ("text", "parquet")):
        raise MadpipeError(f"several captures (or --dask) write a Parquet dataset: use -T parquet, not -T {args.format}")
    if args.count is not None:
        raise MadpipeError("-c does not apply to a dataset: every frame of each capture is written")
    return write_dataset_cli("decode", files, args.write, "frames", jobs=args.jobs, dask=args.dask)


def write_dataset_cli(command: str, files: list[str], out: str, kind: str, **kw) -> int:
    """many.write_dataset with a line per capture and a total on stderr; exit 2 if a capture could
    not be read, 1 if one was cut short, else 0."""
    progress = many.Progress.for_cli(command, len(files), uses_stdout=False)
    try:
        results = many.write_dataset(files, out, kind, progress=progress, **kw)
    finally:
        progress.close()
    what = "frames" if kind == "frames" else "P_Key table rows"
    status = 0
    for r in results:
        if r.get("unreadable"):
            print(f"madpipe {command}: {r['file_error']}", file=sys.stderr)
            status = 2
        else:
            print(f"{r['capture']}: {r['rows']} {what}", file=sys.stderr)
            if r["file_error"]:
                print(f"madpipe {command}: {r['capture']}: {r['file_error']}", file=sys.stderr)
                status = max(status, 1)
    print(f"{len(results)} captures, {sum(r['rows'] for r in results)} {what} written to {out} "
          "(Parquet dataset partitioned by capture)", file=sys.stderr)
    return status


def _skipped_text(skipped) -> str:
    n = sum(skipped.values())
    return f", {n} records without a packet skipped" if n else ""


def run_one(args, path: str, pred, out, progress) -> int:
    """Decode one capture to ``out``; the summary (and error) lines go to stderr."""
    counts: Counter[str] = Counter()
    note = progress.note if progress else (lambda text: print(text, file=sys.stderr))
    if FAST_JSON and args.format == "json" and pred is None and not args.hex:
        return _run_json(args, path, counts, out, note)
    with CaptureReader(path) as cap:
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
                count_record(record, counts)
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
        note(summary(path, counts))
        if cap.error:
            note(f"madpipe decode: {path}: {cap.error}")
            return 1
    return 0


def _run_json(args, path: str, counts: Counter, out, note) -> int:
    """-T json without -Y or -x: fast_json writes the same lines without a dict per frame."""
    from madpipe.pipeline import fast_json

    error = fast_json.write_json_lines(path, out, args.count, counts)
    out.flush()
    note(summary(path, counts))
    if error:
        note(f"madpipe decode: {path}: {error}")
        return 1
    return 0


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
