"""Decode one captured InfiniBand packet (from the LRH) into plain values, layer by layer.

The result is the JSON record `madpipe decode -T json` prints (keys fixed; scripts rely on them).
Lengths are checked before each layer is parsed, so a short or inconsistent frame is reported
with the byte offset and the field, and everything before it is still decoded.
"""
from __future__ import annotations

import ipaddress

from madpipe.codecs import crc, gmp, mad, wire
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs.compiled import compiled
from madpipe.codecs.field_table import LAYER_KEYS

MAD_CLASSES_SMP = (mad.IB_MGMT_CLASS_SUBN_LID_ROUTED, mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)

LRH_KEYS = LAYER_KEYS["lrh"]
BTH_KEYS = LAYER_KEYS["bth"]
GRH_KEYS = LAYER_KEYS["grh"]
DETH_KEYS = LAYER_KEYS["deth"]
MAD_KEYS = LAYER_KEYS["mad"]


def _compiled(schema_name: str):
    """Compiled headers: lengths are checked before parsing, so the fast parser cannot fail."""
    return compiled(getattr(ibh, schema_name))


def plain(value):
    """construct Container -> JSON-ready values: dicts, lists, ints, str (bytes as hex)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if hasattr(value, "intvalue"):  # EnumIntegerString
        return int(value.intvalue)
    return value


def gid_text(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(bytes(raw)))


class FrameDecode:
    """Accumulates a frame's layers and the first problem met, with offset and field."""

    def __init__(self, frame: int | None, ts: float | None):
        self.out: dict = {}
        if frame is not None:
            self.out["frame"] = frame
        if ts is not None:
            self.out["ts"] = ts
        self.problems: list[str] = []

    def problem(self, offset: int, field: str, reason: str) -> None:
        self.problems.append(f"offset {offset}, field {field}: {reason}")


def decode_frame(data: bytes, frame: int | None = None, ts: float | None = None) -> dict:
    """Decode a raw IB packet (LRH first) into the `madpipe decode -T json` record."""
    d = FrameDecode(frame, ts)
    out = d.out
    n = len(data)
    if n < ibh.LRH_SIZE:
        d.problem(0, "lrh", f"frame of {n} bytes is shorter than the 8-byte LRH")
        return _finish(d)
    lrh = _compiled("LRH").parse(data[:ibh.LRH_SIZE])
    out["lrh"] = {k: lrh[k] for k in LRH_KEYS}
    icrc_ok, vcrc_ok = crc.check_crcs(data)
    wire_len = lrh.pktlen * 4 + crc.VCRC_SIZE
    if wire_len != n:
        d.problem(4, "lrh.pktlen", f"PktLen {lrh.pktlen} says {wire_len} bytes with VCRC, frame has {n}")
    # End of the transport payload: before the ICRC and VCRC (of the bytes actually present).
    end = n - crc.VCRC_SIZE - (crc.ICRC_SIZE if crc.has_icrc(lrh.lnh) else 0)
    pos = ibh.LRH_SIZE
    if lrh.lnh == wire.LNH_IBA_GLOBAL:
        if n < pos + ibh.GRH_SIZE:
            d.problem(pos, "grh", f"LNH=3 but only {n - pos} bytes follow the LRH, GRH needs {ibh.GRH_SIZE}")
            return _finish(d, icrc_ok, vcrc_ok)
        grh = _compiled("GRH").parse(data[pos:pos + ibh.GRH_SIZE])
        out["grh"] = {k: grh[k] for k in GRH_KEYS}
        out["grh"]["sgid"] = gid_text(grh.sgid)
        out["grh"]["dgid"] = gid_text(grh.dgid)
        pos += ibh.GRH_SIZE
    elif lrh.lnh in (wire.LNH_RAW, wire.LNH_IP_NON_IBA):
        out["raw_len"] = max(end - pos, 0)  # raw packets: no transport headers, no MAD
        return _finish(d, icrc_ok, vcrc_ok)
    if n < pos + ibh.BTH_SIZE:
        d.problem(pos, "bth", f"{n - pos} bytes left, BTH needs {ibh.BTH_SIZE}")
        return _finish(d, icrc_ok, vcrc_ok)
    bth = _compiled("BTH").parse(data[pos:pos + ibh.BTH_SIZE])
    out["bth"] = {k: bth[k] for k in BTH_KEYS}
    pos += ibh.BTH_SIZE
    if bth.opcode not in ibh.UD_OPCODES:
        out["payload_len"] = max(end - pos - bth.padcnt, 0)
        return _finish(d, icrc_ok, vcrc_ok)
    if n < pos + ibh.DETH_SIZE:
        d.problem(pos, "deth", f"{n - pos} bytes left, DETH needs {ibh.DETH_SIZE}")
        return _finish(d, icrc_ok, vcrc_ok)
    deth = _compiled("DETH").parse(data[pos:pos + ibh.DETH_SIZE])
    out["deth"] = {k: deth[k] for k in DETH_KEYS}
    pos += ibh.DETH_SIZE
    if bth.opcode == ibh.OPCODE_UD_SEND_ONLY_IMM:
        pos += wire.IMMDT_SIZE
    if bth.dqp not in (0, 1) and deth.sqp not in (0, 1):
        out["payload_len"] = max(end - pos - bth.padcnt, 0)  # UD datagram that is not a MAD (IPoIB...)
        return _finish(d, icrc_ok, vcrc_ok)
    avail = end - pos
    if avail < mad.MAD_SIZE:
        d.problem(pos, "mad", f"MAD of {max(avail, 0)} bytes before the ICRC, a MAD is 256")
        if avail >= mad.MAD_HEADER_SIZE:
            out["mad"] = _mad_header(data[pos:pos + mad.MAD_HEADER_SIZE])
        return _finish(d, icrc_ok, vcrc_ok)
    decode_mad(data[pos:pos + mad.MAD_SIZE], out, d, pos)
    return _finish(d, icrc_ok, vcrc_ok)


