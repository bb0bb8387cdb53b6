"""SMP formats and attributes (madpipe.codecs.smp): sizes, offsets, golden vectors, round trips.

The field tables below are written from rdma-core libibmad/fields.c (bit offsets counted from the
most significant bit of byte 0 of the data area) and python-rdma's codegen/iba_14.xml, not from
smp.py, so they check the schemas against an independent source.
"""
from pathlib import Path

import pytest
from helpers import check_field_table, common, strip
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import smp
from madpipe.codecs.mad import MADHeader
from madpipe.codecs.smp import (
    SMP,
    SMP_ATTRIBUTES,
    GUIDInfo,
    LinearForwardingTable,
    MulticastForwardingTable,
    NodeDescription,
    Notice,
    PKeyTable,
    PortInfo,
    RandomForwardingTable,
    RawAttribute,
    SLtoVLMappingTable,
    SMInfo,
    SMPDirected,
    SMPDirectedHeader,
    VLArbitrationTable,
    attribute_name,
    attribute_schema,
    pkey_block,
    pkey_switch_port,
)

PCAP = Path(__file__).resolve().parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap"


# --------------------------------------------------------------------------- bit helpers



# --------------------------------------------------------------------------- field tables

PORT_INFO_FIELDS = [
    ("m_key", 0, 64),
    ("gid_prefix", 64, 64),
    ("lid", 128, 16),
    ("master_sm_lid", 144, 16),
    ("capability_mask", 160, 32),
    ("diag_code", 192, 16),
    ("m_key_lease_period", 208, 16),
    ("local_port_num", 224, 8),
    ("link_width_enabled", 232, 8),
    ("link_width_supported", 240, 8),
    ("link_width_active", 248, 8),
    ("link_speed_supported", 256, 4),
    ("port_state", 260, 4),
    ("phys_port_state", 264, 4),
    ("link_down_default_state", 268, 4),
    ("m_key_protect_bits", 272, 2),
    ("resv0", 274, 3),
    ("lmc", 277, 3),
    ("link_speed_active", 280, 4),
    ("link_speed_enabled", 284, 4),
    ("neighbor_mtu", 288, 4),
    ("master_sm_sl", 292, 4),
    ("vl_cap", 296, 4),
    ("init_type", 300, 4),
    ("vl_high_limit", 304, 8),
    ("vl_arb_high_cap", 312, 8),
    ("vl_arb_low_cap", 320, 8),
    ("init_type_reply", 328, 4),
    ("mtu_cap", 332, 4),
    ("vl_stall_count", 336, 3),
    ("hoq_life", 339, 5),
    ("operational_vls", 344, 4),
    ("partition_enforcement_inbound", 348, 1),
    ("partition_enforcement_outbound", 349, 1),
    ("filter_raw_inbound", 350, 1),
    ("filter_raw_outbound", 351, 1),
    ("m_key_violations", 352, 16),
    ("p_key_violations", 368, 16),
    ("q_key_violations", 384, 16),
    ("guid_cap", 400, 8),
    ("client_reregister", 408, 1),
    ("multicast_pkey_trap_suppression_enabled", 409, 2),
    ("subnet_timeout", 411, 5),
    ("resv1", 416, 3),
    ("resp_time_value", 419, 5),
    ("local_phy_errors", 424, 4),
    ("overrun_errors", 428, 4),
    ("max_credit_hint", 432, 16),
    ("resv2", 448, 8),
    ("link_round_trip_latency", 456, 24),
    ("capability_mask2", 480, 16),
    ("link_speed_ext_active", 496, 4),
    ("link_speed_ext_supported", 500, 4),
    ("resv3", 504, 3),
    ("link_speed_ext_enabled", 507, 5),
]

