"""The scapy layers: the same values as the construct decode on every captured frame, the same
bytes back, golden rebuilds from the real capture, defaults, computed fields, link types, helpers."""
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.packet import Padding, Raw
from scapy.sendrecv import sniff
from scapy.utils import PcapReader, RawPcapReader, rdpcap, wrpcap

from madpipe.codecs import build, crc, erf, frame, perf
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.capture import LINKTYPE_ERF, LINKTYPE_INFINIBAND, CaptureReader, CaptureWriter
from madpipe.codecs.craft import getresp, smp_attribute, smp_get, smp_set, smp_set_pkeys
from madpipe.codecs.encode import encode_record
from madpipe.codecs.errors import CraftError
from madpipe.codecs.frame import decode_frame
from madpipe.codecs.layers import BTH, DETH, ERF, GRH, LRH, ImmDt
from madpipe.codecs.mad_layers import (
    MAD,
    MAD_CLASS_LAYERS,
    PERF_ATTRIBUTE_LAYERS,
    SAMAD,
    SMP,
    SMP_ATTRIBUTE_LAYERS,
    NodeInfo,
    PerfMAD,
    PKeyTable,
    PortCounters,
    PortInfo,
    SMInfo,
    SMPDirected,
    VLArbitrationTable,
)

PCAPS = sorted((Path(__file__).parent.parent / "pcaps").glob("*.pcap*"))
REAL = Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap"


def read(path):
    with CaptureReader(path) as cap:
        return [p for p in cap if p.data is not None]


@pytest.fixture(scope="module")
def real_frames():
    return [p.data for p in read(REAL)]


# ------------------------------------------------------------------ scapy -> decode's record
def fields(layer, skip=()):
    return {f.name: layer.getfieldval(f.name) for f in layer.fields_desc if f.name not in skip}


