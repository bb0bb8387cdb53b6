"""The row loop of the mlx4 QP-context rewrite, one variant per port kind (:func:`make_rewrite_rows`).

What ``paravirt_kernels`` runs over each chunk of rows; its docstring lists the arguments and the
rules are in ``paravirt_reference``. The body of a row is written in the loop (not as a call per
row), so numba passes no arguments and counts no references per row.
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.kernels.jit import njit
from madpipe.pipeline.mlx4.eth_kernels import (
    FINDING_NONE,
    FINDING_REFUSED,
    FINDING_SPILL,
    MBOX_ALT_MGID_INDEX,
    MBOX_ALT_SCHED_QUEUE,
    MBOX_OPTPAR,
    MBOX_PARAM3,
    MBOX_PARAMS2_FPP,
    MBOX_PRI_FEUP,
    MBOX_PRI_FL,
    MBOX_PRI_FVL_RX,
    MBOX_PRI_GRH_MYLMC,
    MBOX_PRI_MGID_INDEX,
    MBOX_PRI_PKEY_INDEX,
    MBOX_PRI_SCHED_QUEUE,
    MBOX_PRI_VLAN_CONTROL,
    MBOX_PRI_VLAN_INDEX,
    MBOX_QKEY,
    MBOX_QOS_VPORT,
    MBOX_RATE_LIMIT,
    MBOX_SERVICE_TYPE,
    OPTPAR_ALT_ADDR_PATH,
    OPTPAR_PRIMARY_ADDR_PATH,
    OPTPAR_SCHED_QUEUE,
    RC_EINVAL,
    RC_EPERM,
    RC_OK,
    RC_REFUSED,
    RC_UNKNOWN_OPCODE,
    RESERVED_QKEY_BASE,
    RULE_ADJUST_SCHED_QUEUE,
    RULE_CLEAR_FPP,
    RULE_MLX_QP_RESERVED_EPERM,
    RULE_RATE_LIMIT_EPERM,
    RULE_VERIFY_BRACES,
    RULE_XRC_LIKE_RC,
    ST_MLX,
    ST_RC,
    ST_UC,
    ST_UD,
    ST_XRC,
    TRANSITION_2ERR,
    TRANSITION_2RST,
    TRANSITION_INIT2INIT,
    TRANSITION_INIT2RTR,
    TRANSITION_QUERY,
    TRANSITION_RST2INIT,
    TRANSITION_RTR2RTS,
    TRANSITION_RTS2RTS,
    TRANSITION_RTS2SQD,
    TRANSITION_SQD2RTS,
    TRANSITION_SQD2SQD,
    TRANSITION_SQERR2RTS,
    base_gid_ix,
    is_eth,
    port_counts,
    qp_reserved,
    slave_convert_port,
    slave_num_gids,
    vport_fields,
)

LOOKAHEAD_ROWS = 8


def make_rewrite_rows(eth_ports):
    """The rows' rewrite, for batches that have (``eth_ports``) or lack mainline's Ethernet (RoCE)
    ports, :mod:`.eth_reference`'s branches.

    ``eth_ports`` is a constant of the closure and every Ethernet branch starts ``if eth_ports``:
    numba prunes those before typing, so the InfiniBand variant is compiled without them and is
    passed ``None`` for the Ethernet-only arrays. One row with a run-time flag made every
    InfiniBand row 1.2-1.5x slower.
    """

    @njit
    def rewrite_rows(mailboxes, start, stop, transition, slaves, qpn, v2p, base_proxy_sqpn, master, rules, mfunc_max,
                     active_ports, smi_enabled, fw_reserved_qps, port_types, last_vf, vport, smac_registered,
                     rc_out, finding_out, read_ahead):
        """Rewrite rows start..stop - 1 of ``mailboxes`` in place: rc_out[i] and finding_out[i] for
        row i. With ``read_ahead``, touch the rows LOOKAHEAD_ROWS on. Returns a sum of the bytes
        read ahead (kept only so that those reads stay).

        A row's every field is read before any byte is written; bytes are stored only on success.
        ``port_types``, ``vport`` and ``smac_registered`` are read only with ``eth_ports``.
        The row is written in the loop, not as a function of the row inlined into it: its array
        arguments were reference counted at each row (two atomic operations each, a fifth of the
        kernel's time).
        """
        if eth_ports:
            counts = port_counts(active_ports, last_vf)
        else:
            counts = np.int64(0)
        touched = 0
        n_rows = mailboxes.shape[0]
        for i in range(start, stop):
            if read_ahead:  # see _rewrite_rows_ib; here, not in a helper: a call with the array is counted too
                j = i + LOOKAHEAD_ROWS
                if j < n_rows:
                    touched += (np.int64(mailboxes[j, 0]) + np.int64(mailboxes[j, 64]) + np.int64(mailboxes[j, 128])
                                + np.int64(mailboxes[j, 192]))
            opcode = np.int64(transition[i])
            slave = np.int64(slaves[i])
            in_modifier = np.int64(qpn[i])
            sched = (rules & RULE_ADJUST_SCHED_QUEUE) != 0
            braces = (rules & RULE_VERIFY_BRACES) != 0
            xrc = (rules & RULE_XRC_LIKE_RC) != 0
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
                rc_out[i] = RC_OK
                finding_out[i] = FINDING_NONE
                continue
            else:
                rc_out[i] = RC_UNKNOWN_OPCODE
                finding_out[i] = FINDING_NONE
                continue

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
                    rc_out[i] = RC_EINVAL
                    finding_out[i] = FINDING_NONE
                    continue
                if ((optpar & (OPTPAR_PRIMARY_ADDR_PATH | OPTPAR_SCHED_QUEUE)) != 0 or sq_pri != 0
                        or (eth_ports and is_eth(port_types, port + 1))):
                    sq_pri = (sq_pri & 0xBF) | ((port & 1) << 6)
                if (optpar & OPTPAR_ALT_ADDR_PATH) != 0:
                    port = slave_convert_port(active_ports, slave, ((sq_alt >> 6) & 1) + 1, last_vf) - 1
                    if port < 0:
                        rc_out[i] = RC_EINVAL
                        finding_out[i] = FINDING_NONE
                        continue
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
                        rc_out[i] = RC_EPERM
                        finding_out[i] = FINDING_NONE
                        continue
                if st == ST_RC or st == ST_UC or (xrc and st == ST_XRC):
                    if slave8 != master and (optpar & OPTPAR_PRIMARY_ADDR_PATH) != 0:
                        num_gids = np.int64(1)
                        if eth_ports and is_eth(port_types, pri_port):
                            num_gids = slave_num_gids(active_ports, last_vf, counts, slave8, pri_port)
                            if num_gids < 0:
                                rc_out[i] = RC_REFUSED
                                finding_out[i] = FINDING_REFUSED
                                continue
                        if mgid_pri >= num_gids:
                            rc_out[i] = RC_EINVAL
                            finding_out[i] = FINDING_NONE
                            continue
                    # 3.7: no braces, the alternate path is checked for the master too
                    if (slave8 != master or not braces) and (optpar & OPTPAR_ALT_ADDR_PATH) != 0:
                        num_gids = np.int64(1)
                        if eth_ports and is_eth(port_types, alt_port):
                            num_gids = slave_num_gids(active_ports, last_vf, counts, slave8, alt_port)
                            if num_gids < 0:
                                rc_out[i] = RC_REFUSED
                                finding_out[i] = FINDING_REFUSED
                                continue
                        if mgid_alt >= num_gids:
                            rc_out[i] = RC_EINVAL
                            finding_out[i] = FINDING_NONE
                            continue
                elif st == ST_MLX and (rules & RULE_MLX_QP_RESERVED_EPERM) != 0:
                    if (opcode == TRANSITION_INIT2RTR and slave8 != master
                            and qp_reserved(in_modifier, base_proxy_sqpn, mfunc_max, fw_reserved_qps)):
                        smi = False
                        if slave8 >= 1 and slave8 < mfunc_max:
                            smi = smi_enabled[slave8, pri_port - 1] != 0
                        if not smi:
                            rc_out[i] = RC_EPERM
                            finding_out[i] = FINDING_NONE
                            continue

            # roce_verify_mac (mainline INIT2RTR; int slave)
            if eth_ports and opcode == TRANSITION_INIT2RTR and is_eth(port_types, pri_port) and st != ST_MLX:
                if slave < 0 or slave >= mfunc_max:
                    rc_out[i] = RC_REFUSED
                    finding_out[i] = FINDING_REFUSED
                    continue
                if smac_registered[slave, pri_port - 1, mailboxes[i, MBOX_PRI_GRH_MYLMC] & 0x7F] == 0:
                    rc_out[i] = RC_EINVAL
                    finding_out[i] = FINDING_NONE
                    continue

            # update_pkey_index: the flat read of virt2phys_pkey, refused outside the table
            if do_pkey:
                offset = (slave * 2 + ((sq_pri >> 6) & 1)) * 128 + pkey
                if offset < 0 or offset >= mfunc_max * 256:
                    rc_out[i] = RC_REFUSED
                    finding_out[i] = FINDING_REFUSED
                    continue
                if pkey >= 128:
                    finding = np.int64(FINDING_SPILL)
                pkey = np.int64(v2p[offset >> 8, (offset >> 7) & 1, offset & 127])

            # update_gid (u8 slave); mainline's Ethernet ports add the VF's base GID index
            if do_gid:
                if st == ST_UD:
                    if eth_ports and is_eth(port_types, pri_port):
                        base, ok = base_gid_ix(active_ports, last_vf, counts, slave8, pri_port)
                        if not ok:
                            rc_out[i] = RC_REFUSED
                            finding_out[i] = FINDING_REFUSED
                            continue
                        mgid_pri = (base | 0x80) & 0xFF
                    else:
                        mgid_pri = 0x80 | slave8
                elif st == ST_RC or st == ST_UC or (xrc and st == ST_XRC):
                    if (optpar & OPTPAR_PRIMARY_ADDR_PATH) != 0:
                        if eth_ports and is_eth(port_types, pri_port):
                            base, ok = base_gid_ix(active_ports, last_vf, counts, slave8, pri_port)
                            if not ok:
                                rc_out[i] = RC_REFUSED
                                finding_out[i] = FINDING_REFUSED
                                continue
                            mgid_pri = (mgid_pri + base) & 0x7F
                        else:
                            mgid_pri = slave8 & 0x7F
                    if (optpar & OPTPAR_ALT_ADDR_PATH) != 0:
                        if eth_ports and is_eth(port_types, alt_port):
                            base, ok = base_gid_ix(active_ports, last_vf, counts, slave8, alt_port)
                            if not ok:
                                rc_out[i] = RC_REFUSED
                                finding_out[i] = FINDING_REFUSED
                                continue
                            mgid_alt = (mgid_alt + base) & 0x7F
                        else:
                            mgid_alt = slave8 & 0x7F

            # update_vport_qp_param (mainline INIT2RTR, u8 slave): VST, spoof check
            if eth_ports and opcode == TRANSITION_INIT2RTR:
                if slave8 >= mfunc_max:
                    rc_out[i] = RC_REFUSED
                    finding_out[i] = FINDING_REFUSED
                    continue
                vport_port = 2 if (sq_pri & 0x40) != 0 else 1
                reserved = qp_reserved(in_modifier, base_proxy_sqpn, mfunc_max, fw_reserved_qps)
                optpar, param3_hi, vlan_control, fvl_rx, vlan_index, fl, feup, sq_pri, qos_vport, grh = vport_fields(
                    vport, slave8, port_types, vport_port, st, reserved, optpar,
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

            rc_out[i] = RC_OK
            finding_out[i] = finding
        return touched

    return rewrite_rows