NODE_INFO_FIELDS = [
    ("base_version", 0, 8),
    ("class_version", 8, 8),
    ("node_type", 16, 8),
    ("num_ports", 24, 8),
    ("sys_guid", 32, 64),
    ("node_guid", 96, 64),
    ("port_guid", 160, 64),
    ("partition_cap", 224, 16),
    ("device_id", 240, 16),
    ("revision", 256, 32),
    ("local_port_num", 288, 8),
    ("vendor_id", 296, 24),
    ("resv0", 320, 192),
]

SWITCH_INFO_FIELDS = [
    ("linear_fdb_cap", 0, 16),
    ("random_fdb_cap", 16, 16),
    ("multicast_fdb_cap", 32, 16),
    ("linear_fdb_top", 48, 16),
    ("default_port", 64, 8),
    ("default_multicast_primary_port", 72, 8),
    ("default_multicast_not_primary_port", 80, 8),
    ("life_time_value", 88, 5),
    ("port_state_change", 93, 1),
    ("optimized_sl_to_vl_mapping_programming", 94, 2),
    ("lids_per_port", 96, 16),
    ("partition_enforcement_cap", 112, 16),
    ("inbound_enforcement_cap", 128, 1),
    ("outbound_enforcement_cap", 129, 1),
    ("filter_raw_inbound_cap", 130, 1),
    ("filter_raw_outbound_cap", 131, 1),
    ("enhanced_port0", 132, 1),
    ("resv0", 133, 3),
    ("resv1", 136, 8),
    ("multicast_fdb_top", 144, 16),
    ("resv2", 160, 352),
]

NOTICE_FIELDS = [
    ("is_generic", 0, 1),
    ("notice_type", 1, 7),
    ("producer_type", 8, 24),
    ("trap_number", 32, 16),
    ("issuer_lid", 48, 16),
    ("notice_toggle", 64, 1),
    ("notice_count", 65, 15),
    ("data_details", 80, 432),
]

SM_INFO_FIELDS = [
    ("guid", 0, 64),
    ("sm_key", 64, 64),
    ("act_count", 128, 32),
    ("priority", 160, 4),
    ("sm_state", 164, 4),
    ("resv0", 168, 344),
]

VENDOR_DIAG_FIELDS = [("next_index", 0, 16), ("resv0", 16, 16), ("diag_data", 32, 480)]
LED_INFO_FIELDS = [("led_mask", 0, 1), ("resv0", 1, 31), ("resv1", 32, 480)]
NODE_DESCRIPTION_FIELDS = [("node_string", 0, 512)]

DR_HEADER_FIELDS = [
    ("base_version", 0, 8),
    ("mgmt_class", 8, 8),
    ("class_version", 16, 8),
    ("method", 24, 8),
    ("status", 32, 16),
    ("hop_ptr", 48, 8),
    ("hop_cnt", 56, 8),
    ("tid", 64, 64),
    ("attr_id", 128, 16),
    ("resv", 144, 16),
    ("attr_mod", 160, 32),
]

FIELD_TABLES = {
    "PortInfo": (PortInfo, PORT_INFO_FIELDS, 64),
    "NodeInfo": (smp.NodeInfo, NODE_INFO_FIELDS, 64),
    "SwitchInfo": (smp.SwitchInfo, SWITCH_INFO_FIELDS, 64),
    "Notice": (Notice, NOTICE_FIELDS, 64),
    "NoticeWithIssuerGID": (smp.NoticeWithIssuerGID, NOTICE_FIELDS + [("issuer_gid", 512, 128)], 80),
    "SMInfo": (SMInfo, SM_INFO_FIELDS, 64),
    "VendorDiag": (smp.VendorDiag, VENDOR_DIAG_FIELDS, 64),
    "LedInfo": (smp.LedInfo, LED_INFO_FIELDS, 64),
    "NodeDescription": (NodeDescription, NODE_DESCRIPTION_FIELDS, 64),
    "RawAttribute": (RawAttribute, [("data", 0, 512)], 64),
    "SMPDirectedHeader": (SMPDirectedHeader, DR_HEADER_FIELDS, 24),
}


