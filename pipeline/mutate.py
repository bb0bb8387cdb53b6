"""The seeded, structure-aware mutator behind ``madpipe fuzz``: batches of mutated frames and mailboxes.

::

    from madpipe.pipeline.mutate import Corpus, Mutator
    mut = Mutator(Corpus.builtin(), seed=1)
    cases = mut.batch(0, 4096)          # cases 0..4095: frames uint8[B, WIDTH], length int64[B], ...
    one = mut.case(17)                  # case 17 alone, with notes on what was mutated
    one.frame(0), one.notes[0], one.changed_fields(0)

**Reproducible by case number.** Every random decision of case ``i`` is a hash of ``(seed, i,
decision)`` (splitmix64, computed for the whole batch at once with numpy), never a draw from a
stream shared with other cases: case ``i`` is the same whether it is generated in a batch of 4096,
alone, or in another process. Settings that belong to a batch of the stateful targets (the snoop
state, the paravirt device) are a hash of ``(seed, i // BATCH)`` (:func:`batch_config`).

**Structure-aware.** A seed frame (from a capture or the built-in corpus) is split into its fields
by walking the construct schemas of each layer (:func:`frame_fields`): LRH, GRH, BTH, DETH, the
MAD header, the SMP (LID-routed or directed-route) with the attribute's own fields in its data
area, PerfMgt attributes, the ICRC and the VCRC. Each case applies one to four mutations, each
chosen from :data:`OPS`:

=============  ==============================================================================
field          one field set to a boundary value (0, 1, max, max-1, the top bit, +-1 of what was
               there) or a value known to matter for it (classes, methods, attribute IDs, the
               permissive LID, QP1's Q_Key...)
reserved       a reserved field set non-zero
bitflip        1..8 bits flipped anywhere in the frame
bytes          1..4 bytes set to 0x00, 0xff, 0x7f, 0x80, 0x01 or random
truncate       the frame cut at a layer boundary or anywhere
extend         bytes appended (zeros or random)
pktlen         LRH PktLen made wrong (0, 1, off by one, 0x7ff, random)
hops           directed route: hop_cnt/hop_ptr out of range (64, 255, hop_cnt + 1, ...) and
               paths that disagree with them (zero or 255 hops, hops past hop_cnt, D bit)
pkey_block     made a SubnSet(P_KeyTable) whose block is past the table (4..7, 8, 0xffff, ...)
response       made a response nobody asked for (GetResp with a fresh TID, D bit set)
class          management class swapped (LID-routed <-> directed route, SA, PerfMgt, vendor)
attr           attribute ID changed, so the data is read with another attribute's schema
crc            ICRC or VCRC corrupted (otherwise both are recomputed after mutation)
splice         a byte range copied from another seed
=============  ==============================================================================

After the mutations, PktLen is fixed to the new length half the time a mutation changed the
length, and the CRCs are recomputed (95%) unless a ``crc`` mutation broke them on purpose.

Each case also carries a QP-context mailbox for the paravirt target (mutated from built-in
mailboxes: P_Key index 128..255, sched_queue port bit, service type, optpar, GID indices, rate
limit, FPP, bit flips), a transition, the issuing function (``slave``, including values outside
0..79) and the QP number (around the proxy and tunnel ranges), and for the snoop target the
port (1-based, sometimes 0 or 3) and firmware's status for the MAD.
"""
from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass, field

import construct as cs
import numpy as np

from madpipe.codecs import build, crc, ib_headers as ibh, mad as madc, perf, qpc, smp as smpc
from madpipe.codecs.errors import MadpipeError

#: Row width of a case's frame: the longest frame a case can have after extension.
WIDTH = 512
#: Cases per batch: stateful targets (snoop) start from a fresh state at each multiple of it.
BATCH = 4096
#: Mutations per case at most (the first always applies, each next one half as often).
SLOTS = 4
#: The most seeds a corpus keeps (evenly sampled from larger captures).
MAX_SEEDS = 20000

MBOX_SIZE = qpc.MBOX_SIZE
U64 = np.uint64
_MASK64 = (1 << 64) - 1


# -- counter-based randomness -------------------------------------------------------------------

def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over a uint64 array (arithmetic wraps, as intended)."""
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def _stream_id(name: str) -> int:
    return zlib.crc32(name.encode()) | (zlib.crc32(name[::-1].encode()) << 32)


class CaseRng:
    """Random numbers for many cases at once: value k of case i is ``mix(mix(seed, i), k)``.

    ``stream`` names a decision ("seed", "op1", ...); the same name gives the same numbers, so
    adding a decision never changes the others.
    """

    def __init__(self, seed: int, index: np.ndarray):
        key = _mix(np.array([(seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64], dtype=U64))[0]
        self.base = _mix(np.asarray(index, dtype=U64) * U64(0xD1B54A32D192ED03) ^ key)
        self.n = len(self.base)

    def u64(self, stream: str) -> np.ndarray:
        return _mix(self.base ^ U64(_stream_id(stream)))

    def below(self, stream: str, n, sel: np.ndarray | None = None) -> np.ndarray:
        """int64 in 0..n-1 for every case, or for the cases ``sel`` (then ``n`` may be one per case of sel)."""
        u = self.u64(stream)
        if sel is not None:
            u = u[sel]
        return (u % np.maximum(np.asarray(n), 1).astype(U64)).astype(np.int64)

    def unit(self, stream: str) -> np.ndarray:
        return (self.u64(stream) >> U64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def chance(self, stream: str, p) -> np.ndarray:
        return self.unit(stream) < p

    def pick(self, stream: str, values) -> np.ndarray:
        values = np.asarray(values)
        return values[self.below(stream, len(values))]


# -- fields of a frame --------------------------------------------------------------------------

@dataclass(frozen=True)
class Field:
    """A field of a frame: dotted name, bit offset from the frame's first byte (MSB first), width."""

    name: str
    bit: int
    width: int

    @property
    def reserved(self) -> bool:
        last = self.name.rsplit(".", 1)[-1]
        return last.startswith("resv") or last.startswith("reserved")


def _size_bits(con, in_bits: bool) -> int:
    n = con.sizeof()
    return n if in_bits else 8 * n


def schema_fields(schema, prefix: str = "", bit: int = 0) -> list[Field]:
    """Every leaf field of a fixed-size construct schema, with bit offsets (``bit`` = where it starts).

    Struct, BitStruct (Bitwise), Bytewise, Array and named fields are walked; arrays give one field
    per element (``pkeys[3]``, ``entries[2].vl``).
    """
    out: list[Field] = []
    _walk(schema, prefix, bit, False, out)
    return out


def _walk(con, name: str, bit: int, in_bits: bool, out: list) -> None:
    if isinstance(con, cs.Renamed):
        _walk(con.subcon, f"{name}.{con.name}" if name and con.name else (con.name or name), bit, in_bits, out)
    elif isinstance(con, cs.Transformed) and con.decodefunc is cs.bytes2bits:
        _walk(con.subcon, name, bit, True, out)
    elif isinstance(con, cs.Transformed) and con.decodefunc is cs.bits2bytes:
        _walk(con.subcon, name, bit, False, out)
    elif isinstance(con, cs.Struct):
        pos = bit
        for sub in con.subcons:
            _walk(sub, name, pos, in_bits, out)
            pos += _size_bits(sub, in_bits)
    elif isinstance(con, cs.Array) and isinstance(con.count, int):
        step = _size_bits(con.subcon, in_bits)
        for i in range(con.count):
            _walk(con.subcon, f"{name}[{i}]", bit + i * step, in_bits, out)
    else:
        out.append(Field(name, bit, _size_bits(con, in_bits)))


