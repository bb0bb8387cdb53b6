"""`madpipe paravirt`: a trace of QP-modify commands through the mlx4 master's QP-context rewrite."""
from __future__ import annotations

import argparse
import sys

import numpy as np

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.cli.args import PROFILE_EPILOG, add_force, add_profile, check_new_output, integer
from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.mlx4.paravirt_report import Report, Setup, default_vfs, print_json, print_text, rewrite_trace
from madpipe.pipeline.mlx4.pkey_map import read_pkey_map
from madpipe.pipeline.mlx4.profiles import resolve
from madpipe.pipeline.mlx4.trace import read_trace_with_skips, write_trace
from madpipe.pipeline.mlx4.trace_ftrace import recipe
from madpipe.pipeline.mlx4.vf_state import read_vf_state

#: P = base_sqpn + 8. mlx4_init_qp_table() puts base_sqpn = ALIGN(reserved_qps_cnt[FW], 8), right
#: after the QPs firmware reserves; ConnectX firmware commonly reserves 64 (log_rsvd_qps = 6), so
#: base_sqpn = 0x40 and P = 0x48.
DEFAULT_BASE_PROXY_SQPN = 0x48

EXAMPLE = """trace formats (madpipe.pipeline.mlx4.trace; the file's first bytes tell them apart):
  JSON Lines  {"transition": "INIT2RTR", "slave": 3, "in_mod": 291, "mailbox": "<512 hex digits>"}
  binary      b"madpipe-qptrace\\0", u32 version 1, u32 record size 264, then records of
              u8 opcode, u8 0, u16 slave, u32 in_mod (little-endian), 256-byte mailbox
  ftrace      a real master's commands: trace_pipe text of the kprobe events that
              --trace-recipe sets on mlx4_core's QP-modify wrappers (Linux 4.20+, root);
              other events' lines are skipped and counted, lost events reported

OUT has one record per input record, in order: accepted commands as the master hands them to
firmware, rejected and refused ones as they came in (firmware never sees them; they are listed).

results (per command; rc as the C returns it):
  accepted                            the rewrites ran (verify, pkey, gid, qkey, per transition)
  rejected by verify (-EINVAL)        verify_qp_parameters: a slave's GID index must be 0
                                      (RC/UC; mainline also XRC)
  rejected by verify (-EPERM)         mainline: a VF setting a rate limit, or a VF without
                                      SMI bringing an MLX QP on a reserved QP number to RTR
  rejected: port not owned (-EINVAL)  mainline: adjust_qp_sched_queue, a port the function
                                      does not own
  refused: outside virt2phys_pkey     rc -34: the C would read past the u8[F][2][128] table
                                      (F = 80 at 3.7, 128 on mainline);
                                      madpipe refuses instead of guessing memory (finding 2)
  [finding: spill]                    a P_Key index of 128..255 read the next row of the flat
                                      table, as the C does (finding 1)

virt2phys_pkey: init_pkeys for the master and VFs 1..--vfs (default: the trace's largest slave,
at most MLX4_MAX_NUM_VF: 126 on mainline, 64 at 3.7), then --pkey-map: one
'VF PORT INDEX PHYS_INDEX' a line, what
echo PHYS > /sys/class/infiniband/mlx4_0/iov/<vf>/ports/<port>/pkey_idx/<index> does.
QP numbers, F functions: proxies P .. P+8F-1 (P = --base-proxy-sqpn), tunnels P+8F .. P+16F-1
(mainline: P+1024 .. P+2047; 3.7: P+640 .. P+1279); firmware's reserved QPs (mainline, MLX-QP
check) are taken to be 0 .. P-9, i.e. base_sqpn = P - 8.

""" + PROFILE_EPILOG + """

examples:
  madpipe paravirt -r tests/data/paravirt_example.jsonl --pkey-map tests/data/paravirt_vfs.map
  madpipe paravirt --trace-recipe > record-qp.sh     # on the master, as root: sh record-qp.sh qp.txt
  madpipe paravirt -r qp.txt -w qp.jsonl             # its ftrace text, rewritten (written as JSON Lines)
  madpipe paravirt -r trace.bin -w rewritten.bin --profile 3.7
  madpipe paravirt -r trace.jsonl --vfs 126 --profile mainline       # 126 VFs: mainline only
  madpipe paravirt -r trace.jsonl --port-type 2=eth --vf-state vfs.txt  # port 2 RoCE, VST/spoof check per VF
  madpipe paravirt -r trace.jsonl -w out.bin --binary -q
  madpipe paravirt -r trace.jsonl -T json | jq -c 'select(.type=="command" and .rc!=0)'"""


