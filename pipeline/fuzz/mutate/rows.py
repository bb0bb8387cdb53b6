"""Bit fields and CRCs of many frames at once: rows uint8[N, W], one frame a row, in numpy."""
from __future__ import annotations

from functools import lru_cache

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


@lru_cache(maxsize=None)
def _icrc_masks() -> np.ndarray:
    """uint8[lnh, n, i]: crc.icrc_mask(i, n, lnh) for a packet of n bytes (n up to ICRC_MASK_SPAN,
    which stands for any longer packet) and each byte i before ICRC_MASK_SPAN."""
    span = crc.ICRC_MASK_SPAN
    return np.array([[[crc.icrc_mask(i, n, lnh) for i in range(span)] for n in range(span + 1)]
                     for lnh in range(4)], dtype=np.uint8)


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
        mn = n[has_icrc] - crc.ICRC_SIZE - crc.VCRC_SIZE
        span = min(crc.ICRC_MASK_SPAN, m.shape[1])
        masks = _icrc_masks()[m[:, 1] & 3, np.minimum(mn, crc.ICRC_MASK_SPAN), :span]
        masks[np.arange(span) >= mn[:, None]] = 0  # only bytes of the packet
        m[:, :span] |= masks
        icrc = _crc_rows(m, mn, _CRC32, crc.CRC32_INIT, crc.CRC32_XOROUT)
        for k in range(4):
            rows[ic, mn + k] = ((icrc >> np.uint32(8 * k)) & np.uint32(0xFF)).astype(np.uint8)
    vc = _crc_rows(rows[idx], n - crc.VCRC_SIZE, _VCRC, crc.VCRC_INIT, crc.VCRC_XOROUT)
    rows[idx, n - 2] = (vc & np.uint32(0xFF)).astype(np.uint8)
    rows[idx, n - 1] = ((vc >> np.uint32(8)) & np.uint32(0xFF)).astype(np.uint8)
