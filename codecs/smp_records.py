"""IBA 14.2.5: the SMP attributes that describe a node, a port or the SM (Notice,
NodeDescription, NodeInfo, SwitchInfo, PortInfo, SMInfo, VendorDiag, LedInfo). Import them from
:mod:`madpipe.codecs.smp`, with the other attributes (the rules of its module docstring hold
here: 64 bytes each, reserved bits as fields, field offsets those of libibmad's fields.c).
"""
from __future__ import annotations

from construct import BitsInteger, BitStruct, Bytes, Int8ub, Int16ub, Int24ub, Int32ub, Int64ub, Struct

from madpipe.codecs.attributes import byte_run

_NOTICE_FIELDS = (
    "is_generic" / BitsInteger(1),
    "notice_type" / BitsInteger(7),
    "producer_type" / BitsInteger(24),  # VendorID when is_generic == 0
    "trap_number" / BitsInteger(16),  # DeviceID when is_generic == 0
    "issuer_lid" / BitsInteger(16),
    "notice_toggle" / BitsInteger(1),
    "notice_count" / BitsInteger(15),
    byte_run("data_details", 54),
)

Notice = BitStruct(*_NOTICE_FIELDS)
Notice.__doc__ = """IBA 13.4.8.2 / 14.2.5.1 Notice, attribute 0x0002, in an SMP (SubnTrap), 64 bytes.

bit 0 is_generic:1 | 1 notice_type:7 | 8 producer_type:24 (VendorID if not generic) |
32 trap_number:16 (DeviceID if not generic) | 48 issuer_lid:16 | 64 notice_toggle:1 |
65 notice_count:15 | 80 data_details: 54 bytes (trap-specific, bytes 10-63).
The attribute's IssuerGID (bytes 64-79) does not fit in an SMP's 64-byte data area and is not
sent there (kernel struct ib_mad_notice_attr is 64 bytes); see NoticeWithIssuerGID for the
80-byte form used by SubnAdm Report.
"""

NoticeWithIssuerGID = BitStruct(*_NOTICE_FIELDS, byte_run("issuer_gid", 16))
NoticeWithIssuerGID.__doc__ = """IBA 13.4.8.2 Notice, attribute 0x0002, 80-byte form (SubnAdm Report).

Notice followed by issuer_gid, 16 bytes at byte 64 (opensm ib_mad_notice_attr_t).
"""

NodeDescription = Struct(
    "node_string" / Bytes(64),
)
NodeDescription.__doc__ = """IBA 14.2.5.2 NodeDescription, attribute 0x0010, 64 bytes.

node_string: 64 bytes of UTF-8, NUL-padded (not necessarily NUL-terminated); kept as bytes so that
the round trip is exact. node_description_text() gives the string.
"""


def node_description_text(node_string: bytes) -> str:
    """NodeDescription.node_string as text: up to the first NUL, invalid UTF-8 replaced."""
    return node_string.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


NodeInfo = Struct(
    "base_version" / Int8ub,
    "class_version" / Int8ub,
    "node_type" / Int8ub,
    "num_ports" / Int8ub,
    "sys_guid" / Int64ub,
    "node_guid" / Int64ub,
    "port_guid" / Int64ub,
    "partition_cap" / Int16ub,
    "device_id" / Int16ub,
    "revision" / Int32ub,
    "local_port_num" / Int8ub,
    "vendor_id" / Int24ub,
    "resv0" / Bytes(24),
)
NodeInfo.__doc__ = """IBA 14.2.5.3 NodeInfo, attribute 0x0011, 40 bytes + 24 reserved (struct ib_node_info).

0 base_version | 1 class_version | 2 node_type | 3 num_ports | 4 sys_guid be64 |
12 node_guid be64 | 20 port_guid be64 | 28 partition_cap be16 | 30 device_id be16 |
32 revision be32 | 36 local_port_num | 37 vendor_id be24 | 40 resv0[24].
"""

