"""numba kernels that cut a classic-pcap byte buffer into records and frames into fixed rows.

Plain arrays in, outputs passed in; no Python objects. The Python side (ingest.py) reads the file
in chunks, calls these, and carries a partial record over to the next chunk.
"""
import numpy as np

from madpipe.codecs import wire
from madpipe.codecs.wire import (
    IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE,
    IB_MGMT_CLASS_SUBN_LID_ROUTED,
    IB_MGMT_METHOD_GET_RESP,
    IB_MGMT_METHOD_RESP,
    IB_MGMT_METHOD_SET,
    IB_PERMISSIVE_LID,
    IB_SMP_ATTR_NODE_DESC,
    IB_SMP_ATTR_NODE_INFO,
    IB_SMP_ATTR_PKEY_TABLE,
    IB_SMP_ATTR_PORT_INFO,
    IB_SMP_ATTR_SWITCH_INFO,
    IB_SMP_DATA_SIZE,
    IB_SMP_DIRECTION,
    LRH_DLID,
    LRH_SLID,
    MAD_ATTR_ID,
    MAD_ATTR_MOD,
    MAD_HEADER_SIZE,
    MAD_METHOD,
    MAD_MGMT_CLASS,
    MAD_SIZE,
    MAD_STATUS,
    MAD_TID,
    SMP_DATA,
    SMP_DR_DLID,
    SMP_DR_SLID,
    SMP_HOP_CNT,
    SMP_INITIAL_PATH,
)
from madpipe.pipeline.kernels.jit import njit
from madpipe.pipeline.kernels.unaligned import get8

# Per-record outcome codes (ingest.SKIP_REASONS gives the words).
REC_OK = 0
REC_ERF_SHORT = 1
REC_ERF_EXT_RUNS_PAST = 2
REC_TS_FRACTION = 3  # link type 247: a timestamp fraction of a second or more (the ERF one is used for 197)
REC_ERF_NOT_IB = 128  # + the ERF type (7 bits)

# Where each record starts depends on the one before (its length), so a plain walk waits for
# memory once per record (~120 ns on a 2-core EPYC VM). Reading one byte this far ahead, a load
# nothing waits for, has the next pages on their way meanwhile: ~11 ns a record.
LOOKAHEAD = 4096


@njit(inline="always")
def _u32(buf, pos, big):
    if big:
        return (np.uint32(buf[pos]) << 24) | (np.uint32(buf[pos + 1]) << 16) | (np.uint32(buf[pos + 2]) << 8) | np.uint32(buf[pos + 3])
    return (np.uint32(buf[pos + 3]) << 24) | (np.uint32(buf[pos + 2]) << 16) | (np.uint32(buf[pos + 1]) << 8) | np.uint32(buf[pos])


