"""`madpipe paravirt`: a trace of QP-modify commands through the mlx4 master's QP-context rewrite."""
from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import numpy as np

from madpipe.codecs import qpc
from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.mlx4 import paravirt
from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.mlx4 import device_reference as device_ref
from madpipe.pipeline.mlx4 import paravirt_reference as ref
from madpipe.pipeline.decode.output import jsonl
from madpipe.pipeline.mlx4.pkey_map import read_pkey_map
from madpipe.pipeline.mlx4.trace import read_trace_with_format, write_trace
from madpipe.pipeline.cli.args import integer

#: P = base_sqpn + 8. mlx4_init_qp_table() puts base_sqpn = ALIGN(reserved_qps_cnt[FW], 8), right
#: after the QPs firmware reserves; ConnectX firmware commonly reserves 64 (log_rsvd_qps = 6), so
#: base_sqpn = 0x40 and P = 0x48.
DEFAULT_BASE_PROXY_SQPN = 0x48

PROFILES = ("3.7", "new")

EXAMPLE = """trace formats (madpipe.pipeline.mlx4.trace; the file's first bytes tell them apart):
  JSON Lines  {"transition": "INIT2RTR", "slave": 3, "in_mod": 291, "mailbox": "<512 hex digits>"}
  binary      b"madpipe-qptrace\\0", u32 version 1, u32 record size 264, then records of
              u8 opcode, u8 0, u16 slave, u32 in_mod (little-endian), 256-byte mailbox

OUT has one record per input record, in order: accepted commands as the master hands them to
firmware, rejected and refused ones as they came in (firmware never sees them; they are listed).

results (per command; rc as the C returns it):
  accepted                            the rewrites ran (verify, pkey, gid, qkey, per transition)
  rejected by verify (-EINVAL)        verify_qp_parameters: a slave's GID index must be 0
                                      (RC/UC; profile new also XRC)
  rejected by verify (-EPERM)         profile new: a VF setting a rate limit, or a VF without
                                      SMI bringing an MLX QP on a reserved QP number to RTR
  rejected: port not owned (-EINVAL)  profile new: adjust_qp_sched_queue, a port the function
                                      does not own
  refused: outside virt2phys_pkey     rc -34: the C would read past the u8[80][2][128] table;
                                      madpipe refuses instead of guessing memory (finding 2)
  [finding: spill]                    a P_Key index of 128..255 read the next row of the flat
                                      table, as the C does (finding 1)

virt2phys_pkey: init_pkeys for the master and VFs 1..--vfs (default: the trace's largest slave,
at most 79), then --pkey-map: one 'VF PORT INDEX PHYS_INDEX' a line, what
echo PHYS > /sys/class/infiniband/mlx4_0/iov/<vf>/ports/<port>/pkey_idx/<index> does.
QP numbers: proxies P .. P+639 (P = --base-proxy-sqpn), tunnels P+640 .. P+1279; firmware's
reserved QPs (profile new, MLX-QP check) are taken to be 0 .. P-9, i.e. base_sqpn = P - 8.

examples:
  madpipe paravirt -r tests/data/paravirt_example.jsonl --pkey-map tests/data/paravirt_vfs.map
  madpipe paravirt -r trace.bin -w rewritten.bin --profile 3.7
  madpipe paravirt -r trace.jsonl -w out.bin --binary -q
  madpipe paravirt -r trace.jsonl -T json | jq -c 'select(.type=="command" and .rc!=0)'"""


