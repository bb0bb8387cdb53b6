"""numba helpers of the paravirt kernels for mainline's Ethernet (RoCE) port path.

Inlined (``inline="always"``) into the Ethernet loop of :mod:`.paravirt_kernels`, a loop of its
own: inlined into the one row loop, this code slowed every InfiniBand row 1.2-1.5x. The semantics are those of
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
def vport_fields(vport, slave, rules_eth, port_types, port, st, reserved, optpar, param3_hi, vlan_control, fvl_rx,
                 vlan_index, fl, feup, sq_pri, qos_vport, grh):
    """update_vport_qp_param on the fields it writes (vport[slave, port - 1]); returns them all."""
    vp = vport[slave, port - 1]
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


@njit(inline="always")
def rewrite_row_eth(mailboxes, i, opcode, slave, in_modifier, v2p, base_proxy_sqpn, master, rules, mfunc_max,
                active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport, smac_registered, counts):
    """paravirt_kernels.rewrite_row with mainline's Ethernet branches (RULE_ETH_PORTS), in a loop of
    its own for batches that have an Ethernet port or a VF's vport state (the InfiniBand loop keeps
    its lean code). ``counts``: :func:`port_counts` for the batch."""
    sched = (rules & RULE_ADJUST_SCHED_QUEUE) != 0
    braces = (rules & RULE_VERIFY_BRACES) != 0
    xrc = (rules & RULE_XRC_LIKE_RC) != 0
    eth = (rules & RULE_ETH_PORTS) != 0
    do_sched = False
    do_verify = False
    do_pkey = False
    do_gid = False
    do_qkey = False
    if opcode == TRANSITION_RST2INIT:
        do_sched = sched
        do_pkey = True
        do_qkey = True
    elif opcode == TRANSITION_INIT2INIT:
        do_pkey = True
        do_qkey = True
    elif (opcode == TRANSITION_INIT2RTR or opcode == TRANSITION_RTR2RTS or opcode == TRANSITION_RTS2RTS
          or opcode == TRANSITION_SQD2SQD or opcode == TRANSITION_SQD2RTS):
        do_sched = sched
        do_verify = True
        do_pkey = True
        do_gid = True
        do_qkey = True
    elif opcode == TRANSITION_SQERR2RTS:
        do_sched = sched
        do_qkey = True
    elif (opcode == TRANSITION_2ERR or opcode == TRANSITION_RTS2SQD or opcode == TRANSITION_2RST
          or opcode == TRANSITION_QUERY):
        return RC_OK, FINDING_NONE
    else:
        return RC_UNKNOWN_OPCODE, FINDING_NONE
    init2rtr_eth = eth and opcode == TRANSITION_INIT2RTR

    slave8 = slave & 0xFF
    optpar = ((np.int64(mailboxes[i, MBOX_OPTPAR]) << 24) | (np.int64(mailboxes[i, MBOX_OPTPAR + 1]) << 16)
              | (np.int64(mailboxes[i, MBOX_OPTPAR + 2]) << 8) | np.int64(mailboxes[i, MBOX_OPTPAR + 3]))
    st = np.int64(mailboxes[i, MBOX_SERVICE_TYPE])
    sq_pri = np.int64(mailboxes[i, MBOX_PRI_SCHED_QUEUE])
    sq_alt = np.int64(mailboxes[i, MBOX_ALT_SCHED_QUEUE])
    pkey = np.int64(mailboxes[i, MBOX_PRI_PKEY_INDEX])
    mgid_pri = np.int64(mailboxes[i, MBOX_PRI_MGID_INDEX])
    mgid_alt = np.int64(mailboxes[i, MBOX_ALT_MGID_INDEX])
    params2 = np.int64(mailboxes[i, MBOX_PARAMS2_FPP])
    finding = np.int64(FINDING_NONE)  # typed: inlined into pycc, a literal would not unify

    # adjust_qp_sched_queue (mainline; an Ethernet port's primary sched_queue is always rewritten)
    if do_sched:
        port = slave_convert_port(active_ports, slave, ((sq_pri >> 6) & 1) + 1, last_vf) - 1
        if port < 0:
            return RC_EINVAL, FINDING_NONE
        if ((optpar & (OPTPAR_PRIMARY_ADDR_PATH | OPTPAR_SCHED_QUEUE)) != 0 or sq_pri != 0
                or is_eth(eth, port_types, port + 1)):
            sq_pri = (sq_pri & 0xBF) | ((port & 1) << 6)
        if (optpar & OPTPAR_ALT_ADDR_PATH) != 0:
            port = slave_convert_port(active_ports, slave, ((sq_alt >> 6) & 1) + 1, last_vf) - 1
            if port < 0:
                return RC_EINVAL, FINDING_NONE
            sq_alt = (sq_alt & 0xBF) | ((port & 1) << 6)
    pri_port = ((sq_pri >> 6) & 1) + 1
    alt_port = ((sq_alt >> 6) & 1) + 1

    # verify_qp_parameters (u8 slave); every verifying transition carries address paths
    if do_verify:
        if slave8 != master:
            if (rules & RULE_CLEAR_FPP) != 0:
                params2 = params2 & 0xF7
            if ((rules & RULE_RATE_LIMIT_EPERM) != 0
                    and (mailboxes[i, MBOX_RATE_LIMIT] != 0 or mailboxes[i, MBOX_RATE_LIMIT + 1] != 0)):
                return RC_EPERM, FINDING_NONE
        if st == ST_RC or st == ST_UC or (xrc and st == ST_XRC):
            if slave8 != master and (optpar & OPTPAR_PRIMARY_ADDR_PATH) != 0:
                num_gids = np.int64(1)
                if is_eth(eth, port_types, pri_port):
                    num_gids = slave_num_gids(active_ports, last_vf, counts, slave8, pri_port)
                    if num_gids < 0:
                        return RC_REFUSED, FINDING_REFUSED
                if mgid_pri >= num_gids:
                    return RC_EINVAL, FINDING_NONE
            # 3.7: no braces, the alternate path is checked for the master too
            if (slave8 != master or not braces) and (optpar & OPTPAR_ALT_ADDR_PATH) != 0:
                num_gids = np.int64(1)
                if is_eth(eth, port_types, alt_port):
                    num_gids = slave_num_gids(active_ports, last_vf, counts, slave8, alt_port)
                    if num_gids < 0:
                        return RC_REFUSED, FINDING_REFUSED
                if mgid_alt >= num_gids:
                    return RC_EINVAL, FINDING_NONE
        elif st == ST_MLX and (rules & RULE_MLX_QP_RESERVED_EPERM) != 0:
            if (opcode == TRANSITION_INIT2RTR and slave8 != master
                    and qp_reserved(in_modifier, base_proxy_sqpn, mfunc_max, fw_reserved_qps)):
                smi = False
                if slave8 >= 1 and slave8 < mfunc_max:
                    smi = smi_enabled[slave8, pri_port - 1] != 0
                if not smi:
                    return RC_EPERM, FINDING_NONE

    # roce_verify_mac (mainline INIT2RTR; int slave)
    if init2rtr_eth and is_eth(eth, port_types, pri_port) and st != ST_MLX:
        if slave < 0 or slave >= mfunc_max:
            return RC_REFUSED, FINDING_REFUSED
        if smac_registered[slave, pri_port - 1, mailboxes[i, MBOX_PRI_GRH_MYLMC] & 0x7F] == 0:
            return RC_EINVAL, FINDING_NONE

    # update_pkey_index: the flat read of virt2phys_pkey, refused outside the table
    if do_pkey:
        offset = (slave * 2 + ((sq_pri >> 6) & 1)) * 128 + pkey
        if offset < 0 or offset >= mfunc_max * 256:
            return RC_REFUSED, FINDING_REFUSED
        if pkey >= 128:
            finding = np.int64(FINDING_SPILL)
        pkey = np.int64(v2p[offset >> 8, (offset >> 7) & 1, offset & 127])

    # update_gid (u8 slave); mainline's Ethernet ports add the VF's base GID index
    if do_gid:
        if st == ST_UD:
            if is_eth(eth, port_types, pri_port):
                base, ok = base_gid_ix(active_ports, last_vf, counts, slave8, pri_port)
                if not ok:
                    return RC_REFUSED, FINDING_REFUSED
                mgid_pri = (base | 0x80) & 0xFF
            else:
                mgid_pri = 0x80 | slave8
        elif st == ST_RC or st == ST_UC or (xrc and st == ST_XRC):
            if (optpar & OPTPAR_PRIMARY_ADDR_PATH) != 0:
                if is_eth(eth, port_types, pri_port):
                    base, ok = base_gid_ix(active_ports, last_vf, counts, slave8, pri_port)
                    if not ok:
                        return RC_REFUSED, FINDING_REFUSED
                    mgid_pri = (mgid_pri + base) & 0x7F
                else:
                    mgid_pri = slave8 & 0x7F
            if (optpar & OPTPAR_ALT_ADDR_PATH) != 0:
                if is_eth(eth, port_types, alt_port):
                    base, ok = base_gid_ix(active_ports, last_vf, counts, slave8, alt_port)
                    if not ok:
                        return RC_REFUSED, FINDING_REFUSED
                    mgid_alt = (mgid_alt + base) & 0x7F
                else:
                    mgid_alt = slave8 & 0x7F

    # update_vport_qp_param (mainline INIT2RTR, u8 slave): VST, spoof check
    if init2rtr_eth:
        if slave8 >= mfunc_max:
            return RC_REFUSED, FINDING_REFUSED
        vport_port = 2 if (sq_pri & 0x40) != 0 else 1
        reserved = qp_reserved(in_modifier, base_proxy_sqpn, mfunc_max, fw_reserved_qps)
        optpar, param3_hi, vlan_control, fvl_rx, vlan_index, fl, feup, sq_pri, qos_vport, grh = vport_fields(
            vport, slave8, eth, port_types, vport_port, st, reserved, optpar,
            np.int64(mailboxes[i, MBOX_PARAM3]), np.int64(mailboxes[i, MBOX_PRI_VLAN_CONTROL]),
            np.int64(mailboxes[i, MBOX_PRI_FVL_RX]), np.int64(mailboxes[i, MBOX_PRI_VLAN_INDEX]),
            np.int64(mailboxes[i, MBOX_PRI_FL]), np.int64(mailboxes[i, MBOX_PRI_FEUP]), sq_pri,
            np.int64(mailboxes[i, MBOX_QOS_VPORT]), np.int64(mailboxes[i, MBOX_PRI_GRH_MYLMC]))
        mailboxes[i, MBOX_OPTPAR + 1] = (optpar >> 16) & 0xFF
        mailboxes[i, MBOX_PARAM3] = param3_hi
        mailboxes[i, MBOX_PRI_VLAN_CONTROL] = vlan_control
        mailboxes[i, MBOX_PRI_FVL_RX] = fvl_rx
        mailboxes[i, MBOX_PRI_VLAN_INDEX] = vlan_index
        mailboxes[i, MBOX_PRI_FL] = fl
        mailboxes[i, MBOX_PRI_FEUP] = feup
        mailboxes[i, MBOX_QOS_VPORT] = qos_vport
        mailboxes[i, MBOX_PRI_GRH_MYLMC] = grh

    # commit
    mailboxes[i, MBOX_PRI_SCHED_QUEUE] = sq_pri
    mailboxes[i, MBOX_ALT_SCHED_QUEUE] = sq_alt
    mailboxes[i, MBOX_PARAMS2_FPP] = params2
    mailboxes[i, MBOX_PRI_PKEY_INDEX] = pkey
    mailboxes[i, MBOX_PRI_MGID_INDEX] = mgid_pri
    mailboxes[i, MBOX_ALT_MGID_INDEX] = mgid_alt

    # adjust_proxy_tun_qkey (mlx4_get_parav_qkey)
    if do_qkey:
        qpn24 = in_modifier & 0xFFFFFF
        base_tunnel_sqpn = base_proxy_sqpn + 8 * mfunc_max
        if qpn24 >= base_proxy_sqpn and qpn24 < base_tunnel_sqpn + 8 * mfunc_max:
            if qpn24 >= base_tunnel_sqpn:
                qkey = RESERVED_QKEY_BASE + (qpn24 - base_tunnel_sqpn)
            else:
                qkey = RESERVED_QKEY_BASE + (qpn24 - base_proxy_sqpn)
            mailboxes[i, MBOX_QKEY] = (qkey >> 24) & 0xFF
            mailboxes[i, MBOX_QKEY + 1] = (qkey >> 16) & 0xFF
            mailboxes[i, MBOX_QKEY + 2] = (qkey >> 8) & 0xFF
            mailboxes[i, MBOX_QKEY + 3] = qkey & 0xFF
    return RC_OK, finding