@pytest.mark.parametrize("name", sorted(FIELD_TABLES))
def test_field_offsets(name):
    schema, table, size = FIELD_TABLES[name]
    check_field_table(schema, table, size)


# --------------------------------------------------------------------------- sizes, registry

def test_sizes():
    assert SMP.sizeof() == 256
    assert SMPDirected.sizeof() == 256
    assert SMPDirectedHeader.sizeof() == MADHeader.sizeof() == 24
    for name, schema in SMP_ATTRIBUTES.values():
        assert schema.sizeof() == 64, name
    assert RawAttribute.sizeof() == 64
    assert smp.NoticeWithIssuerGID.sizeof() == 80
    assert smp.VLArbElement.sizeof() == 2
    assert smp.RandomForwardingEntry.sizeof() == 4


def test_registry_ids_and_names():
    expected = {
        0x0002: "Notice",
        0x0010: "NodeDescription",
        0x0011: "NodeInfo",
        0x0012: "SwitchInfo",
        0x0014: "GUIDInfo",
        0x0015: "PortInfo",
        0x0016: "PKeyTable",
        0x0017: "SLtoVLMappingTable",
        0x0018: "VLArbitrationTable",
        0x0019: "LinearForwardingTable",
        0x001A: "RandomForwardingTable",
        0x001B: "MulticastForwardingTable",
        0x0020: "SMInfo",
        0x0030: "VendorDiag",
        0x0031: "LedInfo",
    }
    assert {k: v[0] for k, v in SMP_ATTRIBUTES.items()} == expected
    for attr_id, (name, schema) in SMP_ATTRIBUTES.items():
        assert getattr(smp, name) is schema
        assert attribute_name(attr_id) == name
        assert attribute_schema(attr_id) is schema
        # docstring cites the IBA section and the attribute id
        assert schema.__doc__.startswith("IBA ")
        assert f"attribute 0x{attr_id:04X}" in schema.__doc__


def test_kernel_constants():
    assert smp.IB_SMP_ATTR_NOTICE == 0x0002
    assert smp.IB_SMP_ATTR_NODE_DESC == 0x0010
    assert smp.IB_SMP_ATTR_NODE_INFO == 0x0011
    assert smp.IB_SMP_ATTR_SWITCH_INFO == 0x0012
    assert smp.IB_SMP_ATTR_GUID_INFO == 0x0014
    assert smp.IB_SMP_ATTR_PORT_INFO == 0x0015
    assert smp.IB_SMP_ATTR_PKEY_TABLE == 0x0016
    assert smp.IB_SMP_ATTR_SL_TO_VL_TABLE == 0x0017
    assert smp.IB_SMP_ATTR_VL_ARB_TABLE == 0x0018
    assert smp.IB_SMP_ATTR_LINEAR_FORWARD_TABLE == 0x0019
    assert smp.IB_SMP_ATTR_RANDOM_FORWARD_TABLE == 0x001A
    assert smp.IB_SMP_ATTR_MCAST_FORWARD_TABLE == 0x001B
    assert smp.IB_SMP_ATTR_SM_INFO == 0x0020
    assert smp.IB_SMP_ATTR_VENDOR_DIAG == 0x0030
    assert smp.IB_SMP_ATTR_LED_INFO == 0x0031
    assert smp.IB_SMP_DIRECTION == 0x8000


def test_unknown_attributes_decode_raw():
    assert attribute_name(0x00FF) == "Attr0x00ff"
    assert attribute_name(0xFF10) == "Vendor0xff10"
    assert attribute_schema(0x00FF) is RawAttribute
    assert attribute_schema(0xFF10) is RawAttribute
    data = bytes(range(64))
    assert attribute_schema(0xFF10).parse(data).data == data
    assert attribute_schema(0xFF10, compiled=True).parse(data).data == data


