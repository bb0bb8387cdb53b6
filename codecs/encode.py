"""Encode a ``madpipe decode -T json`` record back into the packet it came from (LRH .. VCRC).

``encode_record(decode_frame(frame)) == frame`` for every MAD frame whose reserved fields are
zero (what the record leaves out: LRH/BTH/DETH reserved bits, the SMP's reserved areas, path
entry 0 and path entries past hop_cnt, PerfMgt's 40 reserved bytes, ImmDt). Everything the
record holds goes through the construct schemas of ``ib_headers``, ``mad``, ``smp`` and ``perf``.

Editing a record and encoding it is how ``madpipe craft --from-json`` builds frames:

- A key left out is computed (lrh.pktlen, grh.paylen) or zero (every other field). Unknown
  keys are errors, so a typo does not go unnoticed.
- A directed-route SMP's hop pointer and count are ``smp.hop_ptr``/``smp.hop_cnt`` (they win over
  ``mad.class_specific``, the same two bytes); ``smp.initial_path``/``return_path`` are the hops
  1..hop_cnt, so a path edited to another length needs hop_cnt edited too; a path given as
  128 hex digits is the whole 64-byte field (entry 0 and the bytes past hop_cnt included).
- P_KeyTable: ``attr.block`` is the low 16 bits of the attribute modifier (it wins over
  ``mad.attr_mod``). ``attr.name`` is informational; ``mad.attr_id`` says which attribute it is.
- The record carries no CRC values (``icrc_ok``/``vcrc_ok`` only): ICRC and VCRC are computed,
  unless the record has integer ``icrc``/``vcrc`` keys, which are used as given (fuzzing).

A record without the bytes of its payload (IPoIB, RC data: decode keeps only ``payload_len``;
raw packets: ``raw_len``; records of skipped ERF types) cannot be encoded: ``EncodeError``.
"""
from __future__ import annotations

import ipaddress

import construct as cs

from madpipe.codecs import crc, perf
from madpipe.codecs import ib_headers as ibh
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.errors import MadpipeError

__all__ = ["EncodeError", "encode_record", "encode_attribute"]

_LRH_KEYS = ("vl", "lver", "sl", "resv2", "lnh", "dlid", "resv5", "pktlen", "slid")
_GRH_KEYS = ("ipver", "tclass", "flow_label", "paylen", "nxthdr", "hoplmt", "sgid", "dgid")
_BTH_KEYS = ("opcode", "se", "m", "padcnt", "tver", "pkey", "resv8a", "dqp", "a", "resv7b", "psn")
_DETH_KEYS = ("qkey", "resv8", "sqp")
_MAD_KEYS = ("base_version", "mgmt_class", "class_version", "method", "status",
             "class_specific", "tid", "attr_id", "resv", "attr_mod")
_SMP_KEYS = ("m_key", "hop_ptr", "hop_cnt", "dr_slid", "dr_dlid", "initial_path", "return_path")
_TOP_KEYS = {"frame", "ts", "lrh", "grh", "bth", "deth", "mad", "smp", "attr", "class_data",
             "icrc_ok", "vcrc_ok", "icrc", "vcrc", "imm_data", "error"}


class EncodeError(MadpipeError, ValueError):
    """A record that cannot be turned back into bytes: the message names the frame and key."""


def _width(con) -> int | None:
    """Bits of an integer construct field (BitsInteger, Int8ub..Int64ub, Int24ub), else None."""
    if isinstance(con, cs.BitsInteger):
        return con.length
    if isinstance(con, (cs.FormatField, cs.BytesInteger)):
        return con.length * 8
    return None


def _widths(*schemas) -> dict[str, int]:
    """Field name -> bits, for the integer fields of Structs and BitStructs (nested ones too)."""
    out: dict[str, int] = {}
    for schema in schemas:
        inner = schema.subcon if isinstance(schema, cs.Transformed) else schema
        for sc in inner.subcons:
            nested = sc.subcon.subcon if isinstance(sc.subcon, cs.Transformed) else sc.subcon
            if isinstance(nested, cs.Struct):
                out.update(_widths(sc.subcon))
            elif (bits := _width(sc.subcon)) is not None:
                out[sc.name] = bits
    return out


_WIDTHS = {
    "lrh": _widths(ibh.LRH),
    "grh": _widths(ibh.GRH),
    "bth": _widths(ibh.BTH),
    "deth": _widths(ibh.DETH),
    "mad": _widths(madc.MADHeader),
    "smp": {**_widths(smpc.SMPDirected), **_widths(smpc.SMP)},
}


