"""Seeded synthetic workloads for benchmarks and fuzzing: SM traffic and QP-modify commands.

``sm_mads(n, seed)`` is what an SM sweep looks like to a snooping master: mostly SMPs (LID-routed
and directed route), some GMPs, Get/Set/GetResp, P_KeyTable blocks 0..3 on ports 1..2, and about
``change_rate`` of the P_KeyTable Sets carrying a real change against the table before them.
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import qpc
from madpipe.codecs import wire as w


def sm_mads(n: int, seed: int = 1, change_rate: float = 0.10):
    """(mads uint8[n, 256], port_num uint8[n], status uint16[n]), deterministic for a seed."""
    rng = np.random.default_rng(seed)
    mads = np.zeros((n, w.MAD_SIZE), np.uint8)
    mads[:, 0] = 1  # base_version
    mads[:, 2] = 1  # class_version
    kind = rng.random(n)
    # 70% P_KeyTable SMPs, 15% other SMP attributes, 15% GMPs (SA, PerfMgt).
    cls = np.where(rng.random(n) < 0.5, w.IB_MGMT_CLASS_SUBN_LID_ROUTED, w.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
    cls = np.where(kind >= 0.85, rng.choice([w.IB_MGMT_CLASS_SUBN_ADM, w.IB_MGMT_CLASS_PERF_MGMT], n), cls)
    mads[:, w.MAD_MGMT_CLASS] = cls
    method = rng.choice([w.IB_MGMT_METHOD_GET, w.IB_MGMT_METHOD_SET, w.IB_MGMT_METHOD_GET_RESP], n,
                        p=[0.2, 0.6, 0.2])
    mads[:, w.MAD_METHOD] = method
    attr = np.where(kind < 0.70, w.IB_SMP_ATTR_PKEY_TABLE,
                    rng.choice([w.IB_SMP_ATTR_NODE_INFO, w.IB_SMP_ATTR_SWITCH_INFO,
                                w.IB_SMP_ATTR_LINEAR_FORWARD_TABLE], n))
    mads[:, w.MAD_ATTR_ID] = attr >> 8
    mads[:, w.MAD_ATTR_ID + 1] = attr & 0xFF
    mads[:, w.MAD_TID:w.MAD_TID + 8] = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    block = rng.integers(0, 4, n)
    mads[:, w.MAD_ATTR_MOD + 3] = block
    # P_Keys: a stable table (full-member keys), changed in a fraction of the MADs.
    base = np.zeros(128, np.uint16)
    base[0] = w.IB_DEFAULT_PKEY_FULL
    base[1:16] = 0x8000 | rng.integers(1, 0x7FFF, 15)
    pkeys = np.broadcast_to(base.reshape(4, 32), (n, 4, 32))[np.arange(n), block].copy()
    change = rng.random(n) < change_rate
    idx = rng.integers(0, 32, n)
    pkeys[change, idx[change]] ^= rng.integers(1, 0x7FFF, int(change.sum())).astype(np.uint16)
    mads[:, w.SMP_DATA:w.SMP_DATA + w.IB_SMP_DATA_SIZE] = pkeys.astype(">u2").view(np.uint8).reshape(n, 64)
    port_num = rng.integers(1, 3, n).astype(np.uint8)
    status = np.where(rng.random(n) < 0.02, 0x1C, 0).astype(np.uint16)
    return mads, port_num, status


def changing_sets(n: int, seed: int = 1):
    """(mads, port_num, status) of ``n`` SubnSet(P_KeyTable) MADs, LID-routed to one port, that each
    change every P_Key of their block: the SM alternates two tables (all 32 entries differ) over
    blocks 0..3 of ports 1..2. Every MAD raises a P_Key-change event with 32 changes: the
    workload where the events, not the MADs, are the work."""
    rng = np.random.default_rng(seed)
    mads = np.zeros((n, w.MAD_SIZE), np.uint8)
    mads[:, 0] = 1  # base_version
    mads[:, 2] = 1  # class_version
    mads[:, w.MAD_MGMT_CLASS] = w.IB_MGMT_CLASS_SUBN_LID_ROUTED
    mads[:, w.MAD_METHOD] = w.IB_MGMT_METHOD_SET
    mads[:, w.MAD_ATTR_ID] = w.IB_SMP_ATTR_PKEY_TABLE >> 8
    mads[:, w.MAD_ATTR_ID + 1] = w.IB_SMP_ATTR_PKEY_TABLE & 0xFF
    mads[:, w.MAD_TID:w.MAD_TID + 8] = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    # MAD i sets (port, block) number i % 8; its table is the other of the two that slot had.
    slot = np.arange(n) % 8
    mads[:, w.MAD_ATTR_MOD + 3] = slot % 4
    port_num = (1 + slot // 4).astype(np.uint8)
    tables = (0x8000 | rng.integers(1, 0x7FFF, (2, 8, 32))).astype(np.uint16)
    tables[1] = tables[0] ^ 0x0101  # every entry differs between the two, both full members
    pick = (np.arange(n) // 8) % 2
    pkeys = tables[pick, slot]
    mads[:, w.SMP_DATA:w.SMP_DATA + w.IB_SMP_DATA_SIZE] = pkeys.astype(">u2").view(np.uint8).reshape(n, 64)
    return mads, port_num, np.zeros(n, np.uint16)


TRANSITION_NAMES = list(qpc.TRANSITIONS)


def qp_commands(n: int, seed: int = 2, base_proxy_sqpn: int = 0x48):
    """(mailboxes uint8[n, 256], transition codes uint8[n], slave int32[n], qpn uint32[n])."""
    rng = np.random.default_rng(seed)
    mboxes = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    st = rng.choice([qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC, qpc.MLX4_QP_ST_UD], n)
    mboxes[:, qpc.MBOX_SERVICE_TYPE] = st
    mboxes[:, qpc.MBOX_PRI_PKEY_INDEX] = rng.integers(0, 128, n)
    mboxes[:, qpc.MBOX_PRI_MGID_INDEX] = 0  # valid for a VF: GID index 0
    mboxes[:, qpc.MBOX_ALT_MGID_INDEX] = 0
    codes = np.array([qpc.TRANSITIONS[t] for t in TRANSITION_NAMES], np.uint8)
    transition = rng.choice(codes, n)
    slave = rng.integers(0, 8, n).astype(np.int32)
    qpn = np.where(rng.random(n) < 0.1, base_proxy_sqpn + rng.integers(0, 1280, n),
                   rng.integers(0x100, 0xFFFFFF, n)).astype(np.uint32)
    return mboxes, transition, slave, qpn


FRAME_LEN = w.LRH_SIZE + w.BTH_SIZE + w.DETH_SIZE + w.MAD_SIZE + w.ICRC_SIZE + w.VCRC_SIZE  # a local MAD


def mad_frames(mads: np.ndarray, seed: int = 3, ports: int = 1024) -> np.ndarray:
    """Wrap each MAD in LRH/BTH/DETH and seal it: uint8[n, 290] frames, SMPs on VL15/QP0, GMPs on QP1.

    LID-routed MADs go between the SM (LID 1) and one of ``ports`` ports (LIDs 2..ports+1).
    """
    from madpipe.pipeline.decode.crc_kernels import seal_rows

    n = len(mads)
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, FRAME_LEN), np.uint8)
    cls = mads[:, w.MAD_MGMT_CLASS]
    is_smp = (cls == w.IB_MGMT_CLASS_SUBN_LID_ROUTED) | (cls == w.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
    dr = cls == w.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
    rows[:, 0] = np.where(is_smp, 0xF0, 0x00)  # VL15 for SMPs, LVer 0
    rows[:, 1] = w.LNH_IBA_LOCAL  # SL 0
    port_lid = rng.integers(2, ports + 2, n)
    response = (mads[:, w.MAD_METHOD] & w.IB_MGMT_METHOD_RESP) != 0
    lid = np.stack([np.where(response, 1, port_lid), np.where(response, port_lid, 1)], axis=1)  # dlid, slid
    lid[dr] = w.IB_PERMISSIVE_LID
    rows[:, w.LRH_DLID], rows[:, w.LRH_DLID + 1] = lid[:, 0] >> 8, lid[:, 0] & 0xFF
    pktlen = (FRAME_LEN - w.VCRC_SIZE) // 4
    rows[:, w.LRH_PKTLEN], rows[:, w.LRH_PKTLEN + 1] = pktlen >> 8, pktlen & 0xFF
    rows[:, w.LRH_SLID], rows[:, w.LRH_SLID + 1] = lid[:, 1] >> 8, lid[:, 1] & 0xFF
    bth = w.LRH_SIZE
    deth = bth + w.BTH_SIZE
    rows[:, bth + w.BTH_OPCODE] = w.OPCODE_UD_SEND_ONLY
    rows[:, bth + w.BTH_PKEY:bth + w.BTH_PKEY + 2] = 0xFF  # the default P_Key, 0xFFFF
    qp = np.where(is_smp, 0, 1).astype(np.uint8)
    rows[:, bth + w.BTH_DEST_QP + 2] = qp
    psn = rng.integers(0, 1 << 24, n)
    p = bth + w.BTH_PSN
    rows[:, p], rows[:, p + 1], rows[:, p + 2] = psn >> 16, (psn >> 8) & 0xFF, psn & 0xFF
    qkey = np.where(is_smp, 0, w.IB_QP1_QKEY).astype(">u4").view(np.uint8).reshape(n, 4)
    rows[:, deth + w.DETH_QKEY:deth + w.DETH_QKEY + 4] = qkey
    rows[:, deth + w.DETH_SRC_QP + 2] = qp
    rows[:, deth + w.DETH_SIZE:deth + w.DETH_SIZE + w.MAD_SIZE] = mads
    seal_rows(rows, np.full(n, FRAME_LEN, np.int64))
    return rows


def write_capture(path, frames: np.ndarray, linktype: int = 197, start_ns: int = 1_700_000_000_000_000_000,
                  step_ns: int = 1000) -> None:
    """Write equal-length frames as a classic pcap (nanosecond) in one pass, ERF-wrapped for 197."""
    from madpipe.codecs.capture import LINKTYPE_ERF, PCAP_MAGIC_NS
    from madpipe.codecs.erf_records import ERF_FLAG_VLEN, ERF_TYPE_INFINIBAND

    n, flen = frames.shape
    erf = linktype == LINKTYPE_ERF
    body = flen + (16 if erf else 0)
    rec = np.zeros((n, 16 + body), np.uint8)
    ts = start_ns + step_ns * np.arange(n, dtype=np.int64)
    head = np.zeros((n, 4), "<u4")
    head[:, 0], head[:, 1] = ts // 1_000_000_000, ts % 1_000_000_000
    head[:, 2] = head[:, 3] = body
    rec[:, :16] = head.view(np.uint8).reshape(n, 16)
    if erf:
        erf_ts = ((ts // 1_000_000_000).astype(np.uint64) << np.uint64(32)) | (
            ((ts % 1_000_000_000).astype(np.uint64) << np.uint64(32)) // np.uint64(1_000_000_000))
        rec[:, 16:24] = erf_ts.astype("<u8").view(np.uint8).reshape(n, 8)
        rec[:, 24] = ERF_TYPE_INFINIBAND
        rec[:, 25] = ERF_FLAG_VLEN
        rec[:, 26:28] = np.array([body >> 8, body & 0xFF], np.uint8)
        rec[:, 30:32] = np.array([flen >> 8, flen & 0xFF], np.uint8)
        rec[:, 32:] = frames
    else:
        rec[:, 16:] = frames
    with open(path, "wb") as f:
        f.write(np.array([PCAP_MAGIC_NS, 0x00040002, 0, 0, 65535, linktype], "<u4").tobytes())
        rec.tofile(f)
