"""Frames built by ``madpipe craft``: SMPs from infiniband-diags-style values (the scapy layers,
``madpipe.codecs.craft``: ``smp_packet``), frames from decode's JSON Lines
(``madpipe.codecs.encode.encode_record``), and the capture they are written to.
"""
from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from decimal import Decimal

from madpipe.codecs.capture import CaptureWriter
from madpipe.pipeline.craft.values import CraftArgError, dr_hops, method_arg, number, numbers, parse_time

MAX_FRAMES = 1 << 20  # a sweep larger than this is a typo, not a capture anyone wants

# How --block and -P make the attribute modifier (IBA 14.2.5), and the last valid block.
# attr_id -> (block max or None if the attribute has no blocks, takes -P, modifier(block, port))
_ATTR_MOD = {
    0x0014: (31, False, lambda b, p: b),                   # GUIDInfo: 8 GUIDs a block, 256 GUIDs
    0x0015: (None, True, lambda b, p: p),                  # PortInfo: the port
    0x0016: (2047, True, lambda b, p: p << 16 | b),        # P_KeyTable: switch port, block
    0x0017: (None, True, lambda b, p: p),                  # SLtoVLMappingTable: output port
    0x0018: (4, True, lambda b, p: b << 16 | p),           # VLArbitrationTable: block 1-4, port
    0x0019: (767, False, lambda b, p: b),                  # LinearForwardingTable: 64 LIDs a block
    0x001A: (3071, False, lambda b, p: b),                 # RandomForwardingTable: 16 LIDs a block
    0x001B: (511, False, lambda b, p: b),                  # MulticastForwardingTable: 32 MLIDs a block
    0x0030: (0xFFFF, False, lambda b, p: b),               # VendorDiag: diag index
}


def smp_frames(attr: str | None, *, method: str = "get", lid: str | None = None, dr_path: str | None = None,
               block: str | None = None, port: str | None = None, attr_mod: str | None = None,
               pkeys: str | None = None, fields: Sequence[str] = (), slid: str | None = None, tid: str = "1",
               m_key: str = "0", hop_cnt: str | None = None, hop_ptr: str = "0", time: str = "0",
               raw: bool = False) -> list[tuple[bytes, int]]:
    """(packet, ts_ns) of each SMP ``madpipe craft`` builds from these flags' values (the text of
    --attr, --method, -L, -D, --block, -P, --attr-mod, --pkeys, -f NAME=VALUE..., see its --help):
    one frame per --block x -P combination, TIDs counting up from ``tid``, 1 us apart from ``time``."""
    from madpipe.codecs.craft import check_pkeys, smp_attribute, smp_packet
    from madpipe.codecs.errors import CraftError

    if attr is None:
        raise CraftArgError("say what to build: --attr ATTR (or --from-json FILE)")
    if lid is None and dr_path is None:
        raise CraftArgError("give a destination: -L LID (LID routed) or -D PATH (directed route)")
    try:
        attr_id, layer = smp_attribute(attr)
    except CraftError as exc:
        raise CraftArgError(str(exc)) from None
    name = layer.__name__ if layer.__name__ != "Raw" else f"attribute {attr_id:#06x}"
    method_id = method_arg(method)
    dlid = number("-L", lid) if lid is not None else None
    if dlid is not None and dlid > 0xFFFF:
        raise CraftArgError(f"-L {lid}: a LID is 16 bits")
    hops = dr_hops(dr_path) if dr_path is not None else None
    kw = dict(tid=number("--tid", tid), m_key=number("--m-key", m_key), raw=raw,
              hop_ptr=number("--hop-ptr", hop_ptr))
    if kw["m_key"] > 0xFFFFFFFFFFFFFFFF:
        raise CraftArgError("--m-key is 64 bits")
    if kw["hop_ptr"] > 0xFF:
        raise CraftArgError("--hop-ptr is one byte")
    if slid is not None:
        kw["slid"] = number("--slid", slid)
        if kw["slid"] > 0xFFFF:
            raise CraftArgError(f"--slid {slid}: a LID is 16 bits")
    if hop_cnt is not None:
        if hops is None:
            raise CraftArgError("--hop-cnt goes with a directed route (-D)")
        kw["hop_cnt"] = number("--hop-cnt", hop_cnt)
    if pkeys is not None and attr_id != 0x0016:
        raise CraftArgError(f"--pkeys fills a P_KeyTable block, not {name}")
    data = field_values(layer, fields, raw) if fields else {}
    if pkeys is not None:
        if "pkeys" in data:
            raise CraftArgError("give the P_Keys once: --pkeys or -f pkeys=...")
        try:
            data["pkeys"] = check_pkeys(numbers("--pkeys", pkeys), raw)
        except CraftError as exc:
            raise CraftArgError(str(exc)) from None
    mods = attr_mods(attr_id, name, block=block, port=port, attr_mod=attr_mod, raw=raw)
    if len(mods) > MAX_FRAMES:
        raise CraftArgError(f"--block and -P ask for {len(mods)} frames; at most {MAX_FRAMES} at once")
    start = parse_time(time)
    frames: list[tuple[bytes, int]] = []
    try:
        for i, mod in enumerate(mods):
            pkt = smp_packet(method_id, attr_id, dlid, hops, mod,
                             **{**kw, "tid": kw["tid"] + i}, data=data)
            frames.append((bytes(pkt), start + i * 1000))
    except CraftError as exc:
        raise CraftArgError(str(exc)) from None
    if kw["tid"] + len(mods) - 1 > 0xFFFFFFFFFFFFFFFF:
        raise CraftArgError("--tid runs past 64 bits")
    return frames


