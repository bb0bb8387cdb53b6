"""numba kernels for the ICRC and VCRC of many frames at once (rules in madpipe.codecs.crc).

rows uint8[N, W] hold frames from the LRH; length int64[N] says how many bytes of each row are
the frame. Used to build and check large captures without a Python loop per frame.
"""
import numpy as np

from madpipe.codecs import crc
from madpipe.codecs.crc import CRC32_INIT, CRC32_XOROUT, VCRC_INIT, VCRC_XOROUT
from madpipe.codecs.wire import ICRC_SIZE, VCRC_SIZE
from madpipe.pipeline.kernels.jit import njit

CRC32_TABLE = np.array(crc.CRC32_TABLE, np.uint32)
VCRC_TABLE_NP = np.array(crc.VCRC_TABLE, np.uint32)

icrc_mask = njit(crc.icrc_mask)


@njit
def icrc_masked_byte(buf, off, i, n, lnh):
    """Byte i of crc.icrc_masked(packet) for a packet of n bytes at buf[off] (n >= 8 when lnh == 3)."""
    return buf[off + i] | icrc_mask(i, n, lnh)


@njit
def icrc_rows(rows, length, crc32_table, out):
    """out[n] = ICRC of rows[n, :length[n] - 6] (LNH 2 or 3; variant fields taken as ones)."""
    flat = rows.reshape(-1)
    width = rows.shape[1]
    for n in range(rows.shape[0]):
        end = length[n] - ICRC_SIZE - VCRC_SIZE
        lnh = rows[n, 1] & 3
        c = np.uint32(CRC32_INIT)
        for i in range(end):
            b = icrc_masked_byte(flat, n * width, i, end, lnh)
            c = crc32_table[(c ^ np.uint32(b)) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
        out[n] = c ^ np.uint32(CRC32_XOROUT)


@njit
def vcrc_rows(rows, length, vcrc_table, out):
    """out[n] = VCRC of rows[n, :length[n] - 2] (everything from the LRH through the ICRC)."""
    for n in range(rows.shape[0]):
        c = np.uint32(VCRC_INIT)
        for i in range(length[n] - VCRC_SIZE):
            c = (c >> np.uint32(8)) ^ vcrc_table[(c ^ np.uint32(rows[n, i])) & np.uint32(0xFF)]
        out[n] = c ^ np.uint32(VCRC_XOROUT)


def seal_rows(rows: np.ndarray, length: np.ndarray) -> None:
    """Write ICRC and VCRC (little-endian, as on the wire) into the last 6 bytes of each frame."""
    n = rows.shape[0]
    icrc = np.empty(n, np.uint32)
    icrc_rows(rows, length, CRC32_TABLE, icrc)
    idx = np.arange(n)
    for k in range(4):
        rows[idx, length - 6 + k] = (icrc >> np.uint32(8 * k)) & 0xFF
    vcrc = np.empty(n, np.uint32)
    vcrc_rows(rows, length, VCRC_TABLE_NP, vcrc)
    rows[idx, length - 2] = vcrc & 0xFF
    rows[idx, length - 1] = vcrc >> 8
