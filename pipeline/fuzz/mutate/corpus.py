"""The mutator's corpus: seed frames (built in, or from captures) and seed QP-context mailboxes."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from madpipe.codecs import build, perf, qpc
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.errors import MadpipeError

#: Row width of a case's frame: the longest frame a case can have after extension.
WIDTH = 512
#: The most seeds a corpus keeps (evenly sampled from larger captures).
MAX_SEEDS = 20000

MBOX_SIZE = qpc.MBOX_SIZE


# -- the corpus ---------------------------------------------------------------------------------

def _builtin_frames() -> list[tuple[str, bytes]]:
    """Seed frames every run has unless a corpus replaces them: one of each kind of MAD madpipe reads."""
    b = build
    S, G, R = madc.IB_MGMT_METHOD_SET, madc.IB_MGMT_METHOD_GET, madc.IB_MGMT_METHOD_GET_RESP
    pkeys = [0xFFFF, 0xB000, 0xB030, 0x8001]
    out = []

    def smp(name, mad, **kw):
        out.append((name, b.build_smp_frame(mad, **kw)))

    smp("SubnSet(P_KeyTable) lid", b.pkey_table_mad(S, 0, pkeys, tid=0x1001), slid=1, dlid=4)
    smp("SubnSet(P_KeyTable) dr", b.pkey_table_mad(S, 1, pkeys, tid=0x1002, directed=True, path=[1, 3]))
    smp("SubnGetResp(P_KeyTable) lid", b.pkey_table_mad(R, 0, pkeys, tid=0x1001), slid=4, dlid=1)
    smp("SubnGet(P_KeyTable) dr", b.pkey_table_mad(G, 2, [], tid=0x1003, directed=True, path=[2]))
    smp("SubnSet(P_KeyTable) switch port", b.pkey_table_mad(S, 0, pkeys, tid=0x1004, attr_mod_port=5),
        slid=1, dlid=2)
    pi = bytearray(64)
    pi[16:18] = (4).to_bytes(2, "big")      # LID
    pi[18:20] = (1).to_bytes(2, "big")      # MasterSMLID
    pi[51] = 0x80 | 18                      # ClientReregister, SubnetTimeOut
    smp("SubnSet(PortInfo) lid", b.smp_mad(S, smpc.IB_SMP_ATTR_PORT_INFO, bytes(pi), tid=0x2001, attr_mod=1),
        slid=1, dlid=4)
    smp("SubnGetResp(PortInfo) dr", b.smp_mad(R, smpc.IB_SMP_ATTR_PORT_INFO, bytes(pi), tid=0x2002,
                                              directed=True, path=[1], hop_ptr=1))
    guids = b"".join((0x0002C90300001000 + i).to_bytes(8, "big") for i in range(8))
    smp("SubnSet(GUIDInfo) lid", b.smp_mad(S, smpc.IB_SMP_ATTR_GUID_INFO, guids, tid=0x3001), slid=1, dlid=4)
    ni = smpc.NodeInfo.build(dict(base_version=1, class_version=1, node_type=1, num_ports=2,
                                  sys_guid=0x0002C90300001000, node_guid=0x0002C90300001000,
                                  port_guid=0x0002C90300001001, partition_cap=128, device_id=0x1003,
                                  revision=1, local_port_num=1, vendor_id=0x02C9, resv0=bytes(24)))
    smp("SubnGetResp(NodeInfo) dr", b.smp_mad(R, smpc.IB_SMP_ATTR_NODE_INFO, ni, tid=0x4001, directed=True,
                                              path=[1, 2, 3], hop_ptr=3))
    smp("SubnGet(NodeInfo) dr local", b.smp_mad(G, smpc.IB_SMP_ATTR_NODE_INFO, b"", tid=0x4002, directed=True))
    smp("SubnGet(SMInfo) dr", b.smp_mad(G, smpc.IB_SMP_ATTR_SM_INFO, b"", tid=0x4003, directed=True, path=[2, 3]))
    smp("SubnSet(SwitchInfo) lid", b.smp_mad(S, smpc.IB_SMP_ATTR_SWITCH_INFO, bytes(range(20)), tid=0x4004),
        slid=1, dlid=2)
    smp("SubnSet(LinearForwardingTable) lid", b.smp_mad(S, smpc.IB_SMP_ATTR_LINEAR_FORWARD_TABLE,
                                                        bytes(range(64)), tid=0x4005, attr_mod=1), slid=1, dlid=2)
    smp("SubnSet(VLArbitrationTable) lid", b.smp_mad(S, smpc.IB_SMP_ATTR_VL_ARB_TABLE, bytes(range(64)),
                                                     tid=0x4006, attr_mod=0x10001), slid=1, dlid=2)
    smp("SubnTrap(Notice) lid", b.smp_mad(madc.IB_MGMT_METHOD_TRAP, smpc.IB_SMP_ATTR_NOTICE,
                                          bytes([0x81, 0, 0, 0x04, 0, 0x80]) + bytes(58), tid=0x4007),
        slid=4, dlid=1)
    smp("SubnGet(vendor) lid", b.smp_mad(G, 0xFF10, b"\x5a" * 64, tid=0x4008), slid=1, dlid=2)
    pc = perf.PortCounters.build(perf.PortCounters.parse(bytes([0, 1]) + bytes(190)))
    out.append(("PerfMgt Get(PortCounters)", b.build_gmp_frame(
        b.gmp_mad(madc.IB_MGMT_CLASS_PERF_MGMT, G, perf.IB_PMA_PORT_COUNTERS, tid=0x5001,
                  data=bytes(40) + pc), slid=1, dlid=4)))
    out.append(("SubnAdm Get(PathRecord) grh", b.build_gmp_frame(
        b.gmp_mad(madc.IB_MGMT_CLASS_SUBN_ADM, G, 0x0035, tid=0x6001, class_version=2, data=bytes(range(200))),
        slid=4, dlid=1, grh=dict(sgid="fe80::2:c903:0:1001", dgid="fe80::2:c903:0:1002"))))
    out.append(("CM REQ", b.build_gmp_frame(
        b.gmp_mad(madc.IB_MGMT_CLASS_CM, madc.IB_MGMT_METHOD_SEND, 0x0010, tid=0x7001, class_version=2,
                  data=bytes(range(100))), slid=4, dlid=5)))
    return out


def make_mailbox(st: int, optpar: int, pkey_index: int = 0, port: int = 1, mgid_pri: int = 0,
                 mgid_alt: int = 0, state: int = qpc.MLX4_QP_STATE_INIT, qkey: int = 0x11111111) -> bytes:
    """A QP-context mailbox with the fields the SR-IOV master reads set: service type ``st``,
    ``optpar``, both paths' P_Key index, port (sched_queue bit 6) and GID index, state, Q_Key."""
    buf = bytearray(MBOX_SIZE)
    buf[qpc.MBOX_OPTPAR:qpc.MBOX_OPTPAR + 4] = optpar.to_bytes(4, "big")
    buf[qpc.MBOX_FLAGS:qpc.MBOX_FLAGS + 4] = ((state << 28) | (st << 16) | (qpc.MLX4_QP_PM_MIGRATED << 11)).to_bytes(4, "big")
    buf[qpc.MBOX_PRI_PKEY_INDEX] = pkey_index
    buf[qpc.MBOX_ALT_PKEY_INDEX] = pkey_index
    buf[qpc.MBOX_PRI_SCHED_QUEUE] = 0x83 | ((port - 1) << 6)
    buf[qpc.MBOX_ALT_SCHED_QUEUE] = 0x83 | ((port - 1) << 6)
    buf[qpc.MBOX_PRI_MGID_INDEX] = mgid_pri
    buf[qpc.MBOX_ALT_MGID_INDEX] = mgid_alt
    buf[qpc.MBOX_QKEY:qpc.MBOX_QKEY + 4] = qkey.to_bytes(4, "big")
    return bytes(buf)


