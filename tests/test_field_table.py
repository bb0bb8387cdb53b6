"""One field table (codecs.field_table, read off the construct schemas) and everything that reads
header fields without construct, checked against it field by field.

- the table itself: every entry decodes, alone, at its offset with its schema;
- codecs.wire: every size and byte offset the kernels and fast paths use is the table's (or the
  schema's), and the ICRC mask covers exactly the variant fields of the schemas;
- the MAD offset: wire.mad_start, the ingest kernel (gather_rows) and decode_frame agree;
- the two fast paths, `-T json` (decode/json_lines.frame_json) and the DataFrame columns
  (columns/frames._fast_rows): every leaf of every header schema, in five kinds of frame (LID
  routed and directed-route SMPs, a GMP behind a GRH, a directed-route SMP behind a GRH, an
  immediate-data SEND), set alone to all ones, to an asymmetric pattern and to 1. Where the
  fast path takes the frame, its output must be decode_frame's, byte for byte (JSON) and row for
  row (columns); fields that do not change the frame's layout must be taken, and decode_frame
  must give the value written at the table's offset.

The real captures in pcaps/ go through both fast paths against decode_frame in
test_decode_fast.py::test_real_captures and test_frames.py::test_fast_path_equals_decode_frame.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path

import numpy as np
import pytest
from helpers import as_int, put_bits, strip

from madpipe.codecs import build, crc, mad, smp, wire
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs.capture import CaptureReader, CaptureWriter
from madpipe.codecs.field_table import LAYER_KEYS, header_field, header_fields, schema_fields
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.decode import json_lines
from madpipe.pipeline.decode import kernels as kd
from madpipe.pipeline.ingest import kernels as ki

PCAPS = Path(__file__).parent.parent / "pcaps"
CODE = {True: kd.CRC_OK, False: kd.CRC_BAD, None: kd.CRC_ABSENT}
LAYER_SCHEMAS = {"lrh": ibh.LRH, "grh": ibh.GRH, "bth": ibh.BTH, "deth": ibh.DETH, "mad": mad.MADHeader,
                 "smp": smp.SMPDirected}
# Fields that decide the layout: a new value may make a frame no MAD (the fast paths decline it).
LAYOUT = {("lrh", "lnh"), ("lrh", "pktlen"), ("bth", "opcode"), ("smp", "hop_cnt")}


def probe_values(width: int) -> list[int]:
    """All ones, an asymmetric pattern (MSB, LSB and 0x5A in between) and 1."""
    mask = (1 << width) - 1
    pattern = int.from_bytes(b"\x5a" * ((width + 7) // 8), "big") & mask
    return sorted({mask, (1 << (width - 1)) | 1 | pattern, 1})


# -- the table is the schemas' -------------------------------------------------------------------

def test_every_table_field_decodes_alone_at_its_offset():
    assert [(f.layer, f.name) for f in header_fields()] == [(k, n) for k, names in LAYER_KEYS.items() for n in names]
    for f in header_fields():
        schema = LAYER_SCHEMAS[f.layer]
        size = schema.sizeof()
        for value in probe_values(f.width):
            buf = bytearray(size)
            put_bits(buf, 8 * f.offset + f.bit, f.width, value)
            assert f.value(bytes(buf)) == value
            parsed = strip(schema.parse(bytes(buf)))
            flat = {**parsed.pop("hdr", {}), **parsed}  # the SMP's header fields, then its own
            assert as_int(flat[f.name]) == value, (f, value)
            assert all(as_int(v) == 0 for k, v in flat.items() if k != f.name), f


def test_lid_routed_smp_has_the_directed_routes_m_key():
    lid = {f.name: f for f in schema_fields(smp.SMP)}
    assert (lid["m_key"].bit // 8, lid["m_key"].width) == (header_field("smp", "m_key").offset, 64)


# -- codecs.wire is the table ---------------------------------------------------------------------

def _leaf(schema, name):
    return next(f for f in schema_fields(schema) if f.name == name)


def test_wire_sizes_are_the_schemas():
    assert wire.LRH_SIZE == ibh.LRH.sizeof() and wire.GRH_SIZE == ibh.GRH.sizeof()
    assert wire.BTH_SIZE == ibh.BTH.sizeof() and wire.DETH_SIZE == ibh.DETH.sizeof()
    assert wire.MAD_HEADER_SIZE == mad.MADHeader.sizeof() and wire.MAD_SIZE == mad.MAD.sizeof()
    assert wire.MAD_SIZE == smp.SMP.sizeof() == smp.SMPDirected.sizeof()
    assert wire.IB_SMP_DATA_SIZE * 8 == _leaf(smp.SMP, "data").width == _leaf(smp.SMPDirected, "data").width
    assert wire.IB_SMP_MAX_PATH_HOPS * 8 == header_field("smp", "initial_path").width


@pytest.mark.parametrize("offset,layer,name", [
    (wire.LRH_DLID, "lrh", "dlid"), (wire.LRH_SLID, "lrh", "slid"), (wire.BTH_OPCODE, "bth", "opcode"),
    (wire.BTH_PKEY, "bth", "pkey"), (wire.BTH_DEST_QP, "bth", "dqp"), (wire.BTH_PSN, "bth", "psn"),
    (wire.DETH_QKEY, "deth", "qkey"), (wire.DETH_SRC_QP, "deth", "sqp"),
    (wire.MAD_MGMT_CLASS, "mad", "mgmt_class"), (wire.MAD_METHOD, "mad", "method"),
    (wire.MAD_STATUS, "mad", "status"), (wire.MAD_TID, "mad", "tid"), (wire.MAD_ATTR_ID, "mad", "attr_id"),
    (wire.MAD_ATTR_MOD, "mad", "attr_mod"), (wire.SMP_HOP_PTR, "smp", "hop_ptr"),
    (wire.SMP_HOP_CNT, "smp", "hop_cnt"), (wire.SMP_M_KEY, "smp", "m_key"), (wire.SMP_DR_SLID, "smp", "dr_slid"),
    (wire.SMP_DR_DLID, "smp", "dr_dlid"), (wire.SMP_INITIAL_PATH, "smp", "initial_path"),
    (wire.SMP_RETURN_PATH, "smp", "return_path"),
])
def test_wire_offsets_are_the_tables(offset, layer, name):
    f = header_field(layer, name)
    assert (offset, 0) == (f.offset, f.bit) and f.width % 8 == 0, f


def test_wire_offsets_in_fields_that_share_bytes():
    pktlen = header_field("lrh", "pktlen")  # the low 11 bits of a be16
    assert (wire.LRH_PKTLEN, pktlen.bit + pktlen.width, pktlen.width) == (pktlen.offset, 16, 11)
    assert header_field("lrh", "lnh").offset == 1 and header_field("lrh", "lnh").bit + 2 == 8  # data[1] & 3
    status = header_field("mad", "status")
    assert wire.IB_SMP_DIRECTION == 1 << (status.width - 1)  # bit 15 of the be16


@pytest.mark.parametrize("offset,schema,name,low_bit,width", [
    (wire.SMP_DATA, smp.SMP, "data", 0, 512), (wire.SMP_DATA, smp.SMPDirected, "data", 0, 512),
    (wire.NODE_INFO_NODE_TYPE, smp.NodeInfo, "node_type", 0, 8),
    (wire.NODE_INFO_PARTITION_CAP, smp.NodeInfo, "partition_cap", 0, 16),
    (wire.SWITCH_INFO_PARTITION_ENFORCEMENT_CAP, smp.SwitchInfo, "partition_enforcement_cap", 0, 16),
    (wire.PORT_INFO_LID, smp.PortInfo, "lid", 0, 16),
    (wire.PORT_INFO_SM_LID, smp.PortInfo, "master_sm_lid", 0, 16),
    (wire.PORT_INFO_NEIGHBORMTU_MASTERSMSL, smp.PortInfo, "master_sm_sl", 4, 4),  # & 0xF
    (wire.PORT_INFO_CLIENTREREG_RESV_SUBNETTO, smp.PortInfo, "client_reregister", 0, 1),  # & 0x80
])
def test_wire_attribute_offsets_are_the_schemas(offset, schema, name, low_bit, width):
    f = _leaf(schema, name)
    assert (f.bit // 8, f.bit % 8, f.width) == (offset, low_bit, width)


def test_wire_numbers_are_the_chapters():
    # The chapter modules name wire's numbers, they do not define their own.
    assert smp.IB_SMP_ATTR_PKEY_TABLE is wire.IB_SMP_ATTR_PKEY_TABLE == 0x0016
    assert mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE is wire.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE == 0x81
    assert ibh.IB_PERMISSIVE_LID is wire.IB_PERMISSIVE_LID == 0xFFFF
    assert ibh.UD_OPCODES is wire.UD_OPCODES
    assert (crc.LNH_IBA_LOCAL, crc.LNH_IBA_GLOBAL) == (wire.LNH_IBA_LOCAL, wire.LNH_IBA_GLOBAL)


def _bits(schema, names, base_bit=0):
    """The bit positions of the leaves of ``schema`` named in ``names`` (all when None), from ``base_bit``."""
    return {base_bit + f.bit + k for f in schema_fields(schema) if names is None or f.name in names
            for k in range(f.width)}


@pytest.mark.parametrize("lnh", [wire.LNH_IBA_LOCAL, wire.LNH_IBA_GLOBAL])
def test_icrc_mask_is_the_variant_fields_of_the_schemas(lnh):
    """IBA 7.8.1: the bits crc.icrc_mask sets are those of these schema fields, and no others."""
    n = 400
    masked = {8 * i + k for i in range(n) for k in range(8) if crc.icrc_mask(i, n, lnh) >> (7 - k) & 1}
    if lnh == wire.LNH_IBA_GLOBAL:
        variant = _bits(ibh.LRH, None) | _bits(ibh.GRH, ("tclass", "flow_label", "hoplmt"), 8 * wire.LRH_SIZE)
    else:
        variant = _bits(ibh.LRH, ("vl",))
    variant |= _bits(ibh.BTH, ("resv8a",), 8 * wire.bth_offset(lnh))
    assert masked == variant
    assert all(crc.icrc_mask(i, n, lnh) == 0 for i in range(crc.ICRC_MASK_SPAN, n))


# -- frames to probe ------------------------------------------------------------------------------

def base_frames() -> dict[str, bytes]:
    get_resp = mad.IB_MGMT_METHOD_GET_RESP
    pkeys = build.pkey_table_mad(get_resp, 1, [0xFFFF, 0x8001, 0x7FFF], tid=0x1234, m_key=5)
    port_info = build.smp_mad(get_resp, smp.IB_SMP_ATTR_PORT_INFO, bytes(range(64)), tid=0xABCDEF, attr_mod=3,
                              directed=True, path=[1, 3, 2], return_path=[2, 3, 1], hop_ptr=3, dr_slid=4,
                              dr_dlid=7)
    sa = build.gmp_mad(mad.IB_MGMT_CLASS_SUBN_ADM, mad.IB_MGMT_METHOD_GET, 0x0011, tid=99, data=bytes(range(232)))
    grh = {"tclass": 0x12, "flow_label": 0x34567, "hoplmt": 9, "sgid": "fe80::1", "dgid": "fe80::2:3"}
    return {
        "lid-routed SMP": build.build_smp_frame(pkeys, slid=2, dlid=1),
        "directed-route SMP": build.build_smp_frame(port_info),
        "GMP behind a GRH": build.build_gmp_frame(sa, slid=5, dlid=6, vl=2, psn=77, grh=grh),
        "directed-route SMP behind a GRH": build.build_packet(port_info, slid=1, dlid=2, dqp=0, sqp=0, qkey=0,
                                                              grh=grh),
        "SEND with immediate": build.build_packet(b"\x0a\x0b\x0c\x0d" + pkeys, slid=3, dlid=4, dqp=0, sqp=0,
                                                  qkey=0, opcode=wire.OPCODE_UD_SEND_ONLY_IMM),
    }


def layer_starts(frame: bytes) -> dict[str, int]:
    """Byte where each header layer of ``frame`` starts ("mad" and "smp": the MAD)."""
    lnh = frame[1] & 3
    bth = wire.bth_offset(lnh)
    start = wire.mad_start(frame, 0, len(frame))
    starts = {"lrh": 0, "bth": bth, "deth": bth + wire.BTH_SIZE, "mad": start, "smp": start}
    if lnh == wire.LNH_IBA_GLOBAL:
        starts["grh"] = wire.LRH_SIZE
    return starts


def leaves(frame: bytes):
    """(layer, name, bit offset in the frame, width) of every leaf of the frame's header schemas
    (the SMP's attribute data apart: its formatters are checked against the schemas in
    test_decode_fast.py)."""
    starts = layer_starts(frame)
    cls = frame[starts["mad"] + wire.MAD_MGMT_CLASS]
    mad_schema = {wire.IB_MGMT_CLASS_SUBN_LID_ROUTED: smp.SMP,
                  wire.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE: smp.SMPDirected}.get(cls, mad.MADHeader)
    for layer in ("lrh", "grh", "bth", "deth"):
        if layer in starts:
            for f in schema_fields(LAYER_SCHEMAS[layer]):
                yield layer, f.name, 8 * starts[layer] + f.bit, f.width
    for f in schema_fields(mad_schema):
        if f.name != "data":
            yield "mad", f.name, 8 * starts["mad"] + f.bit, f.width


def table_field_at(frame: bytes, bit: int, width: int):
    """The table's field that sits at ``bit`` (from the frame's start) with ``width``, or None."""
    starts = layer_starts(frame)
    for f in header_fields():
        if f.layer in starts and 8 * (starts[f.layer] + f.offset) + f.bit == bit and f.width == width:
            directed = frame[starts["mad"] + wire.MAD_MGMT_CLASS] == wire.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
            if f.layer == "smp" and f.name != "m_key" and not directed:
                continue  # the hop fields are the directed route's
            return f
    return None


def expected(f, frame: bytes, value: int):
    """What decode_frame must give for ``f`` set to ``value`` in ``frame``."""
    if f.layer == "grh" and f.name in ("sgid", "dgid"):
        return str(ipaddress.IPv6Address(value.to_bytes(16, "big")))
    if f.name in ("initial_path", "return_path"):
        hops = frame[layer_starts(frame)["mad"] + wire.SMP_HOP_CNT]
        return list(value.to_bytes(64, "big")[1:1 + hops])
    return value


def with_field(frame: bytes, bit: int, width: int, value: int) -> bytes:
    """``frame`` with the ``width`` bits at ``bit`` (MSB first) set to ``value``."""
    total = 8 * len(frame)
    shift = total - bit - width
    n = int.from_bytes(frame, "big") & ~(((1 << width) - 1) << shift) | value << shift
    return n.to_bytes(len(frame), "big")


def probes():
    """(label, frame, table field or None, value) for every leaf and value of every base frame
    (the base frame itself first, with None)."""
    out = []
    for kind, frame in base_frames().items():
        out.append((kind, frame, None, None))
        for layer, name, bit, width in leaves(frame):
            field = table_field_at(frame, bit, width)
            for value in probe_values(width):
                out.append((f"{kind}: {layer}.{name}={value:#x}", with_field(frame, bit, width, value), field, value))
    return out


@pytest.fixture(scope="module")
def probed():
    return probes()


def test_probes_cover_every_table_field(probed):
    covered = {(f.layer, f.name) for _, _, f, _ in probed if f is not None}
    assert covered == {(f.layer, f.name) for f in header_fields()}


# -- the MAD offset -------------------------------------------------------------------------------

def test_mad_start_is_decode_frames_rule_in_python_and_in_the_kernel(probed):
    with CaptureReader(PCAPS / "infiniband_endace_erf_2008.pcap") as cap:
        frames = [p.data for p in cap]
    frames += [frame for _, frame, _, _ in probed]
    rng = np.random.default_rng(5)
    frames += [f[:int(rng.integers(0, len(f) + 1))] for f in frames[:200]]
    lengths = np.array([len(f) for f in frames], np.int64)
    offsets = np.zeros(len(frames), np.int64)
    offsets[1:] = np.cumsum(lengths)[:-1]
    buf = np.frombuffer(b"".join(frames) + bytes(1), np.uint8)
    rows = np.empty((len(frames), 512), np.uint8)
    kernel = np.empty(len(frames), np.int16)
    ki.gather_rows(buf, offsets, lengths, len(frames), rows, kernel)
    for i, frame in enumerate(frames):
        start = wire.mad_start(frame, 0, len(frame))
        record = decode_frame(frame)
        assert (start >= 0) == ("attr" in record), (i, record.get("error"))
        assert kernel[i] == start, i
        if start >= 0:
            assert strip(mad.MADHeader.parse(frame[start:start + 24])) == record["mad"]


# -- the fast paths -------------------------------------------------------------------------------

def test_json_fast_path_field_by_field(probed):
    for label, frame, f, value in probed:
        record = decode_frame(frame, 1, 0.5)
        icrc, vcrc = crc.check_crcs(frame)
        line = json_lines.frame_json(frame, 1, 0.5, CODE[icrc], CODE[vcrc])
        if line is not None:
            assert line == json_lines.dumps(record), label
        if f is None:
            assert line is not None, label  # a base frame
            continue
        want = expected(f, frame, value)
        if (f.layer, f.name) in LAYOUT and not (f.name == "hop_cnt" and value <= 63):
            if line is not None:
                assert record[f.layer][f.name] == want, label
            continue
        assert line is not None, f"{label}: the fast path declined a frame whose layout is the base's"
        assert record[f.layer][f.name] == want, label


def test_column_fast_path_field_by_field(probed, tmp_path, monkeypatch):
    pd = pytest.importorskip("pandas")
    from madpipe.pipeline.columns import frames as columns

    path = tmp_path / "probes.pcap"
    with CaptureWriter(path, linktype=197) as w:
        for i, (_, frame, _, _) in enumerate(probed):
            w.write(frame, 1_700_000_000_000_000_000 + 1000 * i)
    taken = set()
    fast_rows = columns._fast_rows

    def spy(cols, fast, fb):
        taken.update(fb.frame[fast].tolist())
        return fast_rows(cols, fast, fb)

    monkeypatch.setattr(columns, "_fast_rows", spy)
    fast = columns.frames_dataframe(path)
    pd.testing.assert_frame_equal(fast, columns.frames_dataframe(path, fast=False))
    # The column path takes exactly the frames the JSON path takes.
    json_taken = set()
    for i, (_, frame, _, _) in enumerate(probed):
        icrc, vcrc = crc.check_crcs(frame)
        if json_lines.frame_json(frame, i + 1, 0.0, CODE[icrc], CODE[vcrc]) is not None:
            json_taken.add(i + 1)
    assert taken == json_taken
    # and its header columns are the table's fields, read at the table's offsets
    header = {f.name for f in columns._header_columns()}
    assert header == set(columns.FRAME_COLUMNS) - {"frame", "ts", "length", "dr_path", "class_name", "method_name",
                                                   "attr_name", "block", "payload_len", "icrc_ok", "vcrc_ok", "error"}
