"""`madpipe check --partitions FILE CAPTURE...`: the P_Key tables of each capture against opensm's
partitions.conf. Arguments only: the reading is :mod:`madpipe.pipeline.check.partitions_conf`,
the check :mod:`madpipe.pipeline.check.tables`, the output :mod:`madpipe.pipeline.check.output`.
"""
from __future__ import annotations

import argparse
import sys

from madpipe.pipeline.cli.args import captures_named

EXAMPLE = """What each port must hold, as opensm 3.3 derives it: the Default partition (0x7fff) with every
end port a limited member and the SM's port full, unless the file says otherwise; then each
statement in file order, the last word on a (partition, port) winning: full = the P_Key with bit
15 set, limited = without, both = full (both keys with --allow-both-pkeys, opensm's
allow_both_pkeys); ALL, ALL_CAS, ALL_SWITCHES, ALL_ROUTERS (a switch's end port is its port 0),
SELF (the SM's port: where the capture's directed routes start). A switch port facing an end port
must hold that port's table (partition enforcement); links between switches are not checked.

Ports are found by GUID in the capture's NodeInfo answers (by directed-route path or LID) and
matched to snoop's ports (LID, path, switch port). A port's table is the last one it reported in
a P_KeyTable GetResp (--from getresp, the default: after opensm's Get or Set), or the kernel's
rule (--from set: then a port opensm found right and never Set counts as never programmed).

For each port: P_Keys missing, extra (a partition the policy does not give it), wrong membership
(full <-> limited); then the end ports the policy gives P_Keys that the capture holds no table of.
A member naming a GUID the capture never saw is a note. Bad input in the file is one line
FILE:LINE:COL; what opensm only warns about (an unknown flag) is a warning on stderr.

exit status: 0 every port as the policy says; 1 violations; 2 trouble (the file or a capture
cannot be read, a capture is cut short, bad arguments).

examples:
  madpipe check --partitions pcaps/partitions-a.conf pcaps/opensm_partitions.pcap
  madpipe check --partitions pcaps/partitions-b.conf pcaps/opensm_partitions_changed.pcap -T json
  madpipe check --partitions /etc/opensm/partitions.conf monday.pcap today.pcap"""


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        description="Check the P_Key tables a capture leaves against the opensm partitions.conf that "
        "should have produced them: per port the P_Keys missing, extra, or of the wrong membership, "
        "and the ports the policy names that the capture never programmed.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--partitions", metavar="FILE", required=True, help="opensm's partitions.conf (opensm -P)")
    p.add_argument("captures", metavar="CAPTURE", nargs="+", help="captures of the SM's traffic ('-': standard input)")
    p.add_argument("--from", dest="rule", choices=("getresp", "set"), default="getresp",
                   help="which MADs give a port's table (default getresp: what the port reported last)")
    p.add_argument("--allow-both-pkeys", action="store_true",
                   help="as opensm's allow_both_pkeys: a 'both' member holds the full and the limited P_Key")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="output format (default text; json = JSON Lines with a 'type' key)")
    p.set_defaults(func=run)


def input_files(argv: list[str]) -> list[str]:
    """The captures of a ``madpipe check`` command line (its arguments after ``check``)."""
    files = captures_named(register, "check", argv, ("captures",))
    return files[0] if files else []


def run(args) -> int:
    from madpipe.codecs.errors import MadpipeError
    from madpipe.pipeline.check.output import print_json, print_text
    from madpipe.pipeline.check.partitions_conf import read_policy
    from madpipe.pipeline.check.tables import check_capture
    from madpipe.pipeline.ingest.live import seekable

    policy = read_policy(args.partitions)
    for w in policy.warnings:
        print(f"madpipe check: {w}", file=sys.stderr)
    out = sys.stdout
    status = 0
    for path in args.captures:
        if len(args.captures) > 1 and args.format == "text":
            out.write(f"==> {path} <==\n")
        try:
            with seekable(path) as readable:  # "-": standard input, copied to a temporary file first
                c = check_capture(readable, policy, args.rule, args.allow_both_pkeys)
            c.path = path
        except MadpipeError as exc:
            out.flush()
            print(f"madpipe check: {exc}", file=sys.stderr)
            status = 2
            continue
        (print_json if args.format == "json" else print_text)(c, out)
        out.flush()
        if c.file_error:
            print(f"madpipe check: {path}: {c.file_error}", file=sys.stderr)
            status = 2
        elif c.violations:
            status = max(status, 1)
    return status
