"""Where each field sits, read off the construct schemas: one walker, and the table of header fields.

:func:`schema_fields` walks a fixed-size schema (Struct, BitStruct, Array...) and gives every
leaf with its bit offset and width; the fuzzer's field tables are built with it.
:func:`header_fields` is the table of the fields that ``madpipe decode -T json`` prints for the
headers of a frame (``LAYER_KEYS``: the keys of each layer, in the record's order), each with
its layer, name, byte offset, bit offset and width. ``decode_frame`` parses these with the same
schemas; the fast paths that read them straight from the bytes (``pipeline/decode/json_lines.py``
and ``pipeline/columns/frames.py``) and the offsets in :mod:`madpipe.codecs.wire` are checked
against this table field by field in tests/test_field_table.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import construct as cs


@dataclass(frozen=True)
class Field:
    """A leaf of a schema: dotted name, bit offset from the start of what was walked (MSB first), width."""

    name: str
    bit: int
    width: int

    @property
    def reserved(self) -> bool:
        last = self.name.rsplit(".", 1)[-1]
        return last.startswith("resv") or last.startswith("reserved")


def schema_fields(schema, prefix: str = "", bit: int = 0) -> list[Field]:
    """Every leaf field of a fixed-size construct schema, with bit offsets (``bit`` = where it starts).

    Struct, BitStruct (Bitwise), Bytewise, Array and named fields are walked; arrays give one field
    per element (``pkeys[3]``, ``entries[2].vl``).
    """
    out: list[Field] = []
    _walk(schema, prefix, bit, False, out)
    return out


def _size_bits(con, in_bits: bool) -> int:
    n = con.sizeof()
    return n if in_bits else 8 * n


def _walk(con, name: str, bit: int, in_bits: bool, out: list) -> None:
    if isinstance(con, cs.Renamed):
        _walk(con.subcon, f"{name}.{con.name}" if name and con.name else (con.name or name), bit, in_bits, out)
    elif isinstance(con, cs.Transformed) and con.decodefunc is cs.bytes2bits:
        _walk(con.subcon, name, bit, True, out)
    elif isinstance(con, cs.Transformed) and con.decodefunc is cs.bits2bytes:
        _walk(con.subcon, name, bit, False, out)
    elif isinstance(con, cs.Struct):
        pos = bit
        for sub in con.subcons:
            _walk(sub, name, pos, in_bits, out)
            pos += _size_bits(sub, in_bits)
    elif isinstance(con, cs.Array) and isinstance(con.count, int):
        step = _size_bits(con.subcon, in_bits)
        for i in range(con.count):
            _walk(con.subcon, f"{name}[{i}]", bit + i * step, in_bits, out)
    else:
        out.append(Field(name, bit, _size_bits(con, in_bits)))


# -- the header fields of a decoded frame ------------------------------------------------------------

#: The keys ``decode_frame`` gives each header layer, in order (scripts rely on them). "mad" and
#: "smp" are counted from the start of the MAD; the "smp" keys after m_key are directed route only.
LAYER_KEYS = {
    "lrh": ("vl", "lver", "sl", "lnh", "dlid", "pktlen", "slid"),
    "grh": ("ipver", "tclass", "flow_label", "paylen", "nxthdr", "hoplmt", "sgid", "dgid"),
    "bth": ("opcode", "se", "m", "padcnt", "tver", "pkey", "dqp", "a", "psn"),
    "deth": ("qkey", "sqp"),
    "mad": ("base_version", "mgmt_class", "class_version", "method", "status", "class_specific", "tid",
            "attr_id", "resv", "attr_mod"),
    "smp": ("m_key", "hop_ptr", "hop_cnt", "dr_slid", "dr_dlid", "initial_path", "return_path"),
}


@dataclass(frozen=True)
class HeaderField:
    """A field of the decoded record: ``record[layer][name]`` is the ``width`` bits starting at bit
    ``bit`` (MSB first) of byte ``offset`` of the layer."""

    layer: str
    name: str
    offset: int
    bit: int
    width: int

    def value(self, layer_bytes: bytes) -> int:
        """The field's value as an unsigned integer, from the bytes of its layer."""
        end = self.bit + self.width
        chunk = int.from_bytes(layer_bytes[self.offset:self.offset + (end + 7) // 8], "big")
        return (chunk >> (-end % 8)) & ((1 << self.width) - 1)


def _layer_schemas() -> dict:
    from madpipe.codecs import ib_headers, mad, smp

    return {"lrh": ib_headers.LRH, "grh": ib_headers.GRH, "bth": ib_headers.BTH, "deth": ib_headers.DETH,
            "mad": mad.MADHeader, "smp": smp.SMPDirected}


@lru_cache(maxsize=None)
def header_fields() -> tuple[HeaderField, ...]:
    """Every field of ``LAYER_KEYS``, located in its layer's schema (the SMP's in the directed-route
    layout, whose m_key sits where the LID-routed one's does)."""
    out = []
    for layer, schema in _layer_schemas().items():
        leaves = {f.name.rsplit(".", 1)[-1]: f for f in schema_fields(schema)}
        for name in LAYER_KEYS[layer]:
            f = leaves[name]
            out.append(HeaderField(layer, name, f.bit // 8, f.bit % 8, f.width))
    return tuple(out)


def header_field(layer: str, name: str) -> HeaderField:
    """The table's entry for ``record[layer][name]``."""
    for f in header_fields():
        if f.layer == layer and f.name == name:
            return f
    raise KeyError(f"{layer}.{name}")
