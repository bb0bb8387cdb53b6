"""PerfMgt MADs and attributes (madpipe.codecs.perf): sizes, offsets, golden vectors, round trips.

The field tables are written from rdma-core libibmad/fields.c (IB_PC_*, IB_PC_EXT_*, IB_CPI_*)
and python-rdma's codegen/iba_16_1.xml and iba_13_4.xml, not from perf.py.
"""
import pytest
from helpers import check_field_table, common
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import perf
from madpipe.codecs.mad import MADHeader
from madpipe.codecs.perf import (
    PERF_ATTRIBUTES,
    ClassPortInfo,
    PerfMAD,
    PortCounters,
    PortCountersExtended,
    RawPerfAttribute,
    attribute_name,
    attribute_schema,
)

PORT_COUNTERS_FIELDS = [
    ("resv0", 0, 8),
    ("port_select", 8, 8),
    ("counter_select", 16, 16),
    ("symbol_error_counter", 32, 16),
    ("link_error_recovery_counter", 48, 8),
    ("link_downed_counter", 56, 8),
    ("port_rcv_errors", 64, 16),
    ("port_rcv_remote_physical_errors", 80, 16),
    ("port_rcv_switch_relay_errors", 96, 16),
    ("port_xmit_discards", 112, 16),
    ("port_xmit_constraint_errors", 128, 8),
    ("port_rcv_constraint_errors", 136, 8),
    ("counter_select2", 144, 8),
    ("local_link_integrity_errors", 152, 4),
    ("excessive_buffer_overrun_errors", 156, 4),
    ("resv1", 160, 16),
    ("vl15_dropped", 176, 16),
    ("port_xmit_data", 192, 32),
    ("port_rcv_data", 224, 32),
    ("port_xmit_pkts", 256, 32),
    ("port_rcv_pkts", 288, 32),
    ("port_xmit_wait", 320, 32),
    ("resv2", 352, 148 * 8),
]

PORT_COUNTERS_EXT_FIELDS = [
    ("resv0", 0, 8),
    ("port_select", 8, 8),
    ("counter_select", 16, 16),
    ("resv1", 32, 32),
    ("port_xmit_data", 64, 64),
    ("port_rcv_data", 128, 64),
    ("port_xmit_pkts", 192, 64),
    ("port_rcv_pkts", 256, 64),
    ("port_unicast_xmit_pkts", 320, 64),
    ("port_unicast_rcv_pkts", 384, 64),
    ("port_multicast_xmit_pkts", 448, 64),
    ("port_multicast_rcv_pkts", 512, 64),
    ("resv2", 576, 120 * 8),
]

CLASS_PORT_INFO_FIELDS = [
    ("base_version", 0, 8),
    ("class_version", 8, 8),
    ("capability_mask", 16, 16),
    ("capability_mask2", 32, 27),
    ("resp_time_value", 59, 5),
    ("redirect_gid", 64, 128),
    ("redirect_tc", 192, 8),
    ("redirect_sl", 200, 4),
    ("redirect_fl", 204, 20),
    ("redirect_lid", 224, 16),
    ("redirect_pkey", 240, 16),
    ("resv0", 256, 8),
    ("redirect_qp", 264, 24),
    ("redirect_qkey", 288, 32),
    ("trap_gid", 320, 128),
    ("trap_tc", 448, 8),
    ("trap_sl", 456, 4),
    ("trap_fl", 460, 20),
    ("trap_lid", 480, 16),
    ("trap_pkey", 496, 16),
    ("trap_hl", 512, 8),
    ("trap_qp", 520, 24),
    ("trap_qkey", 544, 32),
    ("resv1", 576, 120 * 8),
]

FIELD_TABLES = {
    "PortCounters": (PortCounters, PORT_COUNTERS_FIELDS, 192),
    "PortCountersExtended": (PortCountersExtended, PORT_COUNTERS_EXT_FIELDS, 192),
    "ClassPortInfo": (ClassPortInfo, CLASS_PORT_INFO_FIELDS, 192),
    "RawPerfAttribute": (RawPerfAttribute, [("data", 0, 1536)], 192),
}


@pytest.mark.parametrize("name", sorted(FIELD_TABLES))
def test_field_offsets(name):
    schema, table, size = FIELD_TABLES[name]
    check_field_table(schema, table, size)