def _builtin_mailboxes() -> list[tuple[str, bytes]]:
    P = qpc
    pri, alt, pk, qk = (P.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH, P.MLX4_QP_OPTPAR_ALT_ADDR_PATH,
                        P.MLX4_QP_OPTPAR_PKEY_INDEX, P.MLX4_QP_OPTPAR_Q_KEY)
    out = []
    for st, name in ((P.MLX4_QP_ST_RC, "RC"), (P.MLX4_QP_ST_UC, "UC"), (P.MLX4_QP_ST_UD, "UD"),
                     (P.MLX4_QP_ST_XRC, "XRC"), (P.MLX4_QP_ST_MLX, "MLX"), (P.MLX4_QP_ST_RD, "RD")):
        out.append((f"{name} primary path", make_mailbox(st, pri | pk, pkey_index=1)))
        out.append((f"{name} both paths port 2", make_mailbox(st, pri | alt | pk | qk, pkey_index=2, port=2)))
        out.append((f"{name} no optpar", make_mailbox(st, 0, pkey_index=0)))
    return out


@dataclass
class Corpus:
    """Seed frames (from the LRH, at most WIDTH bytes) and seed QP-context mailboxes, with names."""

    frames: list[bytes]
    names: list[str]
    mailboxes: list[bytes] = field(default_factory=lambda: [m for _, m in _builtin_mailboxes()])
    mailbox_names: list[str] = field(default_factory=lambda: [n for n, _ in _builtin_mailboxes()])
    source: str = "builtin"

    @classmethod
    def builtin(cls) -> "Corpus":
        seeds = _builtin_frames()
        return cls([f for _, f in seeds], [f"builtin:{n}" for n, _ in seeds])

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "Corpus":
        """The frames of a capture, or of every capture (.pcap, .pcapng, .cap) in a directory."""
        from madpipe.codecs.capture import CaptureReader

        path = os.fspath(path)
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith((".pcap", ".pcapng", ".cap", ".erf.pcap")))
            if not files:
                raise MadpipeError(f"--corpus {path}: no .pcap or .pcapng files in the directory")
        elif os.path.exists(path):
            files = [path]
        else:
            raise MadpipeError(f"--corpus {path}: no such file or directory")
        seen: dict[bytes, str] = {}
        for name in files:
            with CaptureReader(name) as cap:
                for pkt in cap:
                    if pkt.data is None or not pkt.data or len(pkt.data) > WIDTH:
                        continue
                    seen.setdefault(bytes(pkt.data), f"{os.path.basename(name)}#{pkt.frame}")
        if not seen:
            raise MadpipeError(f"--corpus {path}: no InfiniBand frames of 1..{WIDTH} bytes")
        items = list(seen.items())
        if len(items) > MAX_SEEDS:
            step = len(items) / MAX_SEEDS
            items = [items[int(k * step)] for k in range(MAX_SEEDS)]
        return cls([f for f, _ in items], [n for _, n in items], source=path)

    def digest(self) -> str:
        """A short hash of the seeds: a replay must use a corpus with the same digest."""
        h = hashlib.sha256()
        for f in self.frames:
            h.update(len(f).to_bytes(2, "big") + f)
        for m in self.mailboxes:
            h.update(m)
        return h.hexdigest()[:16]
