"""IBA 7.8: the invariant CRC (ICRC) and variant CRC (VCRC) of a native InfiniBand packet.

ICRC: CRC-32 (zlib's) over the packet from the LRH through the end of the payload, with the
fields that may change in flight set to all ones; stored least-significant byte first.
VCRC: CRC-16, polynomial 0x100B reflected (0xD008), init 0xFFFF, final xor 0xFFFF, over every
byte from the LRH through the ICRC; stored least-significant byte first.
Both were checked against the 43 frames of the real hardware capture in pcaps/.
"""
from __future__ import annotations

import zlib
from functools import lru_cache

from madpipe.codecs.wire import (
    GRH_SIZE,
    ICRC_SIZE,
    LNH_IBA_GLOBAL,
    LNH_IBA_LOCAL,
    LRH_PKTLEN,
    LRH_SIZE,
    VCRC_SIZE,
)

_VCRC_POLY_REFLECTED = 0xD008
CRC32_INIT = CRC32_XOROUT = 0xFFFFFFFF  # zlib's
VCRC_INIT = VCRC_XOROUT = 0xFFFF

# GRH bytes 0-3 hold IPVer:4 TClass:8 FlowLabel:20 and byte 7 the hop limit; BTH byte 4 is resv8a.
_GRH_HOPLMT = 7
_BTH_RESV8A = 4
#: No byte at or past this one is masked: the LRH, a GRH and the BTH up to resv8a.
ICRC_MASK_SPAN = LRH_SIZE + GRH_SIZE + _BTH_RESV8A + 1


def icrc_mask(i, n, lnh):
    """The bits of byte ``i`` that the ICRC takes as ones, in a packet of ``n`` bytes (LRH .. end
    of payload) with LRH.LNH ``lnh``: 0 for most bytes.

    IBA 7.8.1: with a GRH, the whole LRH, the GRH's traffic class, flow label and hop limit;
    without one, the LRH's VL; either way the BTH's reserved byte. A GRH is masked only when
    the packet holds all of it, and the BTH byte only when the packet goes past it. Plain
    integer code: crc_kernels wraps it with njit, :func:`icrc_masked` calls it as it is.
    """
    if lnh == LNH_IBA_GLOBAL:
        if i < LRH_SIZE:
            return 0xFF
        bth = LRH_SIZE + GRH_SIZE
        if n >= bth:
            if i == LRH_SIZE:
                return 0x0F  # the traffic class's high nibble (IPVer is not variant)
            if LRH_SIZE < i < LRH_SIZE + 4 or i == LRH_SIZE + _GRH_HOPLMT:
                return 0xFF  # the rest of the traffic class and the flow label; the hop limit
    else:
        bth = LRH_SIZE
        if i == 0:
            return 0xF0
    if i == bth + _BTH_RESV8A and n > bth + _BTH_RESV8A:
        return 0xFF
    return 0


def _reflected_table(poly: int) -> tuple[int, ...]:
    """Byte-at-a-time table of a reflected CRC with polynomial ``poly`` (bit-reversed form)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


VCRC_TABLE = _reflected_table(_VCRC_POLY_REFLECTED)

# zlib's CRC-32 (reflected 0xEDB88320), for batch kernels; icrc() itself uses zlib.crc32.
CRC32_TABLE = _reflected_table(0xEDB88320)


def crc16_vcrc(data: bytes) -> int:
    """The VCRC of ``data`` (check value of b"123456789" is 0x0A3D)."""
    crc = VCRC_INIT
    table = VCRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ VCRC_XOROUT


def icrc_masked(packet: bytes) -> bytes:
    """The bytes the ICRC covers (LRH .. end of payload) with the variant fields set to ones.

    ``packet`` starts at the LRH and ends before the ICRC.
    """
    buf = bytearray(packet)
    lnh = buf[1] & 3
    if lnh == LNH_IBA_GLOBAL and len(buf) < LRH_SIZE:
        buf += bytes(LRH_SIZE - len(buf))  # still a whole LRH of ones (the kernels agree)
    for i, bits in _icrc_masks(lnh, min(len(buf), ICRC_MASK_SPAN)):
        buf[i] |= bits
    return bytes(buf)


@lru_cache(maxsize=None)
def _icrc_masks(lnh: int, n: int) -> tuple[tuple[int, int], ...]:
    """(byte, bits) that :func:`icrc_mask` sets in a packet of ``n`` bytes (at most ICRC_MASK_SPAN)."""
    return tuple((i, bits) for i in range(n) if (bits := icrc_mask(i, n, lnh)))


def icrc(packet: bytes) -> int:
    """The ICRC of ``packet`` (LRH .. end of payload, without the ICRC itself)."""
    return zlib.crc32(icrc_masked(packet)) & 0xFFFFFFFF


def has_icrc(lnh: int) -> bool:
    """Raw packets (LNH 0 and 1) carry a VCRC only; IBA transport packets carry both."""
    return lnh in (LNH_IBA_LOCAL, LNH_IBA_GLOBAL)


def crc_layout(frame: bytes) -> tuple[int | None, int] | None:
    """(offset of ICRC or None, offset of VCRC) from LRH.PktLen, or None when the frame is too short.

    PktLen counts 4-byte words from the LRH through the ICRC; the VCRC follows.
    """
    if len(frame) < LRH_SIZE:
        return None
    pktlen = ((frame[LRH_PKTLEN] & 0x07) << 8) | frame[LRH_PKTLEN + 1]
    end = pktlen * 4
    if end + VCRC_SIZE > len(frame) or end < LRH_SIZE:
        return None
    lnh = frame[1] & 0x3
    return (end - ICRC_SIZE if has_icrc(lnh) else None), end


def check_crcs(frame: bytes) -> tuple[bool | None, bool | None]:
    """(icrc_ok, vcrc_ok) of a captured frame; None where the CRC is absent or the frame too short."""
    layout = crc_layout(frame)
    if layout is None:
        return None, None
    icrc_at, vcrc_at = layout
    icrc_ok = None
    if icrc_at is not None:
        icrc_ok = int.from_bytes(frame[icrc_at:icrc_at + 4], "little") == icrc(frame[:icrc_at])
    vcrc_ok = int.from_bytes(frame[vcrc_at:vcrc_at + 2], "little") == crc16_vcrc(frame[:vcrc_at])
    return icrc_ok, vcrc_ok


def seal(packet: bytes) -> bytes:
    """Append ICRC (where the LNH has one) and VCRC to ``packet`` (LRH .. end of payload)."""
    lnh = packet[1] & 0x3
    out = bytes(packet)
    if has_icrc(lnh):
        out += icrc(out).to_bytes(4, "little")
    return out + crc16_vcrc(out).to_bytes(2, "little")
