"""A trace of QP-modify commands through the mlx4 master's QP-context rewrite, and its report: per
command the result and each changed field old -> new, the rejected commands, the findings and the
counts, as ``madpipe paravirt`` prints them (text, or JSON Lines with a ``type`` key).
"""
from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from madpipe.codecs import qpc
from madpipe.pipeline.mlx4 import device_reference as device_ref
from madpipe.pipeline.mlx4 import paravirt
from madpipe.pipeline.mlx4 import paravirt_reference as ref
from madpipe.pipeline.mlx4.profiles import resolve
from madpipe.pipeline.mlx4.trace import Trace


def _jsonl(record: dict, out) -> None:
    """A JSON Lines record, as madpipe.pipeline.decode.output.jsonl writes it (mlx4 imports no decode)."""
    out.write(json.dumps(record, separators=(",", ":")) + "\n")


class Setup(NamedTuple):
    """What the rewrite ran with (printed, and in the JSON summary)."""
    profile: str
    base_proxy_sqpn: int
    master: int
    num_vfs: int
    pkey_map: str | None
    model: str          # "kernel" or "reference"
    port_types: tuple[int, int] = (1, 1)    # per physical port: 1 InfiniBand, 2 Ethernet
    vf_state: str | None = None             # the --vf-state file
    vport: np.ndarray | None = None         # its vport state (paravirt.vport_state when None)
    smac_registered: np.ndarray | None = None

    def eth_options(self) -> dict:
        """The Ethernet device state for paravirt.rewrite and device_reference.Device. The VF
        count bounds the functions that share an Ethernet port's GIDs; InfiniBand ports never
        ask, and get the API's default."""
        eth = 2 in self.port_types
        return {"port_types": np.array(self.port_types, np.uint8), "num_vfs": self.num_vfs if eth else None,
                "vport": self.vport, "smac_registered": self.smac_registered}


def default_vfs(slaves: np.ndarray, master: int, profile="mainline") -> int:
    """Enough VFs for every real function in the trace: its largest slave, at most the profile's
    MLX4_MAX_NUM_VF (64 at 3.7, 126 on mainline)."""
    largest = int(slaves.max()) if slaves.size else 0
    return max(master, min(largest, resolve(profile).max_num_vf))


def rewrite_trace(trace: Trace, v2p: np.ndarray, setup: Setup) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rewritten mailboxes, rc, finding) of every command of the trace, by the kernel or, with
    ``setup.model`` "reference", the pure-Python reference (the same bytes). Firmware's reserved
    QPs are taken to be 0 .. base_proxy_sqpn - 9 (base_sqpn = base_proxy_sqpn - 8)."""
    rewrite = paravirt.rewrite_reference if setup.model == "reference" else paravirt.rewrite
    return rewrite(trace.mailbox, trace.transition, trace.slave, trace.in_mod, v2p,
                   base_proxy_sqpn=setup.base_proxy_sqpn, master=setup.master, profile=setup.profile,
                   fw_reserved_qps=setup.base_proxy_sqpn - 8, return_findings=True, **setup.eth_options())


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
        """Mainline runs adjust_qp_sched_queue before verify: which of the two said -EINVAL."""
        if not resolve(self.setup.profile).adjust_sched_queue:
            return False
        if self._device is None:
            s = self.setup
            self._device = device_ref.Device(self.v2p, s.base_proxy_sqpn, master=s.master, profile=s.profile,
                                             fw_reserved_qps=s.base_proxy_sqpn - 8, **s.eth_options())
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
                f"virt2phys_pkey at flat index {flat}, outside its {self.v2p.size} entries; the row is "
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
            f"(tunnels from {paravirt.base_tunnel_sqpn(s.base_proxy_sqpn, s.profile):#x}), master {s.master}, {vfs}, "
            f"virt2phys_pkey: init_pkeys" + (f" + {s.pkey_map}" if s.pkey_map else "") + _eth_text(s))


def _eth_text(s: Setup) -> str:
    """The ports' types, when one is Ethernet, and the VF state file."""
    if s.port_types == (1, 1) and not s.vf_state:
        return ""
    kinds = ", ".join(f"port {i + 1} {'Ethernet' if t == 2 else 'InfiniBand'}" for i, t in enumerate(s.port_types))
    return f", {kinds}" + (f", VF state {s.vf_state}" if s.vf_state else "")


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
        _jsonl(record, out)
    s = r.setup
    _jsonl({"type": "summary", **r.counts(), "encoding": r.encoding, "profile": s.profile, "model": s.model,
           "base_proxy_sqpn": s.base_proxy_sqpn, "master": s.master, "vfs": s.num_vfs, "pkey_map": s.pkey_map,
           "port_types": ["eth" if t == 2 else "ib" for t in s.port_types], "vf_state": s.vf_state,
           "written": r.written[0] if r.written else None,
           "written_encoding": r.written[1] if r.written else None}, out)