class _Record:
    """Reads one record, naming the frame and the key in every error."""

    def __init__(self, record: dict):
        if not isinstance(record, dict):
            raise EncodeError(f"a record is a JSON object, not {type(record).__name__}")
        self.record = record
        frame = record.get("frame")
        self.where = f"frame {frame}: " if frame is not None else ""

    def error(self, text: str) -> EncodeError:
        return EncodeError(self.where + text)

    def part(self, key: str, keys: tuple[str, ...], computed: tuple[str, ...] = ()) -> dict:
        """record[key] with every field of ``keys``: missing ones 0 (None if in ``computed``)."""
        given = self.record.get(key)
        if not isinstance(given, dict):
            raise self.error(f"the record has no {key!r} object")
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise self.error(f"{key} has no field {unknown[0]!r} (fields: {', '.join(keys)})")
        out = {}
        for k in keys:
            v = given.get(k, None if k in computed else [] if k.endswith("_path") else 0)
            if v is not None and k not in ("sgid", "dgid", "initial_path", "return_path"):
                v = self.integer(f"{key}.{k}", v)
                bits = _WIDTHS[key].get(k)
                if bits is not None and not 0 <= v < 1 << bits:
                    raise self.error(f"{key}.{k} {v} does not fit its {bits} bits")
            out[k] = v
        return out

    def integer(self, name: str, value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise self.error(f"{name} must be an integer, not {value!r}")
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise self.error(f"{name} must be an integer, not {value!r}") from None
        return value

    def build(self, schema, value: dict, name: str) -> bytes:
        try:
            return schema.build(value)
        except (cs.ConstructError, ValueError, TypeError, OverflowError) as exc:
            raise self.error(f"{name}: {_construct_reason(exc)}") from None


def _construct_reason(exc: Exception) -> str:
    text = str(exc).strip()
    # construct prefixes errors with the path, e.g. "Error in path (building) -> pkeys -> ..."
    return text.replace("Error in path (building) -> ", "").replace("\n", " ")


def _gid(rec: _Record, name: str, value) -> bytes:
    if isinstance(value, int) and not isinstance(value, bool):
        return value.to_bytes(16, "big")
    try:
        return ipaddress.IPv6Address(value or "::").packed
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise rec.error(f"{name} {value!r} is not a GID (IPv6 text such as 'fe80::2:c903:0:1f2d')") from None


def encode_attribute(schema, given: dict, where: str = "attr") -> bytes:
    """Build an attribute from its JSON form (``frame.plain``): hex strings are bytes fields,
    missing fields are zero, unknown fields are errors."""
    return schema.build(_from_plain(schema, given, where))


def _from_plain(schema, given, where: str):
    """The construct value of ``given`` (JSON) for ``schema``, missing fields filled with zeros."""
    con = schema
    if isinstance(con, cs.Renamed):
        con = con.subcon
    if isinstance(con, cs.Transformed) and isinstance(con.subcon, (cs.Struct, cs.Bytes)):
        con = con.subcon  # BitStruct, or Bytewise(Bytes(n)) inside one
    if isinstance(con, cs.Struct):
        if given is None:
            given = {}
        if not isinstance(given, dict):
            raise ValueError(f"{where} must be an object, not {given!r}")
        names = [sc.name for sc in con.subcons]
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"{where} has no field {unknown[0]!r} (fields: {', '.join(names)})")
        return {sc.name: _from_plain(sc.subcon, given.get(sc.name), f"{where}.{sc.name}")
                for sc in con.subcons}
    if isinstance(con, cs.Array):
        if given is not None and not isinstance(given, list):
            raise ValueError(f"{where} must be a list of {con.count}, not {given!r}")
        items = list(given or [])
        if len(items) > con.count:
            raise ValueError(f"{where} holds {con.count} items, not {len(items)}")
        items += [None] * (con.count - len(items))
        return [_from_plain(con.subcon, v, f"{where}[{i}]") for i, v in enumerate(items)]
    if isinstance(con, cs.Bytes):
        if given is None:
            return bytes(con.length)
        try:
            raw = bytes.fromhex(given) if isinstance(given, str) else bytes(given)
        except (ValueError, TypeError):
            raise ValueError(f"{where} must be hex bytes, not {given!r}") from None
        if len(raw) > con.length:
            raise ValueError(f"{where} holds {con.length} bytes, not {len(raw)}")
        return raw.ljust(con.length, b"\0")
    if given is None:
        return 0
    value = given
    if isinstance(given, str):
        try:
            value = int(given, 0)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer, not {given!r}")
    bits = _width(con)
    if bits is not None and not 0 <= value < 1 << bits:
        raise ValueError(f"{where} {value} does not fit its {bits} bits")
    return value