@njit
def scan_pcap(buf, end, big, scale, erf, max_record, rec_off, pkt_off, pkt_len, orig_len, ts_ns, code):
    """Walk records in buf[0:end]. Fills outputs up to their length; returns (count, consumed, bad, t).

    ``bad`` is 1 when a record length is corrupt (larger than max_record): the walk stops there.
    A record whose bytes are not all in the buffer is left for the next chunk (not consumed).
    ``t`` is a sum of the bytes read LOOKAHEAD ahead, returned only so that those reads stay.
    """
    n = 0
    pos = 0
    cap = rec_off.shape[0]
    touched = 0
    while n < cap and pos + 16 <= end:
        if pos + LOOKAHEAD < end:
            touched += np.int64(buf[pos + LOOKAHEAD])
        sec = _u32(buf, pos, big)
        frac = _u32(buf, pos + 4, big)
        incl = _u32(buf, pos + 8, big)
        orig = _u32(buf, pos + 12, big)
        if incl > max_record:
            return n, pos, 1, touched
        if pos + 16 + incl > end:
            break
        body = pos + 16
        rec_off[n] = pos
        ts_ns[n] = np.int64(sec) * 1000000000 + np.int64(frac) * scale
        c = np.int64(REC_OK)  # typed: numba's inliner leaves a literal 0 that the codes below cannot unify with
        start = body
        length = np.int64(incl)
        wire = np.int64(orig)
        if not erf and np.int64(frac) * scale >= 1000000000:
            c = np.int64(REC_TS_FRACTION)
        if erf:
            if incl < 16:
                c = np.int64(REC_ERF_SHORT)
            else:
                rtype = buf[body + 8]
                wlen = (np.int64(buf[body + 14]) << 8) | np.int64(buf[body + 15])
                start = body + 16
                more = rtype & 0x80
                while more and c == REC_OK:
                    if start + 8 > body + incl:
                        c = np.int64(REC_ERF_EXT_RUNS_PAST)
                    else:
                        more = buf[start] & 0x80
                        start += 8
                if c == REC_OK and (rtype & 0x7F) != 21:
                    c = np.int64(REC_ERF_NOT_IB) + (rtype & 0x7F)
                length = body + incl - start
                if wlen < length:
                    length = wlen
                if c == REC_OK:
                    # The card's own 32.32 timestamp, not the pcap record's truncated copy of it
                    # (a skipped record keeps the pcap one and its length, as CaptureReader does).
                    erf_ts = np.uint64(0)
                    for b in range(8):
                        erf_ts |= np.uint64(buf[body + b]) << np.uint64(8 * b)
                    frac_ns = ((erf_ts & np.uint64(0xFFFFFFFF)) * np.uint64(1000000000)
                               + np.uint64(1 << 31)) >> np.uint64(32)
                    ts_ns[n] = np.int64(erf_ts >> np.uint64(32)) * 1000000000 + np.int64(frac_ns)
                    wire = max(np.int64(orig) - 16, 0)
        code[n] = c
        pkt_off[n] = start
        pkt_len[n] = length if c == REC_OK else 0
        orig_len[n] = wire
        n += 1
        pos = body + incl
    return n, pos, 0, touched


# Where the MAD starts in a packet, or -1 (decode_frame's rule, written once in codecs.wire).
mad_start = njit(inline="always")(wire.mad_start)


@njit
def gather_rows(buf, pkt_off, pkt_len, n, rows, mad_offset):
    """Copy each packet into a zero-padded row and find where its MAD starts (-1: no MAD, see mad_start)."""
    width = rows.shape[1]
    for i in range(n):
        off = pkt_off[i]
        length = pkt_len[i]
        m = min(length, width)
        for j in range(m):
            rows[i, j] = buf[off + j]
        for j in range(m, width):
            rows[i, j] = 0
        start = mad_start(buf, off, length)
        if start + MAD_SIZE > width:
            start = -1
        mad_offset[i] = start


@njit
def gather_mads(rows, mad_offset, mads, index):
    """Pack the MAD of every row that has one into mads[k]; index[k] = its row. Returns k."""
    k = 0
    for i in range(rows.shape[0]):
        s = mad_offset[i]
        if s < 0:
            continue
        for j in range(MAD_SIZE):
            mads[k, j] = rows[i, s + j]
        index[k] = i
        k += 1
    return k


# -- SMP field extraction for `madpipe snoop` (no row copy) ----------------------------------------
#
# A route key says how an SMP reached its port, in fixed bytes, so that equal routes are equal
# rows: [0] kind (ROUTE_LID or ROUTE_DR); [1] 1 when the LID at [2:4] is known (always for
# ROUTE_LID: the LRH's DLID of a request, SLID of a response; for ROUTE_DR the DrDLID of a request
# or DrSLID of a response unless it is the permissive 0xFFFF); [4] the hop count used
# (min(hop_cnt, 63)); [5:5 + hops] the initial path's hops 1..hops; [68:70] the switch port
# (attr_mod bits 16-31) where the caller wants it; everything else 0. Only the first
# (5 + hops + 3) // 4 32-bit words and the last one can be non-zero (fabric.kernels hashes and
# compares just those: its _words_used).
ROUTE_KEY_WIDTH = 72
ROUTE_LID = 1
ROUTE_DR = 2
ROUTE_KEY_PORT = 68

