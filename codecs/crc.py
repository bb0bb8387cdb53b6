"""IBA 7.8: the invariant CRC (ICRC) and variant CRC (VCRC) of a native InfiniBand packet.

ICRC: CRC-32 (zlib's) over the packet from the LRH through the end of the payload, with the
fields that may change in flight set to all ones; stored least-significant byte first.
VCRC: CRC-16, polynomial 0x100B reflected (0xD008), init 0xFFFF, final xor 0xFFFF, over every
byte from the LRH through the ICRC; stored least-significant byte first.
Both were checked against the 43 frames of the real hardware capture in pcaps/.
"""
from __future__ import annotations

import zlib

LNH_RAW = 0
LNH_IP_NON_IBA = 1
LNH_IBA_LOCAL = 2
LNH_IBA_GLOBAL = 3

LRH_SIZE = 8
GRH_SIZE = 40
ICRC_SIZE = 4
VCRC_SIZE = 2

_VCRC_POLY_REFLECTED = 0xD008


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
    crc = 0xFFFF
    table = VCRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFF


def icrc_masked(packet: bytes) -> bytes:
    """The bytes the ICRC covers (LRH .. end of payload) with the variant fields set to ones.

    ``packet`` starts at the LRH and ends before the ICRC.
    """
    buf = bytearray(packet)
    lnh = buf[1] & 0x3
    if lnh == LNH_IBA_GLOBAL:
        buf[0:LRH_SIZE] = b"\xff" * LRH_SIZE
        if len(buf) >= LRH_SIZE + GRH_SIZE:
            g = LRH_SIZE
            buf[g] |= 0x0F  # traffic class, high nibble
            buf[g + 1] = 0xFF  # traffic class low nibble | flow label high nibble
            buf[g + 2] = 0xFF
            buf[g + 3] = 0xFF  # flow label
            buf[g + 7] = 0xFF  # hop limit
        bth = LRH_SIZE + GRH_SIZE
    else:
        buf[0] |= 0xF0  # VL
        bth = LRH_SIZE
    if len(buf) > bth + 4:
        buf[bth + 4] = 0xFF  # BTH resv8a
    return bytes(buf)


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
    pktlen = ((frame[4] & 0x07) << 8) | frame[5]
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