def _path(rec: _Record, name: str, hops, hop_cnt: int) -> bytes:
    """A 64-byte path from the record's hops 1..hop_cnt, or from 64 bytes of hex as they are."""
    if isinstance(hops, str):
        try:
            raw = bytes.fromhex(hops)
        except ValueError:
            raw = b""
        if len(raw) != smpc.IB_SMP_MAX_PATH_HOPS:
            raise rec.error(f"{name} as text is the whole path: 64 bytes of hex")
        return raw
    hops = [] if hops is None else hops
    if not isinstance(hops, list):
        raise rec.error(f"{name} must be a list of ports (hops 1..hop_cnt) or 64 bytes of hex")
    used = min(hop_cnt, smpc.IB_SMP_MAX_PATH_HOPS - 1)
    if len(hops) != used:
        raise rec.error(f"{name} has {len(hops)} hops but smp.hop_cnt is {hop_cnt}: "
                        "edit hop_cnt with the path")
    ports = [rec.integer(f"{name}[{i}]", p) for i, p in enumerate(hops)]
    if any(not 0 <= p <= 0xFF for p in ports):
        raise rec.error(f"{name}: a port is a byte, 0..255")
    return bytes([0, *ports]).ljust(smpc.IB_SMP_MAX_PATH_HOPS, b"\0")