STATUS_HIGH = (0xFFFF ^ IB_SMP_DIRECTION) >> 8  # an SMP status's high byte without the D bit


@njit(inline="always")
def route_key_head(buf, off, m):
    """The route key of the SMP whose MAD is at ``buf[m]`` (packet at ``buf[off]``), as
    (its first word, where its path is in ``buf``, its size in bytes): key byte 5 + j is
    ``buf[path + j]``, so its word w >= 1 is :func:`route_key_word`'s.

    The key is written a word at a time (bytes 8w..8w+7 as one little-endian word, the bytes past
    its size zero), by the caller: passed to a helper, the key array was counted in and out at each
    SMP, as when this was a call writing the key (snoop_smps of 1M frames: 38 ms then, now 29)."""
    response = (buf[m + MAD_METHOD] & IB_MGMT_METHOD_RESP) != 0
    if buf[m + MAD_MGMT_CLASS] != IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        at = off + (LRH_SLID if response else LRH_DLID)
        word = (np.int64(ROUTE_LID) | (np.int64(1) << 8) | (np.int64(buf[at]) << 16)
                | (np.int64(buf[at + 1]) << 24))
        return word, m, 8
    hops = min(np.int64(buf[m + SMP_HOP_CNT]), 63)
    end = m + (SMP_DR_SLID if response else SMP_DR_DLID)
    hi = np.int64(buf[end])
    lo = np.int64(buf[end + 1])
    head = np.int64(ROUTE_DR) | (hops << 32)
    if hi != IB_PERMISSIVE_LID >> 8 or lo != IB_PERMISSIVE_LID & 0xFF:
        head |= (np.int64(1) << 8) | (hi << 16) | (lo << 24)
    path = m + SMP_INITIAL_PATH + 1  # entry 0 of the initial path is unused
    return head | (route_key_word(buf, path, 5 + hops, 0) & ~np.int64(0xFFFFFFFFFF)), path, 5 + hops


@njit(inline="always")
def route_key_word(buf, path, size, w):
    """Word w of a route key of ``size`` bytes whose bytes from 5 on are ``buf[path:]``."""
    word = get8(buf, path + 8 * w - 5)
    if size < 8 * w + 8:
        word &= (np.int64(1) << (8 * max(size - 8 * w, 0))) - 1
    return word


