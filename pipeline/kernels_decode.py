"""numba kernel for `madpipe decode`'s fast path: ICRC and VCRC checks of a batch of packets.

The rules are madpipe.codecs.crc.check_crcs's, byte for byte (the tests compare the two on
real, crafted, damaged and random frames): the CRC positions come from LRH.PktLen, raw packets
(LNH 0, 1) carry no ICRC, and the ICRC covers the packet with its variant fields set to ones.
Results are int8 codes: 1 ok, 0 bad, -1 absent (check_crcs's None).
"""
import numpy as np

from madpipe.pipeline.jit import njit

CRC_ABSENT = -1
CRC_BAD = 0
CRC_OK = 1


def crc32_table() -> np.ndarray:
    """zlib's CRC-32 table (reflected 0xEDB88320)."""
    table = np.zeros(256, np.uint32)
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[b] = c
    return table


@njit
def _masked(buf, off, i, n, lnh):
    """Byte i of crc.icrc_masked(packet) for a packet of n bytes at buf[off] (n >= 8 when lnh == 3)."""
    b = buf[off + i]
    if lnh == 3:
        bth = 48
        if i < 8:
            return 0xFF
        if n >= 48:
            if i == 8:
                return b | 0x0F
            if i == 9 or i == 10 or i == 11 or i == 15:
                return 0xFF
    else:
        bth = 8
        if i == 0:
            b = b | 0xF0
    if i == bth + 4 and n > bth + 4:
        return 0xFF
    return b


@njit
def check_crcs(buf, pkt_off, pkt_len, code, crc32_table, vcrc_table, icrc_ok, vcrc_ok):
    """icrc_ok[i], vcrc_ok[i] (int8 codes) of the packet buf[pkt_off[i]:pkt_off[i] + pkt_len[i]].

    Records with code[i] != 0 (no packet) get CRC_ABSENT for both.
    """
    for r in range(pkt_off.shape[0]):
        icrc_ok[r] = CRC_ABSENT
        vcrc_ok[r] = CRC_ABSENT
        length = pkt_len[r]
        if code[r] != 0 or length < 8:
            continue
        off = pkt_off[r]
        end = ((np.int64(buf[off + 4]) & 7) << 8 | np.int64(buf[off + 5])) * 4
        if end + 2 > length or end < 8:
            continue
        lnh = buf[off + 1] & 3
        if lnh == 2 or lnh == 3:
            icrc_at = end - 4
            c = np.uint32(0xFFFFFFFF)
            if lnh == 3 and icrc_at < 8:
                # icrc_masked sets bytes 0..7 of a shorter packet to ones: eight 0xFF bytes
                for i in range(8):
                    c = crc32_table[(c ^ np.uint32(0xFF)) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
            else:
                for i in range(icrc_at):
                    b = _masked(buf, off, i, icrc_at, lnh)
                    c = crc32_table[(c ^ np.uint32(b)) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
            c = c ^ np.uint32(0xFFFFFFFF)
            stored = (np.uint32(buf[off + icrc_at]) | (np.uint32(buf[off + icrc_at + 1]) << np.uint32(8))
                      | (np.uint32(buf[off + icrc_at + 2]) << np.uint32(16))
                      | (np.uint32(buf[off + icrc_at + 3]) << np.uint32(24)))
            icrc_ok[r] = CRC_OK if stored == c else CRC_BAD
        v = np.uint32(0xFFFF)
        for i in range(end):
            v = (v >> np.uint32(8)) ^ vcrc_table[(v ^ np.uint32(buf[off + i])) & np.uint32(0xFF)]
        v = v ^ np.uint32(0xFFFF)
        stored_v = np.uint32(buf[off + end]) | (np.uint32(buf[off + end + 1]) << np.uint32(8))
        vcrc_ok[r] = CRC_OK if stored_v == v else CRC_BAD