def test_compiled_schemas_are_cached():
    first = attribute_schema(smp.IB_SMP_ATTR_PKEY_TABLE, compiled=True)
    assert attribute_schema(smp.IB_SMP_ATTR_PKEY_TABLE, compiled=True) is first
    assert first is not PKeyTable
    assert attribute_schema(0x00FE, compiled=True) is attribute_schema(0xFF77, compiled=True)


def test_pkey_attr_mod():
    assert pkey_block(0x00050003) == 3
    assert pkey_switch_port(0x00050003) == 5
    assert pkey_block(0xFFFFFFFF) == 0xFFFF
    assert pkey_switch_port(0xFFFFFFFF) == 0xFFFF
    assert pkey_block(0) == pkey_switch_port(0) == 0


# --------------------------------------------------------------------------- SMP formats

def test_lid_routed_smp_offsets():
    raw = SMP.build(
        dict(
            hdr=dict(
                base_version=1, mgmt_class=0x01, class_version=1, method=0x02, status=0,
                class_specific=0, tid=0x0102030405060708, attr_id=0x0016, resv=0, attr_mod=0x00020001,
            ),
            m_key=0x1122334455667788,
            resv=bytes(32),
            data=b"\xAA" * 64,
            resv2=bytes(128),
        )
    )
    assert len(raw) == 256
    assert raw[:4] == b"\x01\x01\x01\x02"
    assert raw[8:16] == bytes.fromhex("0102030405060708")
    assert raw[16:18] == b"\x00\x16" and raw[20:24] == bytes.fromhex("00020001")
    assert raw[24:32] == bytes.fromhex("1122334455667788")
    assert raw[32:64] == bytes(32)
    assert raw[64:128] == b"\xAA" * 64
    assert raw[128:] == bytes(128)
    common(SMP, raw, size=256)


def test_directed_smp_offsets():
    value = dict(
        hdr=dict(
            base_version=1, mgmt_class=0x81, class_version=1, method=0x81, status=0x8000 | 0x001C,
            hop_ptr=3, hop_cnt=5, tid=0xDEADBEEF00000001, attr_id=0x0015, resv=0, attr_mod=7,
        ),
        m_key=0x0123456789ABCDEF,
        dr_slid=0x1234,
        dr_dlid=0x5678,
        resv=bytes(28),
        data=b"\xAA" * 64,
        initial_path=bytes(range(64)),
        return_path=bytes(range(64, 128)),
    )
    raw = SMPDirected.build(value)
    assert raw[4:6] == b"\x80\x1c"
    assert raw[6] == 3 and raw[7] == 5  # hop_ptr, hop_cnt (struct ib_smp)
    assert raw[24:32] == bytes.fromhex("0123456789abcdef")
    assert raw[32:34] == b"\x12\x34"  # dr_slid at 32
    assert raw[34:36] == b"\x56\x78"  # dr_dlid at 34
    assert raw[36:64] == bytes(28)
    assert raw[64:128] == b"\xAA" * 64
    assert raw[128:192] == bytes(range(64))  # initial_path at 128
    assert raw[192:256] == bytes(range(64, 128))  # return_path at 192
    parsed = common(SMPDirected, raw, value=value, size=256)
    assert smp.smp_direction(parsed.hdr.status) == 1
    assert smp.dr_status(parsed.hdr.status) == 0x001C


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=24, max_size=24))
def test_directed_header_keeps_mad_header_names(raw):
    common_hdr = MADHeader.parse(raw)
    dr_hdr = SMPDirectedHeader.parse(raw)
    for name in ("base_version", "mgmt_class", "class_version", "method", "status", "tid", "attr_id",
                 "resv", "attr_mod"):
        assert dr_hdr[name] == common_hdr[name]
    assert common_hdr.class_specific == dr_hdr.hop_ptr << 8 | dr_hdr.hop_cnt
    assert smp.smp_direction(dr_hdr.status) == raw[4] >> 7
    assert smp.dr_status(dr_hdr.status) == int.from_bytes(raw[4:6], "big") & 0x7FFF