def register(sub) -> None:
    p = sub.add_parser(
        "paravirt",
        description="Run every command of a trace (transition, issuing function, input modifier, "
        "256-byte QP-context mailbox) through the mlx4 master's paravirtualization "
        "(resource_tracker.c: verify_qp_parameters, update_pkey_index, update_gid, "
        "adjust_proxy_tun_qkey) and print, per command, the result and each changed field "
        "old -> new; then the rejected commands, the findings and counts. -w writes the "
        "rewritten trace: what the master would hand to firmware.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-r", dest="read", metavar="TRACE",
                   help="trace to read, JSON Lines, binary or ftrace text (- for standard input)")
    p.add_argument("--trace-recipe", action="store_true",
                   help="print a shell script that records a running mlx4 master's QP-modify commands "
                   "with kprobe events, as ftrace text -r reads, and exit")
    p.add_argument("-w", dest="write", metavar="OUT",
                   help="write the rewritten trace here, in the input's encoding unless --binary or --json "
                   "(- for standard output; the report then goes to standard error)")
    add_force(p)
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--binary", dest="encoding", action="store_const", const="binary",
                     help="write OUT as a binary trace")
    enc.add_argument("--json", dest="encoding", action="store_const", const="json",
                     help="write OUT as JSON Lines")
    add_profile(p)
    p.add_argument("--base-proxy-sqpn", metavar="N", type=integer, default=DEFAULT_BASE_PROXY_SQPN,
                   help=f"first proxy special QP, base_sqpn + 8 (default {DEFAULT_BASE_PROXY_SQPN:#x}: "
                   "mlx4 puts base_sqpn at ALIGN(firmware-reserved QPs, 8), and ConnectX firmware "
                   "commonly reserves 64, so base_sqpn = 0x40)")
    p.add_argument("--master", metavar="N", type=integer, default=0,
                   help="the master's function number (default 0, the PF)")
    p.add_argument("--vfs", metavar="N", type=integer,
                   help="number of VFs init_pkeys sets up, 0..MLX4_MAX_NUM_VF (126 on mainline, 64 at "
                   "3.7; default: the trace's largest slave)")
    p.add_argument("--pkey-map", metavar="FILE", help="VF P_Key index mappings, 'VF PORT INDEX PHYS' a line")
    p.add_argument("--port-type", metavar="PORT=ib|eth", action="append", default=[],
                   help="a physical port's link layer (default ib for both): eth runs mainline's Ethernet "
                   "(RoCE) branches of the wrappers for QPs on that port; repeat for port 2")
    p.add_argument("--vf-state", metavar="FILE",
                   help="each VF's vport state on an Ethernet port, as 'ip link set DEV vf N' sets it: "
                   "'VF PORT vlan 100 qos 3 spoofchk on ...' a line (README: QP-context rewriting)")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="output format (default text; json = JSON Lines with a 'type' key)")
    p.add_argument("-q", dest="quiet", action="store_true",
                   help="no per-command lines: only rejected commands, findings and the summary")
    p.add_argument("--reference", action="store_true",
                   help="use the pure-Python reference model instead of the kernel (slow; same bytes)")
    p.set_defaults(func=run)


