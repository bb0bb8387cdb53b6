"""`madpipe decode -T json` without a construct parse per frame: the same JSON Lines, byte for byte.

``decode_frame`` parses each layer with construct and ``jsonl`` dumps the dict; both cost more
than the frame is worth (~200 us). Here a frame that decodes cleanly (a whole LRH, GRH, BTH,
DETH and 256-byte MAD, PktLen right, hop count <= 63) is written straight from its bytes:

- the headers with ``int.from_bytes``/``struct`` and one ``%`` template per layer, each field
  checked against the table of ``madpipe.codecs.field_table`` (tests/test_field_table.py);
- each attribute with a formatter generated for it on first use: its field layout is read off
  the attribute's own construct schema by parsing a few probe buffers (all zeros, all ones, and
  one per bit of the bit index: bit b of the data set in probe j when bit j of b is 1), which
  tells, for every leaf of the parsed value, which data bits it holds. Only layouts where every
  integer is a run of big-endian bits and every bytes field a run of whole bytes are used, and a
  generated formatter must reproduce ``json.dumps(plain(schema.parse(x)))`` on random data before
  it replaces the schema; otherwise that attribute keeps the construct path;
- ICRC and VCRC checked for a whole batch by a numba kernel (kernels_decode.check_crcs).

Every other frame (damaged, short, raw, non-MAD transport, an error to report) goes through
``decode_frame`` as before. The tests compare both paths on the real capture, crafted and
synthetic traffic, damaged frames and random mutations.
"""
from __future__ import annotations

import ipaddress
import json
import random
import struct
from collections import Counter
from functools import lru_cache

import numpy as np

from madpipe.codecs import gmp, mad, wire
from madpipe.codecs.frame import decode_frame, plain
from madpipe.pipeline.decode import crc_kernels as kc
from madpipe.pipeline.decode import kernels as kd
from madpipe.pipeline.decode.output import count_record
from madpipe.pipeline.ingest import kernels as ki
from madpipe.pipeline.ingest.reader import Ingest, skip_reason

JSON_BOOL = {kd.CRC_OK: "true", kd.CRC_BAD: "false", kd.CRC_ABSENT: "null"}
NAMES = {mad.IB_MGMT_CLASS_SUBN_ADM: gmp.SA_ATTRIBUTE_NAMES, mad.IB_MGMT_CLASS_CM: gmp.CM_ATTRIBUTE_NAMES,
         mad.IB_MGMT_CLASS_PERF_MGMT: gmp.PERF_ATTRIBUTE_NAMES}

_MAD_HEADER = struct.Struct(">BBBBHHQHHI")
_MAD_JSON = ('"mad":{"base_version":%d,"mgmt_class":%d,"class_version":%d,"method":%d,"status":%d,'
             '"class_specific":%d,"tid":%d,"attr_id":%d,"resv":%d,"attr_mod":%d}')
_LRH_JSON = '{"frame":%d,"ts":%r,"lrh":{"vl":%d,"lver":%d,"sl":%d,"lnh":%d,"dlid":%d,"pktlen":%d,"slid":%d},'
_GRH_JSON = ('"grh":{"ipver":%d,"tclass":%d,"flow_label":%d,"paylen":%d,"nxthdr":%d,"hoplmt":%d,'
             '"sgid":"%s","dgid":"%s"},')
_BTH_JSON = ('"bth":{"opcode":%d,"se":%d,"m":%d,"padcnt":%d,"tver":%d,"pkey":%d,"dqp":%d,"a":%d,"psn":%d},'
             '"deth":{"qkey":%d,"sqp":%d},')
_DR_JSON = ',"smp":{"m_key":%d,"hop_ptr":%d,"hop_cnt":%d,"dr_slid":%d,"dr_dlid":%d,"initial_path":[%s],"return_path":[%s]}'


def dumps(record: dict) -> str:
    """What `madpipe decode -T json` prints for a record (output.jsonl without the newline)."""
    return json.dumps(record, separators=(",", ":"))


