"""Reference model of mainline's Ethernet (RoCE) branches in the QP-modify wrappers, in plain Python.

Written line by line from mainline's C (profile rule ``eth_ports``; quoted lines are greppable in
any tree; line numbers of the Mellanox OFED 5.0 copy of mainline's files that was read):

- ``mlx4_is_eth(dev, port)``: ``dev->caps.port_type[port] == MLX4_PORT_TYPE_ETH`` (device.h), the
  :class:`~madpipe.pipeline.mlx4.device_reference.Device`'s ``port_types`` (1 IB, 2 Ethernet).
- ``mlx4_get_slave_num_gids`` and ``mlx4_get_base_gid_ix`` (port.c:1166, 1200): the 128 RoCE GIDs
  of a port, 16 for the PF and the other 112 shared among the VFs that use the port, single-port
  VFs of the other port not counted in the VF's rank.
- ``verify_qp_parameters`` (resource_tracker.c:3345): ``if (dev->caps.port_mask[port] !=
  MLX4_PORT_TYPE_IB) num_gids = mlx4_get_slave_num_gids(dev, slave, port); else num_gids = 1;``
- ``roce_verify_mac`` (resource_tracker.c:3931): INIT2RTR on an Ethernet port, any service type
  but MLX: the source MAC index ``grh_mylmc & 0x7f`` must be one the slave registered
  (``mac_find_smac_ix_in_slave``), else the wrapper returns -EINVAL. Registrations are the
  Device's ``smac_registered[slave][port - 1][index]``.
- ``update_gid`` (resource_tracker.c:722): UD, ``mgid_index = mlx4_get_base_gid_ix() | 0x80``;
  RC/XRC/UC paths, ``mgid_index += mlx4_get_base_gid_ix(); mgid_index &= 0x7f`` (the alternate
  path's port from its own sched_queue).
- ``update_pkey_index`` (resource_tracker.c:707) has no Ethernet branch: the P_Key index is
  mapped through ``virt2phys_pkey`` on an Ethernet port too.
- ``adjust_qp_sched_queue`` (resource_tracker.c:3914): ``|| mlx4_is_eth(dev, port + 1)``: the
  primary sched_queue is always rewritten on an Ethernet port.
- ``update_vport_qp_param`` (resource_tracker.c:765; mainline's body, without OFED's extras), at
  the end of INIT2RTR, from the VF's vport state (``vf_oper[slave].vport[port].state``, the
  Device's ``vport[slave][port - 1]``, columns ``VPORT_*``): VST (``default_vlan != MLX4_VGT``)
  forces VLAN stripping, the vlan_control blocks (all of them when the link state is
  ``IFLA_VF_LINK_STATE_DISABLE``), ``vlan_index``, ``fl``, ``feup``, ``fvl_rx``, the QoS bits of
  sched_queue and ``qos_vport``; spoof check forces the source MAC index ``mac_idx``.

Model assumptions: the firmware has ``MLX4_BMME_FLAG_VSD_INIT2RTR`` (VLAN stripping is set in the
mailbox, not by a later UPDATE_QP) and ``MLX4_DEV_CAP_FLAG2_UPDATE_QP``, and not
``MLX4_DEV_CAP_FLAG2_LB_SRC_CHK``; ``handle_counter`` (counter allocation) and
``handle_eth_ud_smac_index`` are not modelled. ``num_vfs`` (the Device's, default every
function) bounds the functions ``mlx4_phys_to_slaves_pport`` counts. Where the C would divide
by zero (no VF uses the port) or index past its tables, madpipe refuses (:class:`Refused`).
"""
from __future__ import annotations

from madpipe.codecs import qpc
from madpipe.pipeline.mlx4.device_reference import (
    RC_EINVAL,
    Device,
    Refused,
    be32,
    mlx4_get_active_ports,
    mlx4_is_qp_reserved,
    put_be32,
)

MLX4_PORT_TYPE_IB = 1
MLX4_PORT_TYPE_ETH = 2
MLX4_ROCE_MAX_GIDS = 128
MLX4_ROCE_PF_GIDS = 16
MLX4_VGT = 4095
IFLA_VF_LINK_STATE_DISABLE = 2

