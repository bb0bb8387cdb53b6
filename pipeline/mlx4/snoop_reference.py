"""Pure-Python model of the mlx4 master's ``smp_snoop`` and ``init_pkeys``, one MAD at a time.

Written line by line from the C (``drivers/infiniband/hw/mlx4/mad.c``: ``ib_process_mad``,
``smp_snoop``, ``__propagate_pkey_ev``, ``handle_lid_change_event``,
``handle_client_rereg_event``; ``main.c``: ``init_pkeys``), for clarity rather than speed. The
numba kernels in :mod:`madpipe.pipeline.mlx4.snoop_kernels` must agree with it bit for bit; the tests
check that. Users call it through :func:`madpipe.pipeline.mlx4.snoop.smp_snoop_reference`.

Two built-in profiles (:mod:`madpipe.pipeline.mlx4.profiles`; a derived one follows its
``slave_events`` rule and its sizes):

- ``"3.7"``: the seed commit (mlx4: Implement QP paravirtualization and maintain
  phys_pkey_cache for smp_snoop, v3.7-rc1). The master keeps ``phys_pkey_cache`` and raises one
  ``IB_EVENT_PKEY_CHANGE`` when a Set changed a P_Key; no event reaches the VFs; a Set(GUIDInfo)
  raises nothing on the master; PortInfo events go to the master only. With
  ``port_mgmt_change_events`` (``MLX4_DEV_CAP_FLAG_PORT_MNG_CHG_EV``) ``ib_process_mad`` skips
  ``smp_snoop`` altogether.
- ``"mainline"`` (alias ``"new"``): mainline. Same P_Key bookkeeping plus ``__propagate_pkey_ev`` (one P_Key-change
  EQE per VF that maps a changed index), LID-change and client-reregister forwarded to every
  VF (``mlx4_gen_slaves_port_mgt_ev``), and Set(GUIDInfo) handed to the alias-GUID code. The
  port-management-change capability is tested inside each case; for the three cases modelled
  here the effect is the same as at 3.7.

State (all numpy arrays, read and written one element at a time, named as in the kernel):

- ``phys_pkey_cache`` ``uint16[2, 128]`` and ``virt2phys_pkey`` ``uint8[F, 2, 128]``, F the
  profile's ``MLX4_MFUNC_MAX`` (80 at 3.7, 128 on mainline: :mod:`.profiles`).
- ``port_lid`` ``uint16[2]``: the LID firmware holds for each port, i.e. what
  ``ib_query_port`` returns as ``prev_lid`` before a Set(PortInfo) is passed to firmware. A
  Set(PortInfo) answered with status 0 stores its LID there (firmware applied it), even when
  the snoop itself is skipped because firmware reports port-management changes.
- ``sm_lid`` ``uint16[2]`` and ``sm_sl`` ``uint8[2]``: the address ``update_sm_ah`` gives
  ``dev->sm_ah[port - 1]`` (MasterSMLID and MasterSMSL of the last snooped Set(PortInfo)).

Events are data: each call returns a :class:`SnoopOutcome` whose ``events`` list holds
``(function, port_num, name)`` tuples in the order the kernel raises them; ``function`` is
``"master"`` or a VF's function number.

Out of range, where the C has no bounds check (madpipe's rule: reproduce what stays inside the
kernel's array, refuse what would leave it, and report both):

- P_KeyTable: ``bn = attr_mod & 0xFFFF`` and entry ``i`` is written at flat index
  ``(port_num - 1) * 128 + bn * 32 + i`` of the flat ``u16[2][128]`` cache. A block past the
  port's 128-entry row but inside the table (blocks 4..7 on port 1) spills into port 2's row,
  bit for bit: ``FINDING_SPILL``. A block any of whose entries would land past the table
  (block 8 and up on port 1, 4 and up on port 2) is refused: no state change, no event,
  ``FINDING_REFUSED``.
- GUIDInfo, profile new: the master indexes ``all_rec_per_port[attr_mod]`` (16 records) with the
  whole 32-bit attr_mod; 16 and up is refused with ``FINDING_REFUSED``.
- A ``port_num`` outside ``1..num_ports`` (the IB core never hands one to the driver) on a Set
  of PortInfo, P_KeyTable or GUIDInfo that firmware accepted: refused with ``FINDING_REFUSED``.

Mainline's ``__propagate_pkey_ev`` loops ``for (slave = 0; slave < dev->dev->caps.sqp_demux;
slave++)`` (mad.c:339) and skips the master and inactive functions (``mlx4_is_slave_active``);
``caps.sqp_demux`` is ``MLX4_MAX_NUM_SLAVES`` = 128 on a mainline master. The model takes
functions ``0..num_vfs`` as the active ones (``num_vfs`` at most ``MLX4_MAX_NUM_VF``, 126), so
function 127 has a row but never an event.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# include/rdma/ib_mad.h, include/rdma/ib_smi.h; byte offsets in the 256-byte MAD (struct
# ib_mad_hdr, struct ib_smp: data[64] at 64 in the LID-routed and directed-route layouts alike)
# and in struct ib_port_info (the SMP data).
from madpipe.codecs.wire import (
    IB_DEFAULT_PKEY_FULL,
    IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE,
    IB_MGMT_CLASS_SUBN_LID_ROUTED,
    IB_MGMT_METHOD_SET,
    IB_SMP_ATTR_GUID_INFO,
    IB_SMP_ATTR_PKEY_TABLE,
    IB_SMP_ATTR_PORT_INFO,
    IB_SMP_DATA_SIZE,
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
from madpipe.pipeline.mlx4.profiles import PROFILES, resolve

# Sizes (include/linux/mlx4/device.h, drivers/infiniband/hw/mlx4/mlx4_ib.h); MLX4_MFUNC_MAX is the
# profile's.
MLX4_MAX_PORTS = 2
MLX4_MAX_PORT_PKEYS = 128
NUM_ALIAS_GUID_REC_IN_PORT = 16

FINDING_NONE = 0
FINDING_SPILL = 1
FINDING_REFUSED = 2

__all__ = ["PROFILES", "SnoopOutcome", "SnoopState", "init_pkeys", "propagate_pkey_ev", "smp_snoop_one"]


@dataclass
class SnoopState:
    """The master's state that ``smp_snoop`` reads and writes (see the module docstring)."""

    phys_pkey_cache: np.ndarray
    virt2phys_pkey: np.ndarray
    port_lid: np.ndarray
    sm_lid: np.ndarray
    sm_sl: np.ndarray