def _bytes_fields(name: str, offset: int, size: int, step: int) -> list[Field]:
    """A byte run as fields of ``step`` bytes: ``name[k]``."""
    return [Field(f"{name}[{k}]", 8 * (offset + k * step), 8 * min(step, size - k * step))
            for k in range((size + step - 1) // step)]


def mad_offset(data: bytes) -> int:
    """Where the MAD starts in a frame, by ``decode_frame``'s rule; -1 when the frame carries none."""
    n = len(data)
    if n < 8:
        return -1
    lnh = data[1] & 3
    if lnh == crc.LNH_IBA_LOCAL:
        p = 8
    elif lnh == crc.LNH_IBA_GLOBAL:
        p = 48
    else:
        return -1
    if n < p + 20 or data[p] not in ibh.UD_OPCODES:
        return -1
    start = p + 20 + (4 if data[p] == ibh.OPCODE_UD_SEND_ONLY_IMM else 0)
    dqp = int.from_bytes(data[p + 5:p + 8], "big")
    sqp = int.from_bytes(data[p + 17:p + 20], "big")
    if dqp > 1 and sqp > 1:
        return -1
    if start + madc.MAD_SIZE + crc.ICRC_SIZE + crc.VCRC_SIZE > n:
        return -1
    return start


def mad_fields(mad: bytes, base: int) -> list[Field]:
    """The fields of a 256-byte MAD at byte ``base`` of a frame, named as ``madpipe decode -T json``."""
    b = 8 * base
    cls = mad[1]
    attr_id = int.from_bytes(mad[16:18], "big")
    if cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        out = [Field(("smp." if f.name in ("hop_ptr", "hop_cnt") else "mad.") + f.name, b + f.bit, f.width)
               for f in schema_fields(smpc.SMPDirectedHeader)]
        out += [Field("smp.m_key", b + 8 * 24, 64), Field("smp.dr_slid", b + 8 * 32, 16),
                Field("smp.dr_dlid", b + 8 * 34, 16), Field("smp.resv", b + 8 * 36, 8 * 28)]
        out += schema_fields(smpc.attribute_schema(attr_id), "attr", b + 8 * 64)
        out += _bytes_fields("smp.initial_path", base + 128, 64, 1)
        out += _bytes_fields("smp.return_path", base + 192, 64, 1)
        return out
    out = [Field("mad." + f.name, b + f.bit, f.width) for f in schema_fields(madc.MADHeader)]
    if cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED:
        out += [Field("smp.m_key", b + 8 * 24, 64), Field("smp.resv", b + 8 * 32, 8 * 32)]
        out += schema_fields(smpc.attribute_schema(attr_id), "attr", b + 8 * 64)
        out += _bytes_fields("smp.resv2", base + 128, 128, 8)
    elif cls == madc.IB_MGMT_CLASS_PERF_MGMT:
        out += [Field("perf.resv", b + 8 * 24, 8 * 40)]
        out += schema_fields(perf.attribute_schema(attr_id), "attr", b + 8 * 64)
    else:
        out += _bytes_fields("class_data", base + 24, 232, 4)
    return out


def frame_fields(data: bytes) -> list[Field]:
    """Every field of a captured frame (LRH first), layer by layer, as far as the frame goes."""
    n = len(data)
    out: list[Field] = []
    if n < ibh.LRH_SIZE:
        return _bytes_fields("bytes", 0, n, 1)
    out += schema_fields(ibh.LRH, "lrh")
    lnh = data[1] & 3
    pos = ibh.LRH_SIZE
    if lnh == crc.LNH_IBA_GLOBAL and n >= pos + ibh.GRH_SIZE:
        out += schema_fields(ibh.GRH, "grh", 8 * pos)
        pos += ibh.GRH_SIZE
    if lnh in (crc.LNH_IBA_LOCAL, crc.LNH_IBA_GLOBAL) and n >= pos + ibh.BTH_SIZE:
        out += schema_fields(ibh.BTH, "bth", 8 * pos)
        opcode = data[pos]
        pos += ibh.BTH_SIZE
        if opcode in ibh.UD_OPCODES and n >= pos + ibh.DETH_SIZE:
            out += schema_fields(ibh.DETH, "deth", 8 * pos)
            pos += ibh.DETH_SIZE
            if opcode == ibh.OPCODE_UD_SEND_ONLY_IMM and n >= pos + 4:
                out.append(Field("immdt", 8 * pos, 32))
                pos += 4
    m = mad_offset(data)
    if m >= 0:
        out += mad_fields(data[m:m + madc.MAD_SIZE], m)
    elif n - 6 > pos:
        out += _bytes_fields("payload", pos, n - 6 - pos, 4)
    if crc.has_icrc(lnh) and n >= pos + 6:
        out.append(Field("icrc", 8 * (n - 6), 32))
    if n >= 10:
        out.append(Field("vcrc", 8 * (n - 2), 16))
    return out


def _layout_key(data: bytes, mad_off: int) -> tuple:
    """What :func:`frame_fields` depends on: frames with one key have one field table."""
    n = len(data)
    lnh = data[1] & 3 if n >= 2 else -1
    pos = 48 if lnh == crc.LNH_IBA_GLOBAL and n >= 48 else 8
    opcode = data[pos] if n > pos else -1
    mad = data[mad_off:mad_off + 24] if mad_off >= 0 else b""
    return (n, lnh, opcode, mad_off, mad[1:2], mad[16:18])


# -- values that matter, by field name -----------------------------------------------------------

_ATTR_IDS = sorted(smpc.SMP_ATTRIBUTES) + [0x0000, 0x0001, 0x0013, 0x001C, 0x0090, 0xFF00, 0xFF01, 0xFFFF]
INTERESTING: dict[str, list[int]] = {
    "lrh.vl": [0, 1, 7, 14, 15],
    "lrh.lver": [0, 1, 15],
    "lrh.lnh": [0, 1, 2, 3],
    "lrh.dlid": [0, 1, 0xBFFF, 0xC000, 0xFFFE, 0xFFFF],
    "lrh.slid": [0, 1, 0xBFFF, 0xC000, 0xFFFE, 0xFFFF],
    "lrh.pktlen": [0, 1, 2, 5, 6, 0x7FF],
    "grh.ipver": [0, 4, 6, 15],
    "grh.nxthdr": [0x1B, 0, 0xFF],
    "grh.paylen": [0, 1, 0xFFFF],
    "bth.opcode": [0x64, 0x65, 0x04, 0x00, 0x24, 0x44, 0x60, 0x66, 0x81, 0xE0, 0xFF],
    "bth.padcnt": [0, 1, 2, 3],
    "bth.tver": [0, 1, 15],
    "bth.pkey": [0x0000, 0x7FFF, 0x8000, 0x8001, 0xFFFF],
    "bth.dqp": [0, 1, 2, 0xFFFFFF],
    "deth.qkey": [0, 0x80010000, 0xFFFF0000, 0xFFFFFFFF, 0x7FFFFFFF],
    "deth.sqp": [0, 1, 2, 0xFFFFFF],
    "mad.base_version": [0, 1, 2, 0x80, 0xFF],
    "mad.mgmt_class": [0x01, 0x81, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x21, 0x30, 0x4F, 0x00, 0x80, 0xFF],
    "mad.class_version": [0, 1, 2, 0x80, 0xFF],
    "mad.method": [0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x12, 0x13, 0x14, 0x15, 0x81, 0x82, 0x86, 0x92,
                   0x94, 0x95, 0x00, 0x7F, 0x80, 0xFF],
    "mad.status": [0x0000, 0x8000, 0x0001, 0x0004, 0x000C, 0x001C, 0x7FFF, 0xFFFF],
    "mad.attr_id": _ATTR_IDS,
    "mad.attr_mod": [0, 1, 3, 4, 7, 8, 15, 16, 0xFF, 0xFFFF, 0x10000, 0x10004, 0xFFFF0000, 0x7FFFFFFF, 0xFFFFFFFF],
    "mad.tid": [0, 1, 0xFFFFFFFFFFFFFFFF, 0x8000000000000000],
    "smp.hop_ptr": [0, 1, 2, 63, 64, 65, 0x80, 0xFF],
    "smp.hop_cnt": [0, 1, 2, 63, 64, 65, 0x80, 0xFF],
    "smp.dr_slid": [0, 1, 0xFFFF],
    "smp.dr_dlid": [0, 1, 0xFFFF],
    "smp.m_key": [0, 0xFFFFFFFFFFFFFFFF],
    "smp.initial_path": [0, 1, 2, 0x7F, 0xFE, 0xFF],
    "smp.return_path": [0, 1, 2, 0x7F, 0xFE, 0xFF],
    "attr.pkeys": [0x0000, 0xFFFF, 0x7FFF, 0x8000, 0x8001, 0x0001],
    "attr.lid": [0, 1, 0xBFFF, 0xC000, 0xFFFF],
    "attr.master_sm_lid": [0, 1, 0xFFFF],
    "attr.port_state": [0, 1, 2, 3, 4, 5, 15],
    "attr.lmc": [0, 7],
    "attr.num_ports": [0, 1, 2, 36, 254, 255],
    "attr.partition_cap": [0, 1, 32, 128, 0xFFFF],
    "attr.node_type": [0, 1, 2, 3, 4, 0xFF],
    "attr.client_reregister": [1],
}


def _interesting_for(name: str) -> list[int]:
    key = name.split("[", 1)[0]
    return INTERESTING.get(key, [])


def _field_weight(f: Field) -> float:
    if "_path[" in f.name or f.name.startswith(("class_data[", "payload[", "smp.resv2[", "bytes[")):
        return 0.05
    if f.name.startswith("attr.pkeys["):
        return 0.3
    if f.name.startswith("attr."):
        return 0.6
    return 1.0


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


# -- bit access over many rows at once -----------------------------------------------------------

def get_bits(rows: np.ndarray, r: np.ndarray, bit: np.ndarray, width: np.ndarray) -> np.ndarray:
    """uint64 value of the big-endian bit field (``bit``, ``width`` <= 64) of each row ``r``."""
    bit = bit.astype(np.int64)
    width = width.astype(np.int64)
    end = bit + width
    val = np.zeros(len(r), dtype=U64)
    for j in range(9):
        b = (bit >> 3) + j
        act = 8 * b < end
        if not act.any():
            break
        bb = np.where(act, b, 0)
        lo = np.maximum(bit, 8 * bb)
        hi = np.minimum(end, 8 * bb + 8)
        n = np.where(act, hi - lo, 0).astype(U64)
        chunk = (rows[r, bb].astype(U64) >> (8 * bb + 8 - hi).clip(0, 7).astype(U64)) & ((U64(1) << n) - U64(1))
        val = np.where(act, (val << n) | chunk, val)
    return val


def put_bits(rows: np.ndarray, r: np.ndarray, bit: np.ndarray, width: np.ndarray, value: np.ndarray) -> None:
    """Write ``value`` (uint64, masked to ``width`` <= 64) into the bit field of each row ``r``."""
    bit = bit.astype(np.int64)
    width = width.astype(np.int64)
    value = value.astype(U64)
    end = bit + width
    for j in range(9):
        b = (bit >> 3) + j
        act = 8 * b < end
        if not act.any():
            break
        rr, bb, lo_bit, e, v = r[act], b[act], bit[act], end[act], value[act]
        lo = np.maximum(lo_bit, 8 * bb)
        hi = np.minimum(e, 8 * bb + 8)
        n = (hi - lo).astype(U64)
        mask = (U64(1) << n) - U64(1)
        chunk = (v >> (e - hi).astype(U64)) & mask
        shift = (8 * bb + 8 - hi).astype(U64)
        old = rows[rr, bb].astype(U64)
        rows[rr, bb] = ((old & ~(mask << shift)) | (chunk << shift)).astype(np.uint8)


# -- CRCs of many rows at once -------------------------------------------------------------------

def _crc32_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC32 = _crc32_table()
_VCRC = np.array(crc.VCRC_TABLE, dtype=np.uint32)


def _crc_rows(rows: np.ndarray, length: np.ndarray, table: np.ndarray, init: int, xorout: int) -> np.ndarray:
    """A reflected table CRC over rows[i, :length[i]] for every row (the two IBA CRCs)."""
    c = np.full(len(rows), init, dtype=np.uint32)
    if len(rows) == 0:
        return c
    for j in range(int(length.max(initial=0))):
        act = j < length
        new = table[(c ^ rows[:, j]) & 0xFF] ^ (c >> np.uint32(8))
        c = np.where(act, new, c)
    return c ^ np.uint32(xorout)


def seal_rows(rows: np.ndarray, length: np.ndarray, which: np.ndarray) -> None:
    """Recompute ICRC (LNH 2, 3) and VCRC at the end of the rows ``which``, as ``crc.seal`` would."""
    idx = np.flatnonzero(which & (length >= 10))
    if len(idx) == 0:
        return
    sub = rows[idx].copy()
    n = length[idx]
    lnh = sub[:, 1] & 3
    has_icrc = (lnh >= 2) & (n >= 14)
    # The ICRC: zlib's CRC-32 over LRH..payload with the variant fields set to ones.
    ic = idx[has_icrc]
    if len(ic):
        m = sub[has_icrc].copy()
        mn = n[has_icrc] - 6
        glob = (m[:, 1] & 3) == 3
        m[glob, 0:8] = 0xFF
        g = glob & (mn >= 48)
        m[g, 8] |= 0x0F
        m[g, 9:12] = 0xFF
        m[g, 15] = 0xFF
        m[~glob, 0] |= 0xF0
        bth = np.where(glob, 48, 8)
        at = bth + 4
        ok = mn > at
        m[np.flatnonzero(ok), at[ok]] = 0xFF
        icrc = _crc_rows(m, mn, _CRC32, 0xFFFFFFFF, 0xFFFFFFFF)
        for k in range(4):
            rows[ic, mn + k] = ((icrc >> np.uint32(8 * k)) & np.uint32(0xFF)).astype(np.uint8)
    vc = _crc_rows(rows[idx], n - 2, _VCRC, 0xFFFF, 0xFFFF)
    rows[idx, n - 2] = (vc & np.uint32(0xFF)).astype(np.uint8)
    rows[idx, n - 1] = ((vc >> np.uint32(8)) & np.uint32(0xFF)).astype(np.uint8)


# -- mutations -----------------------------------------------------------------------------------

OPS = ("field", "reserved", "bitflip", "bytes", "truncate", "extend", "pktlen", "hops", "pkey_block",
       "response", "class", "attr", "crc", "splice")
OP_WEIGHTS = np.array([22, 5, 12, 6, 6, 4, 5, 8, 12, 5, 4, 5, 3, 3], dtype=np.float64)

MB_OPS = ("field", "pkey_index", "port", "service_type", "optpar", "mgid", "rate_limit", "fpp", "bitflip",
          "random")
MB_WEIGHTS = np.array([20, 20, 8, 8, 10, 10, 4, 3, 10, 2], dtype=np.float64)

TRANSITION_CODES = np.array(list(qpc.TRANSITIONS.values()), dtype=np.uint8)
PKEY_BLOCKS = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 15, 16, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF])
SLAVES_ODD = np.array([80, 81, 127, 128, 255, 256, 257, 1000, -1, -2, -128, 2**31 - 1, -2**31], dtype=np.int64)


