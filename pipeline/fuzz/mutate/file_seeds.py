"""Seed files for ``madpipe fuzz --target files``, built from the bundled captures, with a map of
their fields so that mutations can aim at headers, lengths, options and link types.

Every reader path has a seed: classic pcap in microseconds and nanoseconds, both byte orders,
link types 197 (ERF, with and without extension headers and non-InfiniBand records) and 247;
pcapng in both byte orders with section, interface (if_tsresol, if_tsoffset, if_name), name
resolution, statistics, enhanced, simple and obsolete packet blocks and packet options; a
``madpipe paravirt`` trace as JSON Lines and binary; a ``--pkey-map`` file. The seeds are the
same bytes in every run (they come from the bundled captures, or from fixed values).
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from madpipe.codecs import qpc
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.erf_records import ERF_FLAG_VLEN, ERF_TYPE_INFINIBAND, ns_to_erf_ts
from madpipe.codecs.errors import MadpipeError

PCAPS = Path(__file__).resolve().parents[3] / "pcaps"
ERF_2008 = "infiniband_endace_erf_2008.pcap"
OPENSM = "opensm_partitions_changed.pcap"
# How many frames a seed capture keeps: enough for P_Key tables, changes and errors after frame 1,
# few enough that a case takes milliseconds.
SEED_FRAMES = 16


@dataclass(frozen=True, slots=True)
class Field:
    offset: int
    size: int
    name: str
    order: str = "<"  # "<" or ">" for integers; "" for text tokens


@dataclass
class SeedFile:
    """One seed: its bytes, what kind of input it is, its fields and its records/blocks (start, end)."""

    name: str
    kind: str  # "capture", "trace" or "pkey-map"
    data: bytes
    fields: list[Field] = field(default_factory=list)
    units: list[tuple[int, int]] = field(default_factory=list)

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix


class Builder:
    """Bytes written field by field, each field's place remembered."""

    def __init__(self, order: str = "<"):
        self.order = order
        self.out = bytearray()
        self.fields: list[Field] = []
        self.units: list[tuple[int, int]] = []

    def put(self, name: str, fmt: str, value) -> int:
        at = len(self.out)
        self.out += struct.pack(self.order + fmt, value)
        self.fields.append(Field(at, struct.calcsize(fmt), name, self.order))
        return at

    def raw(self, data: bytes) -> None:
        self.out += data

    def patch(self, at: int, fmt: str, value) -> None:
        struct.pack_into(self.order + fmt, self.out, at, value)

    def seed(self, name: str, kind: str = "capture") -> SeedFile:
        return SeedFile(name, kind, bytes(self.out), self.fields, self.units)


def _frames(name: str) -> list[tuple[int, bytes, int]]:
    with CaptureReader(PCAPS / name) as cap:
        return [(p.ts_ns, p.data, p.iface) for p in cap if p.data is not None]


