"""numba helpers of the paravirt kernels for mainline's Ethernet (RoCE) port path.

Inlined into :mod:`.paravirt_kernels` (``inline="always"``); the semantics are those of
:mod:`.eth_reference`, whose docstring quotes the C and lists the model's assumptions. The AOT
build's key covers this file (``aot.HELPER_MODULES``); numba's own JIT cache is keyed on the
kernel module alone (``MADPIPE_NO_CACHE=1`` rebuilds after editing this one).
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.kernels.jit import njit

PORT_TYPE_ETH = 2
VGT = 4095
ROCE_PF_GIDS = 16
ROCE_VF_GIDS = 112          # MLX4_ROCE_MAX_GIDS - MLX4_ROCE_PF_GIDS
LINK_STATE_DISABLE = 2
# vport columns (eth_reference.VPORT_*)
VPORT_DEFAULT_VLAN = 0
VPORT_DEFAULT_QOS = 1
VPORT_LINK_STATE = 2
VPORT_SPOOFCHK = 3
VPORT_VLAN_IDX = 4
VPORT_MAC_IDX = 5
VPORT_QOS_VPORT = 6
VPORT_VLAN_PROTO = 7


@njit(inline="always")
def active_ports_of(active_ports, slave, last_vf):
    """mlx4_get_active_ports as a bitmask: every port for function 0, none past num_vfs."""
    if slave == 0:
        return np.int64(3)
    if slave < 1 or slave > last_vf:
        return np.int64(0)
    return np.int64(active_ports[slave]) & 3


@njit(inline="always")
def port_counts(active_ports, last_vf):
    """int64[4]: the functions 0..num_vfs on port 1, on port 2, with port 1 alone, port 2 alone."""
    counts = np.zeros(4, dtype=np.int64)
    for f in range(last_vf + 1):
        a = active_ports_of(active_ports, f, last_vf)
        counts[0] += a & 1
        counts[1] += (a >> 1) & 1
        if a == 1:
            counts[2] += 1
        elif a == 2:
            counts[3] += 1
    return counts


@njit(inline="always")
def is_eth(rules_eth, port_types, port):
    return rules_eth and port >= 1 and port <= 2 and port_types[port - 1] == PORT_TYPE_ETH


@njit(inline="always")
def gid_rank(active_ports, last_vf, counts, slave, port):
    """(slave_gid, vfs) of mlx4_get_slave_num_gids / mlx4_get_base_gid_ix; vfs <= 0: the C divides by 0."""
    actv = active_ports_of(active_ports, slave, last_vf)
    first = 0 if actv & 1 else (1 if actv & 2 else 2)            # find_first_bit
    top = first + (actv & 1) + ((actv >> 1) & 1) + 1             # max_port_p_one
    slave_gid = slave
    for i in range(1, top):
        if i != port:
            slave_gid -= counts[1 + i]                           # functions with port i alone
    return slave_gid, counts[port - 1] - 1


@njit(inline="always")
def slave_num_gids(active_ports, last_vf, counts, slave, port):
    """mlx4_get_slave_num_gids; -1 where the C would divide by zero."""
    if slave == 0:
        return np.int64(ROCE_PF_GIDS)
    slave_gid, vfs = gid_rank(active_ports, last_vf, counts, slave, port)
    if vfs <= 0:
        return np.int64(-1)
    if slave_gid <= ROCE_VF_GIDS % vfs:
        return np.int64(ROCE_VF_GIDS // vfs + 1)
    return np.int64(ROCE_VF_GIDS // vfs)


@njit(inline="always")
def base_gid_ix(active_ports, last_vf, counts, slave, port):
    """(mlx4_get_base_gid_ix, ok); ok False where the C would divide by zero."""
    if slave == 0:
        return np.int64(0), True
    slave_gid, vfs = gid_rank(active_ports, last_vf, counts, slave, port)
    if vfs <= 0:
        return np.int64(0), False
    if slave_gid <= ROCE_VF_GIDS % vfs:
        return np.int64(ROCE_PF_GIDS + (ROCE_VF_GIDS // vfs + 1) * (slave_gid - 1)), True
    return np.int64(ROCE_PF_GIDS + ROCE_VF_GIDS % vfs + (ROCE_VF_GIDS // vfs) * (slave_gid - 1)), True


@njit(inline="always")
def vport_fields(vp, rules_eth, port_types, port, st, reserved, optpar, param3_hi, vlan_control, fvl_rx,
                 vlan_index, fl, feup, sq_pri, qos_vport, grh):
    """update_vport_qp_param on the fields it writes (vp: vport[slave, port - 1]); returns them all."""
    if vp[VPORT_DEFAULT_VLAN] != VGT:
        if reserved:
            return optpar, param3_hi, vlan_control, fvl_rx, vlan_index, fl, feup, sq_pri, qos_vport, grh
        if st == 3 or (st == 7 and is_eth(rules_eth, port_types, port)):    # UD, or MLX on Ethernet
            optpar = optpar | (1 << 21)                          # MLX4_QP_OPTPAR_VLAN_STRIPPING
            param3_hi = param3_hi & 0xBF                         # param3 &= ~MLX4_STRIP_VLAN (bit 30)
        vlan_control = vlan_control & 0x80                       # keep MLX4_CTRL_ETH_SRC_CHECK_IF_COUNTER
        qinq = vp[VPORT_VLAN_PROTO] == 1
        if vp[VPORT_LINK_STATE] == LINK_STATE_DISABLE:
            vlan_control = vlan_control | 0x77                   # every TX and RX block
        elif vp[VPORT_DEFAULT_VLAN] != 0:
            vlan_control = vlan_control | (0x63 if qinq else 0x43)
        else:
            vlan_control = vlan_control | 0x44                   # priority tagged
        fvl_rx = fvl_rx | 0x04
        vlan_index = np.int64(vp[VPORT_VLAN_IDX]) & 0xFF
        fl = fl | 0x04 | (0x20 if qinq else 0x40)
        feup = feup | 0x48
        sq_pri = ((sq_pri & 0xC7) | (np.int64(vp[VPORT_DEFAULT_QOS]) << 3)) & 0xFF
        qos_vport = np.int64(vp[VPORT_QOS_VPORT]) & 0xFF
    if vp[VPORT_SPOOFCHK] != 0:
        feup = feup | 0x20
        grh = ((grh & 0x80) + np.int64(vp[VPORT_MAC_IDX])) & 0xFF
    return optpar, param3_hi, vlan_control, fvl_rx, vlan_index, fl, feup, sq_pri, qos_vport, grh