@lru_cache(maxsize=4096)
def _gid(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


# -- attribute formatters read off the schemas -------------------------------------------------------

def _leaves(value, path=()):
    """(path, value) of every leaf of a plain() value, in JSON order."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path, value


def _skeleton(value, slots: list) -> str:
    """The JSON of a plain() value with each leaf a ``%`` slot (``slots`` gets one kind per leaf)."""
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k).replace("%", "%%") + ":" + _skeleton(v, slots)
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_skeleton(v, slots) for v in value) + "]"
    slots.append(type(value))
    return "%d" if isinstance(value, int) else '"%s"'


def attribute_formatter(schema, size: int, checks: int = 8):
    """``f(data) -> str``: the JSON object members of ``plain(schema.parse(data))`` (no braces),
    for ``data`` of ``size`` bytes; None when the layout cannot be read off the schema."""
    try:
        return _formatter(schema, size, checks)
    except Exception:  # a schema this reading does not understand keeps the construct path
        return None


def _parse(schema, data: bytes):
    return plain(schema.parse(data))


def _formatter(schema, size, checks):
    nbits = size * 8
    zero = _parse(schema, bytes(size))
    leaves = list(_leaves(zero))
    if any(type(v) not in (int, str) or (type(v) is int and v) for _, v in leaves):
        return None
    ones = dict(_leaves(_parse(schema, b"\xff" * size)))
    probes = []
    for j in range(max(nbits - 1, 1).bit_length()):
        bits = sum(1 << (nbits - 1 - b) for b in range(nbits) if b >> j & 1)
        probes.append(dict(_leaves(_parse(schema, bits.to_bytes(size, "big")))))
    exprs = []
    for path, z in leaves:
        if type(z) is int:
            width = ones[path].bit_length()
            if ones[path] != (1 << width) - 1:
                return None
            src = [sum((p[path] >> k & 1) << j for j, p in enumerate(probes)) for k in range(width)]
            first = src[width - 1] if width else 0
            if src != [first + width - 1 - k for k in range(width)]:
                return None
            exprs.append(f"(v >> {nbits - first - width}) & {(1 << width) - 1}")
        else:
            nbytes = len(z) // 2
            if ones[path] != "ff" * nbytes:
                return None
            values = [bytes.fromhex(p[path]) for p in probes]
            src = [sum((values[j][i] >> (7 - t) & 1) << j for j in range(len(probes)))
                   for i in range(nbytes) for t in range(8)]
            first = src[0] if src else 0
            if first % 8 or src != list(range(first, first + 8 * nbytes)):
                return None
            exprs.append(f"data[{first // 8}:{first // 8 + nbytes}].hex()")
    slots: list = []
    template = _skeleton(zero, slots)[1:-1]
    source = (f"def fmt(data):\n    v = int.from_bytes(data, 'big')\n"
              f"    return {template!r} % ({', '.join(exprs)}{',' if len(exprs) == 1 else ''})\n")
    if not exprs:
        source = f"def fmt(data):\n    return {template!r}\n"
    scope: dict = {}
    exec(compile(source, f"<attribute formatter {getattr(schema, 'name', None) or size}>", "exec"), scope)
    fmt = scope["fmt"]
    rng = random.Random(size)
    for data in [bytes(size), b"\xff" * size] + [rng.randbytes(size) for _ in range(checks)]:
        if fmt(data) != dumps(_parse(schema, data))[1:-1]:
            return None
    return fmt


class _Formatters:
    """attr_id -> (JSON head with the name, member formatter or None) per class, built on first use."""

    def __init__(self):
        self.smp: dict[int, tuple] = {}
        self.perf: dict[int, tuple] = {}

    def for_smp(self, attr_id: int):
        got = self.smp.get(attr_id)
        if got is None:
            from madpipe.codecs import smp

            schema = smp.attribute_schema(attr_id, compiled=True)
            name = smp.attribute_name(attr_id)
            got = self.smp[attr_id] = (name, attribute_formatter(schema, smp.IB_SMP_DATA_SIZE), schema)
        return got

    def for_perf(self, attr_id: int):
        got = self.perf.get(attr_id)
        if got is None:
            from madpipe.codecs import perf

            name, schema = perf.PERF_ATTRIBUTES[attr_id]
            got = self.perf[attr_id] = (name, attribute_formatter(schema, perf.IB_PMA_DATA_SIZE), schema)
        return got


FORMATTERS = _Formatters()


def _attr_members(fmt, schema, data: bytes) -> str:
    if fmt is not None:
        return fmt(data)
    return dumps(plain(schema.parse(data)))[1:-1]


# -- one frame -----------------------------------------------------------------------------------------

def frame_json(data: bytes, frame: int, ts: float, icrc: int, vcrc: int) -> str | None:
    """The JSON line (no newline) of a frame that decodes cleanly, or None: use decode_frame.

    ``icrc``/``vcrc`` are the kernels_decode codes of its CRC checks.
    """
    n = len(data)
    start = wire.mad_start(data, 0, n)
    if start < 0 or ((data[4] & 7) << 8 | data[5]) * 4 + wire.VCRC_SIZE != n:
        return None  # no whole MAD, or PktLen disagrees: decode_frame says why
    b1 = data[1]
    lnh = b1 & 3
    head = _LRH_JSON % (frame, ts, data[0] >> 4, data[0] & 15, b1 >> 4, lnh, data[2] << 8 | data[3],
                        (data[4] & 7) << 8 | data[5], data[6] << 8 | data[7])
    if lnh == wire.LNH_IBA_GLOBAL:
        w0 = int.from_bytes(data[8:12], "big")
        grh = _GRH_JSON % (w0 >> 28, (w0 >> 20) & 0xFF, w0 & 0xFFFFF, data[12] << 8 | data[13], data[14], data[15],
                           _gid(data[16:32]), _gid(data[32:48]))
    else:
        grh = ""
    pos = wire.bth_offset(lnh)
    opcode = data[pos]
    b = data[pos + 1]
    dqp = int.from_bytes(data[pos + 5:pos + 8], "big")
    sqp = int.from_bytes(data[pos + 17:pos + 20], "big")
    raw = data[start:start + mad.MAD_SIZE]
    bth = _BTH_JSON % (opcode, b >> 7, (b >> 6) & 1, (b >> 4) & 3, b & 15, data[pos + 2] << 8 | data[pos + 3], dqp,
                       data[pos + 8] >> 7, int.from_bytes(data[pos + 9:pos + 12], "big"),
                       int.from_bytes(data[pos + 12:pos + 16], "big"), sqp)
    h = _MAD_HEADER.unpack_from(raw)
    cls, attr_id, attr_mod = h[1], h[7], h[9]
    parts = [head, grh, bth, _MAD_JSON % h]
    if cls == mad.IB_MGMT_CLASS_SUBN_LID_ROUTED or cls == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        m_key = int.from_bytes(raw[24:32], "big")
        if cls == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
            hop_cnt = raw[7]
            if hop_cnt > 63:
                return None
            parts.append(_DR_JSON % (m_key, raw[6], hop_cnt, raw[32] << 8 | raw[33], raw[34] << 8 | raw[35],
                                     ",".join(map(str, raw[129:129 + hop_cnt])),
                                     ",".join(map(str, raw[193:193 + hop_cnt]))))
        else:
            parts.append(',"smp":{"m_key":%d}' % m_key)
        name, fmt, schema = FORMATTERS.for_smp(attr_id)
        members = _attr_members(fmt, schema, raw[64:128])
        block = ',"block":%d' % (attr_mod & 0xFFFF) if attr_id == wire.IB_SMP_ATTR_PKEY_TABLE else ""
        parts.append(',"attr":{"name":%s%s%s%s}' % (json.dumps(name), block, "," if members else "", members))
    elif cls == mad.IB_MGMT_CLASS_PERF_MGMT and _is_perf_attr(attr_id):
        name, fmt, schema = FORMATTERS.for_perf(attr_id)
        members = _attr_members(fmt, schema, raw[64:256])
        parts.append(',"attr":{"name":%s%s%s}' % (json.dumps(name), "," if members else "", members))
    else:
        name = NAMES.get(cls, {}).get(attr_id, f"0x{attr_id:04x}")
        parts.append(',"attr":{"name":%s},"class_data":"%s"' % (json.dumps(name), raw[mad.MAD_HEADER_SIZE:].hex()))
    parts.append(',"icrc_ok":%s,"vcrc_ok":%s}' % (JSON_BOOL[icrc], JSON_BOOL[vcrc]))
    return "".join(parts)


@lru_cache(maxsize=None)
def _is_perf_attr(attr_id: int) -> bool:
    from madpipe.codecs import perf

    return attr_id in perf.PERF_ATTRIBUTES


# -- a whole capture -----------------------------------------------------------------------------------

def write_json_lines(path, out, count: int | None, counts: Counter) -> str | None:
    """Every frame of the capture as `madpipe decode -T json` prints it; returns the file error or None.

    Checks CRCs a batch at a time and writes one string per batch. Like the streaming reader it
    replaces, it stops after ``count`` records and reads one record further before it stops (so
    a file cut right after them still reports its error).
    """
    ing = Ingest(path)
    if ing.format != "pcap":
        return _pcapng(path, out, count, counts)
    it = ing.raw()
    for raw in it:
        n = len(raw)
        take = n if count is None else min(n, count - counts["read"])
        codes = raw.code.tolist()
        reasons = [skip_reason(c) if c != ki.REC_OK else None for c in codes[:take]] if raw.code.any() else None
        _write_batch(raw.buf, raw.pkt_off, raw.pkt_len, raw.code, raw.frame.tolist(), (raw.ts_ns / 1e9).tolist(),
                     reasons, take, out, counts)
        if take < n:
            return None  # stopped inside this batch: the reader never went past it
        if count is not None and counts["read"] >= count:
            for _more in it:  # the streaming reader reads one record past the count before it stops
                return None
            return ing.error
    return ing.error


def _pcapng(path, out, count, counts, batch: int = 4096) -> str | None:
    """pcapng: packets from the streaming reader, checked and written in batches of ``batch``."""
    from madpipe.codecs.capture import CaptureReader

    with CaptureReader(path) as cap:
        pending: list = []
        for pkt in cap:
            if count is not None and counts["read"] + len(pending) >= count:
                break
            pending.append(pkt)
            if len(pending) == batch:
                _write_packets(pending, out, counts)
                pending = []
        _write_packets(pending, out, counts)
        return cap.error


def _write_packets(pkts, out, counts) -> None:
    if not pkts:
        return
    datas = [p.data or b"" for p in pkts]
    length = np.array([len(d) for d in datas], np.int64)
    off = np.zeros(len(pkts), np.int64)
    off[1:] = np.cumsum(length)[:-1]
    code = np.array([p.data is None for p in pkts], np.uint8)
    buf = np.frombuffer(b"".join(datas), np.uint8) if length.sum() else np.zeros(1, np.uint8)
    _write_batch(buf, off, length, code, [p.frame for p in pkts], [p.ts_ns / 1e9 for p in pkts],
                 [p.skip for p in pkts], len(pkts), out, counts)


def _write_batch(buf, pkt_off, pkt_len, code, frames, ts, reasons, take, out, counts) -> None:
    """Records 0..take-1 of a batch; ``reasons[i]`` says why record i has no packet (code != 0)."""
    n = len(pkt_off)
    icrc = np.empty(n, np.int8)
    vcrc = np.empty(n, np.int8)
    kd.check_crcs(buf, pkt_off, pkt_len, code, kc.CRC32_TABLE, kc.VCRC_TABLE_NP, icrc, vcrc)
    offs, lens, codes = pkt_off.tolist(), pkt_len.tolist(), code.tolist()
    icrc_l, vcrc_l = icrc.tolist(), vcrc.tolist()
    lines = []
    ok = bad = vok = vbad = fast = 0
    for i in range(take):
        if codes[i]:
            counts["skipped"] += 1
            lines.append(dumps({"frame": frames[i], "ts": ts[i], "skipped": reasons[i]}))
            continue
        data = buf[offs[i]:offs[i] + lens[i]].tobytes()
        ic, vc = icrc_l[i], vcrc_l[i]
        line = frame_json(data, frames[i], ts[i], ic, vc)
        if line is None:
            record = decode_frame(data, frames[i], ts[i])
            count_record(record, counts)
            line = dumps(record)
        else:
            fast += 1
            ok += ic == kd.CRC_OK
            bad += ic == kd.CRC_BAD
            vok += vc == kd.CRC_OK
            vbad += vc == kd.CRC_BAD
        lines.append(line)
    if fast:
        counts["decoded"] += fast
        counts["mads"] += fast
    for key, value in (("icrc_ok", ok), ("icrc_bad", bad), ("vcrc_ok", vok), ("vcrc_bad", vbad)):
        if value:
            counts[key] += value
    counts["read"] += take
    counts["shown"] += take
    if lines:
        lines.append("")
        out.write("\n".join(lines))
