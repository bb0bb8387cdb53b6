"""Endace ERF records as ibdump writes them inside a classic pcap of link type 197.

Each frame: a 16-byte ERF header, then (type 21, InfiniBand) the raw packet from the LRH.
ts is a little-endian 32.32 fixed-point time; rlen, lctr (loss counter) and wlen are big-endian.
The header's construct schema is here; wrapping, unwrapping and timestamps are in
:mod:`madpipe.codecs.erf_records` (re-exported), which the capture readers import without construct.
"""
from __future__ import annotations

from construct import BitsInteger, BitStruct, Int16ub, Int64ul, Struct

from madpipe.codecs.erf_records import (  # noqa: F401 (re-exported)
    ERF_EXT_RUNS_PAST,
    ERF_FLAG_VLEN,
    ERF_HEADER_SIZE,
    ERF_SHORT,
    ERF_TYPE_EXT_HEADER,
    ERF_TYPE_INFINIBAND,
    ERF_TYPE_INFINIBAND_LINK,
    erf_not_ib,
    erf_ts_to_ns,
    erf_unwrap,
    erf_wrap,
    ns_to_erf_ts,
)

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
