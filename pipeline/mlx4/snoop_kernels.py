"""numba kernels for the mlx4 master's ``smp_snoop`` over a batch of MADs.

Plain arrays in, outputs passed in, state updated in place, MADs taken strictly in frame order
(a MAD sees the cache every earlier MAD left). The semantics are those of
:mod:`madpipe.pipeline.mlx4.snoop_reference`, which documents the rules; the tests compare the two
bit for bit. Call them through :func:`madpipe.pipeline.mlx4.snoop.smp_snoop`, which checks the
arrays.

The wire numbers come from :mod:`madpipe.codecs.wire`, as the reference's do. They are the spec's
and do not change; should one ever be edited, note that the ahead-of-time build's key covers
``codecs/`` but numba's own JIT cache is keyed on this file alone (MADPIPE_NO_CACHE=1 rebuilds).
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs.wire import (
    IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE,
    IB_MGMT_CLASS_SUBN_LID_ROUTED,
    IB_MGMT_METHOD_SET,
    IB_SMP_ATTR_GUID_INFO,
    IB_SMP_ATTR_PKEY_TABLE,
    IB_SMP_ATTR_PORT_INFO,
    MAD_ATTR_ID,
    MAD_ATTR_MOD,
    MAD_METHOD,
    MAD_MGMT_CLASS,
    PORT_INFO_CLIENTREREG_RESV_SUBNETTO,
    PORT_INFO_LID,
    PORT_INFO_NEIGHBORMTU_MASTERSMSL,
    PORT_INFO_SM_LID,
    SMP_DATA,
)
from madpipe.pipeline.kernels.jit import njit

MLX4_MAX_PORTS = 2
MLX4_MAX_PORT_PKEYS = 128

FINDING_SPILL = 1
FINDING_REFUSED = 2

# Swap the two bytes of every 16-bit lane of a 64-bit word.
LANE_LOW_BYTES = 0x00FF00FF00FF00FF


@njit
def pkey_block_masks(virt2phys_pkey, num_vfs, master, pkey_table_len, mfunc_max):
    """``mask[port - 1, blk, slave]`` bit ``i``: value ``32 * blk + i`` appears in the VF's row.

    Rows are scanned over ``0:pkey_table_len``; the master and functions past ``num_vfs`` get no
    bits. ``(pkey_change_bitmap & mask[port_num - 1, bn, slave]) != 0`` is then exactly the test
    of ``__propagate_pkey_ev`` for every block a MAD can reach without leaving the table (0..7).
    Slaves last, so a changed block reads its functions' masks from one run of memory.
    """
    mask = np.zeros((MLX4_MAX_PORTS, 8, mfunc_max), dtype=np.uint32)
    for slave in range(num_vfs + 1):
        if slave == master:
            continue
        for port_index in range(MLX4_MAX_PORTS):
            for ix in range(pkey_table_len):
                phys = np.int64(virt2phys_pkey[slave, port_index, ix])
                mask[port_index, phys >> 5, slave] |= np.uint32(1 << (phys & 31))
    return mask


@njit(inline="always")
def _swap_lanes(word, little_endian):
    """A word of four big-endian P_Keys as the host holds four uint16 (and back)."""
    if not little_endian:
        return word
    eight = np.uint64(8)
    lane_low = np.uint64(LANE_LOW_BYTES)
    return ((word >> eight) & lane_low) | ((word & lane_low) << eight)


@njit(inline="always")
def _lanes_differing(x, little_endian):
    """Bit j (0..3) set when P_Key j of the four in ``x`` (a XOR of two wire-order words) is not 0.

    Each 16-bit lane's two bytes are ORed into its low byte; adding 0xFF carries into bit 8 of
    the lane exactly when that byte is not 0 (no lane can carry into the next); shifts then
    gather bits 0, 16, 32, 48 into bits 0..3 (nothing wraps: the same in plain Python)."""
    lane_low = np.uint64(LANE_LOW_BYTES)
    t = (x | (x >> np.uint64(8))) & lane_low
    m = ((t + lane_low) >> np.uint64(8)) & np.uint64(0x0001000100010001)
    g = np.int64((m | (m >> np.uint64(15)) | (m >> np.uint64(30)) | (m >> np.uint64(45))) & np.uint64(0xF))
    if not little_endian:  # P_Key 0 is the word's top lane
        g = ((g & 1) << 3) | ((g & 2) << 1) | ((g & 4) >> 1) | ((g & 8) >> 3)
    return g


@njit
def smp_snoop_kernel(mads, port_num, status, phys_pkey_cache, virt2phys_pkey, port_lid, sm_lid, sm_sl,
                     num_vfs, master, num_ports, pkey_table_len, mfunc_max, num_alias_guid_rec,
                     profile_new, port_mgmt_change_events,
                     little_endian,
                     pkey_change_bitmap, master_event, slave_rows, slave_bits, finding, lid_change,
                     client_rereg, gid_change, snooped):
    """Snoop ``mads[n]`` (answered with ``status[n]`` on ``port_num[n]``) for n in frame order.

    mads uint8[N, 256]; port_num uint8[N]; status uint16[N]; phys_pkey_cache uint16[2, 128],
    port_lid uint16[2], sm_lid uint16[2], sm_sl uint8[2] (updated); virt2phys_pkey
    uint8[mfunc_max, 2, 128] (read). Sizes from the profile: mfunc_max (MLX4_MFUNC_MAX, at most
    128), num_alias_guid_rec (NUM_ALIAS_GUID_REC_IN_PORT); profile_new: its slave_events rule. Outputs, zeroed by the caller: pkey_change_bitmap uint32[N],
    master_event, lid_change, client_rereg, gid_change, snooped bool[N], finding int8[N].
    Slave events, sparse (most MADs raise none): for the e-th MAD that raised any,
    slave_rows[e] (int64) is its index and slave_bits[e] (uint64[2]) the functions (f: bit f % 64
    of word f // 64); both need room for N and no zeroing. Returns how many such MADs. ``little_endian``: the host's byte order, for the word compare.
    """
    n_mads = mads.shape[0]
    mads64 = mads.view(np.uint64)
    masks = pkey_block_masks(virt2phys_pkey, num_vfs, master, pkey_table_len, mfunc_max)
    # The cache in wire order (big-endian P_Keys), four to a word, for the whole batch: a Set's
    # block is compared with it and copied into it word for word, no byte swapping per MAD.
    # Written back to phys_pkey_cache at the end.
    cache64 = phys_pkey_cache.reshape(-1).view(np.uint64)
    wire_cache = np.empty(cache64.shape[0], dtype=np.uint64)
    for q in range(cache64.shape[0]):
        wire_cache[q] = _swap_lanes(cache64[q], little_endian)
    word0 = SMP_DATA // 8
    n_slave = 0

    for n in range(n_mads):
        # The header filters (class, method, status, attribute) as one test: one branch to
        # mispredict on traffic that mixes them, not four.
        mgmt_class = mads[n, MAD_MGMT_CLASS]
        attr_id = (np.int64(mads[n, MAD_ATTR_ID]) << 8) | np.int64(mads[n, MAD_ATTR_ID + 1])
        wanted = (((mgmt_class == IB_MGMT_CLASS_SUBN_LID_ROUTED) | (mgmt_class == IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE))
                  & (mads[n, MAD_METHOD] == IB_MGMT_METHOD_SET) & (status[n] == 0)
                  & ((attr_id == IB_SMP_ATTR_PKEY_TABLE) | (attr_id == IB_SMP_ATTR_PORT_INFO)
                     | (attr_id == IB_SMP_ATTR_GUID_INFO)))
        if not wanted:
            continue
        port = np.int64(port_num[n])
        if port < 1 or port > num_ports:
            finding[n] = FINDING_REFUSED
            continue

        if attr_id == IB_SMP_ATTR_PKEY_TABLE:
            if port_mgmt_change_events:
                continue
            bn = (np.int64(mads[n, MAD_ATTR_MOD + 2]) << 8) | np.int64(mads[n, MAD_ATTR_MOD + 3])
            first = (port - 1) * MLX4_MAX_PORT_PKEYS + bn * 32
            if first + 31 >= MLX4_MAX_PORTS * MLX4_MAX_PORT_PKEYS:
                finding[n] = FINDING_REFUSED
                continue
            if bn * 32 + 31 >= MLX4_MAX_PORT_PKEYS:
                finding[n] = FINDING_SPILL
            snooped[n] = True
            base = first >> 2
            differs = np.uint64(0)
            for k in range(8):
                differs |= mads64[n, word0 + k] ^ wire_cache[base + k]
            if differs == 0:  # the usual Set: it restates the table
                continue
            bitmap = np.int64(0)
            for k in range(8):
                wire = mads64[n, word0 + k]
                bitmap |= _lanes_differing(wire ^ wire_cache[base + k], little_endian) << (4 * k)
                wire_cache[base + k] = wire
            pkey_change_bitmap[n] = bitmap
            master_event[n] = True
            if profile_new:
                lo = np.uint64(0)
                hi = np.uint64(0)
                for slave in range(num_vfs + 1):
                    hit = np.uint64((np.int64(masks[port - 1, bn, slave]) & bitmap) != 0)
                    if slave < 64:
                        lo |= hit << np.uint64(slave)
                    else:
                        hi |= hit << np.uint64(slave - 64)
                if lo != 0 or hi != 0:
                    slave_rows[n_slave] = n
                    slave_bits[n_slave, 0] = lo
                    slave_bits[n_slave, 1] = hi
                    n_slave += 1

        elif attr_id == IB_SMP_ATTR_PORT_INFO:
            lid = (np.int64(mads[n, SMP_DATA + PORT_INFO_LID]) << 8) | np.int64(mads[n, SMP_DATA + PORT_INFO_LID + 1])
            prev_lid = np.int64(port_lid[port - 1])
            port_lid[port - 1] = lid
            if port_mgmt_change_events:
                continue
            snooped[n] = True
            sm_lid[port - 1] = ((np.int64(mads[n, SMP_DATA + PORT_INFO_SM_LID]) << 8)
                                | np.int64(mads[n, SMP_DATA + PORT_INFO_SM_LID + 1]))
            sm_sl[port - 1] = mads[n, SMP_DATA + PORT_INFO_NEIGHBORMTU_MASTERSMSL] & 0xF
            if mads[n, SMP_DATA + PORT_INFO_CLIENTREREG_RESV_SUBNETTO] & 0x80:
                client_rereg[n] = True
            if prev_lid != lid:
                lid_change[n] = True

        else:
            if port_mgmt_change_events:
                continue
            if profile_new:
                attr_mod = ((np.int64(mads[n, MAD_ATTR_MOD]) << 24) | (np.int64(mads[n, MAD_ATTR_MOD + 1]) << 16)
                            | (np.int64(mads[n, MAD_ATTR_MOD + 2]) << 8) | np.int64(mads[n, MAD_ATTR_MOD + 3]))
                if attr_mod >= num_alias_guid_rec:
                    finding[n] = FINDING_REFUSED
                    continue
                gid_change[n] = True
            snooped[n] = True

    for q in range(cache64.shape[0]):
        cache64[q] = _swap_lanes(wire_cache[q], little_endian)
    return n_slave
