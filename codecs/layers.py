"""Scapy layers for native InfiniBand management traffic, from the ERF record to the SMP attribute.

    ERF (16, ibdump's link type 197) | LRH (8) | [GRH (40)] | BTH (12) | DETH (8) | [ImmDt (4)]
    | MAD (256): SMP, SMPDirected, PerfMAD, SAMAD, CMMAD or MAD | ICRC (4) | VCRC (2)

Field names are those of the construct schemas (``ib_headers``, ``mad``, ``smp``, ``perf``,
``erf``), in wire order, so ``pkt[PortInfo].port_state`` and ``smp.PortInfo.parse(...)
.port_state`` are the same thing. The attribute layers (``NodeInfo``, ``PortInfo``,
``PKeyTable``...) are generated from the construct Structs themselves (``attribute_layer``), so a
field is never written twice. Where one scapy layer holds what construct nests (a MAD class
layer carries the common header), the class's own reserved area is named ``reserved``, the
kernel's name (``struct ib_smp``, ``struct ib_pma_mad``), since ``resv`` is the header's.

Defaults build a valid packet: ``LRH()/BTH()/DETH()/SMP()`` is a SubnGet(NodeInfo) on QP0 and
VL15 with PktLen, ICRC and VCRC computed; ``smp_get("node-info", lid=4)`` builds one in one call.
Fields that depend on what the packet carries default to None and are computed when it is
built: LRH.vl (15 for an SMP, else 0), BTH.dqp and DETH.sqp (0 for an SMP, 1 for another MAD),
DETH.qkey (0 for an SMP, 0x80010000 for a GMP), LRH.pktlen, BTH.padcnt, GRH.paylen,
SMPDirected.hop_cnt (from the initial path) and ERF.rlen/wlen. The ICRC and the VCRC are
fields of the LRH (they end the whole packet, after the payload): left None they are computed
in ``post_build``; a value given on purpose, or read from a capture, is kept. After editing a
dissected packet, ``del pkt[LRH].icrc, pkt[LRH].vcrc`` to have them recomputed.

The SMP data area sits in the middle of an SMP (bytes 64-127), with the reserved tail or the
directed-route paths after it. The attribute is the SMP layer's payload (so ``SMP()/PKeyTable()``
sets attr_id to 0x16) and the fields that follow it on the wire (``resv2``, ``initial_path``,
``return_path``) are fields of the SMP layer, placed after the 64 data bytes when it is built.

Importing this module registers link types 197 (``ERF``) and 247 (``LRH``) with scapy, so
``rdpcap``, ``wrpcap`` and ``sniff(offline=...)`` work on ibdump's and madpipe's captures.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Sequence

import construct as cs
from scapy.config import conf
from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldListField,
    IntField,
    IP6Field,
    LELongField,
    LongField,
    PacketListField,
    ShortField,
    StrField,
    StrFixedLenField,
    ThreeBytesField,
    X3BytesField,
    XBitField,
    XByteField,
    XIntField,
    XLEIntField,
    XLEShortField,
    XLongField,
    XShortEnumField,
    XShortField,
)
from scapy.fields import _FieldContainer
from scapy.packet import NoPayload, Packet, Raw, bind_bottom_up, bind_layers

from madpipe.codecs import crc, erf as erfc, gmp, ib_headers as ibh, mad as madc, perf, smp as smpc
from madpipe.codecs.capture import LINKTYPE_ERF, LINKTYPE_INFINIBAND
from madpipe.codecs.errors import MadpipeError

__all__ = [
    "ERF", "LRH", "GRH", "BTH", "DETH", "ImmDt", "AETH",
    "MAD", "SMP", "SMPDirected", "PerfMAD", "SAMAD", "CMMAD",
    "Notice", "NodeDescription", "NodeInfo", "SwitchInfo", "GUIDInfo", "PortInfo", "PKeyTable",
    "SLtoVLMappingTable", "VLArbElement", "VLArbitrationTable", "LinearForwardingTable",
    "RandomForwardingEntry", "RandomForwardingTable", "MulticastForwardingTable", "SMInfo",
    "VendorDiag", "LedInfo", "ClassPortInfo", "PortCounters", "PortCountersExtended",
    "SMP_ATTRIBUTE_LAYERS", "PERF_ATTRIBUTE_LAYERS", "MAD_CLASS_LAYERS",
    "CraftError", "attribute_layer", "smp_attribute", "smp_packet", "smp_get", "smp_set",
    "smp_set_pkeys", "getresp", "from_record", "check_range", "check_pkeys", "pkey_attr_mod",
    "attribute_layer_for", "scapy_fields",
    "IB_PKEY_MAX_BLOCK", "IB_SMP_MAX_HOP_CNT",
]

IB_SMP_MAX_HOP_CNT = 63  # hop_cnt < 64 (IBA 14.2.2, C14-10); path entry 0 is unused
IB_PKEY_MAX_BLOCK = 2047  # P_KeyTable: at most 65536 entries, 32 per block (IBA 14.2.5.7)
IB_GRH_NXTHDR_IBA = 0x1B  # GRH NxtHdr of an IBA transport packet (IBA 8.3.1)

MAD_CLASSES_SMP = (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
LNH_NAMES = {0: "Raw", 1: "IP non-IBA", 2: "IBA local", 3: "IBA global"}
OPCODE_NAMES = {op: ibh.opcode_name(op) for op in range(256) if not ibh.opcode_name(op).startswith("opcode")}
SMP_ATTRIBUTE_NAMES = {attr_id: name for attr_id, (name, _) in smpc.SMP_ATTRIBUTES.items()}
PERF_ATTRIBUTE_NAMES = dict(gmp.PERF_ATTRIBUTE_NAMES)


class CraftError(MadpipeError, ValueError):
    """A value that cannot go on the wire as asked (the CLI prints it as one line, exit 2)."""


# ============================================================================ fields

class _AfterPayload(_FieldContainer):
    """A field that sits after its layer's payload on the wire.

    ``at >= 0``: after the first ``at`` bytes of the payload (the SMP fields after the 64-byte
    data area). ``at < 0``: ``-at`` bytes before the end of the packet (the LRH's ICRC and VCRC).
    Dissection takes the field's bytes from there; building adds nothing in place, the owning
    layer's ``post_build`` puts the bytes where they belong (``LRH``, ``_DataArea``).
    """

    __slots__ = ["fld", "at"]

    def __init__(self, fld, at: int):
        self.fld = fld
        self.at = at

    def getfield(self, pkt, s):
        start = self.at if self.at >= 0 else len(s) + self.at
        if start < 0 or start >= len(s):
            return s, None  # a frame too short to hold the field: left unset
        rest, val = self.fld.getfield(pkt, s[start:])
        end = len(s) - len(rest)
        return s[:start] + s[end:], val

    def addfield(self, pkt, s, val):
        return s


class _PerQP:
    """Mixin: a None value becomes the one for the MAD the packet carries (QP0 SMP, QP1 GMP)."""

    def __init__(self, *args, smp: int, gmp: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.for_smp, self.for_gmp = smp, gmp

    def i2m(self, pkt, x):
        if x is None and pkt is not None:
            carried = _carried_mad(pkt)
            if carried is None:
                x = 0
            else:
                x = self.for_smp if carried.mgmt_class in MAD_CLASSES_SMP else self.for_gmp
        return super().i2m(pkt, x)


class _PerQPBitField(_PerQP, BitField):
    pass


class _PerQPXBitField(_PerQP, XBitField):
    pass


class _PerQPXIntField(_PerQP, XIntField):
    pass


class _FixedFieldList(FieldListField):
    """A construct ``Array(n, int)``: exactly n items, a shorter list is padded with zeros."""

    def __init__(self, name, field, count: int):
        super().__init__(name, [field.default] * count, field, count_from=lambda pkt: count)
        self.max_count = count

    def i2m(self, pkt, val):
        val = list(super().i2m(pkt, val) or [])
        return val + [self.field.default] * (self.max_count - len(val))


class _FixedPacketList(PacketListField):
    """A construct ``Array(n, Struct)``: exactly n elements, a shorter list is padded with defaults."""

    def __init__(self, name, cls, count: int):
        super().__init__(name, None, cls, count_from=lambda pkt: count)
        self.max_count = count

    def addfield(self, pkt, s, val):
        val = list(val or [])
        val += [self.cls() for _ in range(self.max_count - len(val))]
        return super().addfield(pkt, s, val)


class _DRPathField(StrFixedLenField):
    """A 64-byte directed-route path. A list given is the hops 1..n (entry 0, unused, is 0)."""

    def __init__(self, name):
        super().__init__(name, bytes(smpc.IB_SMP_MAX_PATH_HOPS), smpc.IB_SMP_MAX_PATH_HOPS)

    def any2i(self, pkt, x):
        if isinstance(x, (list, tuple)):
            if len(x) >= smpc.IB_SMP_MAX_PATH_HOPS:
                raise CraftError(f"a directed-route path holds at most 63 hops, not {len(x)}")
            return bytes([0, *x]).ljust(smpc.IB_SMP_MAX_PATH_HOPS, b"\0")
        return super().any2i(pkt, x)

    def i2repr(self, pkt, x):
        entries = list(x or b"")
        while entries and not entries[-1]:
            entries.pop()
        return f"[{', '.join(map(str, entries))}]"


class _HopCountField(ByteField):
    """hop_cnt: None counts the hops of initial_path (up to its last non-zero entry)."""

    def i2m(self, pkt, x):
        if x is None and pkt is not None:
            x = len(_path_hops(pkt.initial_path))
        return super().i2m(pkt, x)


class _ERFExtensions(StrField):
    """ERF extension headers: 8 bytes each while bit 7 of the previous type byte is set."""

    def getfield(self, pkt, s):
        if not pkt.ext:
            return s, b""
        n, more = 0, True
        while more and len(s) >= n + 8:
            more = bool(s[n] & 0x80)
            n += 8
        return s[n:], s[:n]


def _path_hops(path: bytes) -> list[int]:
    """Entries 1..n of a path, n being its last non-zero entry."""
    entries = list(path or b"")
    while len(entries) > 1 and not entries[-1]:
        entries.pop()
    return entries[1:]


def _carried_mad(pkt):
    """The MAD layer inside ``pkt``'s payload, or None."""
    layer = pkt.payload
    while not isinstance(layer, NoPayload):
        if isinstance(layer, MAD):
            return layer
        layer = layer.payload
    return None


# ============================================================================ construct -> scapy

_HEX_NAME = re.compile(r"guid|key|mask|prefix|_id$|qp|gid")
_INT_FIELDS = {1: (ByteField, XByteField), 2: (ShortField, XShortField),
               3: (ThreeBytesField, X3BytesField), 4: (IntField, XIntField), 8: (LongField, XLongField)}
_ELEMENT_LAYERS: dict[int, type] = {}  # id(construct schema) -> layer, for Array(n, Struct)


def _scapy_field(name: str, con):
    """The scapy field for one construct field: BitsInteger -> BitField, Int16ub -> ShortField,
    Int24ub -> ThreeBytesField, Bytes / Bytewise(Bytes) -> StrFixedLenField, Array(n, int) ->
    FieldListField of n, Array(n, Struct) -> PacketListField of n element layers."""
    hexa = bool(_HEX_NAME.search(name))
    if isinstance(con, cs.BitsInteger):
        if con.signed or con.swapped:
            raise TypeError(f"{name}: only unsigned big-endian BitsInteger maps to a BitField")
        return (XBitField if hexa else BitField)(name, 0, con.length)
    if isinstance(con, cs.FormatField):
        if con.fmtstr[0] != ">" or con.fmtstr[1].islower():
            raise TypeError(f"{name}: only unsigned big-endian integers map to scapy fields")
        return _INT_FIELDS[con.length][hexa](name, 0)
    if isinstance(con, cs.BytesInteger) and con.length == 3 and not con.signed and not con.swapped:
        return _INT_FIELDS[3][hexa](name, 0)
    if isinstance(con, cs.Bytes):
        return StrFixedLenField(name, bytes(con.length), con.length)
    if isinstance(con, cs.Transformed) and isinstance(con.subcon, cs.Bytes):  # Bytewise(Bytes(n))
        return StrFixedLenField(name, bytes(con.subcon.length), con.subcon.length)
    if isinstance(con, cs.Array) and isinstance(con.count, int):
        if id(con.subcon) in _ELEMENT_LAYERS:
            return _FixedPacketList(name, _ELEMENT_LAYERS[id(con.subcon)], con.count)
        return _FixedFieldList(name, _scapy_field(name, con.subcon), con.count)
    raise TypeError(f"{name}: no scapy field for construct {con!r}")


def scapy_fields(schema) -> list:
    """scapy fields, in wire order, for every field of a construct ``Struct`` or ``BitStruct``."""
    struct_ = schema.subcon if isinstance(schema, cs.Transformed) else schema
    if not isinstance(struct_, cs.Struct):
        raise TypeError(f"not a Struct or BitStruct: {schema!r}")
    return [_scapy_field(sc.name, sc.subcon) for sc in struct_.subcons]


class _Attribute(Packet):
    """Base of the attribute layers: one MAD attribute, the payload of its class layer."""

    def guess_payload_class(self, payload):
        return conf.raw_layer  # bytes past the attribute: kept, never dissected as anything


class _Element(Packet):
    """Base of array element layers (VLArbElement, RandomForwardingEntry): no payload."""

    def extract_padding(self, s):
        return b"", s


def attribute_layer(name: str, schema, base: type = _Attribute) -> type:
    """A scapy layer named ``name`` whose fields are those of the construct ``schema``."""
    layer = type(name, (base,), {
        "__module__": __name__,
        "__doc__": schema.__doc__,
        "name": name,
        "fields_desc": scapy_fields(schema),
    })
    if base is _Element:
        _ELEMENT_LAYERS[id(schema)] = layer
    return layer


# ============================================================================ capture and link

class ERF(Packet):
    """Endace ERF record header, 16 bytes, as ibdump writes it in a pcap of link type 197.

    ts is the little-endian 32.32 fixed-point time (``erf.ns_to_erf_ts``); type 21 is
    InfiniBand; rlen (record length) and wlen (wire length) are computed when None.
    """

    name = "ERF"
    match_subclass = True  # pkt[MAD] finds the SMP, SMPDirected... layer
    fields_desc = [
        LELongField("ts", 0),
        BitField("ext", 0, 1),
        BitEnumField("type", erfc.ERF_TYPE_INFINIBAND, 7, {erfc.ERF_TYPE_INFINIBAND: "InfiniBand",
                                                            erfc.ERF_TYPE_INFINIBAND_LINK: "InfiniBand link"}),
        BitField("resv", 0, 2),
        BitField("rx_error", 0, 1),
        BitField("truncated", 0, 1),
        BitField("dserror", 0, 1),
        BitField("vlen", 1, 1),
        BitField("iface", 0, 2),
        ShortField("rlen", None),
        ShortField("lctr", 0),
        ShortField("wlen", None),
        _ERFExtensions("ext_headers", b""),
    ]

    def extract_padding(self, s):
        if self.wlen is not None and self.wlen < len(s):
            return s[:self.wlen], s[self.wlen:]  # rlen padding after the wire bytes
        return s, None

    def post_build(self, p, pay):
        if self.rlen is None:
            p = p[:10] + struct.pack(">H", len(p) + len(pay)) + p[12:]
        if self.wlen is None:
            p = p[:14] + struct.pack(">H", len(pay)) + p[16:]
        return p + pay


class LRH(Packet):
    """IBA 7.7 Local Route Header, 8 bytes; its ICRC and VCRC end the packet.

    vl None: 15 for an SMP, else 0. pktlen None: 4-byte words from the LRH through the ICRC.
    icrc (LNH 2 and 3 only) and vcrc, least-significant byte first on the wire, None: computed.
    """

    name = "LRH"
    match_subclass = True  # pkt[MAD] finds the SMP, SMPDirected... layer
    fields_desc = [
        _PerQPBitField("vl", None, 4, smp=15, gmp=0),
        BitField("lver", 0, 4),
        BitField("sl", 0, 4),
        BitField("resv2", 0, 2),
        BitEnumField("lnh", crc.LNH_IBA_LOCAL, 2, LNH_NAMES),
        XShortField("dlid", ibh.IB_PERMISSIVE_LID),
        BitField("resv5", 0, 5),
        BitField("pktlen", None, 11),
        XShortField("slid", 1),
        ConditionalField(_AfterPayload(XLEIntField("icrc", None), -crc.ICRC_SIZE - crc.VCRC_SIZE),
                         lambda pkt: crc.has_icrc(pkt.lnh)),
        _AfterPayload(XLEShortField("vcrc", None), -crc.VCRC_SIZE),
    ]

    def post_dissect(self, s):
        self.raw_packet_cache = None  # the CRCs are not where the header is: rebuild from fields
        return s

    def post_build(self, p, pay):
        pkt = p + pay
        has_icrc = crc.has_icrc(self.lnh)
        if self.pktlen is None:
            words = (len(pkt) + (crc.ICRC_SIZE if has_icrc else 0) + 3) // 4
            pkt = pkt[:4] + struct.pack(">H", (pkt[4] & 0xF8) << 8 | words & 0x7FF) + pkt[6:]
        if has_icrc:
            icrc = crc.icrc(pkt) if self.icrc is None else self.icrc
            pkt += struct.pack("<I", icrc & 0xFFFFFFFF)
        vcrc = crc.crc16_vcrc(pkt) if self.vcrc is None else self.vcrc
        return pkt + struct.pack("<H", vcrc & 0xFFFF)

    def mysummary(self):
        return self.sprintf("LRH %slid% > %dlid% VL%vl%")


class GRH(Packet):
    """IBA 8.3 Global Route Header, 40 bytes (LRH.lnh 3). paylen None: BTH through ICRC."""

    name = "GRH"
    fields_desc = [
        BitField("ipver", 6, 4),
        BitField("tclass", 0, 8),
        XBitField("flow_label", 0, 20),
        ShortField("paylen", None),
        XByteField("nxthdr", IB_GRH_NXTHDR_IBA),
        ByteField("hoplmt", 0),
        IP6Field("sgid", "::"),
        IP6Field("dgid", "::"),
    ]

    def post_build(self, p, pay):
        if self.paylen is None:
            p = p[:4] + struct.pack(">H", len(pay) + crc.ICRC_SIZE) + p[6:]
        return p + pay


class BTH(Packet):
    """IBA 9.2 Base Transport Header, 12 bytes (native InfiniBand: no ICRC here, see LRH).

    dqp None: 0 for an SMP, 1 for another MAD. padcnt None: pads the payload to 4 bytes.
    """

    name = "BTH"
    fields_desc = [
        ByteEnumField("opcode", ibh.OPCODE_UD_SEND_ONLY, OPCODE_NAMES),
        BitField("se", 0, 1),
        BitField("m", 0, 1),
        BitField("padcnt", None, 2),
        BitField("tver", 0, 4),
        XShortField("pkey", ibh.IB_DEFAULT_PKEY_FULL),
        XByteField("resv8a", 0),
        _PerQPXBitField("dqp", None, 24, smp=0, gmp=1),
        BitField("a", 0, 1),
        BitField("resv7b", 0, 7),
        BitField("psn", 0, 24),
    ]

    def post_build(self, p, pay):
        if self.padcnt is None:
            pad = -len(pay) % 4
            pay += bytes(pad)
            p = p[:1] + bytes([p[1] & 0xCF | pad << 4]) + p[2:]
        return p + pay

    def mysummary(self):
        return self.sprintf("BTH %opcode% QP %dqp%")


class DETH(Packet):
    """IBA 9.3.3 Datagram Extended Transport Header, 8 bytes.

    qkey None: 0 for an SMP, 0x80010000 (QP1's Q_Key) for a GMP. sqp None: 0 / 1 likewise.
    """

    name = "DETH"
    fields_desc = [
        _PerQPXIntField("qkey", None, smp=0, gmp=ibh.IB_QP1_QKEY),
        XByteField("resv8", 0),
        _PerQPXBitField("sqp", None, 24, smp=0, gmp=1),
    ]

    def guess_payload_class(self, payload):
        bth = self.underlayer
        if isinstance(bth, BTH) and bth.opcode == ibh.OPCODE_UD_SEND_ONLY_IMM:
            return ImmDt
        return _ud_payload_class(bth, self)


class ImmDt(Packet):
    """IBA 9.3.4 Immediate Data Extended Transport Header, 4 bytes (UD SEND Only with Immediate)."""

    name = "ImmDt"
    fields_desc = [XIntField("imm_data", 0)]

    def guess_payload_class(self, payload):
        deth = self.underlayer
        return _ud_payload_class(getattr(deth, "underlayer", None), deth)


class AETH(Packet):
    """IBA 9.3.5 ACK Extended Transport Header, 4 bytes (RC Acknowledge)."""

    name = "AETH"
    fields_desc = [XByteField("syndrome", 0), X3BytesField("msn", 0)]


def _ud_payload_class(bth, deth):
    """A UD datagram to or from QP0/QP1 is a MAD (as ``frame.decode_frame`` decides); else raw."""
    if isinstance(bth, BTH) and isinstance(deth, DETH) and (bth.dqp in (0, 1) or deth.sqp in (0, 1)):
        return MAD
    return conf.raw_layer


# ============================================================================ MADs

def _mad_header(mgmt_class: int, method: int, attr_id: int, attr_names: dict, *,
                class_version: int = 1, directed: bool = False) -> list:
    """The 24-byte common MAD header (``mad.MADHeader``; ``smp.SMPDirectedHeader`` if directed)."""
    fields = [
        ByteField("base_version", 1),
        ByteEnumField("mgmt_class", mgmt_class, madc.MGMT_CLASS_NAMES),
        ByteField("class_version", class_version),
        ByteEnumField("method", method, madc.METHOD_NAMES),
        XShortField("status", 0),
    ]
    if directed:
        fields += [ByteField("hop_ptr", 0), _HopCountField("hop_cnt", None)]
    else:
        fields += [XShortField("class_specific", 0)]
    return fields + [
        XLongField("tid", 0),
        XShortEnumField("attr_id", attr_id, attr_names),
        ShortField("resv", 0),
        XIntField("attr_mod", 0),
    ]


class MAD(Packet):
    """IBA 13.4.3 a MAD of any class (``mad.MAD``): the common header and 232 bytes of class data.

    Dissection picks the class layer from mgmt_class (``MAD_CLASS_LAYERS``); a class without one
    stays a MAD with a Raw payload. Built, a MAD is padded with zeros to 256 bytes.
    """

    name = "MAD"
    match_subclass = True
    fields_desc = _mad_header(madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_METHOD_GET,
                              smpc.IB_SMP_ATTR_NODE_INFO, {})

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        if cls is MAD and _pkt is not None and len(_pkt) >= 2:
            return MAD_CLASS_LAYERS.get(_pkt[1], MAD)
        return cls

    def post_build(self, p, pay):
        return p + pay.ljust(madc.MAD_SIZE - len(p), b"\0")

    def hashret(self):
        return struct.pack(">Q", self.tid or 0)

    def answers(self, other):
        return (isinstance(other, MAD) and other.tid == self.tid and other.attr_id == self.attr_id
                and madc.is_response(self.method or 0) and not madc.is_response(other.method or 0))

    def mysummary(self):
        return self.sprintf("%mgmt_class% %method%(%attr_id%) mod=%attr_mod% tid=%tid%")


class _DataArea(MAD):
    """A MAD class whose 64-byte attribute area is followed by more fields (``_AfterPayload``)."""

    data_size = smpc.IB_SMP_DATA_SIZE

    def post_dissect(self, s):
        self.raw_packet_cache = None  # the tail fields are not where the header is: rebuild
        return s

    def post_build(self, p, pay):
        tail = b"".join(f.fld.addfield(self, b"", self.getfieldval(f.name))
                        for f in self.fields_desc if isinstance(f, _AfterPayload))
        return p + pay[:self.data_size].ljust(self.data_size, b"\0") + tail + pay[self.data_size:]


class SMP(_DataArea):
    """IBA 14.2.1.1 LID-routed SMP, class 0x01 (``smp.SMP``), 256 bytes.

    header 0 | m_key 24 | reserved[32] 32 (construct's ``resv``) | attribute (payload) 64 |
    resv2[128] 128.
    """

    name = "SMP (LID routed)"
    fields_desc = _mad_header(madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_METHOD_GET,
                              smpc.IB_SMP_ATTR_NODE_INFO, SMP_ATTRIBUTE_NAMES) + [
        XLongField("m_key", 0),
        StrFixedLenField("reserved", bytes(32), 32),
        _AfterPayload(StrFixedLenField("resv2", bytes(128), 128), smpc.IB_SMP_DATA_SIZE),
    ]


class SMPDirected(_DataArea):
    """IBA 14.2.1.2 directed-route SMP, class 0x81 (``smp.SMPDirected``, kernel ``struct ib_smp``).

    header 0 (status bit 15 = D, hop_ptr 6, hop_cnt 7) | m_key 24 | dr_slid 32 | dr_dlid 34 |
    reserved[28] 36 (construct's ``resv``) | attribute (payload) 64 | initial_path[64] 128 |
    return_path[64] 192. A path given as a list is the hops 1..n (entry 0 is 0); hop_cnt None
    counts them. ``initial_hops`` / ``return_hops`` read and set the paths as lists of hops.
    """

    name = "SMP (directed route)"
    fields_desc = _mad_header(madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE, madc.IB_MGMT_METHOD_GET,
                              smpc.IB_SMP_ATTR_NODE_INFO, SMP_ATTRIBUTE_NAMES, directed=True) + [
        XLongField("m_key", 0),
        XShortField("dr_slid", ibh.IB_PERMISSIVE_LID),
        XShortField("dr_dlid", ibh.IB_PERMISSIVE_LID),
        StrFixedLenField("reserved", bytes(28), 28),
        _AfterPayload(_DRPathField("initial_path"), smpc.IB_SMP_DATA_SIZE),
        _AfterPayload(_DRPathField("return_path"), smpc.IB_SMP_DATA_SIZE),
    ]
    initial_path: bytes  # what reading these fields gives (scapy makes them at run time: mypy is told)
    return_path: bytes

    def _hops(self, path: bytes) -> list[int]:
        count = self.hop_cnt if self.hop_cnt is not None else len(_path_hops(self.initial_path))
        return list(path[1:1 + min(count, IB_SMP_MAX_HOP_CNT)])

    @property
    def initial_hops(self) -> list[int]:
        """initial_path entries 1..hop_cnt: the ports of the route out."""
        return self._hops(self.initial_path)

    @initial_hops.setter
    def initial_hops(self, hops: Sequence[int]) -> None:
        self.initial_path = list(hops)  # type: ignore[assignment]  # _DRPathField.any2i makes the bytes
        self.hop_cnt = len(hops)

    @property
    def return_hops(self) -> list[int]:
        """return_path entries 1..hop_cnt: the ports of the route back."""
        return self._hops(self.return_path)

    @return_hops.setter
    def return_hops(self, hops: Sequence[int]) -> None:
        self.return_path = list(hops)  # type: ignore[assignment]  # _DRPathField.any2i makes the bytes

    def mysummary(self):
        return super().mysummary() + f" hops={self.hop_ptr}/{self.hop_cnt} path={self.initial_hops}"


class PerfMAD(MAD):
    """IBA 16.1.1 PerfMgt MAD, class 0x04 (``perf.PerfMAD``): header, reserved[40] (construct's
    ``resv``), the 192-byte attribute (payload: PortCounters, ClassPortInfo...) at 64."""

    name = "PerfMgt MAD"
    fields_desc = _mad_header(madc.IB_MGMT_CLASS_PERF_MGMT, madc.IB_MGMT_METHOD_GET,
                              perf.IB_PMA_PORT_COUNTERS, PERF_ATTRIBUTE_NAMES) + [
        StrFixedLenField("reserved", bytes(40), 40),
    ]


class SAMAD(MAD):
    """IBA 15.2.1 SubnAdm MAD, class 0x03 (kernel ``struct ib_sa_mad``): header, RMPP header,
    SA header (sm_key, attr_offset, reserved, comp_mask) and 200 bytes of record data (payload)."""

    name = "SubnAdm MAD"
    fields_desc = _mad_header(madc.IB_MGMT_CLASS_SUBN_ADM, madc.IB_MGMT_METHOD_GET, 0x0035,
                              gmp.SA_ATTRIBUTE_NAMES, class_version=2) + [
        ByteField("rmpp_version", 0),
        ByteField("rmpp_type", 0),
        XByteField("rmpp_rtime_flags", 0),
        ByteField("rmpp_status", 0),
        IntField("seg_num", 0),
        IntField("paylen_newwin", 0),
        XLongField("sm_key", 0),
        ShortField("attr_offset", 0),
        ShortField("reserved", 0),
        XLongField("comp_mask", 0),
    ]


class CMMAD(MAD):
    """IBA 12.6 Communication Management MAD, class 0x07: header and 232 bytes (payload, raw)."""

    name = "CM MAD"
    fields_desc = _mad_header(madc.IB_MGMT_CLASS_CM, madc.IB_MGMT_METHOD_SEND, 0x0010,
                              gmp.CM_ATTRIBUTE_NAMES, class_version=2)


# ============================================================================ attributes
# One layer per construct schema, fields generated from it (smp.py and perf.py are the source).

VLArbElement = attribute_layer("VLArbElement", smpc.VLArbElement, _Element)
RandomForwardingEntry = attribute_layer("RandomForwardingEntry", smpc.RandomForwardingEntry, _Element)

Notice = attribute_layer("Notice", smpc.Notice)
NodeDescription = attribute_layer("NodeDescription", smpc.NodeDescription)
NodeInfo = attribute_layer("NodeInfo", smpc.NodeInfo)
SwitchInfo = attribute_layer("SwitchInfo", smpc.SwitchInfo)
GUIDInfo = attribute_layer("GUIDInfo", smpc.GUIDInfo)
PortInfo = attribute_layer("PortInfo", smpc.PortInfo)
PKeyTable = attribute_layer("PKeyTable", smpc.PKeyTable)
SLtoVLMappingTable = attribute_layer("SLtoVLMappingTable", smpc.SLtoVLMappingTable)
VLArbitrationTable = attribute_layer("VLArbitrationTable", smpc.VLArbitrationTable)
LinearForwardingTable = attribute_layer("LinearForwardingTable", smpc.LinearForwardingTable)
RandomForwardingTable = attribute_layer("RandomForwardingTable", smpc.RandomForwardingTable)
MulticastForwardingTable = attribute_layer("MulticastForwardingTable", smpc.MulticastForwardingTable)
SMInfo = attribute_layer("SMInfo", smpc.SMInfo)
VendorDiag = attribute_layer("VendorDiag", smpc.VendorDiag)
LedInfo = attribute_layer("LedInfo", smpc.LedInfo)

ClassPortInfo = attribute_layer("ClassPortInfo", perf.ClassPortInfo)
PortCounters = attribute_layer("PortCounters", perf.PortCounters)
PortCountersExtended = attribute_layer("PortCountersExtended", perf.PortCountersExtended)

SMP_ATTRIBUTE_LAYERS: dict[int, type] = {attr_id: globals()[name]
                                         for attr_id, (name, _) in smpc.SMP_ATTRIBUTES.items()}
"""attr_id -> attribute layer, one for each schema of ``smp.SMP_ATTRIBUTES``."""
PERF_ATTRIBUTE_LAYERS: dict[int, type] = {attr_id: globals()[name]
                                          for attr_id, (name, _) in perf.PERF_ATTRIBUTES.items()}
"""attr_id -> attribute layer, one for each schema of ``perf.PERF_ATTRIBUTES``."""

# Names people type for SMP attributes besides the schema's (any case, '-' and '_' ignored):
# infiniband-diags' smpquery operations and short forms.
_SMP_ATTRIBUTE_ALIASES = {
    "nodedesc": smpc.IB_SMP_ATTR_NODE_DESC,
    "pkeys": smpc.IB_SMP_ATTR_PKEY_TABLE,
    "guids": smpc.IB_SMP_ATTR_GUID_INFO,
    "sl2vl": smpc.IB_SMP_ATTR_SL_TO_VL_TABLE,
    "sltovl": smpc.IB_SMP_ATTR_SL_TO_VL_TABLE,
    "vlarb": smpc.IB_SMP_ATTR_VL_ARB_TABLE,
    "lft": smpc.IB_SMP_ATTR_LINEAR_FORWARD_TABLE,
    "rft": smpc.IB_SMP_ATTR_RANDOM_FORWARD_TABLE,
    "mft": smpc.IB_SMP_ATTR_MCAST_FORWARD_TABLE,
    "ledinfo": smpc.IB_SMP_ATTR_LED_INFO,
}


def smp_attribute(attr) -> tuple[int, type]:
    """(attr_id, layer) of an SMP attribute given as id, layer, or name.

    Names: the schema's ('PKeyTable'), kebab case ('pkey-table', 'port-info', 'node-info'), or
    smpquery's ('pkeys', 'nodedesc', 'sl2vl', 'vlarb', 'guids'); case, '-' and '_' are ignored.
    A vendor or unknown id gives a Raw layer.
    """
    if isinstance(attr, type) and issubclass(attr, Packet):
        for attr_id, layer in SMP_ATTRIBUTE_LAYERS.items():
            if layer is attr:
                return attr_id, layer
        raise CraftError(f"{attr.__name__} is not an SMP attribute layer")
    if isinstance(attr, int):
        if not 0 <= attr <= 0xFFFF:
            raise CraftError(f"attribute id {attr:#x} does not fit 16 bits")
        return attr, SMP_ATTRIBUTE_LAYERS.get(attr, Raw)
    key = re.sub(r"[-_ ]", "", str(attr)).lower()
    for attr_id, layer in SMP_ATTRIBUTE_LAYERS.items():
        if layer.__name__.lower() == key:
            return attr_id, layer
    if key in _SMP_ATTRIBUTE_ALIASES:
        return _SMP_ATTRIBUTE_ALIASES[key], SMP_ATTRIBUTE_LAYERS[_SMP_ATTRIBUTE_ALIASES[key]]
    try:
        return smp_attribute(int(key, 0))
    except ValueError:
        names = ", ".join(_kebab(layer.__name__) for layer in SMP_ATTRIBUTE_LAYERS.values())
        raise CraftError(f"unknown SMP attribute {attr!r}; one of: {names}, or a number") from None


def _kebab(name: str) -> str:
    """'PKeyTable' -> 'pkey-table', 'SLtoVLMappingTable' -> 'sl-to-vl-mapping-table'."""
    name = name.replace("PKey", "Pkey").replace("GUID", "Guid").replace("SLtoVL", "SlToVl")
    name = name.replace("VLArb", "VlArb").replace("SMInfo", "SmInfo")
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def attribute_layer_for(mad_layer: type, attr_id: int) -> type:
    """The attribute layer a MAD class layer carries for ``attr_id`` (Raw when there is none)."""
    if mad_layer in (SMP, SMPDirected):
        return SMP_ATTRIBUTE_LAYERS.get(attr_id, Raw)
    if mad_layer is PerfMAD:
        return PERF_ATTRIBUTE_LAYERS.get(attr_id, Raw)
    return Raw


# ============================================================================ helpers

def check_range(what: str, value: int, limit: int, raw: bool, width: int, hexa: bool = False) -> int:
    """``value`` if 0 <= value <= limit, else a ``CraftError``; with ``raw``, a value past
    ``limit`` is allowed and cut to ``width`` bits, as a C program storing it would."""
    if value < 0:
        raise CraftError(f"{what} {value} is negative")
    if value > limit and not raw:
        shown = f"{value:#x} is past the maximum {limit:#x}" if hexa else f"{value} is past the maximum {limit}"
        raise CraftError(f"{what} {shown} (--raw, or raw=True, sends it anyway)")
    return value & ((1 << width) - 1)


def smp_packet(method: int, attr, lid: int | None = None, dr_path: Sequence[int] | None = None,
               attr_mod: int = 0, *, slid: int | None = None, tid: int = 1, m_key: int = 0,
               hop_cnt: int | None = None, hop_ptr: int = 0, status: int = 0, sl: int = 0,
               pkey: int = ibh.IB_DEFAULT_PKEY_FULL, raw: bool = False, data=None) -> Packet:
    """An SMP on the wire: LRH / BTH / DETH / SMP or SMPDirected / attribute, CRCs computed.

    ``lid``: a LID-routed SMP (class 0x01) to that LID, from ``slid`` (default 1).
    ``dr_path``: a directed-route SMP (class 0x81) through those ports (hops 1..n; ``[]`` is
    the local port), LRH and DR LIDs permissive (0xFFFF), ``slid`` default 0xFFFF.
    Neither: a directed-route SMP to the local port. ``data`` is the attribute: a layer
    (``PortInfo(port_state=1)``), a dict of its fields, or bytes; None is the attribute's
    defaults (zeros). A hop count over 63 is an error unless ``raw`` (then ``hop_cnt`` may be
    anything up to 255).
    """
    if lid is not None and dr_path is not None:
        raise CraftError("give a LID (LID routed) or a directed-route path, not both")
    attr_id, layer = smp_attribute(attr)
    check_range("LID", lid or 0, 0xFFFF, False, 16, hexa=True)
    attr_mod = check_range("attribute modifier", attr_mod, 0xFFFFFFFF, False, 32, hexa=True)
    data = _attribute_data(layer, attr_id, data)
    if lid is not None:
        if hop_cnt is not None or hop_ptr:
            raise CraftError("a hop count or pointer goes with a directed route, not a LID")
        lrh = LRH(dlid=lid, slid=1 if slid is None else slid, sl=sl)
        mad: Packet = SMP(method=method, tid=tid, attr_id=attr_id, attr_mod=attr_mod, m_key=m_key, status=status)
    else:
        hops = list(dr_path or [])
        if len(hops) > IB_SMP_MAX_HOP_CNT:
            raise CraftError(f"a directed route has at most {IB_SMP_MAX_HOP_CNT} hops, not {len(hops)}")
        for port in hops:
            check_range("path port", port, 0xFF, False, 8)
        if hop_cnt is not None and hop_cnt > 0xFF:
            raise CraftError(f"hop count {hop_cnt} does not fit its byte")
        count = len(hops) if hop_cnt is None else check_range("hop count", hop_cnt, IB_SMP_MAX_HOP_CNT, raw, 8)
        lrh = LRH(dlid=ibh.IB_PERMISSIVE_LID, slid=ibh.IB_PERMISSIVE_LID if slid is None else slid, sl=sl)
        if madc.is_response(method):
            status |= madc.IB_SMP_DIRECTION
        mad = SMPDirected(method=method, tid=tid, attr_id=attr_id, attr_mod=attr_mod, m_key=m_key,
                          status=status, hop_ptr=hop_ptr, hop_cnt=count, initial_path=hops)
    return lrh / BTH(pkey=pkey) / DETH() / mad / data


def _attribute_data(layer: type[Packet], attr_id: int, data) -> Packet:
    """The attribute payload from a layer, a dict of the attribute's fields, bytes or None."""
    if data is None:
        data = {}
    if isinstance(data, (bytes, bytearray)):
        return Raw(bytes(data))
    if isinstance(data, dict):
        if layer is Raw:
            if data:
                raise CraftError(f"attribute {attr_id:#06x} has no schema: give its data as bytes")
            return Raw(bytes(smpc.IB_SMP_DATA_SIZE))
        names = [f.name for f in layer.fields_desc]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise CraftError(f"{layer.__name__} has no field {unknown[0]!r} (fields: {', '.join(names)})")
        return layer(**data)
    if isinstance(data, Packet):
        return data
    raise CraftError(f"attribute data is a layer, a dict of fields or bytes, not {type(data).__name__}")


def smp_get(attr, lid: int | None = None, dr_path: Sequence[int] | None = None, attr_mod: int = 0,
            **kwargs) -> Packet:
    """SubnGet(attr): ``smp_get('port-info', lid=4, attr_mod=1)``, ``smp_get('node-info', dr_path=[1, 3])``.

    Keyword arguments are ``smp_packet``'s (slid, tid, m_key, raw, data...).
    """
    return smp_packet(madc.IB_MGMT_METHOD_GET, attr, lid, dr_path, attr_mod, **kwargs)


def smp_set(attr, lid: int | None = None, dr_path: Sequence[int] | None = None, attr_mod: int = 0,
            **kwargs) -> Packet:
    """SubnSet(attr): ``smp_set('port-info', lid=4, attr_mod=1, data={'port_state': 1})``."""
    return smp_packet(madc.IB_MGMT_METHOD_SET, attr, lid, dr_path, attr_mod, **kwargs)


def pkey_attr_mod(block: int, port: int | None = None, raw: bool = False) -> int:
    """P_KeyTable attribute modifier: block in bits 0-15, switch port in bits 16-31."""
    block = check_range("P_KeyTable block", block, IB_PKEY_MAX_BLOCK, raw, 16)
    port = check_range("port", port or 0, 0xFF, raw, 16)
    return port << 16 | block


def check_pkeys(pkeys: Sequence[int], raw: bool = False) -> list[int]:
    """At most 32 P_Keys, each 16 bits (with ``raw``, larger values are cut to 16 bits)."""
    if len(pkeys) > smpc.IB_NUM_PKEY_ELEMENTS_IN_BLOCK:
        raise CraftError(f"a P_KeyTable block holds {smpc.IB_NUM_PKEY_ELEMENTS_IN_BLOCK} P_Keys, not {len(pkeys)}")
    return [check_range("P_Key", p, 0xFFFF, raw, 16, hexa=True) for p in pkeys]


def smp_set_pkeys(block: int, pkeys: Sequence[int], lid: int | None = None,
                  dr_path: Sequence[int] | None = None, port: int | None = None, *,
                  raw: bool = False, method: int = madc.IB_MGMT_METHOD_SET, **kwargs) -> Packet:
    """SubnSet(P_KeyTable) of one block: ``smp_set_pkeys(0, [0xFFFF, 0x8001], lid=4)``.

    ``pkeys`` fill the block from index 0 (the rest are 0); ``port`` (a switch port) goes in
    bits 16-31 of the attribute modifier. A P_Key over 0xFFFF or a block past 2047 is an error
    unless ``raw``.
    """
    attr_mod = pkey_attr_mod(block, port, raw)
    keys = check_pkeys(pkeys, raw)
    return smp_packet(method, smpc.IB_SMP_ATTR_PKEY_TABLE, lid, dr_path, attr_mod, raw=raw,
                      data=PKeyTable(pkeys=keys), **kwargs)


def getresp(request: Packet, data=None, *, status: int = 0) -> Packet:
    """The response an agent sends to ``request`` (a packet from the LRH, or an ERF record).

    Same TID, attribute and modifier; method GetResp for Get and Set (TrapRepress for Trap,
    else the method with the response bit); LIDs, GIDs and QPs swapped; for a directed-route
    SMP the D bit set, hop pointer and paths kept. ``data`` replaces the attribute: a layer,
    bytes, or a dict of the attribute's fields; None keeps the request's. CRCs, PktLen are
    recomputed.
    """
    if LRH not in request:
        raise CraftError("getresp needs a packet with an LRH")
    resp = request[LRH].copy()
    resp.icrc = resp.vcrc = resp.pktlen = None
    resp.slid, resp.dlid = request[LRH].dlid, request[LRH].slid
    if GRH in resp:
        resp[GRH].sgid, resp[GRH].dgid = request[GRH].dgid, request[GRH].sgid
        resp[GRH].paylen = None
    if BTH in resp and DETH in resp:
        resp[BTH].dqp, resp[DETH].sqp = request[DETH].sqp, request[BTH].dqp
    if MAD not in resp:
        raise CraftError("getresp needs a request that carries a MAD")
    mad = resp[MAD]
    method = mad.method
    if method == madc.IB_MGMT_METHOD_SET:
        mad.method = madc.IB_MGMT_METHOD_GET_RESP
    elif method == madc.IB_MGMT_METHOD_TRAP:
        mad.method = madc.IB_MGMT_METHOD_TRAP_REPRESS
    else:
        mad.method = method | madc.IB_MGMT_METHOD_RESP
    mad.status = status
    if isinstance(mad, SMPDirected):
        mad.status = status | madc.IB_SMP_DIRECTION
    if data is not None:
        data = _attribute_data(attribute_layer_for(type(mad), mad.attr_id), mad.attr_id, data)
        mad.remove_payload()
        mad.add_payload(data)
    return resp


def from_record(record: dict) -> Packet:
    """The packet of a ``madpipe decode -T json`` record (see ``encode.encode_record``)."""
    from madpipe.codecs.encode import encode_record

    return LRH(encode_record(record))


# ============================================================================ bindings

MAD_CLASS_LAYERS: dict[int, type] = {
    madc.IB_MGMT_CLASS_SUBN_LID_ROUTED: SMP,
    madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE: SMPDirected,
    madc.IB_MGMT_CLASS_SUBN_ADM: SAMAD,
    madc.IB_MGMT_CLASS_PERF_MGMT: PerfMAD,
    madc.IB_MGMT_CLASS_CM: CMMAD,
}
"""mgmt_class -> layer: ``MAD`` dissects as the class's layer (``MAD.dispatch_hook``)."""

bind_layers(ERF, LRH, type=erfc.ERF_TYPE_INFINIBAND)
bind_layers(LRH, GRH, lnh=crc.LNH_IBA_GLOBAL)
bind_layers(LRH, BTH, lnh=crc.LNH_IBA_LOCAL)
bind_layers(GRH, BTH, nxthdr=IB_GRH_NXTHDR_IBA)
bind_bottom_up(BTH, DETH, opcode=ibh.OPCODE_UD_SEND_ONLY_IMM)
bind_layers(BTH, DETH, opcode=ibh.OPCODE_UD_SEND_ONLY)
bind_layers(BTH, AETH, opcode=0x11)  # RC Acknowledge
for _attr_id, _layer in SMP_ATTRIBUTE_LAYERS.items():
    bind_layers(SMP, _layer, attr_id=_attr_id)
    bind_layers(SMPDirected, _layer, attr_id=_attr_id)
for _attr_id, _layer in PERF_ATTRIBUTE_LAYERS.items():
    bind_layers(PerfMAD, _layer, attr_id=_attr_id)

conf.l2types.register(LINKTYPE_ERF, ERF)  # ibdump's captures: ERF type 21 records
conf.l2types.register(LINKTYPE_INFINIBAND, LRH)  # raw packets from the LRH
