"""`madpipe report CAPTURE -w report.html`: the capture's P_Key state and traffic as pictures."""
from __future__ import annotations

import argparse
import sys

from madpipe.pipeline.cli.args import add_force, check_new_output

EXAMPLE = """The page holds three figures (PNG, inline) and the numbers behind each: the ports x
partitions membership matrix (full, limited, absent) of the tables the SM left, the P_Key change
events per port in time, and the MADs per class, method and attribute over time. It needs
matplotlib: pip install 'madpipe[report]'.

examples:
  madpipe report pcaps/opensm_partitions_changed.pcap -w report.html
  madpipe report capture.pcap -w capture.html --png-dir figures/   # the PNGs as files too
  cat capture.pcap | madpipe report - -w piped.html                # standard input"""


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        description="Write one HTML page (figures inline as PNG) about a capture: which port holds "
        "which partition, when tables changed, and what MADs crossed the wire when.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("capture", metavar="CAPTURE", help="capture to read ('-': standard input)")
    p.add_argument("-w", dest="write", metavar="FILE", required=True, help="HTML file to write")
    p.add_argument("--from", dest="rule", choices=("set", "getresp"), default="set",
                   help="which MADs set a table, as for snoop (default set: the kernel's rule)")
    p.add_argument("--png-dir", metavar="DIR", help="also write the figures as DIR/matrix.png, events.png, mads.png")
    add_force(p)
    p.set_defaults(func=run)


def input_files(argv: list[str]) -> list[str]:
    """The capture of a ``madpipe report`` command line (its arguments after ``report``)."""
    from madpipe.pipeline.cli.args import captures_named

    return captures_named(register, "report", argv, ("capture",))


def run(args) -> int:
    from madpipe.pipeline.fabric import report
    from madpipe.pipeline.ingest.live import seekable

    check_new_output(args.write, args.force)
    with seekable(args.capture) as path:  # "-": standard input, copied to a temporary file first
        data = report.write_report(path, args.write, args.rule, args.png_dir)
    m = data.matrix
    print(f"{args.write}: {len(m.ports)} ports, {len(m.partitions)} partitions, {len(data.events)} change events, "
          f"{sum(data.mads.totals.values())} MADs", file=sys.stderr)
    if data.snoop.file_error:
        print(f"madpipe report: {args.capture}: {data.snoop.file_error}", file=sys.stderr)
        return 1
    return 0