def plain(value):
    """A scapy field value in the form frame.plain gives the construct one (bytes as hex...)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if hasattr(value, "fields_desc"):
        return {k: plain(v) for k, v in fields(value).items()}
    return value


def scapy_record(pkt: LRH) -> dict:
    """What decode_frame says about a frame, said from the scapy dissection alone."""
    out = {"lrh": {k: pkt[LRH].getfieldval(k) for k in frame.LRH_KEYS}}
    if GRH in pkt:
        g = pkt[GRH]
        out["grh"] = {k: g.getfieldval(k) for k in frame.GRH_KEYS}
        out["grh"]["sgid"] = str(ipaddress.IPv6Address(g.sgid))
        out["grh"]["dgid"] = str(ipaddress.IPv6Address(g.dgid))
    if pkt.lnh in (0, 1):
        out["raw_len"] = len(bytes(pkt[LRH].payload))
    if BTH in pkt:
        b = pkt[BTH]
        out["bth"] = {k: b.getfieldval(k) for k in frame.BTH_KEYS}
        if DETH not in pkt:
            out["payload_len"] = len(bytes(b.payload)) - b.padcnt
        else:
            out["deth"] = {"qkey": pkt.qkey, "sqp": pkt.sqp}
            if MAD not in pkt:
                out["payload_len"] = len(bytes(pkt[DETH].payload)) - b.padcnt
    if MAD in pkt:
        m = pkt[MAD]
        out["mad"] = {k: m.getfieldval(k) for k in frame.MAD_KEYS if k != "class_specific"}
        if isinstance(m, SMPDirected):
            out["mad"]["class_specific"] = m.hop_ptr << 8 | m.hop_cnt
            used = min(m.hop_cnt, 63)
            out["smp"] = {"m_key": m.m_key, "hop_ptr": m.hop_ptr, "hop_cnt": m.hop_cnt,
                          "dr_slid": m.dr_slid, "dr_dlid": m.dr_dlid,
                          "initial_path": list(m.initial_path[1:1 + used]),
                          "return_path": list(m.return_path[1:1 + used])}
        else:
            out["mad"]["class_specific"] = m.class_specific
            if isinstance(m, SMP):
                out["smp"] = {"m_key": m.m_key}
        attr = m.payload
        if isinstance(m, (SMP, SMPDirected)) or (isinstance(m, PerfMAD) and not isinstance(attr, Raw)):
            name = (type(attr).__name__ if not isinstance(attr, Raw)
                    else smpc.attribute_name(m.attr_id))
            values = plain(attr) if not isinstance(attr, Raw) else {"data": attr.load[:64].hex()}
            if isinstance(attr, PKeyTable):
                values = {"block": smpc.pkey_block(m.attr_mod), **values}
            out["attr"] = {"name": name, **values}
        else:
            out["class_data"] = bytes(m)[madc.MAD_HEADER_SIZE:madc.MAD_SIZE].hex()
    if crc.has_icrc(pkt.lnh) or pkt.lnh in (0, 1):
        fresh = pkt.copy()
        del fresh.icrc, fresh.vcrc
        rebuilt = LRH(bytes(fresh))
        out["icrc_ok"] = rebuilt.icrc == pkt.icrc if crc.has_icrc(pkt.lnh) else None
        out["vcrc_ok"] = rebuilt.vcrc == pkt.vcrc
    return out


def comparable(record: dict) -> dict:
    """decode_frame's record without what scapy has no say on (frame number, time, attr names of
    classes shown raw)."""
    out = {k: v for k, v in record.items() if k not in ("frame", "ts")}
    if "class_data" in out:
        out.pop("attr", None)
    return out


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_every_frame_scapy_and_construct_agree_and_bytes_round_trip(path):
    packets = read(path)
    assert packets
    for p in packets:
        pkt = LRH(p.data)
        assert bytes(pkt) == p.data, f"{path.name} frame {p.frame}: bytes(LRH(frame)) differs"
        mine, theirs = scapy_record(pkt), comparable(decode_frame(p.data))
        assert mine == theirs, f"{path.name} frame {p.frame}"


@pytest.mark.parametrize("path", PCAPS, ids=[p.name for p in PCAPS])
def test_every_frame_crcs_deleted_and_rebuilt_are_the_captured_ones(path):
    """Golden: delete ICRC, VCRC and PktLen of each captured frame, rebuild, get the capture."""
    for p in read(path):
        pkt = LRH(p.data)
        del pkt.icrc, pkt.vcrc, pkt.pktlen
        assert pkt.icrc is None and pkt.pktlen is None
        assert bytes(pkt) == p.data, f"{path.name} frame {p.frame}"


def test_erf_records_of_every_capture_match_the_erf_schema():
    for path in PCAPS:
        with RawPcapReader(str(path)) as reader:
            if getattr(reader, "linktype", None) != LINKTYPE_ERF:  # pcapng: per interface
                continue
            for record, _meta in reader:
                layer = ERF(record)
                parsed = erf.ERFHeader.parse(record)
                assert (layer.ts, layer.ext, layer.type, layer.rlen, layer.lctr, layer.wlen) == (
                    parsed.ts, parsed.type.ext, parsed.type.type, parsed.rlen, parsed.lctr, parsed.wlen)
                assert {k: getattr(layer, k) for k in ("resv", "rx_error", "truncated", "dserror",
                                                       "vlen", "iface")} == {
                    k: parsed.flags[k] for k in ("resv", "rx_error", "truncated", "dserror", "vlen", "iface")}
                assert bytes(layer) == record


# ------------------------------------------------------------------ golden frames rebuilt from values
def test_real_directed_route_get_and_getresp_rebuilt_from_the_helpers(real_frames):
    request, response = LRH(real_frames[0]), LRH(real_frames[1])
    pkt = smp_get("sm-info", dr_path=[2, 3], tid=0x0001509C000125C8, hop_ptr=1)
    pkt[BTH].psn = request[BTH].psn
    assert bytes(pkt) == real_frames[0]
    resp = getresp(request, data=response[SMInfo])
    resp[SMPDirected].return_hops = [6, 1]
    resp[BTH].psn = response[BTH].psn
    assert bytes(resp) == real_frames[1]
    assert response[SMPDirected].status & madc.IB_SMP_DIRECTION and resp[SMPDirected].status == 0x8000
    assert resp.answers(request) and not request.answers(resp)


def test_real_frames_rebuilt_from_their_field_values(real_frames):
    """Every frame of the real capture, rebuilt layer by layer from its dissected field values."""
    for data in real_frames:
        dissected = LRH(data)
        layers = []
        layer = dissected
        while layer:
            if isinstance(layer, Raw):
                layers.append(Raw(layer.load))
            else:
                layers.append(type(layer)(**fields(layer)))
            layer = layer.payload
        rebuilt = layers[0]
        for layer in layers[1:]:
            rebuilt = rebuilt / layer
        del rebuilt.icrc, rebuilt.vcrc
        assert bytes(rebuilt) == data


# ------------------------------------------------------------------ defaults and computed fields
def test_defaults_are_a_subnget_nodeinfo_on_qp0_vl15():
    data = bytes(LRH() / BTH() / DETH() / SMP())
    record = decode_frame(data)
    assert "error" not in record and record["icrc_ok"] and record["vcrc_ok"]
    assert record["lrh"] == {"vl": 15, "lver": 0, "sl": 0, "lnh": 2, "dlid": 0xFFFF, "pktlen": 72, "slid": 1}
    assert record["bth"]["opcode"] == 0x64 and record["bth"]["dqp"] == 0 and record["bth"]["pkey"] == 0xFFFF
    assert record["deth"] == {"qkey": 0, "sqp": 0}
    assert record["mad"]["mgmt_class"] == 1 and record["mad"]["method"] == 1
    assert record["attr"]["name"] == "NodeInfo" and len(data) == 290
    assert bytes(smp_get("node-info", lid=0xFFFF, tid=0)) == data


def test_gmp_defaults_are_qp1_with_its_qkey_and_not_vl15():
    pkt = LRH(dlid=4, slid=1) / BTH() / DETH() / PerfMAD(attr_mod=0) / PortCounters(port_select=1)
    record = decode_frame(bytes(pkt))
    assert record["lrh"]["vl"] == 0 and record["bth"]["dqp"] == 1
    assert record["deth"] == {"qkey": 0x80010000, "sqp": 1}
    assert record["attr"]["name"] == "PortCounters" and record["attr"]["port_select"] == 1
    assert record["icrc_ok"] and record["vcrc_ok"] and "error" not in record


def test_grh_lnh_and_paylen_are_computed():
    pkt = LRH(slid=4, dlid=1) / GRH(sgid="fe80::2:c903:0:1f2d", dgid="fe80::1") / BTH() / DETH() / SAMAD()
    data = bytes(pkt)
    record = decode_frame(data)
    assert record["lrh"]["lnh"] == 3 and record["grh"]["paylen"] == 12 + 8 + 256 + 4
    assert record["grh"]["sgid"] == "fe80::2:c903:0:1f2d" and record["grh"]["nxthdr"] == 0x1B
    assert record["mad"]["mgmt_class"] == 3 and record["mad"]["attr_id"] == 0x35
    assert record["icrc_ok"] and record["vcrc_ok"] and "error" not in record
    assert isinstance(LRH(data)[MAD], SAMAD) and bytes(LRH(data)) == data


def test_a_crc_given_on_purpose_is_kept():
    pkt = LRH(icrc=0x12345678, vcrc=0xBEEF) / BTH() / DETH() / SMP()
    data = bytes(pkt)
    assert data[-6:] == bytes.fromhex("78563412efbe")
    record = decode_frame(data)
    assert record["icrc_ok"] is False and record["vcrc_ok"] is False
    good = LRH(vcrc=None) / BTH() / DETH() / SMP()
    assert decode_frame(bytes(good))["vcrc_ok"] is True


def test_padcnt_pads_a_raw_payload():
    pkt = LRH() / BTH(opcode=0x04, dqp=0x405) / Raw(b"abcde")
    data = bytes(pkt)
    record = decode_frame(data)
    assert record["bth"]["padcnt"] == 3 and record["payload_len"] == 5 and record["icrc_ok"]
    assert bytes(LRH(data)) == data


def test_attribute_binding_sets_attr_id_and_dissects_back():
    pkt = LRH() / BTH() / DETH() / SMPDirected(initial_path=[1, 3]) / PKeyTable(pkeys=[0xFFFF, 0x8001])
    back = LRH(bytes(pkt))
    assert back.attr_id == 0x16 and back.hop_cnt == 2 and back[SMPDirected].initial_hops == [1, 3]
    assert back[PKeyTable].pkeys[:3] == [0xFFFF, 0x8001, 0] and len(back[PKeyTable].pkeys) == 32
    assert back[MAD] is back[SMPDirected]  # pkt[MAD] finds the class layer
    back[SMPDirected].initial_hops = [2, 4, 6]
    assert back.hop_cnt == 3 and bytes(back[SMPDirected])[128:132] == bytes([0, 2, 4, 6])


def test_smp_data_area_sits_between_header_and_tail():
    pkt = SMP(resv2=b"\xaa" * 128) / PortInfo(lid=0x1234)
    data = bytes(pkt)
    assert len(data) == 256 and data[128:] == b"\xaa" * 128 and data[80:82] == b"\x12\x34"
    dr = bytes(SMPDirected(initial_path=[5], return_path=[7]) / Raw(b"\x11" * 64))
    assert dr[64:128] == b"\x11" * 64 and dr[128:130] == b"\x00\x05" and dr[192:194] == b"\x00\x07"


@settings(max_examples=150, deadline=None)
@given(mad=st.binary(min_size=256, max_size=256),
       mgmt_class=st.sampled_from([0x01, 0x81, 0x03, 0x04, 0x07, 0x09, 0x21]),
       attr_id=st.sampled_from(sorted(smpc.SMP_ATTRIBUTES) + sorted(perf.PERF_ATTRIBUTES) + [0xFF01]),
       grh=st.booleans(), imm=st.booleans())
def test_random_mads_dissect_as_construct_decodes_them(mad, mgmt_class, attr_id, grh, imm):
    """Any 256 bytes as a MAD of any class and attribute, behind any header chain: scapy and
    decode_frame agree on every field, and the frame comes back byte for byte."""
    raw = bytearray(mad)
    raw[1] = mgmt_class
    raw[16:18] = attr_id.to_bytes(2, "big")
    pkt = LRH(slid=3, dlid=5)
    if grh:
        pkt = pkt / GRH(sgid="fe80::1", dgid="fe80::2")
    pkt = pkt / BTH(opcode=0x65 if imm else 0x64, dqp=1) / DETH(sqp=1, qkey=0x80010000)
    if imm:
        pkt = pkt / ImmDt(imm_data=0x01020304)
    data = bytes(pkt / Raw(bytes(raw)))
    back = LRH(data)
    assert bytes(back) == data
    theirs = comparable(decode_frame(data))
    theirs.pop("error", None)  # a hop count over 63 is reported; the values are still compared
    assert scapy_record(back) == theirs
    assert (ImmDt in back) == imm and back[MAD].__class__ is MAD_CLASS_LAYERS.get(mgmt_class, MAD)


def test_erf_extension_headers_and_other_record_types():
    inner = bytes(smp_get("node-info", lid=3))
    ext = bytes.fromhex("8100000000000001") + bytes.fromhex("0200000000000002")
    record = bytes(ERF(ext=1, ext_headers=ext) / LRH(inner))
    assert len(record) == 16 + 16 + len(inner) and record[10:12] == (32 + len(inner)).to_bytes(2, "big")
    back = ERF(record)
    assert back.ext_headers == ext and bytes(back[LRH]) == inner and bytes(back) == record
    other = ERF(bytes(ERF(type=2) / Raw(b"\x00" * 20)))
    assert LRH not in other and bytes(other.payload) == b"\x00" * 20
    record = bytes(ERF(rlen=16 + len(inner) + 4) / LRH(inner)) + bytes(4)  # rlen past wlen: padding
    padded = ERF(record)
    assert padded.wlen == len(inner) and padded[Padding].load == bytes(4)
    assert padded.vcrc == LRH(inner).vcrc and bytes(padded) == record


# ------------------------------------------------------------------ attribute layers = construct schemas
@pytest.mark.parametrize("attr_id", sorted(SMP_ATTRIBUTE_LAYERS) + [0x1000 + a for a in PERF_ATTRIBUTE_LAYERS],
                         ids=lambda a: f"{a:#06x}")
def test_attribute_layer_fields_are_the_schema_fields(attr_id):
    if attr_id >= 0x1000:
        name, schema = perf.PERF_ATTRIBUTES[attr_id - 0x1000]
        layer = PERF_ATTRIBUTE_LAYERS[attr_id - 0x1000]
    else:
        name, schema = smpc.SMP_ATTRIBUTES[attr_id]
        layer = SMP_ATTRIBUTE_LAYERS[attr_id]
    assert layer.__name__ == name and layer.__doc__ == schema.__doc__
    inner = schema.subcon if hasattr(schema, "subcon") else schema
    assert [f.name for f in layer.fields_desc] == [sc.name for sc in inner.subcons]
    assert len(bytes(layer())) == schema.sizeof()


@settings(max_examples=60, deadline=None)
@given(attr=st.sampled_from(sorted(smpc.SMP_ATTRIBUTES) + [-a for a in perf.PERF_ATTRIBUTES]),
       data=st.binary(min_size=192, max_size=192))
def test_attribute_layers_parse_random_bytes_as_construct_does(attr, data):
    if attr < 0:
        schema, layer = perf.PERF_ATTRIBUTES[-attr][1], PERF_ATTRIBUTE_LAYERS[-attr]
    else:
        schema, layer, data = smpc.SMP_ATTRIBUTES[attr][1], SMP_ATTRIBUTE_LAYERS[attr], data[:64]
    pkt = layer(data)
    assert plain(pkt) == frame.plain(schema.parse(data))
    assert bytes(pkt) == data


def test_short_lists_are_padded_to_the_array_size():
    assert bytes(PKeyTable(pkeys=[0xFFFF])) == b"\xff\xff" + bytes(62)
    table = VLArbitrationTable(entries=[VLArbitrationTable.fields_desc[0].cls(vl=1, weight=2)])
    assert bytes(table)[:4] == b"\x01\x02\x00\x00" and len(bytes(table)) == 64


# ------------------------------------------------------------------ link types
def test_rdpcap_reads_ibdump_erf_captures(real_frames):
    packets = rdpcap(str(REAL))
    assert len(packets) == len(real_frames)
    assert all(isinstance(p, ERF) and p.type == 21 for p in packets)
    assert [bytes(p[LRH]) for p in packets] == real_frames
    assert isinstance(packets[0][MAD], SMPDirected) and packets[0][SMInfo] is not None
    assert sum(1 for p in sniff(offline=str(REAL))) == len(real_frames)


def test_wrpcap_writes_erf_and_infiniband_link_types(tmp_path, real_frames):
    erf_file, ib_file = tmp_path / "erf.pcap", tmp_path / "ib.pcap"
    wrpcap(str(erf_file), [ERF(iface=1) / LRH(f) for f in real_frames[:5]])
    wrpcap(str(ib_file), [LRH(f) for f in real_frames[:5]])
    for path, linktype in ((erf_file, LINKTYPE_ERF), (ib_file, LINKTYPE_INFINIBAND)):
        with CaptureReader(path) as cap:
            got = list(cap)
            assert cap.linktype == linktype
        assert [p.data for p in got] == real_frames[:5]
    assert {p.iface for p in read(erf_file)} == {1}
    with PcapReader(str(ib_file)) as reader:
        assert isinstance(next(iter(reader)), LRH)


def test_madpipe_writer_output_reads_back_in_scapy(tmp_path):
    path = tmp_path / "w.pcap"
    with CaptureWriter(path) as w:
        w.write(bytes(smp_set_pkeys(0, [0xFFFF], lid=4)), ts_ns=1_500_000_000)
    (pkt,) = rdpcap(str(path))
    assert pkt.wlen == 290 and pkt.rlen == 306 and pkt[PKeyTable].pkeys[0] == 0xFFFF
    assert bytes(ERF(ts=pkt.ts) / pkt[LRH]) == bytes(pkt)  # rlen, wlen computed as ibdump's


# ------------------------------------------------------------------ helpers
def test_smp_set_pkeys_equals_the_construct_builder():
    """Two independent builders agree: the scapy helpers and codecs/build.py."""
    mine = smp_set_pkeys(3, [0xFFFF, 0x8001, 0x7FFF], lid=4, port=2, tid=77)
    theirs = build.build_smp_frame(build.pkey_table_mad(madc.IB_MGMT_METHOD_SET, 3, [0xFFFF, 0x8001, 0x7FFF],
                                                        77, attr_mod_port=2), slid=1, dlid=4)
    assert bytes(mine) == theirs
    mine = smp_set_pkeys(0, [0xFFFF], dr_path=[1, 3], tid=9)
    theirs = build.build_smp_frame(build.pkey_table_mad(madc.IB_MGMT_METHOD_SET, 0, [0xFFFF], 9,
                                                        directed=True, path=[1, 3]))
    assert bytes(mine) == theirs


@pytest.mark.parametrize("call,message", [
    (lambda: smp_set_pkeys(0, [0x10000], lid=1), "P_Key 0x10000 is past the maximum 0xffff"),
    (lambda: smp_set_pkeys(2048, [1], lid=1), "P_KeyTable block 2048 is past the maximum 2047"),
    (lambda: smp_set_pkeys(0, [1] * 33, lid=1), "holds 32 P_Keys, not 33"),
    (lambda: smp_get("node-info", dr_path=[1], hop_cnt=64), "hop count 64 is past the maximum 63"),
    (lambda: smp_get("node-info", dr_path=[1] * 64), "at most 63 hops"),
    (lambda: smp_get("node-info", lid=1, dr_path=[1]), "not both"),
    (lambda: smp_set("port-info", lid=1, data={"port_stat": 1}), "PortInfo has no field 'port_stat'"),
    (lambda: smp_attribute("nodeinf"), "unknown SMP attribute"),
])
def test_impossible_values_are_errors(call, message):
    with pytest.raises(CraftError, match=message):
        call()


def test_raw_sends_impossible_values_cut_to_the_field():
    pkt = smp_set_pkeys(2048, [0x1FFFF], lid=1, raw=True)
    assert pkt.attr_mod == 2048 and pkt[PKeyTable].pkeys[0] == 0xFFFF
    record = decode_frame(bytes(smp_get("node-info", dr_path=[1], hop_cnt=200, raw=True)))
    assert record["smp"]["hop_cnt"] == 200 and "hop count 200 exceeds 63" in record["error"]


def test_smp_attribute_names():
    assert smp_attribute("pkey-table") == (0x16, PKeyTable) == smp_attribute("pkeys")
    assert smp_attribute("PortInfo") == smp_attribute("port_info") == smp_attribute(0x15) == (0x15, PortInfo)
    assert smp_attribute("0x11") == (0x11, NodeInfo) and smp_attribute(0xFF01)[1] is Raw
    assert smp_attribute("sl2vl")[0] == 0x17 and smp_attribute("node-desc")[0] == 0x10


def test_getresp_swaps_addresses_and_sets_the_method():
    request = smp_get("port-info", lid=4, slid=1, attr_mod=1, tid=42)
    response = getresp(request, data={"lid": 4, "port_state": 4})
    record = decode_frame(bytes(response))
    assert record["lrh"]["slid"] == 4 and record["lrh"]["dlid"] == 1
    assert record["mad"]["method"] == 0x81 and record["mad"]["tid"] == 42 and record["mad"]["attr_mod"] == 1
    assert record["attr"]["port_state"] == 4 and record["icrc_ok"] and record["vcrc_ok"]
    setter = smp_set_pkeys(0, [0xFFFF], dr_path=[1])
    assert getresp(setter).method == 0x81 and getresp(setter).status == 0x8000
    query = LRH(slid=1, dlid=4) / BTH() / DETH() / PerfMAD(tid=3) / PortCounters(port_select=2)
    answer = LRH(bytes(getresp(query, data={"port_select": 2, "port_xmit_data": 9})))
    assert answer[MAD].method == 0x81 and answer[PortCounters].port_xmit_data == 9
    assert (answer.slid, answer.dlid, answer.dqp, answer.sqp, answer.qkey) == (4, 1, 1, 1, 0x80010000)
    assert answer.answers(query)


def test_from_record_is_the_packet_of_a_decode_record(real_frames):
    from madpipe.codecs.craft import from_record

    record = json.loads(json.dumps(decode_frame(real_frames[1], 2)))
    assert bytes(from_record(record)) == real_frames[1] == encode_record(record)