@dataclass
class SnoopOutcome:
    """What one MAD did.

    ``snooped``: a PortInfo, P_KeyTable or GUIDInfo case of smp_snoop ran (not refused).
    ``gid_change``: profile new only, a Set(GUIDInfo) the master handed to its alias-GUID code
    (``mlx4_ib_update_cache_on_guid_change`` and ``mlx4_ib_notify_slaves_on_guid_change`` for
    block ``attr_mod``); the master raises no ``IB_EVENT_GID_CHANGE`` on itself in either profile,
    and which VFs then get a GUID-change EQE depends on alias-GUID negotiation state this model
    does not hold, so no per-VF event is listed for it.
    """

    snooped: bool = False
    finding: int = FINDING_NONE
    pkey_change_bitmap: int = 0
    master_event: bool = False
    slave_events: list[int] = field(default_factory=list)
    lid_change: bool = False
    client_rereg: bool = False
    gid_change: bool = False
    events: list[tuple] = field(default_factory=list)


def _be16(buf: bytes, offset: int) -> int:
    return (buf[offset] << 8) | buf[offset + 1]


def _be32(buf: bytes, offset: int) -> int:
    return (buf[offset] << 24) | (buf[offset + 1] << 16) | (buf[offset + 2] << 8) | buf[offset + 3]