def _encode_mad(rec: _Record) -> bytes:
    hdr = rec.part("mad", _MAD_KEYS)
    cls = hdr["mgmt_class"]
    attr = rec.record.get("attr") or {}
    if not isinstance(attr, dict):
        raise rec.error("attr must be an object")
    fields = {k: v for k, v in attr.items() if k not in ("name", "block")}
    if cls in (madc.IB_MGMT_CLASS_SUBN_LID_ROUTED, madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        if hdr["attr_id"] == smpc.IB_SMP_ATTR_PKEY_TABLE and "block" in attr:
            block = rec.integer("attr.block", attr["block"])
            if not 0 <= block <= 0xFFFF:
                raise rec.error(f"attr.block {block} does not fit the 16 bits of the attribute modifier")
            hdr["attr_mod"] = hdr["attr_mod"] & 0xFFFF0000 | block
        data = _encode_attr(rec, smpc.attribute_schema(hdr["attr_id"]), fields)
        info = rec.part("smp", _SMP_KEYS)
        if cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED:
            extra = sorted(k for k in ("hop_ptr", "hop_cnt", "dr_slid", "dr_dlid", "initial_path",
                                       "return_path") if k in rec.record["smp"])
            if extra:
                raise rec.error(f"smp.{extra[0]} belongs to a directed-route SMP (mad.mgmt_class 0x81)")
            return rec.build(smpc.SMP, dict(hdr=hdr, m_key=info["m_key"], resv=bytes(32), data=data,
                                             resv2=bytes(128)), "smp")
        dr_hdr = {k: v for k, v in hdr.items() if k != "class_specific"}
        dr_hdr["hop_ptr"] = info["hop_ptr"] if "hop_ptr" in rec.record["smp"] else hdr["class_specific"] >> 8
        dr_hdr["hop_cnt"] = info["hop_cnt"] if "hop_cnt" in rec.record["smp"] else hdr["class_specific"] & 0xFF
        return rec.build(smpc.SMPDirected, dict(
            hdr=dr_hdr, m_key=info["m_key"], dr_slid=info["dr_slid"], dr_dlid=info["dr_dlid"],
            resv=bytes(28), data=data,
            initial_path=_path(rec, "smp.initial_path", info["initial_path"], dr_hdr["hop_cnt"]),
            return_path=_path(rec, "smp.return_path", info["return_path"], dr_hdr["hop_cnt"])), "smp")
    if cls == madc.IB_MGMT_CLASS_PERF_MGMT and hdr["attr_id"] in perf.PERF_ATTRIBUTES and "class_data" not in rec.record:
        data = _encode_attr(rec, perf.PERF_ATTRIBUTES[hdr["attr_id"]][1], fields)
        return rec.build(perf.PerfMAD, dict(hdr=hdr, resv=bytes(40), data=data), "mad")
    if fields:
        raise rec.error(f"attr.{sorted(fields)[0]}: class 0x{cls:02x} attributes travel as class_data hex")
    text = rec.record.get("class_data", "")
    try:
        body = bytes.fromhex(text)
    except (ValueError, TypeError):
        raise rec.error("class_data must be hex (the 232 bytes after the MAD header)") from None
    size = madc.MAD_SIZE - madc.MAD_HEADER_SIZE
    if len(body) > size:
        raise rec.error(f"class_data holds {size} bytes, not {len(body)}")
    return rec.build(madc.MADHeader, hdr, "mad") + body.ljust(size, b"\0")


def _encode_attr(rec: _Record, schema, fields: dict) -> bytes:
    try:
        return encode_attribute(schema, fields)
    except (ValueError, cs.ConstructError) as exc:
        raise rec.error(_construct_reason(exc)) from None


def encode_record(record: dict) -> bytes:
    """The wire bytes (LRH .. VCRC) of a ``madpipe decode -T json`` record; see the module doc."""
    rec = _Record(record)
    if "skipped" in record:
        raise rec.error(f"the record is a skipped ERF record ({record['skipped']}), not a packet")
    if "raw_len" in record:
        raise rec.error("a raw packet (LNH 0/1): the record keeps no payload bytes (raw_len only)")
    if "payload_len" in record:
        raise rec.error("not a MAD: the record keeps no payload bytes (payload_len only); "
                        "select MADs with madpipe decode -Y mad")
    unknown = sorted(set(record) - _TOP_KEYS)
    if unknown:
        raise rec.error(f"unknown key {unknown[0]!r}")
    lrh = rec.part("lrh", _LRH_KEYS, computed=("pktlen",))
    lnh = lrh["lnh"]
    if not crc.has_icrc(lnh):
        raise rec.error(f"a raw packet (LNH {lnh}) has no bytes in its record (raw_len only)")
    grh = b""
    grh_fields = None
    if lnh == crc.LNH_IBA_GLOBAL:
        grh_fields = rec.part("grh", _GRH_KEYS, computed=("paylen",))
        grh_fields["sgid"] = _gid(rec, "grh.sgid", grh_fields["sgid"])
        grh_fields["dgid"] = _gid(rec, "grh.dgid", grh_fields["dgid"])
    elif "grh" in record:
        raise rec.error(f"the record has a grh but lrh.lnh is {lnh}, not 3")
    bth = rec.part("bth", _BTH_KEYS)
    if "deth" not in record or bth["opcode"] not in ibh.UD_OPCODES:
        raise rec.error(f"BTH opcode 0x{bth['opcode']:02x}: not a UD datagram, the record keeps "
                        "no payload bytes (payload_len only)")
    deth = rec.part("deth", _DETH_KEYS)
    if "mad" not in record:
        raise rec.error("a UD datagram that is not a MAD: the record keeps no payload bytes "
                        "(payload_len only); select MADs with madpipe decode -Y mad")
    body = rec.build(ibh.BTH, bth, "bth") + rec.build(ibh.DETH, deth, "deth")
    if bth["opcode"] == ibh.OPCODE_UD_SEND_ONLY_IMM:
        imm = rec.integer("imm_data", record.get("imm_data", 0))
        if not 0 <= imm <= 0xFFFFFFFF:
            raise rec.error(f"imm_data {imm:#x} does not fit 32 bits")
        body += imm.to_bytes(4, "big")
    body += _encode_mad(rec) + bytes(bth["padcnt"])
    if grh_fields is not None:
        if grh_fields["paylen"] is None:
            grh_fields["paylen"] = len(body) + crc.ICRC_SIZE
        grh = rec.build(ibh.GRH, grh_fields, "grh")
    if lrh["pktlen"] is None:
        lrh["pktlen"] = (ibh.LRH_SIZE + len(grh) + len(body) + crc.ICRC_SIZE) // 4
    packet = rec.build(ibh.LRH, lrh, "lrh") + grh + body
    icrc = record.get("icrc")
    icrc = crc.icrc(packet) if icrc is None else rec.integer("icrc", icrc)
    packet += (icrc & 0xFFFFFFFF).to_bytes(4, "little")
    vcrc = record.get("vcrc")
    vcrc = crc.crc16_vcrc(packet) if vcrc is None else rec.integer("vcrc", vcrc)
    return packet + (vcrc & 0xFFFF).to_bytes(2, "little")
