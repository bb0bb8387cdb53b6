"""IBA 16.1: Performance Management (PerfMgt, class 0x04) MADs and attributes.

A PerfMgt MAD (``PerfMAD``; kernel ``struct ib_pma_mad``, python-rdma ``PMFormat``) is the
24-byte common header, 40 reserved bytes, and a 192-byte attribute data area at byte 64.
Every attribute schema here parses that 192-byte area and is exactly 192 bytes: the attribute's
own fields, then a reserved tail, so that ``build(parse(x)) == x`` for every ``x``.

Bit offsets are those of rdma-core ``libibmad/fields.c`` (IB_PC_*, IB_PC_EXT_*, IB_CPI_*), which
agree with the kernel's ``include/rdma/ib_pma.h`` and ``include/rdma/ib_mad.h``. Field names are
the IBA component names in snake_case; the docstrings give the kernel's where they differ.
"""
from __future__ import annotations

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    Construct,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Struct,
)

from madpipe.codecs.attributes import byte_run, name_in, schema_in
from madpipe.codecs.mad import IB_MGMT_CLASS_PERF_MGMT, MAD_HEADER_SIZE, MADHeader

__all__ = [
    "IB_MGMT_CLASS_PERF_MGMT",
    "IB_PMA_DATA_OFFSET",
    "IB_PMA_DATA_SIZE",
    "IB_PMA_CLASS_PORT_INFO",
    "IB_PMA_PORT_SAMPLES_CONTROL",
    "IB_PMA_PORT_SAMPLES_RESULT",
    "IB_PMA_PORT_COUNTERS",
    "IB_PMA_PORT_COUNTERS_EXT",
    "IB_PMA_PORT_SAMPLES_RESULT_EXT",
    "IB_PMA_CLASS_CAP_ALLPORTSELECT",
    "IB_PMA_CLASS_CAP_EXT_WIDTH",
    "IB_PMA_CLASS_CAP_EXT_WIDTH_NOIETF",
    "IB_PMA_CLASS_CAP_XMIT_WAIT",
    "IB_PMA_SEL_SYMBOL_ERROR",
    "IB_PMA_SEL_LINK_ERROR_RECOVERY",
    "IB_PMA_SEL_LINK_DOWNED",
    "IB_PMA_SEL_PORT_RCV_ERRORS",
    "IB_PMA_SEL_PORT_RCV_REMPHYS_ERRORS",
    "IB_PMA_SEL_PORT_RCV_SWITCH_RELAY_ERRORS",
    "IB_PMA_SEL_PORT_XMIT_DISCARDS",
    "IB_PMA_SEL_PORT_XMIT_CONSTRAINT_ERRORS",
    "IB_PMA_SEL_PORT_RCV_CONSTRAINT_ERRORS",
    "IB_PMA_SEL_LOCAL_LINK_INTEGRITY_ERRORS",
    "IB_PMA_SEL_EXCESSIVE_BUFFER_OVERRUNS",
    "IB_PMA_SEL_PORT_VL15_DROPPED",
    "IB_PMA_SEL_PORT_XMIT_DATA",
    "IB_PMA_SEL_PORT_RCV_DATA",
    "IB_PMA_SEL_PORT_XMIT_PACKETS",
    "IB_PMA_SEL_PORT_RCV_PACKETS",
    "IB_PMA_ALL_PORTS",
    "PerfMAD",
    "ClassPortInfo",
    "PortCounters",
    "PortCountersExtended",
    "RawPerfAttribute",
    "PERF_ATTRIBUTES",
    "attribute_name",
    "attribute_schema",
]

IB_PMA_DATA_OFFSET = MAD_HEADER_SIZE + 40  # 64
IB_PMA_DATA_SIZE = 192

# PerfMgt attribute IDs (include/rdma/ib_pma.h IB_PMA_*).
IB_PMA_CLASS_PORT_INFO = 0x0001
IB_PMA_PORT_SAMPLES_CONTROL = 0x0010
IB_PMA_PORT_SAMPLES_RESULT = 0x0011
IB_PMA_PORT_COUNTERS = 0x0012
IB_PMA_PORT_COUNTERS_EXT = 0x001D
IB_PMA_PORT_SAMPLES_RESULT_EXT = 0x001E

# ClassPortInfo.capability_mask bits of a PMA (ib_pma.h IB_PMA_CLASS_CAP_*).
IB_PMA_CLASS_CAP_ALLPORTSELECT = 1 << 8
IB_PMA_CLASS_CAP_EXT_WIDTH = 1 << 9
IB_PMA_CLASS_CAP_EXT_WIDTH_NOIETF = 1 << 10
IB_PMA_CLASS_CAP_XMIT_WAIT = 1 << 12