# Columns of Device.vport[slave][port - 1] (struct mlx4_vport_oper_state / mlx4_vport_state).
VPORT_DEFAULT_VLAN = 0   # state.default_vlan (MLX4_VGT: none)
VPORT_DEFAULT_QOS = 1    # state.default_qos
VPORT_LINK_STATE = 2     # state.link_state (IFLA_VF_LINK_STATE_AUTO 0, ENABLE 1, DISABLE 2)
VPORT_SPOOFCHK = 3       # state.spoofchk
VPORT_VLAN_IDX = 4       # vlan_idx: the VLAN table index of default_vlan
VPORT_MAC_IDX = 5        # mac_idx: the MAC table index of the VF's MAC
VPORT_QOS_VPORT = 6      # state.qos_vport
VPORT_VLAN_PROTO = 7     # state.vlan_proto: 0 802.1Q, 1 802.1ad
VPORT_COLUMNS = 8

# Mailbox bytes (madpipe.codecs.qpc; the context starts at 8).
MBOX_PRI_FL = qpc.field_offset("context.pri_path.fl")
MBOX_PRI_VLAN_CONTROL = qpc.field_offset("context.pri_path.vlan_control")
MBOX_PRI_GRH_MYLMC = qpc.field_offset("context.pri_path.grh_mylmc")
MBOX_PRI_VLAN_INDEX = qpc.field_offset("context.pri_path.vlan_index")
MBOX_PRI_FEUP = qpc.field_offset("context.pri_path.feup")
MBOX_PRI_FVL_RX = qpc.field_offset("context.pri_path.fvl_rx")
MBOX_QOS_VPORT = qpc.field_offset("context.qos_vport")
MBOX_PARAM3 = qpc.field_offset("context.param3")

MLX4_QP_OPTPAR_VLAN_STRIPPING = 1 << 21
MLX4_STRIP_VLAN = 1 << 30
MLX4_FL_CV, MLX4_FL_SV, MLX4_FL_ETH_HIDE_CQE_VLAN = 1 << 6, 1 << 5, 1 << 2
MLX4_CTRL_ETH_SRC_CHECK_IF_COUNTER = 1 << 7
TX_BLOCK_TAGGED, TX_BLOCK_PRIO_TAGGED, TX_BLOCK_UNTAGGED = 1 << 6, 1 << 5, 1 << 4
RX_BLOCK_TAGGED, RX_BLOCK_PRIO_TAGGED, RX_BLOCK_UNTAGGED = 1 << 2, 1 << 1, 1 << 0
MLX4_FEUP_FORCE_ETH_UP, MLX4_FSM_FORCE_ETH_SRC_MAC, MLX4_FVL_FORCE_ETH_VLAN = 1 << 6, 1 << 5, 1 << 3
MLX4_FVL_RX_FORCE_ETH_VLAN = 1 << 2


def mlx4_is_eth(dev: Device, port: int) -> bool:
    """Whether physical port ``port`` (1-based) is Ethernet; every port is IB without the rule."""
    return dev.profile.eth_ports and 1 <= port <= 2 and dev.port_types[port - 1] == MLX4_PORT_TYPE_ETH


def _weight(bits: int) -> int:
    return bin(bits).count("1")


def _slave_gid_rank(dev: Device, slave: int, port: int) -> tuple[int, int]:
    """(slave_gid, vfs) as mlx4_get_slave_num_gids and mlx4_get_base_gid_ix compute them."""
    functions = range(dev.last_vf + 1)                  # for (i = 0; i < num_vfs + 1; i++)
    slaves_pport = [i for i in functions if mlx4_get_active_ports(dev, i) >> (port - 1) & 1]
    actv_ports = mlx4_get_active_ports(dev, slave)
    first = (actv_ports & -actv_ports).bit_length() - 1 if actv_ports else 2   # find_first_bit
    max_port_p_one = first + _weight(actv_ports) + 1
    slave_gid = slave
    for i in range(1, max_port_p_one):
        if i == port:
            continue
        exclusive = 1 << (i - 1)                        # VFs that have port i alone
        slave_gid -= sum(1 for j in functions if mlx4_get_active_ports(dev, j) == exclusive)
    vfs = len(slaves_pport) - 1
    if vfs <= 0:
        raise Refused(port, "the VFs of the port (the C divides by their number, 0)", 1)
    return slave_gid, vfs


