"""`madpipe decode`: read a capture and print every frame, as text (one line each) or JSON Lines."""
from __future__ import annotations

import argparse
import sys

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.cli.args import add_capture_inputs, add_force, table_output, write_dataset_cli
from madpipe.pipeline.cli.live import add_live_options, live_input, live_status, open_live
from madpipe.pipeline.columns import many
from madpipe.pipeline.decode.display_filter import compile_filter
from madpipe.pipeline.decode.lines import decode_capture
from madpipe.pipeline.decode.text import summary

EXAMPLE = """live: -r - reads standard input (ibdump -w - | madpipe decode -r -), --follow a file still being
written (tail -f): each frame's lines are written and flushed as it is read; the counts come at
the end, or when SIGINT (Ctrl-C) or SIGTERM stops the run (exit 0 then).

exit status: 0 the whole file was read; 1 the file is cut short or corrupt after some frames
(those frames are still printed); 2 the file cannot be read at all, or bad arguments.

examples:
  madpipe decode -r pcaps/infiniband_endace_erf_2008.pcap
  madpipe decode -r capture.pcap -Y 'mad.attr_id==0x16 && mad.method==0x02' -V
  madpipe decode -r capture.pcap -T json -c 10 | jq .attr.pkeys
  madpipe decode -r capture.pcap -w frames.parquet               # or .csv; --force to overwrite
  cat pcaps/opensm_partitions.pcap | madpipe decode -r - -Y 'mad.attr_id==0x16'   # a pipe, line by line
  madpipe decode -r capture.pcap --follow --stop-after 1 -T json   # a file still being written
  madpipe decode -r monday/ -r today.pcap -T json | jq -c 'select(.capture=="today.pcap")'
  madpipe decode -r captures/ -w frames/ --dask tcp://scheduler:8786"""


def register(sub) -> None:
    p = sub.add_parser(
        "decode",
        description="Decode a capture frame by frame: LRH, GRH, BTH, DETH, MAD header, SMP and "
        "its attribute, ICRC and VCRC checked. Text is one line per frame; -T json prints JSON Lines "
        "with fixed keys (frame, ts, lrh, grh, bth, deth, mad, smp, attr, icrc_ok, vcrc_ok, error).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_capture_inputs(p)
    add_live_options(p)
    p.add_argument("-c", dest="count", metavar="COUNT", type=int, help="stop after COUNT frames (of each capture)")
    p.add_argument("-V", dest="verbose", action="store_true", help="print the full field tree")
    p.add_argument("-x", dest="hex", action="store_true", help="print each frame's bytes in hex")
    p.add_argument("-T", dest="format", choices=("text", "json", "csv", "parquet"),
                   help="output format (default text; json = JSON Lines; csv and parquet are what -w "
                   "writes, which its name says already: OUT.csv, OUT.parquet, or DIR/ for a dataset)")
    p.add_argument("-Y", dest="filter", metavar="FILTER",
                   help="display filter on the JSON keys, e.g. 'mad.attr_id==0x16'")
    p.add_argument("-w", dest="write", metavar="OUT",
                   help="write every frame's columns: OUT.parquet, OUT.csv, or DIR/ for a Parquet dataset "
                   "partitioned by capture (several captures, --dask)")
    add_force(p)
    p.add_argument("-j", dest="jobs", metavar="N", type=int,
                   help="processes for a dataset of several captures (default: the CPUs; 1 = this process)")
    p.add_argument("--dask", metavar="SCHEDULER",
                   help="write the -w dataset on dask.distributed: a scheduler address, or 'local' "
                   "for a LocalCluster of -j workers (pip install 'madpipe[dask]')")
    p.set_defaults(func=run)


def run(args) -> int:
    files = many.capture_files(args.read)
    kind = table_output(args, files)
    if kind:
        return _run_export(args, files, kind)
    args.format = args.format or "text"
    pred = compile_filter(args.filter) if args.filter else None
    if live_input(args, files):
        with open_live(files[0], args) as stream:
            counts, error = decode_capture(stream, sys.stdout, format=args.format, count=args.count,
                                           verbose=args.verbose, hex=args.hex, pred=pred)
        sys.stdout.flush()
        print(summary(files[0], counts), file=sys.stderr)
        return live_status("decode", files[0], error, stream)
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


def _run_export(args, files: list[str], kind: str) -> int:
    """-w OUT.csv|OUT.parquet: export.export_frames; -w DIR/ (several captures, --dask): a dataset."""
    from madpipe.pipeline.columns.export import export_frames

    refused = [flag for flag, on in (("-Y", args.filter), ("-V", args.verbose), ("-x", args.hex)) if on]
    if refused:
        raise MadpipeError(f"{'/'.join(refused)} print frames: -w writes every frame's columns "
                           "(filter the DataFrame instead)")
    if kind != "dataset":
        result = export_frames(files[0], args.write, kind, count=args.count)
        print(f"{files[0]}: {result.rows} frames written to {args.write} ({kind})"
              + _skipped_text(result.skipped), file=sys.stderr)
        if result.file_error:
            print(f"madpipe decode: {files[0]}: {result.file_error}", file=sys.stderr)
            return 1
        return 0
    if args.count is not None:
        raise MadpipeError("-c does not apply to a dataset: every frame of each capture is written")
    return write_dataset_cli("decode", files, args.write, "frames", jobs=args.jobs, dask=args.dask, force=args.force)


def _skipped_text(skipped) -> str:
    n = sum(skipped.values())
    return f", {n} records without a packet skipped" if n else ""


def run_one(args, path: str, pred, out, progress) -> int:
    """Decode one capture to ``out``; the summary (and error) lines go to stderr."""
    note = progress.note if progress else (lambda text: print(text, file=sys.stderr))
    counts, error = decode_capture(path, out, format=args.format, count=args.count, verbose=args.verbose,
                                   hex=args.hex, pred=pred)
    out.flush()
    note(summary(path, counts))
    if error:
        note(f"madpipe decode: {path}: {error}")
        return 1
    return 0