# PortCounters.counter_select bits, for PerfMgtSet (IBA 16.1.3.5 bit n = the n-th counter; ib_pma.h
# IB_PMA_SEL_*, which lacks bits 5, 7 and 8: those three names are ours, in the same pattern).
IB_PMA_SEL_SYMBOL_ERROR = 0x0001
IB_PMA_SEL_LINK_ERROR_RECOVERY = 0x0002
IB_PMA_SEL_LINK_DOWNED = 0x0004
IB_PMA_SEL_PORT_RCV_ERRORS = 0x0008
IB_PMA_SEL_PORT_RCV_REMPHYS_ERRORS = 0x0010
IB_PMA_SEL_PORT_RCV_SWITCH_RELAY_ERRORS = 0x0020
IB_PMA_SEL_PORT_XMIT_DISCARDS = 0x0040
IB_PMA_SEL_PORT_XMIT_CONSTRAINT_ERRORS = 0x0080
IB_PMA_SEL_PORT_RCV_CONSTRAINT_ERRORS = 0x0100
IB_PMA_SEL_LOCAL_LINK_INTEGRITY_ERRORS = 0x0200
IB_PMA_SEL_EXCESSIVE_BUFFER_OVERRUNS = 0x0400
IB_PMA_SEL_PORT_VL15_DROPPED = 0x0800
IB_PMA_SEL_PORT_XMIT_DATA = 0x1000
IB_PMA_SEL_PORT_RCV_DATA = 0x2000
IB_PMA_SEL_PORT_XMIT_PACKETS = 0x4000
IB_PMA_SEL_PORT_RCV_PACKETS = 0x8000

IB_PMA_ALL_PORTS = 0xFF  # port_select value for "all ports" (when IB_PMA_CLASS_CAP_ALLPORTSELECT)


PerfMAD = Struct(
    "hdr" / MADHeader,
    "resv" / Bytes(40),
    "data" / Bytes(IB_PMA_DATA_SIZE),
)
PerfMAD.__doc__ = """IBA 16.1.1 PerfMgt MAD (class 0x04), 256 bytes (struct ib_pma_mad).

hdr (MADHeader) 0 | resv 40 bytes at 24 | data[192] at 64.
"""

ClassPortInfo = BitStruct(
    "base_version" / BitsInteger(8),
    "class_version" / BitsInteger(8),
    "capability_mask" / BitsInteger(16),
    "capability_mask2" / BitsInteger(27),
    "resp_time_value" / BitsInteger(5),
    byte_run("redirect_gid", 16),
    "redirect_tc" / BitsInteger(8),
    "redirect_sl" / BitsInteger(4),
    "redirect_fl" / BitsInteger(20),
    "redirect_lid" / BitsInteger(16),
    "redirect_pkey" / BitsInteger(16),
    "resv0" / BitsInteger(8),
    "redirect_qp" / BitsInteger(24),
    "redirect_qkey" / BitsInteger(32),
    byte_run("trap_gid", 16),
    "trap_tc" / BitsInteger(8),
    "trap_sl" / BitsInteger(4),
    "trap_fl" / BitsInteger(20),
    "trap_lid" / BitsInteger(16),
    "trap_pkey" / BitsInteger(16),
    "trap_hl" / BitsInteger(8),
    "trap_qp" / BitsInteger(24),
    "trap_qkey" / BitsInteger(32),
    byte_run("resv1", IB_PMA_DATA_SIZE - 72),
)
ClassPortInfo.__doc__ = """IBA 13.4.8.1 ClassPortInfo, attribute 0x0001, 72 bytes + 120 reserved.

The common attribute, as a PMA returns it (struct ib_class_port_info; libibmad IB_CPI_*).
Bit offsets: 0 base_version:8 | 8 class_version:8 | 16 capability_mask:16 |
32 capability_mask2:27 | 59 resp_time_value:5 | byte 8 redirect_gid[16] | 192 redirect_tc:8 |
200 redirect_sl:4 | 204 redirect_fl:20 | 224 redirect_lid:16 | 240 redirect_pkey:16 |
256 resv0:8 | 264 redirect_qp:24 | 288 redirect_qkey:32 | byte 40 trap_gid[16] | 448 trap_tc:8 |
456 trap_sl:4 | 460 trap_fl:20 | 480 trap_lid:16 | 496 trap_pkey:16 | 512 trap_hl:8 |
520 trap_qp:24 | 544 trap_qkey:32 | byte 72 resv1[120].
"""

