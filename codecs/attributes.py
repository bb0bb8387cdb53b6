"""Attribute tables of a MAD class: the name and schema of each attribute ID, and the fallbacks;
and the byte runs of bit-packed attribute schemas.

Each class module (smp, perf) keeps its table, ``attr_id -> (name, schema)``, and a raw schema
for IDs it does not know; these functions give both modules the same rules.
"""
from __future__ import annotations

from construct import Bytes, Bytewise, Construct

from madpipe.codecs.compiled import compiled

VENDOR_ATTR_FIRST = 0xFF00  # IBA 13.4.8: attribute IDs 0xFF00-0xFFFF are vendor-specific


def name_in(table: dict[int, tuple[str, Construct]], attr_id: int) -> str:
    """The attribute's name, 'Vendor0xff01' for a vendor ID, else 'Attr0x....'."""
    if attr_id in table:
        return table[attr_id][0]
    if attr_id >= VENDOR_ATTR_FIRST:
        return f"Vendor0x{attr_id:04x}"
    return f"Attr0x{attr_id:04x}"


def schema_in(table: dict[int, tuple[str, Construct]], raw: Construct, attr_id: int,
              fast: bool = False) -> Construct:
    """The attribute's schema (``raw`` when the ID is unknown); ``fast``: compiled, cached."""
    schema = table.get(attr_id, ("", raw))[1]
    return compiled(schema) if fast else schema


def byte_run(name: str, size: int) -> Construct:
    """A run of whole bytes inside a BitStruct (bytes, not a 0/1 bit string): a GID, reserved bytes."""
    return name / Bytewise(Bytes(size))