def register(sub) -> None:
    p = sub.add_parser(
        "paravirt",
        help="rewrite a trace of QP-modify commands as the mlx4 SR-IOV master does",
        description="Run every command of a trace (transition, issuing function, input modifier, "
        "256-byte QP-context mailbox) through the mlx4 master's paravirtualization "
        "(resource_tracker.c: verify_qp_parameters, update_pkey_index, update_gid, "
        "adjust_proxy_tun_qkey) and print, per command, the result and each changed field "
        "old -> new; then the rejected commands, the findings and counts. -w writes the "
        "rewritten trace: what the master would hand to firmware.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-r", dest="read", metavar="TRACE", required=True,
                   help="trace to read, JSON Lines or binary (- for standard input)")
    p.add_argument("-w", dest="write", metavar="OUT",
                   help="write the rewritten trace here, in the input's encoding unless --binary or --json "
                   "(- for standard output; the report then goes to standard error)")
    enc = p.add_mutually_exclusive_group()
    enc.add_argument("--binary", dest="encoding", action="store_const", const="binary",
                     help="write OUT as a binary trace")
    enc.add_argument("--json", dest="encoding", action="store_const", const="json",
                     help="write OUT as JSON Lines")
    p.add_argument("--profile", choices=PROFILES, default="new",
                   help="kernel profile: 3.7 (the seed commit) or new (mainline; default)")
    p.add_argument("--base-proxy-sqpn", metavar="N", type=integer, default=DEFAULT_BASE_PROXY_SQPN,
                   help=f"first proxy special QP, base_sqpn + 8 (default {DEFAULT_BASE_PROXY_SQPN:#x}: "
                   "mlx4 puts base_sqpn at ALIGN(firmware-reserved QPs, 8), and ConnectX firmware "
                   "commonly reserves 64, so base_sqpn = 0x40)")
    p.add_argument("--master", metavar="N", type=integer, default=0,
                   help="the master's function number (default 0, the PF)")
    p.add_argument("--vfs", metavar="N", type=integer,
                   help="number of VFs init_pkeys sets up, 0..79 (default: the trace's largest slave)")
    p.add_argument("--pkey-map", metavar="FILE", help="VF P_Key index mappings, 'VF PORT INDEX PHYS' a line")
    p.add_argument("-T", dest="format", choices=("text", "json"), default="text",
                   help="output format (default text; json = JSON Lines with a 'type' key)")
    p.add_argument("-q", dest="quiet", action="store_true",
                   help="no per-command lines: only rejected commands, findings and the summary")
    p.add_argument("--reference", action="store_true",
                   help="use the pure-Python reference model instead of the kernel (slow; same bytes)")
    p.set_defaults(func=run)



# -- running --------------------------------------------------------------------------------------------

class Setup(NamedTuple):
    """What the rewrite ran with (printed, and in the JSON summary)."""
    profile: str
    base_proxy_sqpn: int
    master: int
    num_vfs: int
    pkey_map: str | None
    model: str          # "kernel" or "reference"


def _check_options(args) -> None:
    p = args.base_proxy_sqpn
    top = (1 << 24) - 16 * paravirt.MFUNC_MAX
    if p < 8 or p % 8 or p > top:
        raise MadpipeError(f"--base-proxy-sqpn must be a multiple of 8 in 0x8..{top:#x} "
                           f"(base_sqpn + 8, proxies and tunnels inside the 24-bit QP space), got {p:#x}")
    if not 0 <= args.master < paravirt.MFUNC_MAX:
        raise MadpipeError(f"--master must be a function number 0..{paravirt.MFUNC_MAX - 1}, got {args.master}")
    if args.vfs is not None:
        if not 0 <= args.vfs < paravirt.MFUNC_MAX:
            raise MadpipeError(f"--vfs must be 0..{paravirt.MFUNC_MAX - 1}, got {args.vfs}")
        if args.master > args.vfs:
            raise MadpipeError(f"--master {args.master} is not one of the functions 0..{args.vfs} (--vfs)")
    if args.encoding and not args.write:
        raise MadpipeError(f"--{args.encoding} chooses the encoding of -w OUT: give -w OUT too")


def default_vfs(slaves: np.ndarray, master: int) -> int:
    """Enough VFs for every real function in the trace: its largest slave, at most 79."""
    largest = int(slaves.max()) if slaves.size else 0
    return max(master, min(largest, paravirt.MFUNC_MAX - 1))