@dataclass
class BatchConfig:
    """What the stateful targets use for one batch (a hash of seed and batch number)."""

    batch_no: int
    snoop_profile: str
    num_vfs: int
    snoop_master: int
    pkey_table_len: int
    port_mgmt_change_events: bool
    random_cache: bool
    paravirt_profile: str
    paravirt_master: int
    base_proxy_sqpn: int
    fw_reserved_qps: int
    rng_key: tuple

    def rng(self, what: str) -> np.random.Generator:
        """A numpy Generator for this batch's larger random state (tables), by purpose."""
        return np.random.default_rng([*self.rng_key, _stream_id(what) & 0xFFFFFFFF])


def batch_config(seed: int, batch_no: int) -> BatchConfig:
    r = CaseRng(seed ^ 0x5EED_BA7C, np.array([batch_no]))
    num_vfs = int(r.pick("num_vfs", [1, 2, 3, 4, 8, 16, 63, 78, 79])[0])
    master = 0 if r.chance("master?", 0.85)[0] else int(r.below("master", num_vfs + 1)[0])
    p = 8 * (1 + int(r.below("P", (1 << 21) - 2 * 80 - 2)[0]))
    if r.chance("P small", 0.5)[0]:
        p = int(r.pick("P choice", [8, 16, 64, 128, 0x40, 0x1000])[0])
    return BatchConfig(
        batch_no=batch_no,
        snoop_profile="new" if batch_no % 2 == 0 else "3.7",
        num_vfs=num_vfs,
        snoop_master=master,
        pkey_table_len=int(r.pick("table_len", [128, 128, 128, 128, 64, 127, 1])[0]),
        port_mgmt_change_events=bool(r.chance("pmce", 0.1)[0]),
        random_cache=bool(r.chance("random cache", 0.5)[0]),
        paravirt_profile="3.7" if (batch_no // 2) % 2 == 0 else "new",
        paravirt_master=0 if r.chance("pv master?", 0.8)[0] else int(r.below("pv master", 80)[0]),
        base_proxy_sqpn=p,
        fw_reserved_qps=int(r.pick("fw reserved", [0, 0, 0, 64, 0x10000])[0]),
        rng_key=(seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, batch_no & 0xFFFFFFFF),
    )


@dataclass
class Cases:
    """A batch of cases (frames, mailboxes and the targets' per-case inputs); see the module doc."""

    index: np.ndarray          # int64[B] case numbers
    frames: np.ndarray         # uint8[B, WIDTH], zero past length
    length: np.ndarray         # int64[B]
    seed_id: np.ndarray        # int64[B] index into corpus.frames
    mad_off: np.ndarray        # int64[B] the seed's MAD offset (-1: the seed carries none)
    ops: np.ndarray            # int8[B, SLOTS] index into OPS, -1 = none
    mailboxes: np.ndarray      # uint8[B, 256]
    mbox_seed: np.ndarray      # int64[B]
    mb_ops: np.ndarray         # int8[B, SLOTS] index into MB_OPS
    transition: np.ndarray     # uint8[B] QP command opcode
    slave: np.ndarray          # int64[B] issuing function
    qpn: np.ndarray            # uint32[B] input modifier
    port_num: np.ndarray       # uint8[B] snoop port (1-based)
    status: np.ndarray         # uint16[B] firmware's status for the snooped MAD
    corpus: Corpus
    notes: list | None = None  # per case: what each mutation did (``Mutator.case``)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def from_frames(cls, frames, *, mailboxes=None, transition=qpc.MLX4_CMD_INIT2RTR_QP, slave=1, qpn=0,
                    port_num=1, status=0, start: int = 0) -> "Cases":
        """Cases of your own, unmutated: ``frames`` (bytes from the LRH) numbered from ``start``,
        with per-case (or one) mailbox, transition opcode, slave, qpn, port and status, for
        running a target on chosen inputs (``fuzz.SnoopTarget().check(cases, cfg, ctx)``)."""
        frames = [bytes(f) for f in frames]
        n = len(frames)
        if any(len(f) > WIDTH for f in frames):
            raise ValueError(f"a frame is at most {WIDTH} bytes here")
        rows = np.zeros((n, WIDTH), dtype=np.uint8)
        for k, f in enumerate(frames):
            rows[k, :len(f)] = np.frombuffer(f, dtype=np.uint8)
        if mailboxes is None:
            mailboxes = [make_mailbox(qpc.MLX4_QP_ST_UD, 0)] * n
        mb = np.frombuffer(b"".join(bytes(m) for m in mailboxes), dtype=np.uint8).reshape(-1, MBOX_SIZE).copy()
        if len(mb) != n:
            raise ValueError(f"{len(mb)} mailboxes for {n} frames")

        def per_case(value, dtype):
            return np.broadcast_to(np.asarray(value, dtype=dtype), (n,)).copy()

        corpus = Corpus(frames, [f"given#{k}" for k in range(n)], [bytes(m) for m in mb],
                        [f"given#{k}" for k in range(n)], source="given")
        return cls(index=np.arange(start, start + n, dtype=np.int64), frames=rows,
                   length=np.array([len(f) for f in frames], dtype=np.int64), seed_id=np.arange(n, dtype=np.int64),
                   mad_off=np.array([mad_offset(f) for f in frames], dtype=np.int64),
                   ops=np.full((n, SLOTS), -1, dtype=np.int8), mailboxes=mb, mbox_seed=np.arange(n, dtype=np.int64),
                   mb_ops=np.full((n, SLOTS), -1, dtype=np.int8), transition=per_case(transition, np.uint8),
                   slave=per_case(slave, np.int64), qpn=per_case(qpn, np.uint32),
                   port_num=per_case(port_num, np.uint8), status=per_case(status, np.uint16), corpus=corpus)

    def frame(self, k: int) -> bytes:
        return self.frames[k, :self.length[k]].tobytes()

    def mad(self, k: int) -> bytes | None:
        m = int(self.mad_off[k])
        return None if m < 0 else self.frames[k, m:m + madc.MAD_SIZE].tobytes()

    def seed_frame(self, k: int) -> bytes:
        return self.corpus.frames[int(self.seed_id[k])]

    def changed_fields(self, k: int, limit: int = 16) -> list[dict]:
        """The seed's fields whose value differs in case ``k`` (named as in its seed's layout)."""
        seed = self.seed_frame(k)
        now = self.frame(k)
        out = []
        a = int.from_bytes(seed, "big")
        b = int.from_bytes(now, "big")
        for f in frame_fields(seed):
            if f.bit + f.width > 8 * min(len(seed), len(now)):
                continue
            va = (a >> (8 * len(seed) - f.bit - f.width)) & ((1 << f.width) - 1)
            vb = (b >> (8 * len(now) - f.bit - f.width)) & ((1 << f.width) - 1)
            if va != vb:
                out.append({"field": f.name, "old": va, "new": vb})
                if len(out) >= limit:
                    break
        if len(now) != len(seed):
            out.append({"field": "frame.length", "old": len(seed), "new": len(now)})
        return out

    def mailbox_changes(self, k: int, limit: int = 16) -> list[dict]:
        seed = self.corpus.mailboxes[int(self.mbox_seed[k])]
        diff = qpc.describe_diff(seed, self.mailboxes[k].tobytes())
        return [{"field": n, "old": a, "new": b} for n, a, b in diff[:limit]]