SwitchInfo = BitStruct(
    "linear_fdb_cap" / BitsInteger(16),
    "random_fdb_cap" / BitsInteger(16),
    "multicast_fdb_cap" / BitsInteger(16),
    "linear_fdb_top" / BitsInteger(16),
    "default_port" / BitsInteger(8),
    "default_multicast_primary_port" / BitsInteger(8),
    "default_multicast_not_primary_port" / BitsInteger(8),
    "life_time_value" / BitsInteger(5),
    "port_state_change" / BitsInteger(1),
    "optimized_sl_to_vl_mapping_programming" / BitsInteger(2),
    "lids_per_port" / BitsInteger(16),
    "partition_enforcement_cap" / BitsInteger(16),
    "inbound_enforcement_cap" / BitsInteger(1),
    "outbound_enforcement_cap" / BitsInteger(1),
    "filter_raw_inbound_cap" / BitsInteger(1),
    "filter_raw_outbound_cap" / BitsInteger(1),
    "enhanced_port0" / BitsInteger(1),
    "resv0" / BitsInteger(3),
    "resv1" / BitsInteger(8),
    "multicast_fdb_top" / BitsInteger(16),
    byte_run("resv2", 44),
)
SwitchInfo.__doc__ = """IBA 14.2.5.4 SwitchInfo, attribute 0x0012, 20 bytes + 44 reserved.

Bit offsets (libibmad fields.c IB_SW_*): 0 linear_fdb_cap:16 | 16 random_fdb_cap:16 |
32 multicast_fdb_cap:16 | 48 linear_fdb_top:16 | 64 default_port:8 |
72 default_multicast_primary_port:8 | 80 default_multicast_not_primary_port:8 |
88 life_time_value:5 | 93 port_state_change:1 | 94 optimized_sl_to_vl_mapping_programming:2 |
96 lids_per_port:16 | 112 partition_enforcement_cap:16 | 128 inbound_enforcement_cap:1 |
129 outbound_enforcement_cap:1 | 130 filter_raw_inbound_cap:1 | 131 filter_raw_outbound_cap:1 |
132 enhanced_port0:1 | 133 resv0:3 | 136 resv1:8 | 144 multicast_fdb_top:16 | byte 20 resv2[44].
"""