def init_pkeys(num_vfs: int, num_ports: int, pkey_table_len: int = 128, master: int = 0, profile="mainline"):
    """``init_pkeys`` (main.c, master only): returns ``(phys_pkey_cache, virt2phys_pkey)``.

    ``pkey_table_len`` is ``phys_caps.pkey_phys_table_len[port]`` (the same for every port);
    ``virt2phys_pkey`` has the profile's ``MLX4_MFUNC_MAX`` rows.
    """
    phys_pkey_cache = np.zeros((MLX4_MAX_PORTS, MLX4_MAX_PORT_PKEYS), dtype=np.uint16)
    virt2phys_pkey = np.zeros(resolve(profile).v2p_shape, dtype=np.uint8)
    for slave in range(num_vfs + 1):
        for port in range(1, num_ports + 1):
            for i in range(pkey_table_len):
                # master has the identity virt2phys pkey mapping; a VF's index 0 is the
                # physical index 0 and every other index the last one ("unassigned")
                if slave == master or i == 0:
                    virt2phys_pkey[slave, port - 1, i] = i
                else:
                    virt2phys_pkey[slave, port - 1, i] = pkey_table_len - 1
    for port in range(1, num_ports + 1):
        for i in range(pkey_table_len):
            phys_pkey_cache[port - 1, i] = 0 if i else IB_DEFAULT_PKEY_FULL
    return phys_pkey_cache, virt2phys_pkey


def active_slaves(num_vfs: int, master: int, profile="mainline") -> list[int]:
    """The functions the master sends VF events to, in the C's order.

    Mainline: ``for (slave = 0; slave < caps.sqp_demux; slave++)``, skipping the master and the
    inactive (``mlx4_is_slave_active``: here, past ``num_vfs``). The seed sends none, but its
    PortInfo events were written ``for (slave = 0; slave <= num_vfs; ++slave)``: the same list.
    """
    sqp_demux = resolve(profile).max_num_slaves
    return [slave for slave in range(sqp_demux) if slave != master and slave <= num_vfs]


def propagate_pkey_ev(virt2phys_pkey, port_num: int, block: int, change_bitmap: int, *,
                      num_vfs: int, master: int, pkey_table_len: int = 128, profile="mainline") -> list[int]:
    """``__propagate_pkey_ev`` (profile new): the VFs that get one P_Key-change EQE.

    A VF gets it when any changed index ``i + 32 * block`` equals any entry of its
    ``virt2phys_pkey[slave][port_num - 1][0:pkey_table_len]``. The C compares the u8 table value,
    promoted to int, with the int index: no wrap-around, so a spilled index 128..255 matches only
    an entry holding that same value, and the row searched is the MAD's port even when the
    changed entries spilled into the other port's cache row.
    """
    slaves = []
    for slave in active_slaves(num_vfs, master, profile):
        row = virt2phys_pkey[slave, port_num - 1, 0:pkey_table_len].tolist()
        for i in range(32):
            if not change_bitmap & (1 << i):
                continue
            if i + 32 * block in row:
                slaves.append(slave)
                break
    return slaves


def smp_snoop_one(state: SnoopState, mad, port_num: int, status: int, *, num_vfs: int, master: int = 0,
                  profile="new", num_ports: int = 2, pkey_table_len: int = 128,
                  port_mgmt_change_events: bool = False) -> SnoopOutcome:
    """Snoop one MAD (the request) whose firmware answer had ``status``; updates ``state``."""
    profile = resolve(profile)
    mad = bytes(mad)
    out = SnoopOutcome()
    mgmt_class = mad[MAD_MGMT_CLASS]
    method = mad[MAD_METHOD]
    attr_id = _be16(mad, MAD_ATTR_ID)
    attr_mod = _be32(mad, MAD_ATTR_MOD)
    data = mad[SMP_DATA:SMP_DATA + IB_SMP_DATA_SIZE]

    if mgmt_class not in (IB_MGMT_CLASS_SUBN_LID_ROUTED, IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE):
        return out
    if method != IB_MGMT_METHOD_SET:
        return out
    if attr_id not in (IB_SMP_ATTR_PORT_INFO, IB_SMP_ATTR_PKEY_TABLE, IB_SMP_ATTR_GUID_INFO):
        return out
    # ib_process_mad: smp_snoop runs only when firmware answered with status 0 (all 16 bits,
    # before the directed-route D bit is set in the answer)
    if status != 0:
        return out
    if not 1 <= port_num <= num_ports:
        out.finding = FINDING_REFUSED
        return out

    prev_lid = 0
    if attr_id == IB_SMP_ATTR_PORT_INFO:
        # ib_query_port before MAD_IFC; firmware then applies the Set
        prev_lid = int(state.port_lid[port_num - 1])
        state.port_lid[port_num - 1] = _be16(data, PORT_INFO_LID)

    if port_mgmt_change_events:
        return out

    if attr_id == IB_SMP_ATTR_PORT_INFO:
        _snoop_port_info(state, data, port_num, prev_lid, out, profile=profile, num_vfs=num_vfs, master=master)
    elif attr_id == IB_SMP_ATTR_PKEY_TABLE:
        _snoop_pkey_table(state, data, attr_mod, port_num, out, profile=profile, num_vfs=num_vfs,
                          master=master, pkey_table_len=pkey_table_len)
    else:
        _snoop_guid_info(attr_mod, out, profile=profile)
    return out