def _mad_header(raw: bytes) -> dict:
    hdr = _mad_header_schema().parse(raw)
    return {k: hdr[k] for k in MAD_KEYS}


def _mad_header_schema():
    return compiled(mad.MADHeader)


def decode_mad(raw: bytes, out: dict, d: FrameDecode | None = None, base: int = 0) -> dict:
    """Decode a 256-byte MAD into ``out`` (keys mad, smp, attr, class_data)."""
    from madpipe.codecs import perf, smp  # attribute tables are large: load them on first MAD

    hdr = _mad_header(raw[:mad.MAD_HEADER_SIZE])
    out["mad"] = hdr
    cls = hdr["mgmt_class"]
    if cls in MAD_CLASSES_SMP:
        directed = cls == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
        s = _smp_schema(directed).parse(raw)
        info = {"m_key": s.m_key}
        if directed:
            h = s.hdr
            used = min(h.hop_cnt, 63)
            if h.hop_cnt > 63 and d is not None:
                d.problem(base + wire.SMP_HOP_CNT, "smp.hop_cnt", f"hop count {h.hop_cnt} exceeds 63")
            # Path entry 0 is unused (IBA 14.2.2): hops 1..hop_cnt are the route.
            info.update(
                hop_ptr=h.hop_ptr,
                hop_cnt=h.hop_cnt,
                dr_slid=s.dr_slid,
                dr_dlid=s.dr_dlid,
                initial_path=list(s.initial_path[1:1 + used]),
                return_path=list(s.return_path[1:1 + used]),
            )
        out["smp"] = info
        name = smp.attribute_name(hdr["attr_id"])
        data = raw[wire.SMP_DATA:wire.SMP_DATA + wire.IB_SMP_DATA_SIZE]
        attr = plain(smp.attribute_schema(hdr["attr_id"], compiled=True).parse(data))
        if hdr["attr_id"] == smp.IB_SMP_ATTR_PKEY_TABLE:
            attr = {"block": smp.pkey_block(hdr["attr_mod"]), **attr}
        out["attr"] = {"name": name, **attr}
    elif cls == mad.IB_MGMT_CLASS_PERF_MGMT and hdr["attr_id"] in perf.PERF_ATTRIBUTES:
        name, schema = perf.PERF_ATTRIBUTES[hdr["attr_id"]]
        out["attr"] = {"name": name, **plain(schema.parse(raw[64:256]))}
    else:
        out["attr"] = {"name": attr_name(cls, hdr["attr_id"])}
        out["class_data"] = raw[mad.MAD_HEADER_SIZE:].hex()
    return out


def attr_name(mgmt_class: int, attr_id: int) -> str:
    """The attribute name ``madpipe decode`` gives a MAD of this class and attribute ID."""
    from madpipe.codecs import perf, smp

    if mgmt_class in (mad.IB_MGMT_CLASS_SUBN_LID_ROUTED, mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        return smp.attribute_name(attr_id)
    if mgmt_class == mad.IB_MGMT_CLASS_PERF_MGMT and attr_id in perf.PERF_ATTRIBUTES:
        return perf.PERF_ATTRIBUTES[attr_id][0]
    names = {mad.IB_MGMT_CLASS_SUBN_ADM: gmp.SA_ATTRIBUTE_NAMES, mad.IB_MGMT_CLASS_CM: gmp.CM_ATTRIBUTE_NAMES,
             mad.IB_MGMT_CLASS_PERF_MGMT: gmp.PERF_ATTRIBUTE_NAMES}.get(mgmt_class, {})
    return names.get(attr_id, f"0x{attr_id:04x}")


def _smp_schema(directed: bool):
    from madpipe.codecs import smp

    return compiled(smp.SMPDirected if directed else smp.SMP)


def _finish(d: FrameDecode, icrc_ok=None, vcrc_ok=None) -> dict:
    d.out["icrc_ok"] = icrc_ok
    d.out["vcrc_ok"] = vcrc_ok
    if d.problems:
        d.out["error"] = "; ".join(d.problems)
    return d.out