def mlx4_get_slave_num_gids(dev: Device, slave: int, port: int) -> int:
    """port.c ``mlx4_get_slave_num_gids``."""
    if slave == 0:
        return MLX4_ROCE_PF_GIDS
    slave_gid, vfs = _slave_gid_rank(dev, slave, port)
    shared = MLX4_ROCE_MAX_GIDS - MLX4_ROCE_PF_GIDS
    if slave_gid <= shared % vfs:
        return shared // vfs + 1
    return shared // vfs


def mlx4_get_base_gid_ix(dev: Device, slave: int, port: int) -> int:
    """port.c ``mlx4_get_base_gid_ix``."""
    if slave == 0:
        return 0
    slave_gid, vfs = _slave_gid_rank(dev, slave, port)
    gids = MLX4_ROCE_MAX_GIDS - MLX4_ROCE_PF_GIDS
    if slave_gid <= gids % vfs:
        return MLX4_ROCE_PF_GIDS + (gids // vfs + 1) * (slave_gid - 1)
    return MLX4_ROCE_PF_GIDS + gids % vfs + gids // vfs * (slave_gid - 1)


def num_gids(dev: Device, slave: int, port: int) -> int:
    """verify_qp_parameters' ``num_gids`` for a slave's path on physical port ``port``."""
    if mlx4_is_eth(dev, port):                          # port_mask[port] != MLX4_PORT_TYPE_IB
        return mlx4_get_slave_num_gids(dev, slave, port)
    return 1


def roce_verify_mac(dev: Device, slave: int, inbox: bytearray) -> int:
    """resource_tracker.c ``roce_verify_mac`` (``int slave``): 0, or -EINVAL as the wrapper returns."""
    ts = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    port = (inbox[qpc.MBOX_PRI_SCHED_QUEUE] >> 6 & 1) + 1
    if mlx4_is_eth(dev, port) and ts != qpc.MLX4_QP_ST_MLX:
        smac_ix = inbox[MBOX_PRI_GRH_MYLMC] & 0x7F
        if not 0 <= slave < dev.mfunc_max:
            raise Refused(slave, "the resource tracker's slave_list", dev.mfunc_max)
        if not dev.smac_registered[slave][port - 1][smac_ix]:   # mac_find_smac_ix_in_slave: -ENOENT
            return RC_EINVAL
    return 0


def update_gid(dev: Device, inbox: bytearray, slave: int) -> None:
    """resource_tracker.c ``update_gid`` as mainline has it, Ethernet ports included (``u8 slave``)."""
    slave &= 0xFF
    optpar = be32(inbox, qpc.MBOX_OPTPAR)
    ts = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    pri_port = (inbox[qpc.MBOX_PRI_SCHED_QUEUE] >> 6 & 1) + 1
    if ts == qpc.MLX4_QP_ST_UD:
        if mlx4_is_eth(dev, pri_port):
            inbox[qpc.MBOX_PRI_MGID_INDEX] = (mlx4_get_base_gid_ix(dev, slave, pri_port) | 0x80) & 0xFF
        else:
            inbox[qpc.MBOX_PRI_MGID_INDEX] = (slave | 0x80) & 0xFF
        return
    rc_like = (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC) + ((qpc.MLX4_QP_ST_XRC,) if dev.profile.xrc_like_rc else ())
    if ts not in rc_like:
        return
    if optpar & qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH:
        if mlx4_is_eth(dev, pri_port):
            m = inbox[qpc.MBOX_PRI_MGID_INDEX] + mlx4_get_base_gid_ix(dev, slave, pri_port)
            inbox[qpc.MBOX_PRI_MGID_INDEX] = m & 0x7F
        else:
            inbox[qpc.MBOX_PRI_MGID_INDEX] = slave & 0x7F
    if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
        alt_port = (inbox[qpc.MBOX_ALT_SCHED_QUEUE] >> 6 & 1) + 1
        if mlx4_is_eth(dev, alt_port):
            m = inbox[qpc.MBOX_ALT_MGID_INDEX] + mlx4_get_base_gid_ix(dev, slave, alt_port)
            inbox[qpc.MBOX_ALT_MGID_INDEX] = m & 0x7F
        else:
            inbox[qpc.MBOX_ALT_MGID_INDEX] = slave & 0x7F


def update_vport_qp_param(dev: Device, inbox: bytearray, slave: int, qpn: int) -> None:
    """resource_tracker.c ``update_vport_qp_param`` (``u8 slave``, ``u32 qpn``: in_modifier & 0x7fffff)."""
    slave &= 0xFF
    port = 2 if inbox[qpc.MBOX_PRI_SCHED_QUEUE] & 0x40 else 1
    if slave >= dev.mfunc_max:
        raise Refused(slave, "vf_oper", dev.mfunc_max)
    vp = [int(x) for x in dev.vport[slave][port - 1]]   # &priv->mfunc.master.vf_oper[slave].vport[port]
    qp_type = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    if vp[VPORT_DEFAULT_VLAN] != MLX4_VGT:
        # the reserved QPs (special, proxy, tunnel) do not operate over vlans
        if mlx4_is_qp_reserved(dev, qpn):
            return
        # force strip vlan by clear vsd, MLX QP refers to Raw Ethernet
        if qp_type == qpc.MLX4_QP_ST_UD or (qp_type == qpc.MLX4_QP_ST_MLX and mlx4_is_eth(dev, port)):
            put_be32(inbox, qpc.MBOX_OPTPAR, be32(inbox, qpc.MBOX_OPTPAR) | MLX4_QP_OPTPAR_VLAN_STRIPPING)
            put_be32(inbox, MBOX_PARAM3, be32(inbox, MBOX_PARAM3) & ~MLX4_STRIP_VLAN)
        inbox[MBOX_PRI_VLAN_CONTROL] &= MLX4_CTRL_ETH_SRC_CHECK_IF_COUNTER   # preserve IF_COUNTER flag
        qinq = vp[VPORT_VLAN_PROTO] == 1                # vlan_proto == htons(ETH_P_8021AD)
        if vp[VPORT_LINK_STATE] == IFLA_VF_LINK_STATE_DISABLE:
            inbox[MBOX_PRI_VLAN_CONTROL] |= (TX_BLOCK_TAGGED | TX_BLOCK_PRIO_TAGGED | TX_BLOCK_UNTAGGED
                                             | RX_BLOCK_PRIO_TAGGED | RX_BLOCK_UNTAGGED | RX_BLOCK_TAGGED)
        elif vp[VPORT_DEFAULT_VLAN] != 0:
            if qinq:
                inbox[MBOX_PRI_VLAN_CONTROL] |= (TX_BLOCK_PRIO_TAGGED | TX_BLOCK_TAGGED | RX_BLOCK_PRIO_TAGGED
                                                 | RX_BLOCK_UNTAGGED)
            else:                                       # vst 802.1Q
                inbox[MBOX_PRI_VLAN_CONTROL] |= TX_BLOCK_TAGGED | RX_BLOCK_PRIO_TAGGED | RX_BLOCK_UNTAGGED
        else:                                           # priority tagged
            inbox[MBOX_PRI_VLAN_CONTROL] |= TX_BLOCK_TAGGED | RX_BLOCK_TAGGED
        inbox[MBOX_PRI_FVL_RX] |= MLX4_FVL_RX_FORCE_ETH_VLAN
        inbox[MBOX_PRI_VLAN_INDEX] = vp[VPORT_VLAN_IDX] & 0xFF
        inbox[MBOX_PRI_FL] |= MLX4_FL_ETH_HIDE_CQE_VLAN | (MLX4_FL_SV if qinq else MLX4_FL_CV)
        inbox[MBOX_PRI_FEUP] |= MLX4_FEUP_FORCE_ETH_UP | MLX4_FVL_FORCE_ETH_VLAN
        sq = inbox[qpc.MBOX_PRI_SCHED_QUEUE] & 0xC7
        inbox[qpc.MBOX_PRI_SCHED_QUEUE] = (sq | (vp[VPORT_DEFAULT_QOS] << 3)) & 0xFF
        inbox[MBOX_QOS_VPORT] = vp[VPORT_QOS_VPORT] & 0xFF
    if vp[VPORT_SPOOFCHK]:
        inbox[MBOX_PRI_FEUP] |= MLX4_FSM_FORCE_ETH_SRC_MAC
        inbox[MBOX_PRI_GRH_MYLMC] = ((0x80 & inbox[MBOX_PRI_GRH_MYLMC]) + vp[VPORT_MAC_IDX]) & 0xFF
