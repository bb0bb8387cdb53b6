"""`madpipe capture --sim`: real subnet-manager traffic from opensm on a simulated fabric (ibsim)."""
from __future__ import annotations

import argparse
import os
import sys

from madpipe.codecs.capture import LINKTYPE_ERF, linktype_arg
from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.cli.args import add_force, check_new_output
from madpipe.pipeline.sim.capture import SimCapture
from madpipe.pipeline.sim.output import print_capture_report
from madpipe.pipeline.sim.processes import find_tool
from madpipe.pipeline.sim.protocol import IBSIM_MAX_CLIENTS

EXAMPLE = """how: ibsim runs in remote mode on loopback behind a UDP relay that records every datagram
of ibsim's protocol (struct sim_request) with its time. opensm --once runs once per partitions
file (--partitions, then each --then), with libumad2sim.so preloaded, in a temporary directory
(OSM_TMP_DIR, OSM_CACHE_DIR: the second run keeps the LIDs of the first). --queries then runs
ibnetdiscover -p and smpquery pkeys on every port. Everything started is stopped by its pid.
All of it runs in a private network namespace with only loopback (ibsim listens on every
interface otherwise): nothing outside the run can reach the fabric. Where no namespace can be
made (not root, and unprivileged user namespaces are off), capture refuses unless
--allow-network-exposure is given.
The datagrams become native IB packets (LRH, BTH UD SEND only, DETH, MAD, ICRC, VCRC): SMPs on
VL15 QP0, directed-route SMPs with the permissive LID 0xFFFF, other MADs on VL0 QP1.

Partitions files name ports by their 0x-prefixed 16-digit port GUIDs (ibnetdiscover -p lists
them). Needs the Debian packages ibsim-utils, opensm and infiniband-diags.

examples:
  madpipe capture --sim /usr/share/doc/ibsim-utils/net-examples/net.2sw2path4hca \\
      --sm-node Hca1 --partitions pcaps/partitions-a.conf -w opensm.pcap
  madpipe capture --sim net.2sw2path4hca --partitions a.conf --then b.conf --queries -w ab.pcap
  madpipe snoop -r ab.pcap"""


def register(sub) -> None:
    p = sub.add_parser(
        "capture",
        description="Start ibsim on a topology, run opensm --once against it with each partitions "
        "file in turn (optionally ibnetdiscover and smpquery too), record every MAD, and write "
        "them as a capture (pcap, link type 197 ERF by default) that madpipe and tshark read.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sim", metavar="TOPOLOGY", required=True,
                   help="ibsim topology file, or the name of one of ibsim-utils' examples "
                   "(net.2sw2path4hca: /usr/share/doc/ibsim-utils/net-examples)")
    p.add_argument("--partitions", metavar="FILE",
                   help="opensm partitions file for the first run (default: Default=0x7fff, ALL full)")
    p.add_argument("--then", metavar="FILE", nargs="+", action="extend", default=[],
                   help="partitions files for further opensm runs, in order")
    p.add_argument("--queries", action="store_true",
                   help="afterwards, run ibnetdiscover -p and smpquery pkeys on every port")
    p.add_argument("-w", dest="write", metavar="FILE", required=True, help="capture to write")
    add_force(p)
    p.add_argument("--linktype", type=_linktype, default=LINKTYPE_ERF,
                   help="197/erf (default, what ibdump writes) or 247/infiniband")
    p.add_argument("--sm-node", metavar="NAME",
                   help="node opensm runs on (SIM_HOST; default: ibsim's, the topology's first port)")
    p.add_argument("--port", metavar="BASE", type=int,
                   help="UDP base port the tools connect to (uses BASE..BASE+10; default: the first "
                   "free range from 7070); ibsim itself takes the next free range")
    p.add_argument("--timeout", metavar="SECONDS", type=float, default=60.0,
                   help="stop a tool that runs longer than this (default 60)")
    p.add_argument("--allow-network-exposure", action="store_true",
                   help="where no private network namespace can be made, run anyway with ibsim's "
                   "UDP ports open on every interface (default: refuse)")
    p.add_argument("--logs", metavar="DIR",
                   help="keep ibsim's and the tools' logs in DIR (default: a temporary directory, removed)")
    p.set_defaults(func=run)


def _linktype(text: str) -> int:
    try:
        return linktype_arg(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args) -> int:
    check_new_output(args.write, args.force)  # before a fabric is started for it
    if args.port is not None and not 1024 <= args.port <= 65535 - IBSIM_MAX_CLIENTS:
        raise MadpipeError(f"--port must be 1024..{65535 - IBSIM_MAX_CLIENTS}, got {args.port}")
    for path in [args.partitions, *args.then]:
        if path is not None and not os.path.isfile(path):
            raise MadpipeError(f"{path}: no such partitions file")
    tools = ["ibsim", "opensm"] + (["ibnetdiscover", "smpquery"] if args.queries else [])
    for name in tools:
        find_tool(name)
    workdir = None
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)
        workdir = os.path.abspath(args.logs)
    capture = SimCapture(args.sim, port=args.port, sm_node=args.sm_node,
                         tool_timeout=args.timeout, workdir=workdir,
                         allow_network_exposure=args.allow_network_exposure)
    err = sys.stderr
    with capture:
        where = (f"in a private {capture.network.how} (loopback only)" if capture.contained
                 else "on the machine's network")
        print(f"madpipe capture: ibsim on {capture.topology}, tools connect to "
              f"{capture.host}:{capture.port} (relay), ibsim at {capture.ibsim.base}, {where}",
              file=err)
        for partitions in [args.partitions, *args.then]:
            run = capture.run_opensm(partitions)
            for line in run.errors:  # e.g. a partitions file opensm could not parse
                print(f"madpipe capture: opensm -P {partitions or '(default)'}: {line}", file=err)
        if args.queries:
            capture.query_pkeys()
    frames = capture.write(args.write, args.linktype)
    print_capture_report(capture, args.write, args.linktype, frames, sys.stdout)
    return 0