def _snoop_port_info(state, data, port_num, prev_lid, out, *, profile, num_vfs, master):
    out.snooped = True
    lid = _be16(data, PORT_INFO_LID)
    # update_sm_ah(dev, port_num, be16_to_cpu(pinfo->sm_lid), pinfo->neighbormtu_mastersmsl & 0xf)
    state.sm_lid[port_num - 1] = _be16(data, PORT_INFO_SM_LID)
    state.sm_sl[port_num - 1] = data[PORT_INFO_NEIGHBORMTU_MASTERSMSL] & 0xF

    if data[PORT_INFO_CLIENTREREG_RESV_SUBNETTO] & 0x80:
        out.client_rereg = True
        if profile.slave_events:
            # handle_client_rereg_event: mlx4_gen_slaves_port_mgt_ev first, then the master
            for slave in active_slaves(num_vfs, master, profile):
                out.events.append((slave, port_num, "MLX4_EQ_PORT_INFO_CLIENT_REREG_MASK"))
        out.events.append(("master", port_num, "IB_EVENT_CLIENT_REREGISTER"))

    if prev_lid != lid:
        out.lid_change = True
        # handle_lid_change_event: the master first, then every VF (profile new)
        out.events.append(("master", port_num, "IB_EVENT_LID_CHANGE"))
        if profile.slave_events:
            for slave in active_slaves(num_vfs, master, profile):
                out.events.append((slave, port_num, "MLX4_EQ_PORT_INFO_LID_CHANGE_MASK"))


def _snoop_pkey_table(state, data, attr_mod, port_num, out, *, profile, num_vfs, master, pkey_table_len):
    bn = attr_mod & 0xFFFF
    # phys_pkey_cache[port_num - 1][i + bn*32] on the flat u16[2][128] array
    first = (port_num - 1) * MLX4_MAX_PORT_PKEYS + bn * 32
    if first + 31 >= MLX4_MAX_PORTS * MLX4_MAX_PORT_PKEYS:
        out.finding = FINDING_REFUSED
        return
    if bn * 32 + 31 >= MLX4_MAX_PORT_PKEYS:
        out.finding = FINDING_SPILL
    out.snooped = True

    pkey_change_bitmap = 0
    for i in range(32):
        pkey = _be16(data, 2 * i)
        row, col = divmod(first + i, MLX4_MAX_PORT_PKEYS)
        if pkey != state.phys_pkey_cache[row, col]:
            pkey_change_bitmap |= 1 << i
            state.phys_pkey_cache[row, col] = pkey
    out.pkey_change_bitmap = pkey_change_bitmap

    if pkey_change_bitmap:
        out.master_event = True
        out.events.append(("master", port_num, "IB_EVENT_PKEY_CHANGE"))
        if profile.slave_events:
            out.slave_events = propagate_pkey_ev(state.virt2phys_pkey, port_num, bn, pkey_change_bitmap,
                                                 num_vfs=num_vfs, master=master, pkey_table_len=pkey_table_len,
                                                 profile=profile)
            for slave in out.slave_events:
                out.events.append((slave, port_num, "MLX4_DEV_PMC_SUBTYPE_PKEY_TABLE"))


def _snoop_guid_info(attr_mod, out, *, profile):
    # "paravirtualized master's guid is guid 0 -- does not change": no IB_EVENT_GID_CHANGE on
    # the master in either profile
    if profile.slave_events:
        # mlx4_ib_update_cache_on_guid_change(dev, attr_mod, ...) reads
        # ports_guid[port - 1].all_rec_per_port[attr_mod] without a bounds check
        if attr_mod >= profile.num_alias_guid_rec_in_port:
            out.finding = FINDING_REFUSED
            return
        out.gid_change = True
    out.snooped = True