def _pkey_window(frames):
    """SEED_FRAMES frames around the first P_KeyTable SubnSet of the opensm capture's second run."""
    from madpipe.codecs.wire import mad_start

    sets = [i for i, (_, d, _) in enumerate(frames) if (m := mad_start(d, 0, len(d))) >= 0
            and d[m + 17] == 0x16 and d[m + 3] == 0x02]
    mid = sets[len(sets) // 2] if sets else 0
    lo = max(0, mid - SEED_FRAMES // 2)
    return frames[lo:lo + SEED_FRAMES]


def _erf_record(b: Builder, ts_ns: int, data: bytes, iface: int, rtype: int = ERF_TYPE_INFINIBAND,
                ext: int = 0) -> None:
    """An ERF record (inside a pcap record or packet block): header fields, extension headers, packet."""
    ts_at = len(b.out)
    b.out += struct.pack("<Q", ns_to_erf_ts(ts_ns))
    b.fields.append(Field(ts_at, 8, "erf.ts", "<"))
    b.fields.append(Field(ts_at + 4, 4, "erf.ts seconds", "<"))
    order, b.order = b.order, ">"  # the rest of the ERF header is big-endian
    b.put("erf.type", "B", rtype | (0x80 if ext else 0))
    b.put("erf.flags", "B", ERF_FLAG_VLEN | (iface & 3))
    b.put("erf.rlen", "H", 16 + 8 * ext + len(data))
    b.put("erf.lctr", "H", 0)
    b.put("erf.wlen", "H", len(data))
    for k in range(ext):
        b.put("erf.ext type", "B", (0x80 if k + 1 < ext else 0) | 0x03)
        b.raw(bytes(7))
    b.order = order
    b.raw(data)


def classic_pcap(name, frames, order="<", nanosecond=True, linktype=197, ext_every=0, foreign_every=0):
    b = Builder(order)
    b.put("pcap.magic", "I", 0xA1B23C4D if nanosecond else 0xA1B2C3D4)
    b.put("pcap.version_major", "H", 2)
    b.put("pcap.version_minor", "H", 4)
    b.put("pcap.thiszone", "i", 0)
    b.put("pcap.sigfigs", "I", 0)
    b.put("pcap.snaplen", "I", 65535)
    b.put("pcap.linktype", "I", linktype)
    for i, (ts, data, iface) in enumerate(frames):
        start = len(b.out)
        sec, ns = divmod(ts, 1_000_000_000)
        b.put("record.ts_sec", "I", sec)
        b.put("record.ts_frac", "I", ns if nanosecond else ns // 1000)
        incl = b.put("record.incl_len", "I", 0)
        orig = b.put("record.orig_len", "I", 0)
        body = len(b.out)
        if linktype == 197:
            foreign = foreign_every and i % foreign_every == foreign_every - 1
            ext = 1 + i % 2 if ext_every and i % ext_every == 0 else 0
            _erf_record(b, ts, data, iface, rtype=2 if foreign else ERF_TYPE_INFINIBAND, ext=ext)
        else:
            b.raw(data)
        n = len(b.out) - body
        b.patch(incl, "I", n)
        b.patch(orig, "I", n)
        b.units.append((start, len(b.out)))
    return b.seed(name)


def _block(b: Builder, btype: int, fill) -> None:
    start = len(b.out)
    b.put("block.type", "I", btype)
    blen = b.put("block.length", "I", 0)
    fill()
    b.raw(bytes(-len(b.out) % 4))
    n = len(b.out) - start + 4
    b.patch(blen, "I", n)
    b.put("block.trailing length", "I", n)
    b.units.append((start, len(b.out)))


def _option(b: Builder, name: str, code: int, value: bytes) -> None:
    b.put(f"option {name}.code", "H", code)
    b.put(f"option {name}.length", "H", len(value))
    at = len(b.out)
    b.raw(value + bytes(-len(value) % 4))
    b.fields.append(Field(at, max(len(value), 1), f"option {name}.value", b.order))


def pcapng(name, frames, order="<"):
    """Interface 0: link type 247 (if_tsresol 9, or the default microseconds with if_tsoffset when
    big-endian); interface 1: link type 197 (if_tsresol 2^-30). Frames alternate between them; one
    goes as a simple packet block, one as an obsolete packet block."""
    b = Builder(order)
    ns = order == "<"

    def shb():
        b.put("shb.byte_order_magic", "I", 0x1A2B3C4D)
        b.put("shb.major", "H", 1)
        b.put("shb.minor", "H", 0)
        b.put("shb.section_length", "q", -1)
        _option(b, "shb_userappl", 4, b"madpipe fuzz seed")
        _option(b, "end", 0, b"")

    def idb(linktype, resol):
        def fill():
            b.put("idb.linktype", "H", linktype)
            b.put("idb.reserved", "H", 0)
            b.put("idb.snaplen", "I", 65535)
            _option(b, "if_name", 2, b"ib0")
            if resol is not None:
                _option(b, "if_tsresol", 9, bytes([resol]))
            else:
                _option(b, "if_tsoffset", 14, struct.pack(order + "q", 1))
            _option(b, "end", 0, b"")
        return fill

    _block(b, 0x0A0D0D0A, shb)
    _block(b, 1, idb(247, 9 if ns else None))
    _block(b, 1, idb(197, 0x80 | 30))
    _block(b, 4, lambda: (b.put("nrb.record type", "H", 0), b.put("nrb.record length", "H", 0)))
    unit_ns = 1 if ns else 1000
    for i, (ts, data, iface) in enumerate(frames):
        to = i % 2
        ticks = (ts // unit_ns - (0 if ns else 1_000_000)) if to == 0 else (ts << 30) // 1_000_000_000
        if to == 0 and i == 4:
            _block(b, 3, lambda data=data: (b.put("spb.orig_len", "I", len(data)), b.raw(data)))
            continue
        wrapped = Builder(order)
        if to == 1:
            _erf_record(wrapped, ts, data, iface)
        else:
            wrapped.raw(data)
        obsolete = i == 5

        def fill(wrapped=wrapped, ticks=ticks, to=to, obsolete=obsolete, options=i % 3 == 0):
            if obsolete:
                b.put("pb.interface_id", "H", to)
                b.put("pb.drops", "H", 0)
            else:
                b.put("epb.interface_id", "I", to)
            b.put("epb.ts_high", "I", ticks >> 32)
            b.put("epb.ts_low", "I", ticks & 0xFFFFFFFF)
            b.put("epb.caplen", "I", len(wrapped.out))
            b.put("epb.orig_len", "I", len(wrapped.out))
            base = len(b.out)
            b.raw(bytes(wrapped.out))
            b.fields.extend(Field(base + f.offset, f.size, f.name, f.order) for f in wrapped.fields)
            b.raw(bytes(-len(b.out) % 4))
            if options:
                _option(b, "epb_flags", 2, struct.pack(order + "I", 1))
                _option(b, "end", 0, b"")
        _block(b, 2 if obsolete else 6, fill)
    _block(b, 5, lambda: (b.put("isb.interface_id", "I", 0), b.put("isb.ts_high", "I", 0),
                          b.put("isb.ts_low", "I", 0)))
    return b.seed(name)


def text_seed(name: str, kind: str, text: str) -> SeedFile:
    """A text seed whose fields are its tokens (numbers, strings, keys), found by position."""
    import re

    fields = [Field(m.start(), m.end() - m.start(), f"token {m.group()[:12]!r}", "")
              for m in re.finditer(r'"[^"]*"|-?\d+|[{}\[\]:,#]', text)]
    lines, pos = [], 0
    for line in text.splitlines(keepends=True):
        lines.append((pos, pos + len(line)))
        pos += len(line)
    return SeedFile(name, kind, text.encode(), fields, lines)


def trace_records():
    """Four QP-modify commands of VF 1 and the master: transition, slave, in_mod, mailbox."""
    out = []
    for k, (tr, slave) in enumerate((("RST2INIT", 1), ("INIT2RTR", 1), ("RTR2RTS", 0), ("INIT2RTR", 2))):
        box = bytearray(256)
        box[qpc.MBOX_PRI_PKEY_INDEX] = k
        box[qpc.MBOX_OPTPAR + 3] = 0x10
        out.append((tr, slave, 0x1200 + k, bytes(box)))
    return out


def trace_seeds() -> list[SeedFile]:
    records = trace_records()
    text = "".join(json.dumps({"transition": t, "slave": s, "in_mod": m, "mailbox": box.hex()}) + "\n"
                   for t, s, m, box in records)
    b = Builder("<")
    b.raw(b"madpipe-qptrace\0")
    b.put("trace.version", "I", 1)
    b.put("trace.record_size", "I", 264)
    for t, s, m, box in records:
        start = len(b.out)
        b.put("record.transition", "B", qpc.TRANSITIONS[t])
        b.put("record.reserved", "B", 0)
        b.put("record.slave", "H", s)
        b.put("record.in_mod", "I", m)
        b.raw(box)
        b.units.append((start, len(b.out)))
    return [text_seed("trace.jsonl", "trace", text), b.seed("trace.bin", "trace")]


PKEY_MAP = "# vf port index phys\n1 1 0 1\n1 1 1 0\n2 1 0 2\n2 2 1 0x7f\n"


def bundled_head(name: str, frames: int) -> SeedFile:
    """The first ``frames`` records of a bundled classic pcap byte for byte, its record headers mapped."""
    data = (PCAPS / name).read_bytes()
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    fields = [Field(0, 4, "pcap.magic", order), Field(20, 4, "pcap.linktype", order)]
    units, pos = [], 24
    for _ in range(frames):
        if pos + 16 > len(data):
            break
        incl = struct.unpack_from(order + "I", data, pos + 8)[0]
        fields += [Field(pos, 4, "record.ts_sec", order), Field(pos + 4, 4, "record.ts_frac", order),
                   Field(pos + 8, 4, "record.incl_len", order), Field(pos + 12, 4, "record.orig_len", order),
                   Field(pos + 16 + 8, 1, "erf.type", ""), Field(pos + 16 + 14, 2, "erf.wlen", ">")]
        units.append((pos, pos + 16 + incl))
        pos += 16 + incl
    return SeedFile(name.replace(".pcap", "-head.pcap"), "capture", data[:pos], fields, units)


def seeds() -> list[SeedFile]:
    """Every seed, in a fixed order (a case names its seed by index)."""
    missing = [n for n in (ERF_2008, OPENSM) if not (PCAPS / n).is_file()]
    if missing:
        raise MadpipeError(f"the files target starts from the bundled captures, {', '.join(missing)} not in "
                           f"{PCAPS}: run it from a checkout of madpipe")
    erf = _frames(ERF_2008)
    opensm = _pkey_window(_frames(OPENSM))
    return [
        classic_pcap("erf2008-us-le.pcap", erf[:SEED_FRAMES], "<", False, 197),
        classic_pcap("opensm-ns-le.pcap", opensm, "<", True, 197),
        classic_pcap("opensm-us-be-247.pcap", opensm, ">", False, 247),
        classic_pcap("opensm-ns-be-erfext.pcap", opensm, ">", True, 197, ext_every=3, foreign_every=5),
        pcapng("opensm-le.pcapng", opensm, "<"),
        pcapng("erf2008-be.pcapng", erf[:SEED_FRAMES], ">"),
        bundled_head(ERF_2008, SEED_FRAMES),
        *trace_seeds(),
        text_seed("vfs.map", "pkey-map", PKEY_MAP),
    ]