class Mutator:
    """Mutated cases from a corpus and a seed; ``batch(start, n)`` and ``case(i)`` agree exactly."""

    def __init__(self, corpus: Corpus, seed: int):
        self.corpus = corpus
        self.seed = int(seed)
        n = len(corpus.frames)
        if n == 0:
            raise MadpipeError("the corpus has no frames")
        self.seed_rows = np.zeros((n, WIDTH), dtype=np.uint8)
        self.seed_len = np.zeros(n, dtype=np.int64)
        self.seed_mad = np.full(n, -1, dtype=np.int64)
        # Field tables per layout (frames of one shape share one): seeds index them through lay.
        layouts: dict[tuple, int] = {}
        tables: list[list[Field]] = []
        self.lay = np.zeros(n, dtype=np.int64)
        for s, frame in enumerate(corpus.frames):
            self.seed_rows[s, :len(frame)] = np.frombuffer(frame, dtype=np.uint8)
            self.seed_len[s] = len(frame)
            self.seed_mad[s] = mad_offset(frame)
            key = _layout_key(frame, int(self.seed_mad[s]))
            if key not in layouts:
                layouts[key] = len(tables)
                tables.append(frame_fields(frame))
            self.lay[s] = layouts[key]
        self.fields = tables
        n_lay = len(tables)
        fmax = max(1, max(len(t) for t in tables))
        self.f_bit = np.zeros((n_lay, fmax), dtype=np.int64)
        self.f_width = np.zeros((n_lay, fmax), dtype=np.int64)
        self.f_cum = np.ones((n_lay, fmax), dtype=np.float64)
        self.f_count = np.zeros(n_lay, dtype=np.int64)
        self.f_int_start = np.zeros((n_lay, fmax), dtype=np.int64)
        self.f_int_len = np.zeros((n_lay, fmax), dtype=np.int64)
        reserved = []
        pool: list[int] = []
        pool_at: dict[str, tuple[int, int]] = {}
        for s, table in enumerate(tables):
            self.f_count[s] = len(table)
            w = np.array([_field_weight(f) for f in table] or [1.0])
            self.f_cum[s, :len(w)] = np.cumsum(w) / w.sum()
            for k, f in enumerate(table):
                self.f_bit[s, k] = f.bit
                self.f_width[s, k] = f.width
                key = f.name.split("[", 1)[0]
                if key not in pool_at:
                    vals = _interesting_for(f.name)
                    pool_at[key] = (len(pool), len(vals))
                    pool.extend(vals)
                self.f_int_start[s, k], self.f_int_len[s, k] = pool_at[key]
            reserved.append([k for k, f in enumerate(table) if f.reserved])
        self.pool = np.array(pool or [0], dtype=U64)
        rmax = max(1, max(len(r) for r in reserved))
        self.r_count = np.array([len(r) for r in reserved], dtype=np.int64)
        self.r_index = np.zeros((n_lay, rmax), dtype=np.int64)
        for s, r in enumerate(reserved):
            self.r_index[s, :len(r)] = r
        # Mailboxes.
        self.mbox_rows = np.frombuffer(b"".join(corpus.mailboxes), dtype=np.uint8).reshape(-1, MBOX_SIZE)
        leaves = [(name, off, size) for name, off, size, _ in qpc.leaf_fields()]
        self.mb_off = np.array([o for _, o, _ in leaves], dtype=np.int64)
        self.mb_size = np.array([s for _, _, s in leaves], dtype=np.int64)
        self.mb_names = [name for name, _, _ in leaves]

    # -- public ----------------------------------------------------------------------------------

    def batch(self, start: int, count: int, trace: bool = False) -> Cases:
        index = np.arange(start, start + count, dtype=np.int64)
        return self.cases(index, trace)

    def case(self, index: int) -> Cases:
        """Case ``index`` alone, with ``notes[0]`` saying what each mutation did."""
        return self.cases(np.array([index], dtype=np.int64), trace=True)

    def cases(self, index: np.ndarray, trace: bool = False) -> Cases:
        rng = CaseRng(self.seed, index)
        b = len(index)
        notes = [[] for _ in range(b)] if trace else None
        sid = rng.below("seed", len(self.corpus.frames))
        rows = self.seed_rows[sid].copy()
        length = self.seed_len[sid].copy()
        mad_off = self.seed_mad[sid].copy()
        st = _State(rows, length, mad_off, sid, self.lay[sid], notes)
        ops = np.full((b, SLOTS), -1, dtype=np.int8)
        active = np.ones(b, dtype=bool)
        for slot in range(SLOTS):
            if slot:
                active &= rng.chance(f"more{slot}", 0.5)
            op = np.searchsorted(np.cumsum(OP_WEIGHTS) / OP_WEIGHTS.sum(), rng.unit(f"op{slot}"), side="right")
            op = np.minimum(op, len(OPS) - 1)
            ops[active, slot] = op[active]
            for k, name in enumerate(OPS):
                sel = np.flatnonzero(active & (op == k))
                if len(sel):
                    getattr(self, "_op_" + name)(st, sel, rng, f"s{slot}")
        # PktLen follows a changed length half the time; CRCs are recomputed unless broken on purpose.
        fix = np.flatnonzero(st.len_changed & ~st.pktlen_set & rng.chance("fix pktlen", 0.5) & (length >= 8))
        if len(fix):
            put_bits(rows, fix, 8 * 4 + 5 + np.zeros(len(fix), np.int64), np.full(len(fix), 11),
                     ((length[fix] - 2) // 4).astype(U64))
            st.note(fix, lambda i: f"PktLen set to follow the new length ({(int(length[i]) - 2) // 4})")
        reseal = ~st.crc_broken & ~rng.chance("stale crc", 0.05)
        stale = np.flatnonzero(~reseal & ~st.crc_broken)
        st.note(stale, lambda i: "CRCs left as the seed had them (stale)")
        seal_rows(rows, length, reseal)
        cols = np.arange(WIDTH)
        rows[cols[None, :] >= length[:, None]] = 0
        cases = Cases(index=index, frames=rows, length=length, seed_id=sid, mad_off=mad_off, ops=ops,
                      corpus=self.corpus, notes=notes, **self._mailboxes(rng, index, notes),
                      port_num=self._port(rng), status=self._status(rng))
        return cases

    # -- frame mutations --------------------------------------------------------------------------

    def _pick_field(self, st, sel, rng, tag):
        sel = sel[self.f_count[st.lay[sel]] > 0]
        s = st.lay[sel]
        u = rng.unit(tag + "f")[sel]
        k = (self.f_cum[s] <= u[:, None]).sum(axis=1)
        return sel, s, np.minimum(k, self.f_count[s] - 1)

    def _set_field(self, st, sel, s, k, rng, tag, why):
        """Set field k of each selected case's seed layout to a boundary or an interesting value."""
        bit = self.f_bit[s, k]
        width = self.f_width[s, k]
        inside = bit + width <= 8 * st.length[sel]
        sel, s, k, bit, width = sel[inside], s[inside], k[inside], bit[inside], width[inside]
        if not len(sel):
            return
        big = width > 64
        if big.any():
            self._fill_blob(st, sel[big], bit[big] // 8, width[big] // 8, rng, tag, s[big], k[big], why)
        sel, s, k, bit, width = sel[~big], s[~big], k[~big], bit[~big], width[~big]
        if not len(sel):
            return
        top = np.where(width >= 64, U64(_MASK64), (U64(1) << width.astype(U64)) - U64(1))
        old = get_bits(st.rows, sel, bit, width)
        choice = rng.below(tag + "v", 10)[sel]
        rnd = rng.u64(tag + "r")[sel] & top
        msb = U64(1) << (width - 1).astype(U64)
        cand = np.stack([np.zeros_like(top), np.ones_like(top), top, top - U64(1), msb, msb - U64(1),
                         old + U64(1), old - U64(1), old ^ U64(1), rnd])
        value = cand[choice, np.arange(len(sel))] & top
        n_int = self.f_int_len[s, k]
        use_int = (n_int > 0) & rng.chance(tag + "i?", 0.5)[sel]
        if use_int.any():
            at = self.f_int_start[s, k] + rng.below(tag + "i", n_int, sel)
            value = np.where(use_int, self.pool[np.minimum(at, len(self.pool) - 1)] & top, value)
        put_bits(st.rows, sel, bit, width, value)
        st.note(sel, lambda i, j: f"{why} {self.fields[st.lay[i]][k[j]].name} = 0x{int(value[j]):x} "
                                  f"(was 0x{int(old[j]):x})", with_pos=True)

    def _fill_blob(self, st, sel, start, size, rng, tag, s, k, why):
        pattern = rng.pick(tag + "bp", [0x00, 0xFF, 0x80, 0x7F, 0x01, -1])[sel]
        rnd = rng.u64(tag + "br")[sel]
        cols = np.arange(WIDTH)
        sub = st.rows[sel]
        m = (cols[None, :] >= start[:, None]) & (cols[None, :] < (start + size)[:, None])
        fill = np.where(pattern[:, None] >= 0, pattern[:, None],
                        ((rnd[:, None] >> (U64(8) * (cols[None, :] % 8).astype(U64))) & U64(0xFF)).astype(np.int64)
                        ^ cols[None, :] * 37)
        st.rows[sel] = np.where(m, fill & 0xFF, sub).astype(np.uint8)
        st.note(sel, lambda i, j: f"{why} {self.fields[st.lay[i]][k[j]].name} filled with "
                                  + ("random bytes" if pattern[j] < 0 else f"0x{int(pattern[j]):02x}"), with_pos=True)

    def _op_field(self, st, sel, rng, tag):
        sel, s, k = self._pick_field(st, sel, rng, tag)
        self._set_field(st, sel, s, k, rng, tag, "field")

    def _op_reserved(self, st, sel, rng, tag):
        s = st.lay[sel]
        has = self.r_count[s] > 0
        sel, s = sel[has], s[has]
        if not len(sel):
            return
        k = self.r_index[s, rng.below(tag + "rk", self.r_count[s], sel)]
        bit = self.f_bit[s, k]
        width = self.f_width[s, k]
        inside = bit + width <= 8 * st.length[sel]
        sel, s, k, bit, width = sel[inside], s[inside], k[inside], bit[inside], width[inside]
        if not len(sel):
            return
        small = width <= 64
        if small.any():
            w = width[small]
            top = np.where(w >= 64, U64(_MASK64), (U64(1) << w.astype(U64)) - U64(1))
            val = rng.u64(tag + "rv")[sel[small]] & top
            val = np.where(val == 0, top, val)
            put_bits(st.rows, sel[small], bit[small], w, val)
            ks = k[small]
            st.note(sel[small], lambda i, j: f"reserved {self.fields[st.lay[i]][ks[j]].name} = 0x{int(val[j]):x}",
                    with_pos=True)
        big = ~small
        if big.any():
            self._fill_blob(st, sel[big], bit[big] // 8, width[big] // 8, rng, tag, s[big], k[big], "reserved")

    def _op_bitflip(self, st, sel, rng, tag):
        n = 1 + rng.below(tag + "n", 8)[sel]
        L = np.maximum(st.length[sel], 1)
        ok = st.length[sel] > 0
        for j in range(8):
            act = ok & (j < n)
            pos = rng.below(f"{tag}p{j}", 8 * L, sel)
            r = sel[act]
            p = pos[act]
            st.rows[r, p >> 3] ^= (1 << (7 - (p & 7))).astype(np.uint8)
            st.note(r, lambda i, jj, p=p: f"bit flip at byte {int(p[jj]) >> 3} bit {7 - (int(p[jj]) & 7)}",
                    with_pos=True)

    def _op_bytes(self, st, sel, rng, tag):
        n = 1 + rng.below(tag + "n", 4)[sel]
        ok = st.length[sel] > 0
        L = np.maximum(st.length[sel], 1)
        for j in range(4):
            act = ok & (j < n)
            pos = rng.below(f"{tag}p{j}", L, sel)[act]
            val = rng.pick(f"{tag}v{j}", [0x00, 0xFF, 0x7F, 0x80, 0x01, 0x40, -1])[sel][act]
            rnd = (rng.u64(f"{tag}r{j}")[sel][act] & U64(0xFF)).astype(np.int64)
            val = np.where(val < 0, rnd, val)
            r = sel[act]
            st.rows[r, pos] = val.astype(np.uint8)
            st.note(r, lambda i, jj, pos=pos, val=val: f"byte {int(pos[jj])} = 0x{int(val[jj]):02x}", with_pos=True)

    def _op_truncate(self, st, sel, rng, tag):
        L = st.length[sel]
        m = st.mad_off[sel]
        mm = np.where(m >= 0, m, 28)
        cand = np.stack([rng.below(tag + "t0", 8)[sel], 8 + rng.below(tag + "t1", 12)[sel],
                         np.full(len(sel), 20), np.full(len(sel), 28), np.full(len(sel), 48),
                         mm + 23, mm + 24, mm + 64, mm + 255, mm + 256, L - 1, L - 2, L - 6, L - 7,
                         rng.below(tag + "t2", np.maximum(L, 1), sel)])
        new = cand[rng.below(tag + "tc", len(cand))[sel], np.arange(len(sel))]
        new = np.clip(new, 0, np.maximum(L - 1, 0))
        st.length[sel] = new
        st.len_changed[sel] = True
        st.note(sel, lambda i, j: f"truncated to {int(new[j])} bytes (was {int(L[j])})", with_pos=True)

    def _op_extend(self, st, sel, rng, tag):
        L = st.length[sel]
        add = rng.pick(tag + "e", [1, 2, 3, 4, 6, 8, 40, 64, -1])[sel]
        add = np.where(add < 0, 1 + rng.below(tag + "er", WIDTH)[sel], add)
        new = np.minimum(L + add, WIDTH)
        rand = rng.chance(tag + "ez", 0.5)[sel]
        cols = np.arange(WIDTH)
        m = (cols[None, :] >= L[:, None]) & (cols[None, :] < new[:, None])
        noise = ((rng.u64(tag + "en")[sel][:, None] * U64(0x9E3779B97F4A7C15) + cols[None, :].astype(U64)
                  * U64(0xBF58476D1CE4E5B9)) >> U64(56)).astype(np.uint8)
        fill = np.where(rand[:, None], noise, np.uint8(0))
        st.rows[sel] = np.where(m, fill, st.rows[sel])
        st.length[sel] = new
        st.len_changed[sel] = True
        st.note(sel, lambda i, j: f"extended to {int(new[j])} bytes with {'random bytes' if rand[j] else 'zeros'}",
                with_pos=True)

    def _op_pktlen(self, st, sel, rng, tag):
        ok = st.length[sel] >= 8
        sel = sel[ok]
        if not len(sel):
            return
        right = (st.length[sel] - 2) // 4
        cand = np.stack([np.zeros_like(right), np.ones_like(right), right - 1, right + 1, np.full_like(right, 0x7FF),
                         right + 10, right - 10, rng.below(tag + "pr", 0x800)[sel]])
        val = cand[rng.below(tag + "pc", len(cand))[sel], np.arange(len(sel))] & 0x7FF
        val = np.where(val == right, (right + 1) & 0x7FF, val)
        put_bits(st.rows, sel, np.full(len(sel), 37), np.full(len(sel), 11), val.astype(U64))
        st.pktlen_set[sel] = True
        st.note(sel, lambda i, j: f"lrh.pktlen = {int(val[j])} (the length says {int(right[j])})", with_pos=True)

    def _mad_rows(self, st, sel):
        ok = (st.mad_off[sel] >= 0) & (st.mad_off[sel] + 256 <= st.length[sel])
        return sel[ok], st.mad_off[sel[ok]]

    def _op_hops(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        rows[sel, m + 1] = madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
        old_cnt = rows[sel, m + 7].astype(np.int64)
        cnt = rng.pick(tag + "hc", [-1, -1, 0, 1, 2, 63, 64, 65, 127, 128, 255])[sel]
        cnt = np.where(cnt < 0, old_cnt, cnt)
        ptr = rng.pick(tag + "hp", [0, 1, -1, -2, -3, 63, 64, 255, -4])[sel]
        ptr = np.select([ptr == -1, ptr == -2, ptr == -3, ptr == -4],
                        [cnt, cnt + 1, cnt + 2, rng.below(tag + "hr", 256)[sel]], ptr) & 0xFF
        rows[sel, m + 7] = cnt.astype(np.uint8)
        rows[sel, m + 6] = ptr.astype(np.uint8)
        # Paths that disagree with the count: a zero or 255 hop inside, hops past hop_cnt, the D bit.
        kind = rng.below(tag + "hk", 5)[sel]
        at = 1 + rng.below(tag + "ha", np.maximum(np.minimum(cnt, 63), 1), sel)
        a = kind == 1
        rows[sel[a], m[a] + 128 + at[a]] = 0
        a = kind == 2
        rows[sel[a], m[a] + 128 + at[a]] = 0xFF
        a = kind == 3
        past = np.minimum(cnt + 1, 63)
        rows[sel[a], m[a] + 128 + past[a]] = (1 + rng.below(tag + "hv", 254)[sel][a]).astype(np.uint8)
        a = kind == 4
        rows[sel[a], m[a] + 4] ^= 0x80
        what = ["", ", a zero hop inside the path", ", hop 255 inside the path", ", a hop past hop_cnt",
                ", the D bit flipped"]
        st.note(sel, lambda i, j: f"directed route: hop_cnt = {int(cnt[j])}, hop_ptr = {int(ptr[j])}{what[kind[j]]}",
                with_pos=True)

    def _op_pkey_block(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        cls = rows[sel, m + 1]
        is_smp = (cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED) | (cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
        rows[sel[~is_smp], m[~is_smp] + 1] = madc.IB_MGMT_CLASS_SUBN_LID_ROUTED
        set_method = rng.chance(tag + "ks", 0.8)[sel]
        rows[sel[set_method], m[set_method] + 3] = madc.IB_MGMT_METHOD_SET
        rows[sel, m + 16] = 0
        rows[sel, m + 17] = smpc.IB_SMP_ATTR_PKEY_TABLE
        block = PKEY_BLOCKS[rng.below(tag + "kb", len(PKEY_BLOCKS))[sel]]
        block = np.where(rng.chance(tag + "kr?", 0.1)[sel], rng.below(tag + "kr", 0x10000)[sel], block)
        port = np.where(rng.chance(tag + "kp?", 0.8)[sel], 0,
                        rng.pick(tag + "kp", [1, 2, 36, 254, 255, 0xFFFF])[sel])
        amod = (port << 16) | block
        for k in range(4):
            rows[sel, m + 20 + k] = ((amod >> (24 - 8 * k)) & 0xFF).astype(np.uint8)
        new_data = rng.chance(tag + "kd", 0.5)[sel]
        if new_data.any():
            r = sel[new_data]
            mm = m[new_data]
            for i in range(32):
                pk = (rng.u64(f"{tag}kk{i}")[r] & U64(0xFFFF)).astype(np.int64)
                pk = np.where(rng.chance(f"{tag}kz{i}", 0.6)[r], 0, pk)
                rows[r, mm + 64 + 2 * i] = (pk >> 8).astype(np.uint8)
                rows[r, mm + 64 + 2 * i + 1] = (pk & 0xFF).astype(np.uint8)
        st.note(sel, lambda i, j: f"P_KeyTable {'Set' if set_method[j] else 'MAD'} block {int(block[j])}"
                                  + (f" switch port {int(port[j])}" if port[j] else "")
                                  + (", new P_Keys" if new_data[j] else ""), with_pos=True)

    def _op_response(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        method = rng.pick(tag + "rm", [0x81, 0x81, 0x81, 0x86, 0x92, 0x94, 0x95, -1])[sel]
        method = np.where(method < 0, rows[sel, m + 3] | 0x80, method)
        rows[sel, m + 3] = method.astype(np.uint8)
        tid = rng.u64(tag + "rt")[sel]
        for k in range(8):
            rows[sel, m + 8 + k] = ((tid >> U64(56 - 8 * k)) & U64(0xFF)).astype(np.uint8)
        dr = rows[sel, m + 1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
        rows[sel[dr], m[dr] + 4] |= 0x80
        st.note(sel, lambda i, j: f"a response without a request: method 0x{int(method[j]):02x}, "
                                  f"tid 0x{int(tid[j]):016x}", with_pos=True)

    def _op_class(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        rows = st.rows
        old = rows[sel, m + 1].astype(np.int64)
        swap = np.where(old == 0x81, 0x01, np.where(old == 0x01, 0x81, -1))
        other = rng.pick(tag + "c", [0x01, 0x81, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, 0x0A, 0x21, 0x30, 0x80, 0xFF])[sel]
        new = np.where((swap >= 0) & rng.chance(tag + "cs", 0.6)[sel], swap, other)
        rows[sel, m + 1] = new.astype(np.uint8)
        st.note(sel, lambda i, j: f"mad.mgmt_class = 0x{int(new[j]):02x} (was 0x{int(old[j]):02x})", with_pos=True)

    def _op_attr(self, st, sel, rng, tag):
        sel, m = self._mad_rows(st, sel)
        if not len(sel):
            return
        attr = rng.pick(tag + "a", _ATTR_IDS)[sel]
        st.rows[sel, m + 16] = (attr >> 8).astype(np.uint8)
        st.rows[sel, m + 17] = (attr & 0xFF).astype(np.uint8)
        st.note(sel, lambda i, j: f"mad.attr_id = 0x{int(attr[j]):04x}", with_pos=True)

    def _op_crc(self, st, sel, rng, tag):
        L = st.length[sel]
        ok = L >= 10
        sel, L = sel[ok], L[ok]
        if not len(sel):
            return
        which = rng.below(tag + "w", 3)[sel]  # 0 ICRC, 1 VCRC, 2 both
        st.crc_broken[sel] = True
        lnh = st.rows[sel, 1] & 3
        icrc = ((which == 0) | (which == 2)) & (lnh >= 2)
        vcrc = (which == 1) | (which == 2) | (lnh < 2)
        # Recompute first, then break: the frame is right everywhere but where the note says.
        seal_rows(st.rows, st.length, np.isin(np.arange(len(st.length)), sel))
        x = (rng.u64(tag + "x")[sel] | U64(1))
        for k in range(4):
            r = sel[icrc]
            st.rows[r, L[icrc] - 6 + k] ^= ((x[icrc] >> U64(8 * k)) & U64(0xFF)).astype(np.uint8)
        for k in range(2):
            r = sel[vcrc]
            st.rows[r, L[vcrc] - 2 + k] ^= ((x[vcrc] >> U64(8 * k + 32)) & U64(0xFF)).astype(np.uint8) | np.uint8(k == 0)
        st.note(sel, lambda i, j: "bad " + ("ICRC and VCRC" if icrc[j] and vcrc[j] else "ICRC" if icrc[j] else "VCRC"),
                with_pos=True)

    def _op_splice(self, st, sel, rng, tag):
        other = rng.below(tag + "o", len(self.corpus.frames))[sel]
        L = np.minimum(st.length[sel], self.seed_len[other])
        ok = L > 1
        sel, other, L = sel[ok], other[ok], L[ok]
        if not len(sel):
            return
        a = rng.below(tag + "a", L, sel)
        n = 1 + rng.below(tag + "n", np.maximum(L - a, 1), sel)
        cols = np.arange(WIDTH)
        m = (cols[None, :] >= a[:, None]) & (cols[None, :] < (a + n)[:, None])
        st.rows[sel] = np.where(m, self.seed_rows[other], st.rows[sel])
        st.note(sel, lambda i, j: f"bytes {int(a[j])}..{int(a[j] + n[j] - 1)} copied from "
                                  f"{self.corpus.names[other[j]]}", with_pos=True)

    # -- mailboxes and per-case target inputs ------------------------------------------------------

    def _mailboxes(self, rng, index, notes) -> dict:
        b = len(index)
        mseed = rng.below("mbox seed", len(self.mbox_rows))
        mb = self.mbox_rows[mseed].copy()
        sel_all = np.arange(b)
        mb_ops = np.full((b, SLOTS), -1, dtype=np.int8)
        active = np.ones(b, dtype=bool)
        cum = np.cumsum(MB_WEIGHTS) / MB_WEIGHTS.sum()
        note = _Noter(notes, "mailbox: ")
        for slot in range(SLOTS):
            if slot:
                active &= rng.chance(f"mb more{slot}", 0.5)
            op = np.minimum(np.searchsorted(cum, rng.unit(f"mb op{slot}"), side="right"), len(MB_OPS) - 1)
            mb_ops[active, slot] = op[active]
            for k, name in enumerate(MB_OPS):
                sel = sel_all[active & (op == k)]
                if len(sel):
                    self._mb_op(name, mb, sel, rng, f"mb{slot}", note)
        # Per-case command inputs; the batch's base_proxy_sqpn shapes the QP numbers.
        transition = TRANSITION_CODES[rng.below("transition", len(TRANSITION_CODES))]
        cfgs = {int(bn): batch_config(self.seed, int(bn)) for bn in np.unique(index // BATCH)}
        num_vfs = np.array([cfgs[int(bn)].num_vfs for bn in index // BATCH], dtype=np.int64)
        p = np.array([cfgs[int(bn)].base_proxy_sqpn for bn in index // BATCH], dtype=np.int64)
        slave = rng.below("slave", num_vfs + 1)
        odd = rng.chance("slave odd?", 0.15)
        slave = np.where(odd, SLAVES_ODD[rng.below("slave odd", len(SLAVES_ODD))], slave)
        t = p + 8 * 80
        cand = np.stack([p - 1, p, p + 1, p + 8 * rng.below("qf", 80) + rng.below("qk", 8), p + 639, t - 1, t,
                         t + 8 * rng.below("qf2", 80) + rng.below("qk2", 4), t + 639, t + 640,
                         rng.below("q24", 1 << 24), rng.below("q32", 1 << 32), np.zeros(b, np.int64),
                         np.full(b, 0xFFFFFF), (1 << 24) + p])
        qpn = cand[rng.below("qpn", len(cand)), np.arange(b)] & 0xFFFFFFFF
        if notes is not None:
            for i in range(b):
                notes[i].append(f"mailbox seed {self.corpus.mailbox_names[mseed[i]]}; "
                                f"{qpc.transition_name(int(transition[i]))} by function {int(slave[i])} "
                                f"on QP 0x{int(qpn[i]):x}")
        return dict(mailboxes=mb, mbox_seed=mseed, mb_ops=mb_ops, transition=transition.astype(np.uint8),
                    slave=slave.astype(np.int64), qpn=qpn.astype(np.uint32))

    def _mb_op(self, name, mb, sel, rng, tag, note):
        if name == "field":
            k = rng.below(tag + "k", len(self.mb_off))[sel]
            off, size = self.mb_off[k], self.mb_size[k]
            small = size <= 8
            r, o, z = sel[small], off[small], size[small]
            top = np.where(z >= 8, U64(_MASK64), (U64(1) << (8 * z).astype(U64)) - U64(1))
            val = np.stack([np.zeros_like(top), np.ones_like(top), top, top >> U64(1),
                            rng.u64(tag + "r")[r] & top])[rng.below(tag + "v", 5)[r], np.arange(len(r))]
            put_bits(mb, r, 8 * o, 8 * z, val)
            names = self.mb_names
            note(r, lambda i, j: f"{names[k[small][j]]} = 0x{int(val[j]):x}")
            big = ~small
            if big.any():
                r, o, z = sel[big], off[big], size[big]
                cols = np.arange(MBOX_SIZE)
                m = (cols[None, :] >= o[:, None]) & (cols[None, :] < (o + z)[:, None])
                mb[r] = np.where(m, np.uint8(0xFF), mb[r])
                note(r, lambda i, j: f"{names[k[big][j]]} filled with 0xff")
        elif name == "pkey_index":
            v = rng.pick(tag + "p", [0, 1, 126, 127, 128, 129, 160, 200, 254, 255])[sel]
            alt = rng.chance(tag + "pa", 0.2)[sel]
            at = np.where(alt, qpc.MBOX_ALT_PKEY_INDEX, qpc.MBOX_PRI_PKEY_INDEX)
            mb[sel, at] = v.astype(np.uint8)
            note(sel, lambda i, j: f"context.{'alt' if alt[j] else 'pri'}_path.pkey_index = {int(v[j])}")
        elif name == "port":
            alt = rng.chance(tag + "oa", 0.3)[sel]
            at = np.where(alt, qpc.MBOX_ALT_SCHED_QUEUE, qpc.MBOX_PRI_SCHED_QUEUE)
            v = np.where(rng.chance(tag + "of", 0.7)[sel], mb[sel, at] ^ 0x40, rng.pick(tag + "ov", [0, 0x40, 0xFF])[sel])
            mb[sel, at] = v.astype(np.uint8)
            note(sel, lambda i, j: f"context.{'alt' if alt[j] else 'pri'}_path.sched_queue = 0x{int(v[j]):02x}")
        elif name == "service_type":
            v = rng.pick(tag + "s", [0, 1, 2, 3, 4, 5, 6, 7, 0xFF])[sel]
            mb[sel, qpc.MBOX_SERVICE_TYPE] = v.astype(np.uint8)
            note(sel, lambda i, j: f"service type = {int(v[j])}")
        elif name == "optpar":
            bits = np.array([0x1, 0x10, 0x20, 0x80, 0x10000, 0x2, 0x100000, 0x80000000], dtype=np.int64)
            v = np.zeros(len(sel), dtype=np.int64)
            for j, bit in enumerate(bits):
                v |= np.where(rng.chance(f"{tag}o{j}", 0.4)[sel], bit, 0)
            v = np.where(rng.chance(tag + "oall", 0.05)[sel], 0xFFFFFFFF, v)
            put_bits(mb, sel, np.full(len(sel), 8 * qpc.MBOX_OPTPAR), np.full(len(sel), 32), v.astype(U64))
            note(sel, lambda i, j: f"optpar = 0x{int(v[j]):x}")
        elif name == "mgid":
            v = rng.pick(tag + "g", [0, 1, 2, 0x7F, 0x80, 0x81, 0xFF])[sel]
            alt = rng.chance(tag + "ga", 0.4)[sel]
            at = np.where(alt, qpc.MBOX_ALT_MGID_INDEX, qpc.MBOX_PRI_MGID_INDEX)
            mb[sel, at] = v.astype(np.uint8)
            note(sel, lambda i, j: f"context.{'alt' if alt[j] else 'pri'}_path.mgid_index = {int(v[j])}")
        elif name == "rate_limit":
            v = rng.pick(tag + "l", [0, 1, 0x100, 0xFFFF])[sel]
            mb[sel, qpc.MBOX_RATE_LIMIT] = (v >> 8).astype(np.uint8)
            mb[sel, qpc.MBOX_RATE_LIMIT + 1] = (v & 0xFF).astype(np.uint8)
            note(sel, lambda i, j: f"context.rate_limit_params = 0x{int(v[j]):x}")
        elif name == "fpp":
            mb[sel, qpc.MBOX_PARAMS2_FPP] |= 0x08
            note(sel, lambda i, j: "context.params2 FPP bit set")
        elif name == "bitflip":
            n = 1 + rng.below(tag + "n", 8)[sel]
            for j in range(8):
                act = j < n
                pos = rng.below(f"{tag}b{j}", 8 * MBOX_SIZE)[sel][act]
                mb[sel[act], pos >> 3] ^= (1 << (7 - (pos & 7))).astype(np.uint8)
                note(sel[act], lambda i, jj, pos=pos: f"bit flip at byte {int(pos[jj]) >> 3}")
        elif name == "random":
            for c in range(0, MBOX_SIZE, 8):
                v = rng.u64(f"{tag}x{c}")[sel]
                for k in range(8):
                    mb[sel, c + k] = ((v >> U64(8 * k)) & U64(0xFF)).astype(np.uint8)
            note(sel, lambda i, j: "every byte random")

    def _port(self, rng) -> np.ndarray:
        port = np.where(rng.chance("port 2", 0.33), 2, 1)
        odd = rng.chance("port odd?", 0.06)
        return np.where(odd, rng.pick("port odd", [0, 3, 255]), port).astype(np.uint8)

    def _status(self, rng) -> np.ndarray:
        odd = rng.chance("status odd?", 0.12)
        return np.where(odd, rng.pick("status odd", [0x0001, 0x001C, 0x000C, 0x8000, 0x7FFF, 0xFFFF]), 0).astype(np.uint16)


class _Noter:
    """Collects per-case notes when tracing (``Mutator.case``); costs nothing otherwise."""

    def __init__(self, notes, prefix=""):
        self.notes = notes
        self.prefix = prefix

    def __call__(self, rows, text):
        if self.notes is None:
            return
        for j, i in enumerate(rows):
            self.notes[int(i)].append(self.prefix + text(int(i), j))


class _State:
    """The frames of a batch while mutations are applied, and what they did to lengths and CRCs."""

    def __init__(self, rows, length, mad_off, sid, lay, notes):
        self.rows, self.length, self.mad_off, self.sid, self.lay, self.notes = rows, length, mad_off, sid, lay, notes
        n = len(length)
        self.len_changed = np.zeros(n, dtype=bool)
        self.pktlen_set = np.zeros(n, dtype=bool)
        self.crc_broken = np.zeros(n, dtype=bool)

    def note(self, rows, text, with_pos=False):
        if self.notes is None:
            return
        for j, i in enumerate(rows):
            i = int(i)
            self.notes[i].append(text(i, j) if with_pos else text(i))


__all__ = [
    "BATCH", "Cases", "CaseRng", "Corpus", "Field", "MB_OPS", "Mutator", "OPS", "SLOTS", "WIDTH", "make_mailbox",
    "batch_config", "frame_fields", "get_bits", "mad_fields", "mad_offset", "put_bits", "schema_fields",
    "seal_rows",
]