def test_sizes_and_layout():
    assert PerfMAD.sizeof() == 256
    assert perf.IB_PMA_DATA_OFFSET == 64 and perf.IB_PMA_DATA_SIZE == 192
    for name, schema in PERF_ATTRIBUTES.values():
        assert schema.sizeof() == 192, name
    raw = bytes(24) + b"\x11" * 40 + b"\x22" * 192
    parsed = PerfMAD.parse(raw)
    assert parsed.resv == b"\x11" * 40 and parsed.data == b"\x22" * 192  # data at byte 64


def test_registry():
    assert {k: v[0] for k, v in PERF_ATTRIBUTES.items()} == {
        0x0001: "ClassPortInfo",
        0x0012: "PortCounters",
        0x001D: "PortCountersExtended",
    }
    for attr_id, (name, schema) in PERF_ATTRIBUTES.items():
        assert getattr(perf, name) is schema
        assert attribute_name(attr_id) == name
        assert attribute_schema(attr_id) is schema
        assert schema.__doc__.startswith("IBA ")
        assert f"attribute 0x{attr_id:04X}" in schema.__doc__
    assert perf.IB_PMA_PORT_COUNTERS == 0x0012
    assert perf.IB_MGMT_CLASS_PERF_MGMT == 0x04
    assert attribute_name(0x0099) == "Attr0x0099"
    assert attribute_name(0xFF01) == "Vendor0xff01"
    assert attribute_schema(0x0099) is RawPerfAttribute
    cached = attribute_schema(perf.IB_PMA_PORT_COUNTERS, compiled=True)
    assert attribute_schema(perf.IB_PMA_PORT_COUNTERS, compiled=True) is cached


def test_counter_select_bits():
    bits = [
        perf.IB_PMA_SEL_SYMBOL_ERROR,
        perf.IB_PMA_SEL_LINK_ERROR_RECOVERY,
        perf.IB_PMA_SEL_LINK_DOWNED,
        perf.IB_PMA_SEL_PORT_RCV_ERRORS,
        perf.IB_PMA_SEL_PORT_RCV_REMPHYS_ERRORS,
        perf.IB_PMA_SEL_PORT_RCV_SWITCH_RELAY_ERRORS,
        perf.IB_PMA_SEL_PORT_XMIT_DISCARDS,
        perf.IB_PMA_SEL_PORT_XMIT_CONSTRAINT_ERRORS,
        perf.IB_PMA_SEL_PORT_RCV_CONSTRAINT_ERRORS,
        perf.IB_PMA_SEL_LOCAL_LINK_INTEGRITY_ERRORS,
        perf.IB_PMA_SEL_EXCESSIVE_BUFFER_OVERRUNS,
        perf.IB_PMA_SEL_PORT_VL15_DROPPED,
        perf.IB_PMA_SEL_PORT_XMIT_DATA,
        perf.IB_PMA_SEL_PORT_RCV_DATA,
        perf.IB_PMA_SEL_PORT_XMIT_PACKETS,
        perf.IB_PMA_SEL_PORT_RCV_PACKETS,
    ]
    assert bits == [1 << i for i in range(16)]


# A PerfMgt GetResp(PortCounters) for port 1, assembled by hand from the fields.c offsets.
PORT_COUNTERS_GETRESP = (
    bytes.fromhex("01040181" "0000" "0000" "0000000000001234" "0012" "0000" "00000000")
    + bytes(40)
    + bytes.fromhex(
        "00" "01" "f000"  # resv, port_select 1, counter_select 0xf000
        "0003" "02" "01"  # symbol errors 3, link error recovery 2, link downed 1
        "0004" "0005" "0006" "0007"  # rcv errors, rcv remote phys, switch relay, xmit discards
        "08" "09" "00" "a5"  # xmit constraint 8, rcv constraint 9, counter_select2 0, LLI 10 | EBO 5
        "0000" "000b"  # resv, vl15_dropped 11
        "01020304" "05060708" "0000ffff" "00010000" "deadbeef"  # xmit/rcv data, pkts, xmit wait
    )
    + bytes(148)
)