PortInfo = BitStruct(
    "m_key" / BitsInteger(64),
    "gid_prefix" / BitsInteger(64),
    "lid" / BitsInteger(16),
    "master_sm_lid" / BitsInteger(16),
    "capability_mask" / BitsInteger(32),
    "diag_code" / BitsInteger(16),
    "m_key_lease_period" / BitsInteger(16),
    "local_port_num" / BitsInteger(8),
    "link_width_enabled" / BitsInteger(8),
    "link_width_supported" / BitsInteger(8),
    "link_width_active" / BitsInteger(8),
    "link_speed_supported" / BitsInteger(4),
    "port_state" / BitsInteger(4),
    "phys_port_state" / BitsInteger(4),
    "link_down_default_state" / BitsInteger(4),
    "m_key_protect_bits" / BitsInteger(2),
    "resv0" / BitsInteger(3),
    "lmc" / BitsInteger(3),
    "link_speed_active" / BitsInteger(4),
    "link_speed_enabled" / BitsInteger(4),
    "neighbor_mtu" / BitsInteger(4),
    "master_sm_sl" / BitsInteger(4),
    "vl_cap" / BitsInteger(4),
    "init_type" / BitsInteger(4),
    "vl_high_limit" / BitsInteger(8),
    "vl_arb_high_cap" / BitsInteger(8),
    "vl_arb_low_cap" / BitsInteger(8),
    "init_type_reply" / BitsInteger(4),
    "mtu_cap" / BitsInteger(4),
    "vl_stall_count" / BitsInteger(3),
    "hoq_life" / BitsInteger(5),
    "operational_vls" / BitsInteger(4),
    "partition_enforcement_inbound" / BitsInteger(1),
    "partition_enforcement_outbound" / BitsInteger(1),
    "filter_raw_inbound" / BitsInteger(1),
    "filter_raw_outbound" / BitsInteger(1),
    "m_key_violations" / BitsInteger(16),
    "p_key_violations" / BitsInteger(16),
    "q_key_violations" / BitsInteger(16),
    "guid_cap" / BitsInteger(8),
    "client_reregister" / BitsInteger(1),
    "multicast_pkey_trap_suppression_enabled" / BitsInteger(2),
    "subnet_timeout" / BitsInteger(5),
    "resv1" / BitsInteger(3),
    "resp_time_value" / BitsInteger(5),
    "local_phy_errors" / BitsInteger(4),
    "overrun_errors" / BitsInteger(4),
    "max_credit_hint" / BitsInteger(16),
    "resv2" / BitsInteger(8),
    "link_round_trip_latency" / BitsInteger(24),
    "capability_mask2" / BitsInteger(16),
    "link_speed_ext_active" / BitsInteger(4),
    "link_speed_ext_supported" / BitsInteger(4),
    "resv3" / BitsInteger(3),
    "link_speed_ext_enabled" / BitsInteger(5),
)
PortInfo.__doc__ = """IBA 14.2.5.6 PortInfo, attribute 0x0015, 64 bytes; attr_mod = port number.

Bit offsets (libibmad fields.c IB_PORT_*; kernel struct ib_port_info names in brackets):
0 m_key:64 | 64 gid_prefix:64 | 128 lid:16 | 144 master_sm_lid:16 [sm_lid] |
160 capability_mask:32 [cap_mask] | 192 diag_code:16 | 208 m_key_lease_period:16 |
224 local_port_num:8 | 232 link_width_enabled:8 | 240 link_width_supported:8 |
248 link_width_active:8 | 256 link_speed_supported:4 | 260 port_state:4 (LinkState) |
264 phys_port_state:4 (PortPhysicalState) | 268 link_down_default_state:4 |
272 m_key_protect_bits:2 | 274 resv0:3 | 277 lmc:3 | 280 link_speed_active:4 |
284 link_speed_enabled:4 | 288 neighbor_mtu:4 | 292 master_sm_sl:4 | 296 vl_cap:4 |
300 init_type:4 | 304 vl_high_limit:8 | 312 vl_arb_high_cap:8 | 320 vl_arb_low_cap:8 |
328 init_type_reply:4 | 332 mtu_cap:4 | 336 vl_stall_count:3 | 339 hoq_life:5 |
344 operational_vls:4 | 348 partition_enforcement_inbound:1 | 349 partition_enforcement_outbound:1 |
350 filter_raw_inbound:1 | 351 filter_raw_outbound:1 | 352 m_key_violations:16 |
368 p_key_violations:16 | 384 q_key_violations:16 | 400 guid_cap:8 | 408 client_reregister:1 |
409 multicast_pkey_trap_suppression_enabled:2 | 411 subnet_timeout:5 | 416 resv1:3 |
419 resp_time_value:5 | 424 local_phy_errors:4 | 428 overrun_errors:4 | 432 max_credit_hint:16 |
448 resv2:8 | 456 link_round_trip_latency:24 | 480 capability_mask2:16 |
496 link_speed_ext_active:4 | 500 link_speed_ext_supported:4 | 504 resv3:3 |
507 link_speed_ext_enabled:5.
"""

SMInfo = BitStruct(
    "guid" / BitsInteger(64),
    "sm_key" / BitsInteger(64),
    "act_count" / BitsInteger(32),
    "priority" / BitsInteger(4),
    "sm_state" / BitsInteger(4),
    byte_run("resv0", 43),
)
SMInfo.__doc__ = """IBA 14.2.5.13 SMInfo, attribute 0x0020, 21 bytes + 43 reserved.

0 guid be64 | 8 sm_key be64 | 16 act_count be32 | byte 20: priority:4, sm_state:4 | 21 resv0[43].
"""

VendorDiag = Struct(
    "next_index" / Int16ub,
    "resv0" / Int16ub,
    "diag_data" / Bytes(60),
)
VendorDiag.__doc__ = """IBA 14.2.5.14 VendorDiag, attribute 0x0030, 64 bytes.

0 next_index be16 | 2 resv0 be16 | 4 diag_data[60] (vendor-specific).
"""

LedInfo = BitStruct(
    "led_mask" / BitsInteger(1),
    "resv0" / BitsInteger(31),
    byte_run("resv1", 60),
)
LedInfo.__doc__ = """IBA 14.2.5.15 LedInfo, attribute 0x0031, 4 bytes + 60 reserved.

bit 0 led_mask:1 (1 = LED on) | 1 resv0:31 | byte 4 resv1[60].
"""
