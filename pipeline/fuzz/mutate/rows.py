"""Bit fields and CRCs of many frames at once: rows uint8[N, W], one frame a row, in numpy."""
from __future__ import annotations

import numpy as np

from madpipe.codecs import crc
from madpipe.pipeline.fuzz.mutate.rng import MASK64, U64


# -- bit access over many rows at once -----------------------------------------------------------

def low_bits_mask(width: np.ndarray) -> np.ndarray:
    """uint64 with the low ``width`` bits set, for each width (64 and more: all of them)."""
    return np.where(width >= 64, U64(MASK64), (U64(1) << width.astype(U64)) - U64(1))


def get_bits(rows: np.ndarray, r: np.ndarray, bit: np.ndarray, width: np.ndarray) -> np.ndarray:
    """uint64 value of the big-endian bit field (``bit``, ``width`` <= 64) of each row ``r``."""
    bit = bit.astype(np.int64)
    width = width.astype(np.int64)
    end = bit + width
    val = np.zeros(len(r), dtype=U64)
    for j in range(9):
        b = (bit >> 3) + j
        act = 8 * b < end
        if not act.any():
            break
        bb = np.where(act, b, 0)
        lo = np.maximum(bit, 8 * bb)
        hi = np.minimum(end, 8 * bb + 8)
        n = np.where(act, hi - lo, 0).astype(U64)
        chunk = (rows[r, bb].astype(U64) >> (8 * bb + 8 - hi).clip(0, 7).astype(U64)) & ((U64(1) << n) - U64(1))
        val = np.where(act, (val << n) | chunk, val)
    return val


def put_bits(rows: np.ndarray, r: np.ndarray, bit: np.ndarray, width: np.ndarray, value: np.ndarray) -> None:
    """Write ``value`` (uint64, masked to ``width`` <= 64) into the bit field of each row ``r``."""
    bit = bit.astype(np.int64)
    width = width.astype(np.int64)
    value = value.astype(U64)
    end = bit + width
    for j in range(9):
        b = (bit >> 3) + j
        act = 8 * b < end
        if not act.any():
            break
        rr, bb, lo_bit, e, v = r[act], b[act], bit[act], end[act], value[act]
        lo = np.maximum(lo_bit, 8 * bb)
        hi = np.minimum(e, 8 * bb + 8)
        n = (hi - lo).astype(U64)
        mask = (U64(1) << n) - U64(1)
        chunk = (v >> (e - hi).astype(U64)) & mask
        shift = (8 * bb + 8 - hi).astype(U64)
        old = rows[rr, bb].astype(U64)
        rows[rr, bb] = ((old & ~(mask << shift)) | (chunk << shift)).astype(np.uint8)


# -- CRCs of many rows at once -------------------------------------------------------------------

_CRC32 = np.array(crc.CRC32_TABLE, dtype=np.uint32)
_VCRC = np.array(crc.VCRC_TABLE, dtype=np.uint32)


def _crc_rows(rows: np.ndarray, length: np.ndarray, table: np.ndarray, init: int, xorout: int) -> np.ndarray:
    """A reflected table CRC over rows[i, :length[i]] for every row (the two IBA CRCs)."""
    c = np.full(len(rows), init, dtype=np.uint32)
    if len(rows) == 0:
        return c
    for j in range(int(length.max(initial=0))):
        act = j < length
        new = table[(c ^ rows[:, j]) & 0xFF] ^ (c >> np.uint32(8))
        c = np.where(act, new, c)
    return c ^ np.uint32(xorout)


def seal_rows(rows: np.ndarray, length: np.ndarray, which: np.ndarray) -> None:
    """Recompute ICRC (LNH 2, 3) and VCRC at the end of the rows ``which``, as ``crc.seal`` would."""
    idx = np.flatnonzero(which & (length >= 10))
    if len(idx) == 0:
        return
    sub = rows[idx].copy()
    n = length[idx]
    lnh = sub[:, 1] & 3
    has_icrc = (lnh >= 2) & (n >= 14)
    # The ICRC: zlib's CRC-32 over LRH..payload with the variant fields set to ones.
    ic = idx[has_icrc]
    if len(ic):
        m = sub[has_icrc].copy()
        mn = n[has_icrc] - 6
        glob = (m[:, 1] & 3) == 3
        m[glob, 0:8] = 0xFF
        g = glob & (mn >= 48)
        m[g, 8] |= 0x0F
        m[g, 9:12] = 0xFF
        m[g, 15] = 0xFF
        m[~glob, 0] |= 0xF0
        bth = np.where(glob, 48, 8)
        at = bth + 4
        ok = mn > at
        m[np.flatnonzero(ok), at[ok]] = 0xFF
        icrc = _crc_rows(m, mn, _CRC32, 0xFFFFFFFF, 0xFFFFFFFF)
        for k in range(4):
            rows[ic, mn + k] = ((icrc >> np.uint32(8 * k)) & np.uint32(0xFF)).astype(np.uint8)
    vc = _crc_rows(rows[idx], n - 2, _VCRC, 0xFFFF, 0xFFFF)
    rows[idx, n - 2] = (vc & np.uint32(0xFF)).astype(np.uint8)
    rows[idx, n - 1] = ((vc >> np.uint32(8)) & np.uint32(0xFF)).astype(np.uint8)