def _virt2phys(args, num_vfs: int) -> np.ndarray:
    if not args.pkey_map:
        _, v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=args.master)
        return v2p
    try:
        return read_pkey_map(args.pkey_map, num_vfs=num_vfs, master=args.master)
    except MadpipeError as exc:
        if args.vfs is None and ", field vf:" in str(exc):
            raise MadpipeError(f"{exc} (--vfs defaults to the trace's largest slave, {num_vfs}: "
                               f"give --vfs)") from None
        raise


def run(args) -> int:
    _check_options(args)
    trace, encoding = read_trace_with_format(args.read)
    num_vfs = args.vfs if args.vfs is not None else default_vfs(trace.slave, args.master)
    v2p = _virt2phys(args, num_vfs)
    setup = Setup(args.profile, args.base_proxy_sqpn, args.master, num_vfs, args.pkey_map,
                  "reference" if args.reference else "kernel")
    rewrite = paravirt.rewrite_reference if args.reference else paravirt.rewrite
    try:
        out, rc, finding = rewrite(trace.mailbox, trace.transition, trace.slave, trace.in_mod, v2p,
                                   base_proxy_sqpn=setup.base_proxy_sqpn, master=setup.master,
                                   profile=setup.profile, fw_reserved_qps=setup.base_proxy_sqpn - 8,
                                   return_findings=True)
    except ValueError as exc:  # the checks above should leave nothing for the API to refuse
        raise MadpipeError(str(exc)) from None
    written = None
    if args.write:
        binary = (args.encoding or encoding) == "binary"
        write_trace(args.write, trace.transition, trace.slave, trace.in_mod, out, binary=binary)
        written = (args.write, "binary" if binary else "json")
    report = Report(trace, out, rc, finding, v2p, setup, encoding, written)
    stream = sys.stderr if args.write == "-" else sys.stdout
    (print_json if args.format == "json" else print_text)(report, stream, quiet=args.quiet)
    stream.flush()
    return 0


# -- the report -----------------------------------------------------------------------------------------

class Command(NamedTuple):
    """One command of the report (index is 1-based, like the trace's line and record numbers)."""
    index: int
    transition: str
    slave: int
    in_mod: int
    qpn: int
    service_type: str
    rc: int
    finding: int
    result: str          # "accepted", "rejected", "refused"
    reason: str | None   # None, "verify_qp_parameters", "adjust_qp_sched_queue", "virt2phys_pkey"
    changes: list        # [(field, old, new)] from qpc.describe_diff


_FIELD_SIZE = {name: size for name, _, size, _ in qpc.leaf_fields()}
_NAME_WIDTH = max(map(len, _FIELD_SIZE))


