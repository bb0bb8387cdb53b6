"""Scapy layers for MADs: the class layers (SMP, SMPDirected, PerfMAD, SAMAD, CMMAD) and the attributes.

``MAD`` dissects as the layer of its management class (``MAD_CLASS_LAYERS``). The attribute
layers (``NodeInfo``, ``PortInfo``, ``PKeyTable``...) are generated from the construct Structs of
``smp`` and ``perf`` themselves (:func:`attribute_layer`), so a field is never written twice; an
attribute is the payload of its class layer, bound by attr_id. The SMP data area sits in the
middle of an SMP (bytes 64-127): the fields that follow it on the wire (``resv2``,
``initial_path``, ``return_path``) are fields of the SMP layer, placed after the 64 data bytes
when it is built. See :mod:`madpipe.codecs.layers` for the packet around a MAD.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Sequence

import construct as cs
from scapy.config import conf
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    IntField,
    LongField,
    ShortField,
    StrFixedLenField,
    ThreeBytesField,
    X3BytesField,
    XBitField,
    XByteField,
    XIntField,
    XLongField,
    XShortEnumField,
    XShortField,
)
from scapy.packet import Packet, Raw, bind_layers

from madpipe.codecs import gmp, perf
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.scapy_fields import (
    AfterPayload,
    DRPathField,
    FixedFieldList,
    FixedPacketList,
    HopCountField,
    path_hops,
)

__all__ = [
    "MAD", "SMP", "SMPDirected", "PerfMAD", "SAMAD", "CMMAD",
    "Notice", "NodeDescription", "NodeInfo", "SwitchInfo", "GUIDInfo", "PortInfo", "PKeyTable",
    "SLtoVLMappingTable", "VLArbElement", "VLArbitrationTable", "LinearForwardingTable",
    "RandomForwardingEntry", "RandomForwardingTable", "MulticastForwardingTable", "SMInfo",
    "VendorDiag", "LedInfo", "ClassPortInfo", "PortCounters", "PortCountersExtended",
    "SMP_ATTRIBUTE_LAYERS", "PERF_ATTRIBUTE_LAYERS", "MAD_CLASS_LAYERS",
    "attribute_layer", "attribute_layer_for", "scapy_fields", "IB_SMP_MAX_HOP_CNT",
]

IB_SMP_MAX_HOP_CNT = 63  # hop_cnt < 64 (IBA 14.2.2, C14-10); path entry 0 is unused

SMP_ATTRIBUTE_NAMES = {attr_id: name for attr_id, (name, _) in smpc.SMP_ATTRIBUTES.items()}
PERF_ATTRIBUTE_NAMES = dict(gmp.PERF_ATTRIBUTE_NAMES)


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
            return FixedPacketList(name, _ELEMENT_LAYERS[id(con.subcon)], con.count)
        return FixedFieldList(name, _scapy_field(name, con.subcon), con.count)
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
        fields += [ByteField("hop_ptr", 0), HopCountField("hop_cnt", None)]
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
    """A MAD class whose 64-byte attribute area is followed by more fields (``AfterPayload``)."""

    data_size = smpc.IB_SMP_DATA_SIZE

    def post_dissect(self, s):
        self.raw_packet_cache = None  # the tail fields are not where the header is: rebuild
        return s

    def post_build(self, p, pay):
        tail = b"".join(f.fld.addfield(self, b"", self.getfieldval(f.name))
                        for f in self.fields_desc if isinstance(f, AfterPayload))
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
        AfterPayload(StrFixedLenField("resv2", bytes(128), 128), smpc.IB_SMP_DATA_SIZE),
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
        AfterPayload(DRPathField("initial_path"), smpc.IB_SMP_DATA_SIZE),
        AfterPayload(DRPathField("return_path"), smpc.IB_SMP_DATA_SIZE),
    ]
    initial_path: bytes  # what reading these fields gives (scapy makes them at run time: mypy is told)
    return_path: bytes

    def _hops(self, path: bytes) -> list[int]:
        count = self.hop_cnt if self.hop_cnt is not None else len(path_hops(self.initial_path))
        return list(path[1:1 + min(count, IB_SMP_MAX_HOP_CNT)])

    @property
    def initial_hops(self) -> list[int]:
        """initial_path entries 1..hop_cnt: the ports of the route out."""
        return self._hops(self.initial_path)

    @initial_hops.setter
    def initial_hops(self, hops: Sequence[int]) -> None:
        self.initial_path = list(hops)  # type: ignore[assignment]  # DRPathField.any2i makes the bytes
        self.hop_cnt = len(hops)

    @property
    def return_hops(self) -> list[int]:
        """return_path entries 1..hop_cnt: the ports of the route back."""
        return self._hops(self.return_path)

    @return_hops.setter
    def return_hops(self, hops: Sequence[int]) -> None:
        self.return_path = list(hops)  # type: ignore[assignment]  # DRPathField.any2i makes the bytes

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


def attribute_layer_for(mad_layer: type, attr_id: int) -> type:
    """The attribute layer a MAD class layer carries for ``attr_id`` (Raw when there is none)."""
    if mad_layer in (SMP, SMPDirected):
        return SMP_ATTRIBUTE_LAYERS.get(attr_id, Raw)
    if mad_layer is PerfMAD:
        return PERF_ATTRIBUTE_LAYERS.get(attr_id, Raw)
    return Raw


# ============================================================================ bindings

MAD_CLASS_LAYERS: dict[int, type] = {
    madc.IB_MGMT_CLASS_SUBN_LID_ROUTED: SMP,
    madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE: SMPDirected,
    madc.IB_MGMT_CLASS_SUBN_ADM: SAMAD,
    madc.IB_MGMT_CLASS_PERF_MGMT: PerfMAD,
    madc.IB_MGMT_CLASS_CM: CMMAD,
}
"""mgmt_class -> layer: ``MAD`` dissects as the class's layer (``MAD.dispatch_hook``)."""

for _attr_id, _layer in SMP_ATTRIBUTE_LAYERS.items():
    bind_layers(SMP, _layer, attr_id=_attr_id)
    bind_layers(SMPDirected, _layer, attr_id=_attr_id)
for _attr_id, _layer in PERF_ATTRIBUTE_LAYERS.items():
    bind_layers(PerfMAD, _layer, attr_id=_attr_id)