# Frames 1 and 2 of pcaps/infiniband_endace_erf_2008.pcap: a directed-route SubnGet(SMInfo)
# (hop_cnt 2, initial path 2,3) and its SubnGetResp with the D bit set.
FRAME1_MAD = bytes.fromhex(
    "01810101000001020001509c000125c800200000000000000000000000000000"
    "ffffffff" + "00" * 28 + "00" * 64 + "000203" + "00" * 61 + "00" * 64
)
FRAME2_MAD = bytes.fromhex(
    "01810181800001020001509c000125c800200000000000000000000000000000"
    "ffffffff" + "00" * 28
    + "0002c9020020b4dd00000000000000000000923a03" + "00" * 43
    + "000203" + "00" * 61
    + "000601" + "00" * 61
)


def test_golden_capture_bytes_are_in_the_pcap():
    capture = PCAP.read_bytes()
    assert len(FRAME1_MAD) == len(FRAME2_MAD) == 256
    assert FRAME1_MAD in capture
    assert FRAME2_MAD in capture


def test_golden_dr_subnget_sminfo():
    parsed = common(SMPDirected, FRAME1_MAD, size=256)
    hdr = parsed.hdr
    assert (hdr.base_version, hdr.mgmt_class, hdr.class_version, hdr.method) == (1, 0x81, 1, 0x01)
    assert hdr.status == 0 and smp.smp_direction(hdr.status) == 0
    assert (hdr.hop_ptr, hdr.hop_cnt) == (1, 2)
    assert hdr.tid == 0x0001509C000125C8
    assert hdr.attr_id == smp.IB_SMP_ATTR_SM_INFO and hdr.attr_mod == 0
    assert parsed.m_key == 0
    assert (parsed.dr_slid, parsed.dr_dlid) == (0xFFFF, 0xFFFF)
    assert parsed.initial_path[:4] == b"\x00\x02\x03\x00"


def test_golden_dr_getresp_sminfo():
    parsed = common(SMPDirected, FRAME2_MAD, size=256)
    hdr = parsed.hdr
    assert hdr.method == 0x81
    assert hdr.status == 0x8000
    assert smp.smp_direction(hdr.status) == 1 and smp.dr_status(hdr.status) == 0
    assert (hdr.hop_ptr, hdr.hop_cnt) == (1, 2)
    assert parsed.return_path[:4] == b"\x00\x06\x01\x00"
    info = common(
        SMInfo,
        parsed.data,
        value=dict(guid=0x0002C9020020B4DD, sm_key=0, act_count=0x923A, priority=0, sm_state=3,
                   resv0=bytes(43)),
        size=64,
    )
    assert smp.SM_STATE_NAMES[info.sm_state] == "Master"
    assert attribute_schema(hdr.attr_id, compiled=True).parse(parsed.data).guid == info.guid


# --------------------------------------------------------------------------- attribute goldens

def test_golden_pkey_table_block():
    data = b"\xff\xff" + bytes(60) + b"\x80\x01"
    pkeys = [0xFFFF] + [0] * 30 + [0x8001]
    parsed = common(PKeyTable, data, value=dict(pkeys=pkeys), size=64)
    assert parsed.pkeys[0] == 0xFFFF and parsed.pkeys[31] == 0x8001
    assert parsed.pkeys[31] & 0x8000  # full member
    assert PKeyTable.build(dict(pkeys=pkeys)) == data