class Report:
    """The rewrite's outcome, one :class:`Command` at a time (a million commands stay arrays)."""

    def __init__(self, trace, out, rc, finding, v2p, setup: Setup, encoding: str, written):
        self.trace, self.out, self.rc, self.finding = trace, out, rc, finding
        self.v2p, self.setup, self.encoding, self.written = v2p, setup, encoding, written
        self.changed = (out != trace.mailbox).any(axis=1)
        self._device = None

    @property
    def n(self) -> int:
        return self.trace.n

    def command(self, i: int) -> Command:
        t = self.trace
        rc = int(self.rc[i])
        result, reason = _RESULTS.get(rc, ("rejected", None))
        if rc == paravirt.RC_EINVAL and self._rejected_by_sched_queue(i):
            reason = "adjust_qp_sched_queue"
        changes = qpc.describe_diff(t.mailbox[i].tobytes(), self.out[i].tobytes()) if self.changed[i] else []
        st = int(t.mailbox[i, qpc.MBOX_SERVICE_TYPE])
        return Command(i + 1, paravirt.TRANSITION_NAMES[int(t.transition[i])], int(t.slave[i]),
                       int(t.in_mod[i]), int(t.in_mod[i]) & 0xFFFFFF,
                       qpc.SERVICE_TYPE_NAMES.get(st, f"0x{st:02x}"), rc, int(self.finding[i]),
                       result, reason, changes)

    def _rejected_by_sched_queue(self, i: int) -> bool:
        """Profile new runs adjust_qp_sched_queue before verify: which of the two said -EINVAL."""
        if self.setup.profile != "new":
            return False
        if self._device is None:
            s = self.setup
            self._device = device_ref.Device(self.v2p, s.base_proxy_sqpn, master=s.master, profile="new",
                                             fw_reserved_qps=s.base_proxy_sqpn - 8)
        inbox = bytearray(self.trace.mailbox[i].tobytes())
        return ref.adjust_qp_sched_queue(self._device, int(self.trace.slave[i]), inbox) != 0

    def finding_text(self, i: int) -> str:
        slave = int(self.trace.slave[i])
        index = int(self.trace.mailbox[i, qpc.MBOX_PRI_PKEY_INDEX])
        if int(self.finding[i]) == paravirt.FINDING_SPILL:
            port_index = (int(self.out[i, qpc.MBOX_PRI_SCHED_QUEUE]) >> 6) & 1
            flat = (slave * paravirt.MAX_PORTS + port_index) * paravirt.MAX_PORT_PKEYS + index
            row, entry = divmod(flat, paravirt.MAX_PORT_PKEYS)
            to_slave, to_port = divmod(row, paravirt.MAX_PORTS)
            return (f"P_Key index {index} on port {port_index + 1} is past the 128-entry row: the C reads "
                    f"virt2phys_pkey[{to_slave}][{to_port}][{entry}] = "
                    f"{int(self.out[i, qpc.MBOX_PRI_PKEY_INDEX])} (reproduced)")
        port_index = (int(self.trace.mailbox[i, qpc.MBOX_PRI_SCHED_QUEUE]) >> 6) & 1
        flat = (slave * paravirt.MAX_PORTS + port_index) * paravirt.MAX_PORT_PKEYS + index
        return (f"P_Key index {index} on port {port_index + 1} of slave {slave}: the C would read "
                f"virt2phys_pkey at flat index {flat}, outside its {device_ref.V2P_ENTRIES} entries; the row is "
                f"kept as it came in")

    def counts(self) -> dict:
        rc, finding = self.rc, self.finding
        accepted = rc == paravirt.RC_OK
        return {
            "commands": self.n,
            "accepted": int(accepted.sum()),
            "changed": int((accepted & self.changed).sum()),
            "unchanged": int((accepted & ~self.changed).sum()),
            "rejected": int(((rc == paravirt.RC_EINVAL) | (rc == paravirt.RC_EPERM)).sum()),
            "einval": int((rc == paravirt.RC_EINVAL).sum()),
            "eperm": int((rc == paravirt.RC_EPERM).sum()),
            "refused": int((rc == paravirt.RC_REFUSED).sum()),
            "spill": int((finding == paravirt.FINDING_SPILL).sum()),
        }


_RESULTS = {
    paravirt.RC_OK: ("accepted", None),
    paravirt.RC_EINVAL: ("rejected", "verify_qp_parameters"),
    paravirt.RC_EPERM: ("rejected", "verify_qp_parameters"),
    paravirt.RC_REFUSED: ("refused", "virt2phys_pkey"),
}


def result_text(c: Command) -> str:
    if c.result == "accepted":
        return "accepted" if c.changes else "accepted, no change"
    if c.result == "refused":
        return "refused: outside virt2phys_pkey"
    errno = {paravirt.RC_EINVAL: "-EINVAL", paravirt.RC_EPERM: "-EPERM"}.get(c.rc, f"rc {c.rc}")
    if c.reason == "adjust_qp_sched_queue":
        return f"rejected: port not owned ({errno})"
    return f"rejected by verify ({errno})"


def _hex(field: str, value: int) -> str:
    return f"0x{value:0{2 * _FIELD_SIZE[field]}x}"


