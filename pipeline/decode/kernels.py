"""numba kernel for `madpipe decode`'s fast path: ICRC and VCRC checks of a batch of packets.

The rules are madpipe.codecs.crc.check_crcs's, byte for byte (the tests compare the two on
real, crafted, damaged and random frames): the CRC positions come from LRH.PktLen, raw packets
(LNH 0, 1) carry no ICRC, and the ICRC covers the packet with its variant fields set to ones.
Results are int8 codes: 1 ok, 0 bad, -1 absent (check_crcs's None).
"""
import numpy as np

from madpipe.codecs.crc import CRC32_INIT, CRC32_XOROUT, VCRC_INIT, VCRC_XOROUT
from madpipe.codecs.wire import ICRC_SIZE, LNH_IBA_GLOBAL, LNH_IBA_LOCAL, LRH_PKTLEN, LRH_SIZE, VCRC_SIZE
from madpipe.pipeline.decode.crc_kernels import icrc_masked_byte
from madpipe.pipeline.kernels.jit import njit

CRC_ABSENT = -1
CRC_BAD = 0
CRC_OK = 1


@njit
def check_crcs(buf, pkt_off, pkt_len, code, crc32_table, vcrc_table, icrc_ok, vcrc_ok):
    """icrc_ok[i], vcrc_ok[i] (int8 codes) of the packet buf[pkt_off[i]:pkt_off[i] + pkt_len[i]].

    Records with code[i] != 0 (no packet) get CRC_ABSENT for both.
    """
    for r in range(pkt_off.shape[0]):
        icrc_ok[r] = CRC_ABSENT
        vcrc_ok[r] = CRC_ABSENT
        length = pkt_len[r]
        if code[r] != 0 or length < LRH_SIZE:
            continue
        off = pkt_off[r]
        end = ((np.int64(buf[off + LRH_PKTLEN]) & 7) << 8 | np.int64(buf[off + LRH_PKTLEN + 1])) * 4
        if end + VCRC_SIZE > length or end < LRH_SIZE:
            continue
        lnh = buf[off + 1] & 3
        if lnh == LNH_IBA_LOCAL or lnh == LNH_IBA_GLOBAL:
            icrc_at = end - ICRC_SIZE
            c = np.uint32(CRC32_INIT)
            if lnh == LNH_IBA_GLOBAL and icrc_at < LRH_SIZE:
                # icrc_masked takes a whole LRH of ones even from a shorter packet: eight 0xFF bytes
                for _ in range(LRH_SIZE):
                    c = crc32_table[(c ^ np.uint32(0xFF)) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
            else:
                for i in range(icrc_at):
                    b = icrc_masked_byte(buf, off, i, icrc_at, lnh)
                    c = crc32_table[(c ^ np.uint32(b)) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
            c = c ^ np.uint32(CRC32_XOROUT)
            stored = (np.uint32(buf[off + icrc_at]) | (np.uint32(buf[off + icrc_at + 1]) << np.uint32(8))
                      | (np.uint32(buf[off + icrc_at + 2]) << np.uint32(16))
                      | (np.uint32(buf[off + icrc_at + 3]) << np.uint32(24)))
            icrc_ok[r] = CRC_OK if stored == c else CRC_BAD
        v = np.uint32(VCRC_INIT)
        for i in range(end):
            v = (v >> np.uint32(8)) ^ vcrc_table[(v ^ np.uint32(buf[off + i])) & np.uint32(0xFF)]
        v = v ^ np.uint32(VCRC_XOROUT)
        stored_v = np.uint32(buf[off + end]) | (np.uint32(buf[off + end + 1]) << np.uint32(8))
        vcrc_ok[r] = CRC_OK if stored_v == v else CRC_BAD
