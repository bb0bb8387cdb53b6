"""The construct schema of ERF record headers (:data:`ERFHeader`); this module holds only that.

ibdump writes ERF records inside a classic pcap of link type 197. Each frame: a 16-byte ERF header,
then (type 21, InfiniBand) the raw packet from the LRH. ts is a little-endian 32.32 fixed-point
time; rlen, lctr (loss counter) and wlen are big-endian. The ERF constants, wrapping, unwrapping and
timestamps are in :mod:`madpipe.codecs.erf_records`, with :mod:`struct` only, so that the capture
readers do not import construct; import them from there.
"""
from __future__ import annotations

from construct import BitsInteger, BitStruct, Int16ub, Int64ul, Struct

ERFHeader = Struct(
    "ts" / Int64ul,
    "type" / BitStruct("ext" / BitsInteger(1), "type" / BitsInteger(7)),
    "flags" / BitStruct(
        "resv" / BitsInteger(2),  # bits 7:6 (newer ERF uses them for the dsm/rx bits)
        "rx_error" / BitsInteger(1),
        "truncated" / BitsInteger(1),
        "dserror" / BitsInteger(1),
        "vlen" / BitsInteger(1),
        "iface" / BitsInteger(2),
    ),
    "rlen" / Int16ub,
    "lctr" / Int16ub,
    "wlen" / Int16ub,
)
ERFHeader.__doc__ = """Endace ERF record header, 16 bytes (ERF types reference, 'Generic ERF header')."""