def test_golden_portinfo():
    # A CA port, hand-assembled byte by byte from the fields.c offsets.
    data = bytearray(64)
    data[0:8] = (0).to_bytes(8, "big")  # m_key
    data[8:16] = bytes.fromhex("fe80000000000000")  # gid_prefix
    data[16:18] = (0x0004).to_bytes(2, "big")  # lid
    data[18:20] = (0x0001).to_bytes(2, "big")  # master_sm_lid
    data[20:24] = (0x02510868).to_bytes(4, "big")  # capability_mask
    data[28] = 1  # local_port_num
    data[29] = 0x03  # link_width_enabled 1x|4x
    data[30] = 0x03  # link_width_supported
    data[31] = 0x02  # link_width_active 4x
    data[32] = 0x14  # link_speed_supported 1 | port_state 4 (Active)
    data[33] = 0x52  # phys_port_state 5 (LinkUp) | link_down_default_state 2 (Polling)
    data[34] = 0b10_000_011  # m_key_protect_bits 2 | resv 0 | lmc 3
    data[35] = 0x17  # link_speed_active 1 | link_speed_enabled 7
    data[36] = 0x4F  # neighbor_mtu 4 (2048) | master_sm_sl 15
    data[37] = 0x40  # vl_cap 4 (VL0-7) | init_type 0
    data[41] = 0x05  # init_type_reply 0 | mtu_cap 5 (4096)
    data[42] = 0b111_10011  # vl_stall_count 7 | hoq_life 19
    data[43] = 0x4A  # operational_vls 4 | pe_in 1, pe_out 0, fr_in 1, fr_out 0
    data[46:48] = (0x0102).to_bytes(2, "big")  # p_key_violations
    data[50] = 32  # guid_cap
    data[51] = 0b1_01_10010  # client_reregister 1 | trap suppression 1 | subnet_timeout 18
    data[52] = 0x10  # resp_time_value 16
    data[53] = 0x8F  # local_phy_errors 8 | overrun_errors 15
    data[57:60] = (0x123456).to_bytes(3, "big")  # link_round_trip_latency
    data[63] = 0x1F  # link_speed_ext_enabled 31
    pi = common(PortInfo, bytes(data), size=64)
    assert pi.gid_prefix == 0xFE80000000000000
    assert pi.lid == 4 and pi.master_sm_lid == 1
    assert pi.capability_mask == 0x02510868
    assert pi.local_port_num == 1
    assert (pi.link_width_enabled, pi.link_width_supported, pi.link_width_active) == (3, 3, 2)
    assert pi.link_speed_supported == 1 and pi.port_state == 4
    assert smp.PORT_STATE_NAMES[pi.port_state] == "Active"
    assert pi.phys_port_state == 5 and pi.link_down_default_state == 2
    assert smp.PHYS_PORT_STATE_NAMES[pi.phys_port_state] == "LinkUp"
    assert (pi.m_key_protect_bits, pi.resv0, pi.lmc) == (2, 0, 3)
    assert (pi.link_speed_active, pi.link_speed_enabled) == (1, 7)
    assert (pi.neighbor_mtu, pi.master_sm_sl, pi.vl_cap, pi.init_type) == (4, 15, 4, 0)
    assert (pi.init_type_reply, pi.mtu_cap) == (0, 5)
    assert (pi.vl_stall_count, pi.hoq_life) == (7, 19)
    assert pi.operational_vls == 4
    assert (pi.partition_enforcement_inbound, pi.partition_enforcement_outbound) == (1, 0)
    assert (pi.filter_raw_inbound, pi.filter_raw_outbound) == (1, 0)
    assert pi.p_key_violations == 0x0102 and pi.m_key_violations == 0 and pi.q_key_violations == 0
    assert pi.guid_cap == 32
    assert (pi.client_reregister, pi.multicast_pkey_trap_suppression_enabled, pi.subnet_timeout) == (1, 1, 18)
    assert pi.resp_time_value == 16
    assert (pi.local_phy_errors, pi.overrun_errors) == (8, 15)
    assert pi.link_round_trip_latency == 0x123456 and pi.resv2 == 0
    assert pi.link_speed_ext_enabled == 31 and pi.resv3 == 0


def test_golden_guid_info():
    guids = [0x0002C90300001895 + i for i in range(8)]
    data = b"".join(g.to_bytes(8, "big") for g in guids)
    common(GUIDInfo, data, value=dict(guids=guids), size=64)


