"""The fields of a frame, found by walking the construct schemas of each layer, and the values that matter for them.

:func:`frame_fields` splits a seed frame into LRH, GRH, BTH, DETH, the MAD header, the SMP
(LID-routed or directed-route) with the attribute's own fields in its data area, PerfMgt
attributes, the ICRC and the VCRC; :data:`INTERESTING` holds, by field name, values known to
matter for a field (classes, methods, attribute IDs, the permissive LID, QP1's Q_Key...).
"""
from __future__ import annotations

from madpipe.codecs import crc, perf, wire
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.field_table import Field, schema_fields

# -- fields of a frame --------------------------------------------------------------------------

def _bytes_fields(name: str, offset: int, size: int, step: int) -> list[Field]:
    """A byte run as fields of ``step`` bytes: ``name[k]``."""
    return [Field(f"{name}[{k}]", 8 * (offset + k * step), 8 * min(step, size - k * step))
            for k in range((size + step - 1) // step)]


def mad_offset(data: bytes) -> int:
    """Where the MAD starts in a frame (the rule of ``codecs.wire.mad_start``); -1 when it carries none."""
    return wire.mad_start(data, 0, len(data))


def mad_fields(mad: bytes, base: int) -> list[Field]:
    """The fields of a 256-byte MAD at byte ``base`` of a frame, named as ``madpipe decode -T json``."""
    b = 8 * base
    cls = mad[wire.MAD_MGMT_CLASS]
    attr_id = int.from_bytes(mad[wire.MAD_ATTR_ID:wire.MAD_ATTR_ID + 2], "big")
    if cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        out = [Field(("smp." if f.name in ("hop_ptr", "hop_cnt") else "mad.") + f.name, b + f.bit, f.width)
               for f in schema_fields(smpc.SMPDirectedHeader)]
        out += [Field("smp." + f.name, b + f.bit, f.width) for f in schema_fields(smpc.SMPDirected)
                if f.name in ("m_key", "dr_slid", "dr_dlid", "resv")]
        out += schema_fields(smpc.attribute_schema(attr_id), "attr", b + 8 * wire.SMP_DATA)
        out += _bytes_fields("smp.initial_path", base + wire.SMP_INITIAL_PATH, wire.IB_SMP_MAX_PATH_HOPS, 1)
        out += _bytes_fields("smp.return_path", base + wire.SMP_RETURN_PATH, wire.IB_SMP_MAX_PATH_HOPS, 1)
        return out
    out = [Field("mad." + f.name, b + f.bit, f.width) for f in schema_fields(madc.MADHeader)]
    if cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED:
        leaves = {f.name: f for f in schema_fields(smpc.SMP)}
        out += [Field("smp." + name, b + leaves[name].bit, leaves[name].width) for name in ("m_key", "resv")]
        out += schema_fields(smpc.attribute_schema(attr_id), "attr", b + 8 * wire.SMP_DATA)
        out += _bytes_fields("smp.resv2", base + leaves["resv2"].bit // 8, leaves["resv2"].width // 8, 8)
    elif cls == madc.IB_MGMT_CLASS_PERF_MGMT:
        out += [Field("perf.resv", b + 8 * wire.MAD_HEADER_SIZE, 8 * 40)]
        out += schema_fields(perf.attribute_schema(attr_id), "attr", b + 8 * 64)
    else:
        out += _bytes_fields("class_data", base + wire.MAD_HEADER_SIZE, wire.MAD_SIZE - wire.MAD_HEADER_SIZE, 4)
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
    if lnh == wire.LNH_IBA_GLOBAL and n >= pos + ibh.GRH_SIZE:
        out += schema_fields(ibh.GRH, "grh", 8 * pos)
        pos += ibh.GRH_SIZE
    if lnh in (wire.LNH_IBA_LOCAL, wire.LNH_IBA_GLOBAL) and n >= pos + ibh.BTH_SIZE:
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


def layout_key(data: bytes, mad_off: int) -> tuple:
    """What :func:`frame_fields` depends on: frames with one key have one field table."""
    n = len(data)
    lnh = data[1] & 3 if n >= 2 else -1
    pos = wire.LRH_SIZE
    if lnh == wire.LNH_IBA_GLOBAL and n >= wire.LRH_SIZE + wire.GRH_SIZE:
        pos += wire.GRH_SIZE
    opcode = data[pos] if n > pos else -1
    mad = data[mad_off:mad_off + wire.MAD_HEADER_SIZE] if mad_off >= 0 else b""
    cls = mad[wire.MAD_MGMT_CLASS:wire.MAD_MGMT_CLASS + 1]
    return (n, lnh, opcode, mad_off, cls, mad[wire.MAD_ATTR_ID:wire.MAD_ATTR_ID + 2])


# -- values that matter, by field name -----------------------------------------------------------

ATTR_IDS = sorted(smpc.SMP_ATTRIBUTES) + [0x0000, 0x0001, 0x0013, 0x001C, 0x0090, 0xFF00, 0xFF01, 0xFFFF]
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
    "mad.attr_id": ATTR_IDS,
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


def interesting_for(name: str) -> list[int]:
    key = name.split("[", 1)[0]
    return INTERESTING.get(key, [])


def field_weight(f: Field) -> float:
    if "_path[" in f.name or f.name.startswith(("class_data[", "payload[", "smp.resv2[", "bytes[")):
        return 0.05
    if f.name.startswith("attr.pkeys["):
        return 0.3
    if f.name.startswith("attr."):
        return 0.6
    return 1.0