PortCounters = BitStruct(
    "resv0" / BitsInteger(8),
    "port_select" / BitsInteger(8),
    "counter_select" / BitsInteger(16),
    "symbol_error_counter" / BitsInteger(16),
    "link_error_recovery_counter" / BitsInteger(8),
    "link_downed_counter" / BitsInteger(8),
    "port_rcv_errors" / BitsInteger(16),
    "port_rcv_remote_physical_errors" / BitsInteger(16),
    "port_rcv_switch_relay_errors" / BitsInteger(16),
    "port_xmit_discards" / BitsInteger(16),
    "port_xmit_constraint_errors" / BitsInteger(8),
    "port_rcv_constraint_errors" / BitsInteger(8),
    "counter_select2" / BitsInteger(8),
    "local_link_integrity_errors" / BitsInteger(4),
    "excessive_buffer_overrun_errors" / BitsInteger(4),
    "resv1" / BitsInteger(16),
    "vl15_dropped" / BitsInteger(16),
    "port_xmit_data" / BitsInteger(32),
    "port_rcv_data" / BitsInteger(32),
    "port_xmit_pkts" / BitsInteger(32),
    "port_rcv_pkts" / BitsInteger(32),
    "port_xmit_wait" / BitsInteger(32),
    byte_run("resv2", IB_PMA_DATA_SIZE - 44),
)
PortCounters.__doc__ = """IBA 16.1.3.5 PortCounters, attribute 0x0012, 44 bytes + 148 reserved.

Bit offsets (libibmad fields.c IB_PC_*; kernel struct ib_pma_portcounters names in brackets):
0 resv0:8 | 8 port_select:8 | 16 counter_select:16 | 32 symbol_error_counter:16 |
48 link_error_recovery_counter:8 | 56 link_downed_counter:8 | 64 port_rcv_errors:16 |
80 port_rcv_remote_physical_errors:16 [port_rcv_remphys_errors] |
96 port_rcv_switch_relay_errors:16 | 112 port_xmit_discards:16 | 128 port_xmit_constraint_errors:8 |
136 port_rcv_constraint_errors:8 | 144 counter_select2:8 [reserved1] |
152 local_link_integrity_errors:4 | 156 excessive_buffer_overrun_errors:4 [link_overrun_errors] |
160 resv1:16 | 176 vl15_dropped:16 | 192 port_xmit_data:32 | 224 port_rcv_data:32 |
256 port_xmit_pkts:32 [port_xmit_packets] | 288 port_rcv_pkts:32 [port_rcv_packets] |
320 port_xmit_wait:32 | byte 44 resv2[148].
port_xmit_data and port_rcv_data count 4-byte words.
"""

PortCountersExtended = Struct(
    "resv0" / Int8ub,
    "port_select" / Int8ub,
    "counter_select" / Int16ub,
    "resv1" / Int32ub,
    "port_xmit_data" / Int64ub,
    "port_rcv_data" / Int64ub,
    "port_xmit_pkts" / Int64ub,
    "port_rcv_pkts" / Int64ub,
    "port_unicast_xmit_pkts" / Int64ub,
    "port_unicast_rcv_pkts" / Int64ub,
    "port_multicast_xmit_pkts" / Int64ub,
    "port_multicast_rcv_pkts" / Int64ub,
    "resv2" / Bytes(IB_PMA_DATA_SIZE - 72),
)
PortCountersExtended.__doc__ = """IBA 16.1.4.11 PortCountersExtended, attribute 0x001D, 72 + 120 bytes.

0 resv0 | 1 port_select | 2 counter_select be16 | 4 resv1 be32 | 8 port_xmit_data be64 |
16 port_rcv_data | 24 port_xmit_pkts | 32 port_rcv_pkts | 40 port_unicast_xmit_pkts |
48 port_unicast_rcv_pkts | 56 port_multicast_xmit_pkts | 64 port_multicast_rcv_pkts |
72 resv2[120] (struct ib_pma_portcounters_ext; libibmad IB_PC_EXT_*).
"""

RawPerfAttribute = Struct(
    "data" / Bytes(IB_PMA_DATA_SIZE),
)
RawPerfAttribute.__doc__ = """A PerfMgt attribute madpipe has no schema for: the 192 data bytes."""


PERF_ATTRIBUTES: dict[int, tuple[str, Construct]] = {
    IB_PMA_CLASS_PORT_INFO: ("ClassPortInfo", ClassPortInfo),
    IB_PMA_PORT_COUNTERS: ("PortCounters", PortCounters),
    IB_PMA_PORT_COUNTERS_EXT: ("PortCountersExtended", PortCountersExtended),
}
"""attr_id -> (name, schema): the name is also the schema's name in this module."""



def attribute_name(attr_id: int) -> str:
    """Name of a PerfMgt attribute (the schema's name), 'Vendor0xff01' for vendor IDs, else 'Attr0x....'."""
    return name_in(PERF_ATTRIBUTES, attr_id)


def attribute_schema(attr_id: int, compiled: bool = False) -> Construct:
    """Schema of a PerfMgt attribute's 192-byte data area; RawPerfAttribute when the ID is unknown.

    ``compiled=True`` returns the compiled schema, built on first use and cached.
    """
    return schema_in(PERF_ATTRIBUTES, RawPerfAttribute, attr_id, compiled)
