"""numba helpers of the paravirt kernels for mainline's Ethernet (RoCE) port path.

Inlined (``inline="always"``) into :func:`.paravirt_rows.make_rewrite_rows`'s rows, whose
InfiniBand variant compiles their calls out. The semantics are those of
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


# The paravirt kernels' constants (paravirt_kernels imports them from here; checked against
# madpipe.codecs.qpc and the references by the tests). Mailbox byte offsets:
MBOX_OPTPAR = 0
MBOX_SERVICE_TYPE = 9
MBOX_PRI_PKEY_INDEX = 35
MBOX_PRI_MGID_INDEX = 41
MBOX_PRI_SCHED_QUEUE = 64
MBOX_ALT_MGID_INDEX = 85
MBOX_ALT_SCHED_QUEUE = 108
MBOX_PARAMS2_FPP = 155
MBOX_QKEY = 176
MBOX_RATE_LIMIT = 196
MBOX_SIZE = 256

# Transition codes: the mlx4 command opcodes.
TRANSITION_RST2INIT = 0x19
TRANSITION_INIT2RTR = 0x1A
TRANSITION_RTR2RTS = 0x1B
TRANSITION_RTS2RTS = 0x1C
TRANSITION_SQERR2RTS = 0x1D
TRANSITION_2ERR = 0x1E
TRANSITION_RTS2SQD = 0x1F
TRANSITION_SQD2RTS = 0x20
TRANSITION_2RST = 0x21
TRANSITION_QUERY = 0x22
TRANSITION_INIT2INIT = 0x2D
TRANSITION_SQD2SQD = 0x38

# Service types and optpar bits (qp.h)
ST_RC = 0
ST_UC = 1
ST_UD = 3
ST_XRC = 6
ST_MLX = 7
OPTPAR_ALT_ADDR_PATH = 0x1
OPTPAR_PRIMARY_ADDR_PATH = 0x80
OPTPAR_SCHED_QUEUE = 0x10000

# Profile rule bits (profiles.RULE_*; checked equal by the tests).
RULE_VERIFY_BRACES = 1
RULE_XRC_LIKE_RC = 2
RULE_CLEAR_FPP = 4
RULE_RATE_LIMIT_EPERM = 8
RULE_MLX_QP_RESERVED_EPERM = 16
RULE_ADJUST_SCHED_QUEUE = 32
RULE_ETH_PORTS = 64

# Ethernet: mailbox bytes (eth_reference's, checked equal by the tests)
MBOX_PRI_FL = 32
MBOX_PRI_VLAN_CONTROL = 33
MBOX_PRI_GRH_MYLMC = 37
MBOX_PRI_VLAN_INDEX = 65
MBOX_PRI_FEUP = 66
MBOX_PRI_FVL_RX = 67
MBOX_QOS_VPORT = 199
MBOX_PARAM3 = 200

RC_OK = 0
RC_EPERM = -1
RC_EINVAL = -22
RC_REFUSED = -34
RC_UNKNOWN_OPCODE = -38

FINDING_NONE = 0
FINDING_SPILL = 1
FINDING_REFUSED = 2

RESERVED_QKEY_BASE = 0xFFFF0000


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
    """The functions 0..num_vfs on port 1, on port 2, with port 1 alone, with port 2 alone, packed
    16 bits each into one int64 (scalars, not an array: an array made in the kernel is reference
    counted at each use in the row loop)."""
    on1 = np.int64(0)
    on2 = np.int64(0)
    alone1 = np.int64(0)
    alone2 = np.int64(0)
    for f in range(last_vf + 1):
        a = active_ports_of(active_ports, f, last_vf)
        on1 += a & 1
        on2 += (a >> 1) & 1
        if a == 1:
            alone1 += 1
        elif a == 2:
            alone2 += 1
    return on1 | (on2 << 16) | (alone1 << 32) | (alone2 << 48)


@njit(inline="always")
def is_eth(port_types, port):
    return port >= 1 and port <= 2 and port_types[port - 1] == PORT_TYPE_ETH


@njit(inline="always")
def gid_rank(active_ports, last_vf, counts, slave, port):
    """(slave_gid, vfs) of mlx4_get_slave_num_gids / mlx4_get_base_gid_ix; vfs <= 0: the C divides by 0."""
    actv = active_ports_of(active_ports, slave, last_vf)
    first = 0 if actv & 1 else (1 if actv & 2 else 2)            # find_first_bit
    top = first + (actv & 1) + ((actv >> 1) & 1) + 1             # max_port_p_one
    slave_gid = slave
    for i in range(1, top):
        if i != port:
            slave_gid -= (counts >> (16 * (1 + i))) & 0xFFFF     # functions with port i alone
    return slave_gid, ((counts >> (16 * (port - 1))) & 0xFFFF) - 1


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
def vport_fields(vport, slave, port_types, port, st, reserved, optpar, param3_hi, vlan_control, fvl_rx,
                 vlan_index, fl, feup, sq_pri, qos_vport, grh):
    """update_vport_qp_param on the fields it writes (vport[slave, port - 1]); returns them all."""
    vp = vport[slave, port - 1]
    if vp[VPORT_DEFAULT_VLAN] != VGT:
        if reserved:
            return optpar, param3_hi, vlan_control, fvl_rx, vlan_index, fl, feup, sq_pri, qos_vport, grh
        if st == 3 or (st == 7 and is_eth(port_types, port)):    # UD, or MLX on Ethernet
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


@njit(inline="always")
def slave_convert_port(active_ports, slave, port, last_vf):
    """mlx4_slave_convert_port: the physical port (1-based) of a function's port, or RC_EINVAL."""
    actv = active_ports_of(active_ports, slave, last_vf)
    m = (actv & 1) + ((actv >> 1) & 1)
    if port <= 0 or port > m:
        return RC_EINVAL
    n = 0
    if (actv & 1) == 0:
        n = 1
    if port <= n:
        port = n + 1
    return port


@njit(inline="always")
def qp_reserved(in_modifier, base_proxy_sqpn, mfunc_max, fw_reserved_qps):
    """mlx4_is_qp_reserved on the master for the command's QP number (in_modifier & 0x7fffff)."""
    qpn23 = in_modifier & 0x7FFFFF
    base_sqpn = base_proxy_sqpn - 8
    return (qpn23 >= base_sqpn and qpn23 < base_sqpn + 8 + 16 * mfunc_max) or qpn23 < fw_reserved_qps
