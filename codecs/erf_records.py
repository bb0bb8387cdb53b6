"""Endace ERF records as ibdump writes them inside a classic pcap of link type 197: wrapping,
unwrapping and timestamps, with :mod:`struct` only (the capture readers import this; the construct
schema of the header, :data:`madpipe.codecs.erf.ERFHeader`, costs a start-up its import).

Each frame: a 16-byte ERF header, then (type 21, InfiniBand) the raw packet from the LRH.
ts is a little-endian 32.32 fixed-point time; rlen, lctr (loss counter) and wlen are big-endian.
"""
from __future__ import annotations

import struct

ERF_HEADER_SIZE = 16
ERF_TYPE_INFINIBAND = 21
ERF_TYPE_INFINIBAND_LINK = 25
ERF_FLAG_VLEN = 0x04  # variable-length record: what ibdump sets
ERF_TYPE_EXT_HEADER = 0x80  # bit 7 of type: an 8-byte extension header follows

_ERF = struct.Struct("<QBBHHH")

# Why a record yields no packet (shared with the batch ingest, so both count the same reasons).
ERF_SHORT = "ERF record shorter than its 16-byte header"
ERF_EXT_RUNS_PAST = "ERF extension header runs past the record"


def erf_not_ib(rtype: int) -> str:
    return f"ERF type {rtype} is not InfiniBand (21)"


def erf_ts_to_ns(ts: int) -> int:
    """32.32 fixed-point seconds -> integer nanoseconds (rounded to nearest)."""
    return (ts >> 32) * 1_000_000_000 + (((ts & 0xFFFFFFFF) * 1_000_000_000 + (1 << 31)) >> 32)


def ns_to_erf_ts(ts_ns: int) -> int:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    return (sec << 32) | ((ns << 32) + 500_000_000) // 1_000_000_000


def erf_wrap(packet: bytes, ts_ns: int, iface: int = 0) -> bytes:
    """ERF type 21 record around a raw IB packet, laid out as ibdump writes it."""
    n = len(packet)
    head = _ERF.pack(ns_to_erf_ts(ts_ns), ERF_TYPE_INFINIBAND, ERF_FLAG_VLEN | (iface & 3), 0, 0, 0)
    # rlen, lctr, wlen are big-endian: pack them apart from the little-endian timestamp.
    head = head[:10] + struct.pack(">HHH", n + ERF_HEADER_SIZE, 0, n)
    return head + packet


def erf_unwrap(record: bytes) -> tuple[bytes | None, str | None, int]:
    """(packet, skip reason, iface) of one ERF record; packet is None when it is not InfiniBand."""
    if len(record) < ERF_HEADER_SIZE:
        return None, ERF_SHORT, 0
    _ts, rtype, flags, _r, _l, _w = _ERF.unpack_from(record)
    wlen = int.from_bytes(record[14:16], "big")
    iface = flags & 3
    body = ERF_HEADER_SIZE
    more = rtype & ERF_TYPE_EXT_HEADER
    while more:  # each 8-byte extension header says in its own bit 7 whether another follows
        if len(record) < body + 8:
            return None, ERF_EXT_RUNS_PAST, iface
        more = record[body] & 0x80
        body += 8
    if (rtype & 0x7F) != ERF_TYPE_INFINIBAND:
        return None, erf_not_ib(rtype & 0x7F), iface
    packet = record[body:]
    if wlen < len(packet):  # rlen padding after the wire bytes
        packet = packet[:wlen]
    return packet, None, iface
