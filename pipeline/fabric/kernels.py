"""numba kernels for the fabric-wide snoop (`madpipe snoop`): dense ids, answer pairing, per-port caches.

Plain arrays in, outputs passed in; no Python objects. :mod:`madpipe.pipeline.fabric.snoop` drives
them batch by batch and checks the arrays; the tests compare each with a pure-Python reference
(``snoop_ports`` with :func:`madpipe.pipeline.mlx4.snoop.smp_snoop_reference` run port by port).

Hashes are computed in 32 bits inside int64 so that no product overflows: the same code runs
compiled and as plain Python (``NUMBA_DISABLE_JIT=1``, small inputs).
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs.wire import (
    IB_MGMT_METHOD_GET_RESP,
    IB_MGMT_METHOD_SET,
    IB_SMP_ATTR_NODE_INFO,
    IB_SMP_ATTR_PORT_INFO,
    IB_SMP_ATTR_SWITCH_INFO,
    MAD_ATTR_ID,
    MAD_ATTR_MOD,
    NODE_INFO_NODE_TYPE,
    NODE_INFO_PARTITION_CAP,
    NODE_TYPE_SWITCH,
    PORT_INFO_LID,
    SWITCH_INFO_PARTITION_ENFORCEMENT_CAP,
)
from madpipe.pipeline.kernels.jit import njit

MLX4_MAX_PORTS = 2
MLX4_MAX_PORT_PKEYS = 128
FINDING_SPILL = 1
FINDING_REFUSED = 2

FNV_PRIME = 0x01000193
FNV_OFFSET = 0x811C9DC5
MASK32 = 0xFFFFFFFF


@njit(inline="always")
def _words_used(keys, row):
    """Route keys (ingest.kernels.route_key_head): only the leading words for the hop count can be set."""
    return (5 + np.int64(keys[row, 4]) + 3) // 4


@njit
def _mix(h, word):
    """One FNV-1 step over a 32-bit word, then a xorshift: a product only carries bits upward,
    so without it the word's high bytes (a LID's low byte) never reached the bits a table uses
    (1025 ports' keys fell in 67 slots of 2048; with it, 780)."""
    h = ((h ^ word) * FNV_PRIME) & MASK32
    return h ^ (h >> 16)


@njit(inline="always")
def _hash_key(words, row, used, last):
    h = np.int64(FNV_OFFSET)
    for w in range(used):
        h = _mix(h, np.int64(words[row, w]))
    h = _mix(h, np.int64(words[row, last]))
    return h ^ (h >> 15)


@njit
def intern_keys(keys, start, table, uniq, n_uniq, ids):
    """Give each route key (row of ``keys``) a dense id, the first row with a new key the next id.

    keys uint8[M, 72], laid out as ingest.kernels.snoop_smps writes them (only the words for the
    hop count, and the last word, are read); table int32[C] (C a power of two; -1 empty, else an
    id); uniq uint8[U, 72], the key of each id (rows 0..n_uniq-1 in use); ids int32[M] (out).
    Rows ``start..`` are done in order. Returns (n_uniq, next row): the next row is M when all are
    done, less when the table would pass half full or uniq is full (grow both, call again from it).
    """
    words = keys.view(np.uint32)
    uwords = uniq.view(np.uint32)
    mask = table.shape[0] - 1
    last = words.shape[1] - 1
    for m in range(start, keys.shape[0]):
        used = _words_used(keys, m)
        pos = _hash_key(words, m, used, last) & mask
        while True:
            e = table[pos]
            if e < 0:
                if n_uniq >= uniq.shape[0] or 2 * (n_uniq + 1) > table.shape[0]:
                    return n_uniq, m
                for w in range(last + 1):
                    uwords[n_uniq, w] = words[m, w] if (w < used or w == last) else 0
                table[pos] = n_uniq
                ids[m] = n_uniq
                n_uniq += 1
                break
            same = uwords[e, last] == words[m, last]
            w = 0
            while same and w < used:
                if uwords[e, w] != words[m, w]:
                    same = False
                w += 1
            if same:
                ids[m] = e
                break
            pos = (pos + 1) & mask
    return n_uniq, keys.shape[0]


@njit
def rehash(uniq, n_uniq, table):
    """Fill an empty (all -1) table with ids 0..n_uniq-1 of uniq (after growing it)."""
    words = uniq.view(np.uint32)
    mask = table.shape[0] - 1
    last = words.shape[1] - 1
    for e in range(n_uniq):
        pos = _hash_key(words, e, _words_used(uniq, e), last) & mask
        while table[pos] >= 0:
            pos = (pos + 1) & mask
        table[pos] = e


@njit
def _tid_slot_hash(tid, slot):
    h = np.int64(FNV_OFFSET)
    h = _mix(h, np.int64(tid & np.uint64(MASK32)))
    h = _mix(h, np.int64(tid >> np.uint64(32)))
    h = _mix(h, np.int64(slot))
    return h ^ (h >> 15)


@njit
def pair_answers(set_tid, set_slot, set_seq, resp_tid, resp_slot, resp_seq, resp_status, window, answer):
    """The status of each Set's answer: the first GetResp with its TID from its port within ``window``.

    Sets (set_tid uint64[S], set_slot int32[S], set_seq int64[S], ascending seq) and GetResps
    (resp_* of length R, ascending seq; resp_status int32) are numbered in one sequence. For Set s,
    answer[s] (int32, out) is the status of the earliest GetResp r with the same TID and slot and
    set_seq[s] - window <= resp_seq[r] <= set_seq[s] + window, or -1 when there is none.
    A window of at least the sequence's length means: the first such GetResp anywhere.
    """
    n_resp = resp_tid.shape[0]
    cap = 16
    while cap < 2 * n_resp:
        cap *= 2
    mask = cap - 1
    head = np.full(cap, -1, np.int64)  # first GetResp of the key in this bucket (-1: empty)
    tail = np.empty(cap, np.int64)  # last GetResp of the key so far
    cursor = np.empty(cap, np.int64)  # first GetResp of the key not yet too old for the Sets
    after = np.full(max(n_resp, 1), -1, np.int64)  # next GetResp with the same key
    for r in range(n_resp):
        pos = _tid_slot_hash(resp_tid[r], resp_slot[r]) & mask
        while head[pos] >= 0:
            j = head[pos]
            if resp_tid[j] == resp_tid[r] and resp_slot[j] == resp_slot[r]:
                break
            pos = (pos + 1) & mask
        if head[pos] < 0:
            head[pos] = r
            cursor[pos] = r
        else:
            after[tail[pos]] = r
        tail[pos] = r
    for s in range(set_tid.shape[0]):
        answer[s] = -1
        pos = _tid_slot_hash(set_tid[s], set_slot[s]) & mask
        while head[pos] >= 0:
            j = head[pos]
            if resp_tid[j] == set_tid[s] and resp_slot[j] == set_slot[s]:
                break
            pos = (pos + 1) & mask
        if head[pos] < 0:
            continue
        j = cursor[pos]
        low = set_seq[s] - window
        while j >= 0 and resp_seq[j] < low:
            j = after[j]
        cursor[pos] = j  # Sets come in ascending seq: what is too old now stays too old
        if j >= 0 and resp_seq[j] <= set_seq[s] + window:
            answer[s] = resp_status[j]


@njit
def snoop_ports(slot, attr_mod, data, port_num, phys_pkey_cache, pkey_change_bitmap, finding, old):
    """smp_snoop's P_KeyTable case for SubnSets answered with status 0, each on its port's cache.

    Item n is a SubnSet(P_KeyTable) with attribute modifier attr_mod[n] (uint32) and SMP data
    data[n] (uint8[64], the wire's 32 be16 P_Keys), snooped on physical port ``port_num`` (1 or 2)
    of the master whose ``phys_pkey_cache`` is phys_pkey_cache[slot[n]] (uint16[P, 2, 128],
    updated in order). Outputs, one per item: pkey_change_bitmap uint32 (zero where nothing
    changed), finding int8 (0, FINDING_SPILL, FINDING_REFUSED), old uint16[N, 32]: the cache
    entries the block covers, before the item (rows of refused items are left as they were).
    The master event is ``pkey_change_bitmap != 0``; with no VFs there are no slave events.
    """
    for n in range(slot.shape[0]):
        p = slot[n]
        bn = np.int64(attr_mod[n] & 0xFFFF)
        first = (np.int64(port_num) - 1) * MLX4_MAX_PORT_PKEYS + bn * 32
        finding[n] = 0
        pkey_change_bitmap[n] = 0
        if first + 31 >= MLX4_MAX_PORTS * MLX4_MAX_PORT_PKEYS:
            finding[n] = FINDING_REFUSED
            continue
        if bn * 32 + 31 >= MLX4_MAX_PORT_PKEYS:
            finding[n] = FINDING_SPILL
        row = first >> 7
        col = first & 127
        # Without a branch: each entry is stored whether or not it changed (the same value when
        # not), and its bit is the comparison's. Whether an entry changed is the data's coin, so
        # the branch was mispredicted often: the 1M-frame snoop's 420k Sets took 16-18 ms, now 8.
        bitmap = np.uint32(0)
        for i in range(32):
            pkey = (np.uint16(data[n, 2 * i]) << 8) | np.uint16(data[n, 2 * i + 1])
            cur = phys_pkey_cache[p, row, col + i]
            old[n, i] = cur
            bitmap |= np.uint32(pkey != cur) << np.uint32(i)
            phys_pkey_cache[p, row, col + i] = pkey
        pkey_change_bitmap[n] = bitmap


# Columns of the per-route facts learn_routes keeps (int64, -1: no answer said it yet).
FACT_SWITCH = 0  # NodeInfo.NodeType is a switch (1) or not (0), the last NodeInfo answer's
FACT_NODE_CAP = 1  # NodeInfo.PartitionCap
FACT_SWITCH_CAP = 2  # SwitchInfo.PartitionEnforcementCap
FACT_LID_ANY = 3  # the LID of the last PortInfo answer with one, any port
FACT_SEEN_ANY = 4  # the place (among PortInfo answers with a LID) of the first of those
FACT_LID_P0 = 5  # the same, port 0 only (a switch's LID)
FACT_SEEN_P0 = 6
FACTS = 7


@njit
def learn_routes(ids, hdr, data, seen, facts):
    """What NodeInfo, SwitchInfo and PortInfo answers say about their routes, in frame order (other
    answers, NodeDescription's, are passed over).

    Answer j (kernels_ingest.snoop_smps's ans_hdr uint8[A, 24] and ans_data uint8[A, 64]) came
    back over route ids[j] (int32); facts int64[R, FACTS] (updated): the last answer of each kind
    wins, a PortInfo's LID (SMP data bytes 16-17, IBA 14.2.5.6) counts only when non-zero, and
    FACT_SEEN_* keep the place of the route's first such answer, counting from ``seen``.
    Returns ``seen`` plus the PortInfo answers with a LID.
    """
    for j in range(ids.shape[0]):
        r = ids[j]
        attr = hdr[j, MAD_ATTR_ID + 1]  # snoop_smps keeps only IDs below 0x100
        if attr == IB_SMP_ATTR_NODE_INFO:
            facts[r, FACT_SWITCH] = 1 if data[j, NODE_INFO_NODE_TYPE] == NODE_TYPE_SWITCH else 0
            facts[r, FACT_NODE_CAP] = ((np.int64(data[j, NODE_INFO_PARTITION_CAP]) << 8)
                                       | np.int64(data[j, NODE_INFO_PARTITION_CAP + 1]))
        elif attr == IB_SMP_ATTR_SWITCH_INFO:
            facts[r, FACT_SWITCH_CAP] = ((np.int64(data[j, SWITCH_INFO_PARTITION_ENFORCEMENT_CAP]) << 8)
                                         | np.int64(data[j, SWITCH_INFO_PARTITION_ENFORCEMENT_CAP + 1]))
        elif attr == IB_SMP_ATTR_PORT_INFO:
            lid = (np.int64(data[j, PORT_INFO_LID]) << 8) | np.int64(data[j, PORT_INFO_LID + 1])
            if lid == 0:
                continue
            facts[r, FACT_LID_ANY] = lid
            if facts[r, FACT_SEEN_ANY] < 0:
                facts[r, FACT_SEEN_ANY] = seen
            if hdr[j, MAD_ATTR_MOD + 3] == 0:  # PortInfo of port 0 (attr_mod's low byte)
                facts[r, FACT_LID_P0] = lid
                if facts[r, FACT_SEEN_P0] < 0:
                    facts[r, FACT_SEEN_P0] = seen
            seen += 1
    return seen


@njit
def queue_smps(method, status, tid, slot, attr_mod, data, rec, frame, ts_ns, seq,
               p_seq, p_tid, p_slot, p_frame, p_ts_ns, p_attr_mod, p_data, n_pending,
               a_seq, a_tid, a_slot, a_status, n_answers):
    """Number a batch's P_KeyTable Sets and GetResps in one sequence and queue them, in order.

    Row k of the batch (kernels_ingest.snoop_smps's method, status, tid, attr_mod, data, rec; its
    port slot[k]; frame and ts_ns per record) is, when a SubnSet, appended to the pending Sets
    (p_* columns, from row n_pending) and, when a SubnGetResp, to the answers (a_* columns, from
    row n_answers); other methods get no number. The columns must have room for every row.
    Returns (next seq, n_pending, n_answers).
    """
    # The data rows as words, 8 loads and stores a Set: a slice copy in the loop took ~30 ns a row
    # (its two views counted in and out), the words ~3 ns.
    words = data.view(np.uint64)
    p_words = p_data.view(np.uint64)
    for k in range(method.shape[0]):
        m = method[k]
        if m == IB_MGMT_METHOD_SET:
            p = n_pending
            p_seq[p] = seq
            p_tid[p] = tid[k]
            p_slot[p] = slot[k]
            p_frame[p] = frame[rec[k]]
            p_ts_ns[p] = ts_ns[rec[k]]
            p_attr_mod[p] = attr_mod[k]
            for w in range(words.shape[1]):
                p_words[p, w] = words[k, w]
            n_pending += 1
            seq += 1
        elif m == IB_MGMT_METHOD_GET_RESP:
            a = n_answers
            a_seq[a] = seq
            a_tid[a] = tid[k]
            a_slot[a] = slot[k]
            a_status[a] = status[k]
            n_answers += 1
            seq += 1
    return seq, n_pending, n_answers


@njit
def note_applied(slot, attr_mod, finding, blocks, first_order, n_first):
    """After snoop_ports: which blocks each port has had written, and the order ports first had a
    Set applied. blocks uint16[P] (updated): bit b for block b of a written (not refused) item;
    first_order int64[P] (updated; -1: none yet) numbers ports from ``n_first`` as their first
    item comes. Returns the next number."""
    for n in range(slot.shape[0]):
        p = slot[n]
        if first_order[p] < 0:
            first_order[p] = n_first
            n_first += 1
        if finding[n] != FINDING_REFUSED:
            blocks[p] |= np.uint16(1) << np.uint16(attr_mod[n] & 0xFFFF)
    return n_first