@njit
def snoop_smps(buf, pkt_off, pkt_len, code, rec, method, status, tid, attr_mod, data, key,
               ans_hdr, ans_data, ans_key):
    """The SMPs `madpipe snoop` reads, out of a batch of records, in order.

    P_KeyTable SMPs (any method), one row k each: rec[k] the record index, method[k] (uint8),
    status[k] (uint16, without the directed-route D bit), tid[k] (uint64), attr_mod[k] (uint32),
    data[k] the 64-byte SMP data (written for SubnSet and SubnGetResp only), key[k] the route key
    with the switch port. Answers that name ports: SubnGetResp(NodeInfo), (SwitchInfo) and
    (NodeDescription) on any route and SubnGetResp(PortInfo) on a directed route, status 0: ans_hdr (the 24-byte MAD header),
    ans_data, ans_key (no switch port). Unused rows and bytes are left as they were.
    Returns (P_KeyTable SMPs, answers, MADs, SMPs) of the batch.
    """
    k = 0
    a = 0
    mads = 0
    smps = 0
    for i in range(pkt_off.shape[0]):
        if code[i] != REC_OK:
            continue
        off = pkt_off[i]
        s = mad_start(buf, off, pkt_len[i])
        if s < 0:
            continue
        mads += 1
        m = off + s
        cls = buf[m + MAD_MGMT_CLASS]
        if cls != IB_MGMT_CLASS_SUBN_LID_ROUTED and cls != IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
            continue
        smps += 1
        if buf[m + MAD_ATTR_ID] != 0:  # every attribute read here has an ID below 0x100
            continue
        attr = buf[m + MAD_ATTR_ID + 1]
        if attr == IB_SMP_ATTR_PKEY_TABLE:
            rec[k] = i
            meth = buf[m + MAD_METHOD]
            method[k] = meth
            status[k] = ((np.uint16(buf[m + MAD_STATUS]) & STATUS_HIGH) << 8) | np.uint16(buf[m + MAD_STATUS + 1])
            t = np.uint64(0)
            for j in range(8):
                t = (t << np.uint64(8)) | np.uint64(buf[m + MAD_TID + j])
            tid[k] = t
            attr_mod[k] = ((np.uint32(buf[m + MAD_ATTR_MOD]) << 24) | (np.uint32(buf[m + MAD_ATTR_MOD + 1]) << 16)
                           | (np.uint32(buf[m + MAD_ATTR_MOD + 2]) << 8) | np.uint32(buf[m + MAD_ATTR_MOD + 3]))
            if meth == IB_MGMT_METHOD_SET or meth == IB_MGMT_METHOD_GET_RESP:
                # Rows are copied a word at a time (a load and a store), here in the loop: a
                # slice copy cost its views' reference counts at each row, a byte loop 20 ns
                # more, and a helper (a call, or inlined by numba) its arrays' counts.
                for q in range(IB_SMP_DATA_SIZE // 8):
                    word = get8(buf, m + SMP_DATA + 8 * q)
                    for j in range(8):
                        data[k, np.uint64(8 * q + j)] = (word >> (8 * j)) & 0xFF
            word, path, size = route_key_head(buf, off, m)
            for w in range((size + 7) // 8):
                if w:
                    word = route_key_word(buf, path, size, w)
                for j in range(8):
                    key[k, np.uint64(8 * w + j)] = (word >> (8 * j)) & 0xFF
            key[k, ROUTE_KEY_PORT] = buf[m + MAD_ATTR_MOD]
            key[k, ROUTE_KEY_PORT + 1] = buf[m + MAD_ATTR_MOD + 1]
            key[k, ROUTE_KEY_PORT + 2] = 0
            key[k, ROUTE_KEY_PORT + 3] = 0
            k += 1
        elif attr == IB_SMP_ATTR_NODE_INFO or attr == IB_SMP_ATTR_SWITCH_INFO or attr == IB_SMP_ATTR_NODE_DESC or \
                (attr == IB_SMP_ATTR_PORT_INFO and cls == IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
            if buf[m + MAD_METHOD] != IB_MGMT_METHOD_GET_RESP or (buf[m + MAD_STATUS] & STATUS_HIGH) != 0 \
                    or buf[m + MAD_STATUS + 1] != 0:
                continue
            for q in range(MAD_HEADER_SIZE // 8):
                word = get8(buf, m + 8 * q)
                for j in range(8):
                    ans_hdr[a, np.uint64(8 * q + j)] = (word >> (8 * j)) & 0xFF
            for q in range(IB_SMP_DATA_SIZE // 8):
                word = get8(buf, m + SMP_DATA + 8 * q)
                for j in range(8):
                    ans_data[a, np.uint64(8 * q + j)] = (word >> (8 * j)) & 0xFF
            word, path, size = route_key_head(buf, off, m)
            for w in range((size + 7) // 8):
                if w:
                    word = route_key_word(buf, path, size, w)
                for j in range(8):
                    ans_key[a, np.uint64(8 * w + j)] = (word >> (8 * j)) & 0xFF
            for j in range(ROUTE_KEY_PORT, ROUTE_KEY_WIDTH):
                ans_key[a, j] = 0
            a += 1
    return k, a, mads, smps
