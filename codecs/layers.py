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

This module holds the link and header layers (``ERF``, ``LRH``, ``GRH``, ``BTH``, ``DETH``,
``ImmDt``, ``AETH``). The MAD class and attribute layers are in :mod:`madpipe.codecs.mad_layers`,
the fields they share in :mod:`madpipe.codecs.scapy_fields`, and the helpers that build SMPs
(``smp_get``, ``smp_set_pkeys``, ``getresp``...) in :mod:`madpipe.codecs.craft`.
"""
from __future__ import annotations

import struct

from scapy.config import conf
from scapy.fields import (
    BitEnumField,
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    IP6Field,
    LELongField,
    ShortField,
    StrField,
    X3BytesField,
    XBitField,
    XByteField,
    XIntField,
    XLEIntField,
    XLEShortField,
    XShortField,
)
from scapy.packet import NoPayload, Packet, bind_bottom_up, bind_layers

from madpipe.codecs import crc
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs.capture import LINKTYPE_ERF, LINKTYPE_INFINIBAND
from madpipe.codecs.erf_records import ERF_TYPE_INFINIBAND, ERF_TYPE_INFINIBAND_LINK
from madpipe.codecs.mad_layers import MAD
from madpipe.codecs.scapy_fields import AfterPayload

__all__ = ["ERF", "LRH", "GRH", "BTH", "DETH", "ImmDt", "AETH"]

IB_GRH_NXTHDR_IBA = 0x1B  # GRH NxtHdr of an IBA transport packet (IBA 8.3.1)

MAD_CLASSES_SMP = (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
LNH_NAMES = {0: "Raw", 1: "IP non-IBA", 2: "IBA local", 3: "IBA global"}
OPCODE_NAMES = {op: ibh.opcode_name(op) for op in range(256) if not ibh.opcode_name(op).startswith("opcode")}


# ============================================================================ fields

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


def _carried_mad(pkt):
    """The MAD layer inside ``pkt``'s payload, or None."""
    layer = pkt.payload
    while not isinstance(layer, NoPayload):
        if isinstance(layer, MAD):
            return layer
        layer = layer.payload
    return None


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
        BitEnumField("type", ERF_TYPE_INFINIBAND, 7, {ERF_TYPE_INFINIBAND: "InfiniBand",
                                                      ERF_TYPE_INFINIBAND_LINK: "InfiniBand link"}),
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
        ConditionalField(AfterPayload(XLEIntField("icrc", None), -crc.ICRC_SIZE - crc.VCRC_SIZE),
                         lambda pkt: crc.has_icrc(pkt.lnh)),
        AfterPayload(XLEShortField("vcrc", None), -crc.VCRC_SIZE),
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


# ============================================================================ bindings

bind_layers(ERF, LRH, type=ERF_TYPE_INFINIBAND)
bind_layers(LRH, GRH, lnh=crc.LNH_IBA_GLOBAL)
bind_layers(LRH, BTH, lnh=crc.LNH_IBA_LOCAL)
bind_layers(GRH, BTH, nxthdr=IB_GRH_NXTHDR_IBA)
bind_bottom_up(BTH, DETH, opcode=ibh.OPCODE_UD_SEND_ONLY_IMM)
bind_layers(BTH, DETH, opcode=ibh.OPCODE_UD_SEND_ONLY)
bind_layers(BTH, AETH, opcode=0x11)  # RC Acknowledge

conf.l2types.register(LINKTYPE_ERF, ERF)  # ibdump's captures: ERF type 21 records
conf.l2types.register(LINKTYPE_INFINIBAND, LRH)  # raw packets from the LRH