def _setup_text(r: Report) -> str:
    s = r.setup
    vfs = f"VFs 1..{s.num_vfs}" if s.num_vfs else "no VFs"
    return (f"profile {s.profile}, {s.model}, base_proxy_sqpn {s.base_proxy_sqpn:#x} "
            f"(tunnels from {paravirt.base_tunnel_sqpn(s.base_proxy_sqpn):#x}), master {s.master}, {vfs}, "
            f"virt2phys_pkey: init_pkeys" + (f" + {s.pkey_map}" if s.pkey_map else ""))


def _where(c: Command) -> str:
    return f"#{c.index} {c.transition} slave {c.slave} qpn 0x{c.qpn:06x} {c.service_type}"


def print_text(r: Report, out, quiet: bool = False) -> None:
    out.write(f"QP commands through the mlx4 master ({_setup_text(r)}):\n")
    if not quiet and r.n:
        out.write(f"{'index':>7}  {'transition':<10} {'slave':>5} {'qpn':>8}  {'type':<4} result\n")
        for i in range(r.n):
            c = r.command(i)
            flag = " [finding: spill]" if c.finding == paravirt.FINDING_SPILL else ""
            out.write(f"{c.index:7d}  {c.transition:<10} {c.slave:5d} 0x{c.qpn:06x}  {c.service_type:<4} "
                      f"{result_text(c)}{flag}\n")
            for field, old, new in c.changes:
                out.write(f"{'':9}{field:<{_NAME_WIDTH}}  {_hex(field, old)} -> {_hex(field, new)}\n")
    out.write("\n")
    rejected = np.flatnonzero((r.rc != paravirt.RC_OK) & (r.rc != paravirt.RC_REFUSED))
    if rejected.size:
        out.write("Rejected commands (the master returns the error to the function; firmware never sees them):\n")
        for i in rejected:
            c = r.command(int(i))
            out.write(f"  {_where(c)}: {result_text(c)}\n")
        out.write("\n")
    flagged = np.flatnonzero(r.finding != paravirt.FINDING_NONE)
    if flagged.size:
        out.write("Findings:\n")
        for i in flagged:
            c = r.command(int(i))
            kind = "spill" if c.finding == paravirt.FINDING_SPILL else "refused"
            out.write(f"  {_where(c)}: {kind}: {r.finding_text(int(i))}\n")
        out.write("\n")
    out.write(_summary_text(r) + "\n")


def _summary_text(r: Report) -> str:
    c = r.counts()
    text = (f"{c['commands']} commands ({r.encoding} trace): {c['accepted']} accepted "
            f"({c['changed']} changed, {c['unchanged']} unchanged), {c['rejected']} rejected "
            f"({c['einval']} -EINVAL, {c['eperm']} -EPERM), {c['refused']} refused; "
            f"findings: {c['spill']} spill, {c['refused']} refused")
    if r.written:
        path, encoding = r.written
        text += f"; wrote {c['commands']} records to {'<stdout>' if path == '-' else path} ({encoding})"
    return text


def print_json(r: Report, out, quiet: bool = False) -> None:
    if not quiet:
        indices = range(r.n)
    else:  # only what the text's lists show
        indices = np.flatnonzero((r.rc != paravirt.RC_OK) | (r.finding != paravirt.FINDING_NONE)).tolist()
    for i in indices:
        c = r.command(i)
        record = {"type": "command", "index": c.index, "transition": c.transition, "slave": c.slave,
                  "in_mod": c.in_mod, "qpn": c.qpn, "service_type": c.service_type, "rc": c.rc,
                  "result": c.result, "reason": c.reason, "finding": c.finding,
                  "changes": [[field, old, new] for field, old, new in c.changes]}
        if c.finding != paravirt.FINDING_NONE:
            record["finding_text"] = r.finding_text(i)
        jsonl(record, out)
    s = r.setup
    jsonl({"type": "summary", **r.counts(), "encoding": r.encoding, "profile": s.profile, "model": s.model,
           "base_proxy_sqpn": s.base_proxy_sqpn, "master": s.master, "vfs": s.num_vfs, "pkey_map": s.pkey_map,
           "written": r.written[0] if r.written else None,
           "written_encoding": r.written[1] if r.written else None}, out)