def attr_mods(attr_id: int, name: str, *, block: str | None = None, port: str | None = None,
              attr_mod: str | None = None, raw: bool = False) -> list[int]:
    """The attribute modifier of each frame: ``attr_mod`` as is, or one per --block x -P combination."""
    if attr_mod is not None:
        if block is not None or port is not None:
            raise CraftArgError("--attr-mod sets the whole modifier: leave out --block and -P")
        mod = number("--attr-mod", attr_mod)
        if mod > 0xFFFFFFFF:
            raise CraftArgError(f"--attr-mod {attr_mod} does not fit 32 bits")
        return [mod]
    block_max, takes_port, make = _ATTR_MOD.get(attr_id, (None, False, None))
    blocks = numbers("--block", block) if block is not None else [0]
    ports = numbers("-P", port) if port is not None else [0]
    if block is not None and block_max is None:
        raise CraftArgError(f"{name} has no blocks: leave out --block (--attr-mod sets the modifier)")
    if port is not None and not takes_port:
        raise CraftArgError(f"{name} takes no port: leave out -P (--attr-mod sets the modifier)")
    if make is None:
        return [0]
    from madpipe.codecs.craft import check_range
    from madpipe.codecs.errors import CraftError

    out = []
    try:
        for b, p in itertools.product(blocks, ports):
            if block_max is not None:
                b = check_range(f"{name} block", b, block_max, raw, 16)
            p = check_range("port", p, 0xFF, raw, 16 if attr_id == 0x0016 else 8)
            out.append(make(b, p))
    except CraftError as exc:
        raise CraftArgError(str(exc)) from None
    return out


def field_values(layer, assignments: Sequence[str], raw: bool) -> dict:
    """-f NAME=VALUE for the attribute layer's fields, values checked against the field width."""
    from scapy.fields import BitField, FieldListField, PacketListField, StrFixedLenField, ThreeBytesField

    out: dict = {}
    names = [f.name for f in layer.fields_desc]
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep:
            raise CraftArgError(f"-f {text!r}: write NAME=VALUE")
        fld = next((f for f in layer.fields_desc if f.name == name), None)
        if fld is None:
            raise CraftArgError(f"{layer.__name__} has no field {name!r} (fields: {', '.join(names)})")
        if isinstance(fld, PacketListField):
            raise CraftArgError(f"-f {name}: a list of entries; build it with --from-json or the Python API")
        if isinstance(fld, StrFixedLenField):
            data = bytes.fromhex(value[4:]) if value.startswith("hex:") else value.encode()
            if len(data) > fld.length_from(None):
                raise CraftArgError(f"-f {name}: {len(data)} bytes, the field holds {fld.length_from(None)}")
            out[name] = data
            continue
        inner = fld.field if isinstance(fld, FieldListField) else fld
        if isinstance(inner, BitField):
            width = inner.size
        elif isinstance(inner, ThreeBytesField):
            width = 24
        else:
            width = int(inner.sz * 8)
        items = numbers(f"-f {name}", value) if isinstance(fld, FieldListField) else [number(f"-f {name}", value)]
        if isinstance(fld, FieldListField) and len(items) > fld.max_count:
            raise CraftArgError(f"-f {name}: {len(items)} values, the field holds {fld.max_count}")
        for v in items:
            if v >= 1 << width and not raw:
                raise CraftArgError(f"-f {name}={v:#x} does not fit its {width} bits (--raw cuts it)")
        items = [v & ((1 << width) - 1) for v in items]
        out[name] = items if isinstance(fld, FieldListField) else items[0]
    return out


def json_frames(name: str, time: str = "0") -> list[tuple[bytes, int]]:
    """(packet, ts_ns) for each record of a JSON Lines file (``-``: standard input) as ``madpipe
    decode -T json`` writes them, edited or not: at the record's ``ts``, else 1 us apart from ``time``."""
    from madpipe.codecs.encode import EncodeError, encode_record

    try:
        f = sys.stdin if name == "-" else open(name, encoding="utf-8")
    except OSError as exc:
        raise CraftArgError(f"{name}: cannot open: {exc.strerror or exc}") from None
    start = parse_time(time)
    frames: list[tuple[bytes, int]] = []
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                raise CraftArgError(f"{name} line {lineno}: not JSON: {exc.msg} at column {exc.colno}") from None
            try:
                packet = encode_record(record)
            except EncodeError as exc:
                raise CraftArgError(f"{name} line {lineno}: {exc}") from None
            ts = record.get("ts") if isinstance(record, dict) else None
            ts_ns = parse_time(ts) if ts is not None else start + len(frames) * 1000
            frames.append((packet, ts_ns))
    return frames


def write_frames(path: str, frames: list[tuple[bytes, int]], linktype: int, append: bool = False) -> None:
    """The (packet, ts_ns) frames to the capture ``path`` (``append``: after the frames it holds)."""
    try:
        with CaptureWriter(path, linktype=linktype, append=append) as w:
            for packet, ts_ns in frames:
                w.write(packet, ts_ns)
    except OSError as exc:
        raise CraftArgError(f"{path}: cannot write: {exc.strerror or exc}") from None
