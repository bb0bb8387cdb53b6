"""`madpipe diff A B`: the P_Key state of every port in capture A against capture B."""
from __future__ import annotations

import argparse
import sys

from madpipe.pipeline.cli.args import (
    PROFILE_EPILOG,
    add_host_options,
    add_profile,
    captures_named,
    check_host_options,
)
from madpipe.pipeline.fabric import diff

EXAMPLE = """What is compared: each capture goes through `madpipe snoop` (the same --from rule), and the
tables the SM left are paired port by port: by GUID when both captures hold the port's NodeInfo
answer (a CA's port GUID, a switch's node GUID and port number), else by LID and port, else by
directed-route path and port. For each pair, every entry that differs is one of:
  added       no P_Key in A, one in B          removed     a P_Key in A, none in B
  membership  same partition, full <-> limited (bit 15)
  changed     another partition at that index
and the same tables as sets of partitions (whatever the index) give the 'partitions:' line.
With --host/--vfs, each VF's virtual table (mlx4 virt2phys_pkey, init_pkeys then --pkey-map,
the same map for both captures) is compared too.

""" + PROFILE_EPILOG + """

exit status: 0 no difference; 1 differences; 2 trouble (a capture cannot be read or is cut
short, bad arguments), as diff(1).

examples:
  madpipe diff pcaps/opensm_partitions.pcap pcaps/opensm_partitions_changed.pcap
  madpipe diff monday.pcap today.pcap -T json | jq -c 'select(.type=="partition")'
  madpipe diff monday.pcap today.pcap --host 0x4 --vfs 2 --pkey-map vfs.map
  madpipe diff monday.pcap today.pcap --host 0x4 --vfs 2 --profile 3.7
  cat today.pcap | madpipe diff monday.pcap -                       # B from standard input"""


def register(sub) -> None:
    p = sub.add_parser(
        "diff",
        description="Compare the P_Key state of every port in capture A with capture B: ports only "
        "in A or only in B, and per port and block the entries added, removed, whose membership "
        "changed (full <-> limited) or whose P_Key changed.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A", help="the earlier capture ('-': standard input)")
    p.add_argument("b", metavar="B", help="the capture to compare with it ('-': standard input)")
    p.add_argument("--from", dest="rule", choices=("set", "getresp"), default="set",
                   help="which MADs set a table, as for snoop (default set: the kernel's rule)")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="output format (default text; json = JSON Lines with a 'type' key)")
    add_host_options(p, "compare the VFs of the mlx4 host at this LID",
                     "VF P_Key index mappings ('VF PORT INDEX PHYS' lines)")
    add_profile(p)
    p.set_defaults(func=run)


def input_files(argv: list[str]) -> list[str]:
    """The two captures of a ``madpipe diff`` command line (its arguments after ``diff``)."""
    return captures_named(register, "diff", argv, ("a", "b"))


def run(args) -> int:
    from madpipe.codecs.errors import MadpipeError
    from madpipe.pipeline.fabric.diff_output import print_json, print_text
    from madpipe.pipeline.ingest.live import seekable
    from madpipe.pipeline.mlx4.pkey_map import read_pkey_map

    check_host_options(args)
    if args.a == args.b == "-":
        raise MadpipeError("only one of A and B can be '-' (standard input)")
    v2p = read_pkey_map(args.pkey_map, num_vfs=args.vfs, profile=args.profile) if args.pkey_map else None
    # "-" is standard input, copied to a temporary file first: a diff reads each capture twice.
    with seekable(args.a) as a, seekable(args.b) as b:
        d = diff.diff_captures(a, b, args.rule, host=args.host, num_vfs=args.vfs,
                               port_num=args.port_num, v2p=v2p, profile=args.profile)
        d.a.path, d.b.path = args.a, args.b
    out = sys.stdout
    (print_json if args.format == "json" else print_text)(d, out)
    out.flush()
    trouble = False
    for side in (d.a, d.b):
        if side.snoop.file_error:
            print(f"madpipe diff: {side.path}: {side.snoop.file_error}", file=sys.stderr)
            trouble = True
    if trouble:
        return 2
    return 1 if d.differ else 0