def test_golden_port_counters_getresp():
    assert len(PORT_COUNTERS_GETRESP) == 256
    mad = common(PerfMAD, PORT_COUNTERS_GETRESP, size=256)
    assert mad.hdr.mgmt_class == perf.IB_MGMT_CLASS_PERF_MGMT
    assert mad.hdr.method == 0x81 and mad.hdr.attr_id == perf.IB_PMA_PORT_COUNTERS
    assert mad.hdr.tid == 0x1234
    assert MADHeader.build(mad.hdr) == PORT_COUNTERS_GETRESP[:24]
    pc = common(PortCounters, mad.data, size=192)
    assert pc.port_select == 1 and pc.counter_select == 0xF000
    assert pc.symbol_error_counter == 3
    assert pc.link_error_recovery_counter == 2 and pc.link_downed_counter == 1
    assert pc.port_rcv_errors == 4 and pc.port_rcv_remote_physical_errors == 5
    assert pc.port_rcv_switch_relay_errors == 6 and pc.port_xmit_discards == 7
    assert pc.port_xmit_constraint_errors == 8 and pc.port_rcv_constraint_errors == 9
    assert pc.counter_select2 == 0
    assert pc.local_link_integrity_errors == 10 and pc.excessive_buffer_overrun_errors == 5
    assert pc.vl15_dropped == 11
    assert pc.port_xmit_data == 0x01020304 and pc.port_rcv_data == 0x05060708
    assert pc.port_xmit_pkts == 0xFFFF and pc.port_rcv_pkts == 0x10000
    assert pc.port_xmit_wait == 0xDEADBEEF
    assert attribute_schema(mad.hdr.attr_id, compiled=True).parse(mad.data).port_xmit_wait == 0xDEADBEEF


def test_golden_port_counters_extended():
    data = bytes.fromhex("00ff00ff" "00000000") + b"".join(
        (0x0102030405060708 * (i + 1) & (1 << 64) - 1).to_bytes(8, "big") for i in range(8)
    ) + bytes(120)
    pce = common(PortCountersExtended, data, size=192)
    assert pce.port_select == perf.IB_PMA_ALL_PORTS and pce.counter_select == 0x00FF
    assert pce.port_xmit_data == 0x0102030405060708
    assert pce.port_multicast_rcv_pkts == 0x0102030405060708 * 8 & (1 << 64) - 1


def test_golden_class_port_info():
    data = bytearray(192)
    data[0:4] = bytes.fromhex("0101" "1300")  # base 1, class 1, cap mask 0x1300
    data[4:8] = (0x10).to_bytes(4, "big")  # capability_mask2 0, resp_time_value 16
    data[8:24] = bytes.fromhex("fe800000000000000002c90300001895")  # redirect_gid
    data[24:28] = bytes.fromhex("a0312345")  # tc 0xa0, sl 3, fl 0x12345
    data[36:40] = bytes.fromhex("80010000")  # redirect_qkey
    data[68:72] = bytes.fromhex("80010000")  # trap_qkey
    data[64:68] = bytes.fromhex("40000001")  # trap_hl 0x40, trap_qp 1
    cpi = common(ClassPortInfo, bytes(data), size=192)
    assert cpi.base_version == 1 and cpi.class_version == 1
    assert cpi.capability_mask & perf.IB_PMA_CLASS_CAP_XMIT_WAIT
    assert cpi.capability_mask & perf.IB_PMA_CLASS_CAP_ALLPORTSELECT
    assert cpi.capability_mask2 == 0 and cpi.resp_time_value == 16
    assert cpi.redirect_gid == bytes.fromhex("fe800000000000000002c90300001895")
    assert (cpi.redirect_tc, cpi.redirect_sl, cpi.redirect_fl) == (0xA0, 3, 0x12345)
    assert cpi.redirect_qkey == 0x80010000 and cpi.trap_qkey == 0x80010000
    assert cpi.trap_hl == 0x40 and cpi.trap_qp == 1


ALL_SCHEMAS = {name: schema for name, schema in PERF_ATTRIBUTES.values()} | {
    "PerfMAD": PerfMAD,
    "RawPerfAttribute": RawPerfAttribute,
}


@pytest.mark.parametrize("name", sorted(ALL_SCHEMAS))
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_roundtrip_random_bytes(name, data):
    schema = ALL_SCHEMAS[name]
    size = schema.sizeof()
    raw = data.draw(st.binary(min_size=size, max_size=size), label="raw")
    common(schema, raw, size=size)