def _check_options(args) -> None:
    if not args.read:
        raise MadpipeError("give -r TRACE (or --trace-recipe to print how to record one)")
    prof = resolve(args.profile)
    p = args.base_proxy_sqpn
    top = (1 << 24) - 16 * prof.mfunc_max
    if p < 8 or p % 8 or p > top:
        raise MadpipeError(f"--base-proxy-sqpn must be a multiple of 8 in 0x8..{top:#x} "
                           f"(base_sqpn + 8, proxies and tunnels inside the 24-bit QP space), got {p:#x}")
    if not 0 <= args.master <= prof.max_num_vf:  # the master is one of the functions 0..num_vfs
        raise MadpipeError(f"--master must be a function number 0..{prof.max_num_vf} (profile "
                           f"{args.profile}), got {args.master}")
    if args.vfs is not None:
        if not 0 <= args.vfs <= prof.max_num_vf:
            raise MadpipeError(f"--vfs must be 0..{prof.max_num_vf} (MLX4_MAX_NUM_VF of profile {args.profile}), "
                               f"got {args.vfs}")
        if args.master > args.vfs:
            raise MadpipeError(f"--master {args.master} is not one of the functions 0..{args.vfs} (--vfs)")
    args.port_types = _port_types(args.port_type)
    if 2 in args.port_types and not prof.eth_ports:
        raise MadpipeError(f"--port-type eth: profile {args.profile} has no Ethernet rules (mainline's "
                           "wrappers are modelled; use --profile mainline)")
    if args.vf_state and 2 not in args.port_types:
        raise MadpipeError("--vf-state sets the VFs' Ethernet vport state: give --port-type PORT=eth too")
    if args.encoding and not args.write:
        raise MadpipeError(f"--{args.encoding} chooses the encoding of -w OUT: give -w OUT too")
    check_new_output(args.write, args.force)


def _port_types(given: list[str]) -> tuple[int, int]:
    """--port-type PORT=ib|eth, each port at most once: (type of port 1, of port 2), 1 IB, 2 Ethernet."""
    types = [1, 1]
    seen = set()
    for text in given:
        port, _, kind = text.partition("=")
        if port not in ("1", "2") or kind not in ("ib", "eth"):
            raise MadpipeError(f"--port-type: expected 1=ib, 1=eth, 2=ib or 2=eth, got {text!r}")
        if port in seen:
            raise MadpipeError(f"--port-type: port {port} given twice")
        seen.add(port)
        types[int(port) - 1] = 2 if kind == "eth" else 1
    return types[0], types[1]


def _virt2phys(args, num_vfs: int) -> np.ndarray:
    if not args.pkey_map:
        _, v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=args.master,
                                  profile=args.profile)
        return v2p
    try:
        return read_pkey_map(args.pkey_map, num_vfs=num_vfs, master=args.master, profile=args.profile)
    except MadpipeError as exc:
        if args.vfs is None and ", field vf:" in str(exc):
            raise MadpipeError(f"{exc} (--vfs defaults to the trace's largest slave, {num_vfs}: "
                               f"give --vfs)") from None
        raise


def run(args) -> int:
    if args.trace_recipe:
        sys.stdout.write(recipe())
        return 0
    _check_options(args)
    trace, encoding, skips = read_trace_with_skips(args.read)
    if skips.summary():  # on stderr, so that -T json and -w - stay what scripts read
        print(f"madpipe paravirt: {args.read}: {skips.summary()}", file=sys.stderr)
    num_vfs = args.vfs if args.vfs is not None else default_vfs(trace.slave, args.master, args.profile)
    v2p = _virt2phys(args, num_vfs)
    vport = smac = None
    if args.vf_state:
        vport, smac = read_vf_state(args.vf_state, num_vfs, args.profile)
    setup = Setup(args.profile, args.base_proxy_sqpn, args.master, num_vfs, args.pkey_map,
                  "reference" if args.reference else "kernel", args.port_types, args.vf_state, vport, smac)
    try:
        out, rc, finding = rewrite_trace(trace, v2p, setup)
    except ValueError as exc:  # the checks above should leave nothing for the API to refuse
        raise MadpipeError(str(exc)) from None
    written = None
    if args.write:
        binary = (args.encoding or encoding) == "binary"  # ftrace text is written as JSON Lines
        write_trace(args.write, trace.transition, trace.slave, trace.in_mod, out, binary=binary)
        written = (args.write, "binary" if binary else "json")
    report = Report(trace, out, rc, finding, v2p, setup, encoding, written)
    stream = sys.stderr if args.write == "-" else sys.stdout
    (print_json if args.format == "json" else print_text)(report, stream, quiet=args.quiet)
    stream.flush()
    return 0