def test_golden_sl_to_vl():
    data = bytes.fromhex("0123456789abcdef") + bytes(56)
    parsed = common(SLtoVLMappingTable, data, value=dict(sl_to_vl=list(range(16)), resv0=bytes(56)), size=64)
    assert parsed.sl_to_vl[0] == 0 and parsed.sl_to_vl[1] == 1 and parsed.sl_to_vl[15] == 15


def test_golden_vl_arbitration():
    data = bytearray(64)
    data[0:2] = b"\xf3\x40"  # resv 0xF, vl 3, weight 0x40
    data[62:64] = b"\x0e\xff"  # vl 14, weight 255
    parsed = common(VLArbitrationTable, bytes(data), size=64)
    assert strip(parsed.entries[0]) == dict(resv=0xF, vl=3, weight=0x40)
    assert strip(parsed.entries[31]) == dict(resv=0, vl=14, weight=255)
    assert all(e.vl == 0 and e.weight == 0 for e in parsed.entries[1:31])


def test_golden_linear_forwarding():
    parsed = common(LinearForwardingTable, bytes(range(64)), value=dict(ports=list(range(64))), size=64)
    assert parsed.ports[63] == 63


def test_golden_random_forwarding():
    data = bytearray(64)
    data[0:4] = bytes.fromhex("0005b007")  # lid 5, valid 1, lmc 3, resv 0, port 7
    data[60:64] = bytes.fromhex("ffff0f01")  # lid 0xffff, valid 0, lmc 0, resv 15, port 1
    parsed = common(RandomForwardingTable, bytes(data), size=64)
    assert strip(parsed.entries[0]) == dict(lid=5, valid=1, lmc=3, resv=0, port=7)
    assert strip(parsed.entries[15]) == dict(lid=0xFFFF, valid=0, lmc=0, resv=15, port=1)


def test_golden_multicast_forwarding():
    data = b"\x80\x01" + bytes(60) + b"\x00\x02"
    masks = [0x8001] + [0] * 30 + [0x0002]
    common(MulticastForwardingTable, data, value=dict(port_masks=masks), size=64)


def test_golden_notice_trap128():
    # Generic urgent trap 128 (link state change) from switch LID 0x0010, toggle 1, count 5;
    # DataDetails starts with the switch LID (struct _ntc_128 in opensm ib_types.h).
    data = bytes.fromhex("81000002" "0080" "0010" "8005" "0010") + bytes(52)
    parsed = common(Notice, data, size=64)
    assert parsed.is_generic == 1 and parsed.notice_type == 1
    assert parsed.producer_type == 2 and parsed.trap_number == 128
    assert parsed.issuer_lid == 0x0010
    assert parsed.notice_toggle == 1 and parsed.notice_count == 5
    assert parsed.data_details[:2] == b"\x00\x10" and len(parsed.data_details) == 54


def test_node_description_text():
    data = b"switch-a mlx4_0\x00" + b"\xff" * 48  # garbage after the NUL survives the round trip
    parsed = common(NodeDescription, data, size=64)
    assert smp.node_description_text(parsed.node_string) == "switch-a mlx4_0"
    assert smp.node_description_text(b"x" * 64) == "x" * 64


# --------------------------------------------------------------------------- round-trip property

_EXTRA = {
    "SMP": SMP,
    "SMPDirected": SMPDirected,
    "SMPDirectedHeader": SMPDirectedHeader,
    "RawAttribute": RawAttribute,
    "NoticeWithIssuerGID": smp.NoticeWithIssuerGID,
    "VLArbElement": smp.VLArbElement,
    "RandomForwardingEntry": smp.RandomForwardingEntry,
}
ALL_SCHEMAS = {name: schema for name, schema in SMP_ATTRIBUTES.values()} | _EXTRA


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_roundtrip_random_bytes(name, data):
    schema = ALL_SCHEMAS[name]
    size = schema.sizeof()
    raw = data.draw(st.binary(min_size=size, max_size=size), label="raw")
    common(schema, raw, size=size)
