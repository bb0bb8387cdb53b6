"""numba kernels that cut a classic-pcap byte buffer into records and frames into fixed rows.

Plain arrays in, outputs passed in; no Python objects. The Python side (ingest.py) reads the file
in chunks, calls these, and carries a partial record over to the next chunk.
"""
import numpy as np

from madpipe.pipeline.jit import njit

# Per-record outcome codes (ingest.SKIP_REASONS gives the words).
REC_OK = 0
REC_ERF_SHORT = 1
REC_ERF_EXT_RUNS_PAST = 2
REC_ERF_NOT_IB = 128  # + the ERF type (7 bits)


@njit
def _u32(buf, pos, big):
    if big:
        return (np.uint32(buf[pos]) << 24) | (np.uint32(buf[pos + 1]) << 16) | (np.uint32(buf[pos + 2]) << 8) | np.uint32(buf[pos + 3])
    return (np.uint32(buf[pos + 3]) << 24) | (np.uint32(buf[pos + 2]) << 16) | (np.uint32(buf[pos + 1]) << 8) | np.uint32(buf[pos])


@njit
def scan_pcap(buf, end, big, scale, erf, max_record, rec_off, pkt_off, pkt_len, orig_len, ts_ns, code):
    """Walk records in buf[0:end]. Fills outputs up to their length; returns (count, consumed, bad).

    ``bad`` is 1 when a record length is corrupt (larger than max_record): the walk stops there.
    A record whose bytes are not all in the buffer is left for the next chunk (not consumed).
    """
    n = 0
    pos = 0
    cap = rec_off.shape[0]
    while n < cap and pos + 16 <= end:
        sec = _u32(buf, pos, big)
        frac = _u32(buf, pos + 4, big)
        incl = _u32(buf, pos + 8, big)
        orig = _u32(buf, pos + 12, big)
        if incl > max_record:
            return n, pos, 1
        if pos + 16 + incl > end:
            break
        body = pos + 16
        rec_off[n] = pos
        ts_ns[n] = np.int64(sec) * 1000000000 + np.int64(frac) * scale
        c = REC_OK
        start = body
        length = np.int64(incl)
        wire = np.int64(orig)
        if erf:
            if incl < 16:
                c = REC_ERF_SHORT
            else:
                # The card's own 32.32 timestamp, not the pcap record's truncated copy of it.
                erf_ts = np.uint64(0)
                for b in range(8):
                    erf_ts |= np.uint64(buf[body + b]) << np.uint64(8 * b)
                frac_ns = ((erf_ts & np.uint64(0xFFFFFFFF)) * np.uint64(1000000000) + np.uint64(1 << 31)) >> np.uint64(32)
                ts_ns[n] = np.int64(erf_ts >> np.uint64(32)) * 1000000000 + np.int64(frac_ns)
                rtype = buf[body + 8]
                wlen = (np.int64(buf[body + 14]) << 8) | np.int64(buf[body + 15])
                start = body + 16
                more = rtype & 0x80
                while more and c == REC_OK:
                    if start + 8 > body + incl:
                        c = REC_ERF_EXT_RUNS_PAST
                    else:
                        more = buf[start] & 0x80
                        start += 8
                if c == REC_OK and (rtype & 0x7F) != 21:
                    c = REC_ERF_NOT_IB + (rtype & 0x7F)
                length = body + incl - start
                if wlen < length:
                    length = wlen
                wire = max(np.int64(orig) - 16, 0)
        code[n] = c
        pkt_off[n] = start
        pkt_len[n] = length if c == REC_OK else 0
        orig_len[n] = wire
        n += 1
        pos = body + incl
    return n, pos, 0


@njit
def gather_rows(buf, pkt_off, pkt_len, n, rows, mad_offset):
    """Copy each packet into a zero-padded row and find where its MAD starts (-1: no MAD).

    The MAD rule is decode_frame's: LNH 2 or 3, BTH opcode UD SEND only (0x64, or 0x65 with 4
    bytes of immediate), DETH, destination or source QP 0 or 1, and 256 bytes before ICRC+VCRC.
    """
    width = rows.shape[1]
    for i in range(n):
        off = pkt_off[i]
        length = pkt_len[i]
        m = min(length, width)
        for j in range(m):
            rows[i, j] = buf[off + j]
        for j in range(m, width):
            rows[i, j] = 0
        mad_offset[i] = -1
        if length < 8:
            continue
        lnh = buf[off + 1] & 3
        if lnh == 2:
            p = 8
        elif lnh == 3:
            p = 48
        else:
            continue
        if length < p + 20:
            continue
        opcode = buf[off + p]
        if opcode == 0x64:
            start = p + 20
        elif opcode == 0x65:
            start = p + 24
        else:
            continue
        dqp = (np.int64(buf[off + p + 5]) << 16) | (np.int64(buf[off + p + 6]) << 8) | np.int64(buf[off + p + 7])
        sqp = (np.int64(buf[off + p + 17]) << 16) | (np.int64(buf[off + p + 18]) << 8) | np.int64(buf[off + p + 19])
        if dqp > 1 and sqp > 1:
            continue
        if start + 256 + 6 > length or start + 256 > width:
            continue
        mad_offset[i] = start


@njit
def gather_mads(rows, mad_offset, mads, index):
    """Pack the MAD of every row that has one into mads[k]; index[k] = its row. Returns k."""
    k = 0
    for i in range(rows.shape[0]):
        s = mad_offset[i]
        if s < 0:
            continue
        for j in range(256):
            mads[k, j] = rows[i, s + j]
        index[k] = i
        k += 1
    return k
