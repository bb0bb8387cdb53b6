"""Reference model of the mlx4 master's QP-context paravirtualization, in plain Python.

Written line by line from the C, one function per kernel function, so that a reader can hold
this file next to the source and check it. The numba kernels in ``paravirt_kernels`` must give
the same bytes, return codes and findings; ``tests/test_paravirt.py`` compares them bit for bit.

Sources read (torvalds/linux):

- profile ``"3.7"``: the seed commit 54679e148287 ("mlx4: Implement QP paravirtualization and
  maintain phys_pkey_cache for smp_snoop", Linux 3.7),
  ``drivers/net/ethernet/mellanox/mlx4/resource_tracker.c``: ``update_pkey_index``,
  ``update_gid``, ``adjust_proxy_tun_qkey``, ``verify_qp_parameters`` and the
  ``mlx4_*_QP_wrapper`` functions; ``mlx4_get_parav_qkey`` (``main.c``).
- profile ``"new"``: mainline ``resource_tracker.c`` (``verify_qp_parameters`` with the braces
  fixed, XRC treated like RC/UC, FPP cleared and rate limit refused for slaves, the MLX-QP check,
  ``adjust_qp_sched_queue`` before every wrapper that carries an address path), ``cmd.c``
  (``mlx4_slave_convert_port``, ``mlx4_get_active_ports``, ``mlx4_vf_smi_enabled``,
  ``mlx4_MAD_IFC_wrapper``), ``include/linux/mlx4/device.h`` (``mlx4_is_qp_reserved``).

The per-transition dispatch (C order, each step a function below)::

    transition (opcode)              profile 3.7                profile new
    RST2INIT (0x19)                  qkey, pkey                 sched, qkey, pkey
    INIT2INIT (0x2d)                 qkey, pkey                 qkey, pkey
    INIT2RTR, RTR2RTS, RTS2RTS       verify, pkey, gid, qkey    sched, verify, pkey, gid, qkey
    SQD2SQD, SQD2RTS                 verify, qkey, gid, pkey    sched, verify, qkey, gid, pkey
    SQERR2RTS (0x1d)                 qkey                       sched, qkey
    2ERR, RTS2SQD, 2RST, QUERY       none                       none

(sched = ``adjust_qp_sched_queue``, verify = ``verify_qp_parameters``, pkey =
``update_pkey_index``, gid = ``update_gid``, qkey = ``adjust_proxy_tun_qkey``.)

Return codes (``rc``): 0 accepted; ``-EINVAL`` (-22) rejected by ``verify_qp_parameters`` or, in
profile new, by ``adjust_qp_sched_queue`` (a port the function does not own); ``-EPERM`` (-1)
where mainline refuses (a VF setting a rate limit; a VF without SMI bringing an MLX QP on a
reserved QP number to RTR); :data:`RC_REFUSED` (-34, ``-ERANGE``): madpipe refuses because the C
would read ``virt2phys_pkey`` outside its ``u8[MLX4_MFUNC_MAX][2][128]`` array (or, on the
Ethernet path, index past ``vf_oper`` or divide by zero); :data:`RC_UNKNOWN_OPCODE`
(-38, ``-ENOSYS``) for an opcode that is not one of the twelve QP commands (only reachable through
the raw kernels, the Python API validates names). Whenever ``rc != 0`` the output mailbox is the
input mailbox: the C returns before the inbox reaches firmware.

Findings (``finding``, the same codes as ``snoop``): 0 none; 1 the P_Key index was 128..255 and
the read spilled into the next row of the flat table (port 2's row for port 1, the next
function's port-1 row for port 2), reproduced bit for bit; 2 refused (would leave the table).

Model assumptions and what of mainline is left out:

- Ports are InfiniBand unless the Device says Ethernet (``port_types``) and the profile has the
  ``eth_ports`` rule (mainline): then the RoCE branches of :mod:`.eth_reference` run (per-slave GID
  counts in verify, ``roce_verify_mac`` and ``update_vport_qp_param`` in INIT2RTR, the base GID
  index in ``update_gid``, the forced sched_queue write), with the assumptions listed there.
- The resource tracker is not modelled: the QP is taken to exist, be owned by the issuing
  function and be in the right state (no ``-ENOENT``/``-EBUSY``/``-EPERM`` from ``get_res``), and
  ``RST2INIT``'s MTT/CQ/SRQ checks pass. ``SUSPEND_QP``, ``UNSUSPEND_QP`` and ``UPDATE_QP`` are not
  among the transitions.
- ``mlx4_is_qp_reserved`` is ``base_sqpn <= qpn < base_sqpn + 8 + 16*MLX4_MFUNC_MAX`` (the master's view,
  ``base_sqpn = base_proxy_sqpn - 8``) or ``qpn < fw_reserved_qps`` (``caps.reserved_qps_cnt[FW]``,
  default 0: pass the firmware's count when it matters).
- ``mlx4_get_active_ports`` is an ``active_ports`` bitmask per function (bit p-1 set when physical
  port p is assigned); as in C, function 0 always has every port and a function outside
  1..num_vfs (default: 1..MLX4_MFUNC_MAX - 1) has none. ``mlx4_vf_smi_enabled`` is an ``smi_enabled[slave][port-1]`` table.
- ``MLX4_QP_BIT_FPP`` is cleared as mainline does today, ``params2 &= ~cpu_to_be32(FPP)``: bit 3
  of mailbox byte 155. Kernels between the introduction of that line and its endianness fix wrote
  ``&= ~MLX4_QP_BIT_FPP`` and on little-endian hosts cleared bit 3 of byte 152 instead; that
  intermediate behaviour is not a profile here.
- At the seed ``mlx4_get_parav_qkey`` is written with ``caps.sqp_start`` (the lower bound and the
  proxy base) and ``caps.base_tunnel_sqpn``. A VF gets ``sqp_start`` = the proxy base from
  QUERY_FUNC_CAP (``mlx4_slave_cap``); for the master the model assumes the same (P), as the spec
  and the later commit 47605df95398 ("guests do no calculations", which renamed it
  ``base_proxy_sqpn``) describe. The seed's ``qp.c``, where the master sets it, was not available
  to check: if the master's ``sqp_start`` were the real special-QP base (P - 8), the seed's proxy
  Q_Keys would be 8 higher than modelled and P - 8 .. P - 1 would get Q_Keys too.
- Parameters the C declares ``u8`` are truncated like C does: ``verify_qp_parameters`` and
  ``update_gid`` see ``slave & 0xFF``; ``update_pkey_index`` and ``adjust_qp_sched_queue`` take
  ``int slave``. The QP number is ``in_modifier & 0xFFFFFF`` for the Q_Key and
  ``in_modifier & 0x7FFFFF`` for the reserved-QP check, as in the C.

The device state these functions read (:class:`~madpipe.pipeline.mlx4.device_reference.Device`),
the sizes and return codes, the ``cmd.c``, ``main.c`` and ``device.h`` helpers and the virtualized
SubnGetResp(P_KeyTable) (``mlx4_MAD_IFC_wrapper``) are in :mod:`madpipe.pipeline.mlx4.device_reference`.
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import qpc
from madpipe.pipeline.mlx4 import eth_reference as eth
from madpipe.pipeline.mlx4.device_reference import (
    FINDING_NONE,
    FINDING_REFUSED,
    RC_EINVAL,
    RC_EPERM,
    RC_REFUSED,
    RC_UNKNOWN_OPCODE,
    Device,
    Refused,
    be32,
    mlx4_get_parav_qkey,
    mlx4_is_qp_reserved,
    mlx4_slave_convert_port,
    mlx4_vf_smi_enabled,
    put_be32,
    virt2phys_pkey_read,
)

# enum qp_transition (resource_tracker.c): the transitions verify_qp_parameters knows.
QP_TRANS_INIT2RTR = qpc.MLX4_CMD_INIT2RTR_QP
QP_TRANS_RTR2RTS = qpc.MLX4_CMD_RTR2RTS_QP
QP_TRANS_RTS2RTS = qpc.MLX4_CMD_RTS2RTS_QP
QP_TRANS_SQERR2RTS = qpc.MLX4_CMD_SQERR2RTS_QP
QP_TRANS_SQD2SQD = qpc.MLX4_CMD_SQD2SQD_QP
QP_TRANS_SQD2RTS = qpc.MLX4_CMD_SQD2RTS_QP


# -- the three rewrites -----------------------------------------------------------------------------

def update_pkey_index(dev: Device, slave: int, inbox: bytearray) -> int:
    """resource_tracker.c ``update_pkey_index``. Returns the finding; may raise :class:`Refused`."""
    sched = inbox[64]                      # u8 sched = *(u8 *)(inbox->buf + 64);
    orig_index = inbox[35]                 # u8 orig_index = *(u8 *)(inbox->buf + 35);
    port = (sched >> 6 & 1) + 1            # port = (sched >> 6 & 1) + 1;
    new_index, finding = virt2phys_pkey_read(dev, slave, port - 1, orig_index)
    inbox[35] = new_index                  # *(u8 *)(inbox->buf + 35) = new_index;
    return finding


def update_gid(dev: Device, inbox: bytearray, slave: int) -> None:
    """resource_tracker.c ``update_gid`` (IB ports), ``u8 slave``; with the profile's Ethernet rule,
    mainline's whole function (:func:`.eth_reference.update_gid`)."""
    if dev.profile.eth_ports:
        eth.update_gid(dev, inbox, slave)
        return
    slave &= 0xFF                          # u8 parameter
    optpar = be32(inbox, qpc.MBOX_OPTPAR)
    ts = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    if ts == qpc.MLX4_QP_ST_UD:
        inbox[qpc.MBOX_PRI_MGID_INDEX] = (0x80 | slave) & 0xFF
    if dev.profile.xrc_like_rc:
        rc_like = ts in (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_XRC, qpc.MLX4_QP_ST_UC)
    else:
        rc_like = ts in (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC)
    if rc_like:
        if optpar & qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH:
            inbox[qpc.MBOX_PRI_MGID_INDEX] = slave & 0x7F
        if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
            inbox[qpc.MBOX_ALT_MGID_INDEX] = slave & 0x7F


def adjust_proxy_tun_qkey(dev: Device, in_modifier: int, inbox: bytearray) -> None:
    """resource_tracker.c ``adjust_proxy_tun_qkey``."""
    qpn = in_modifier & 0xFFFFFF
    qkey = mlx4_get_parav_qkey(dev, qpn)
    if qkey is None:
        return
    put_be32(inbox, qpc.MBOX_QKEY, qkey)   # context->qkey = cpu_to_be32(qkey);


# -- checks -----------------------------------------------------------------------------------------

def verify_qp_parameters(dev: Device, in_modifier: int, inbox: bytearray, transition: int,
                         slave: int) -> int:
    """resource_tracker.c ``verify_qp_parameters``, ``u8 slave``. Returns 0 or a negative errno."""
    slave &= 0xFF                          # u8 parameter
    qp_type = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    optpar = be32(inbox, qpc.MBOX_OPTPAR)
    address_path_transitions = (QP_TRANS_INIT2RTR, QP_TRANS_RTR2RTS, QP_TRANS_RTS2RTS,
                                QP_TRANS_SQD2SQD, QP_TRANS_SQD2RTS)

    prof = dev.profile
    if slave != dev.master:
        if prof.clear_fpp:
            inbox[qpc.MBOX_PARAMS2_FPP] &= ~qpc.MLX4_QP_BIT_FPP & 0xFF   # params2 &= ~cpu_to_be32(FPP)
        # setting QP rate-limit is disallowed for VFs
        if prof.rate_limit_eperm and (inbox[qpc.MBOX_RATE_LIMIT] or inbox[qpc.MBOX_RATE_LIMIT + 1]):
            return RC_EPERM

    rc_like = (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_XRC, qpc.MLX4_QP_ST_UC) if prof.xrc_like_rc else (
        qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC)
    if qp_type in rc_like:
        if transition in address_path_transitions:
            if slave != dev.master:
                # slaves have only gid index 0 on IB; on Ethernet, mlx4_get_slave_num_gids
                if optpar & qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH:
                    num_gids = eth.num_gids(dev, slave, (inbox[qpc.MBOX_PRI_SCHED_QUEUE] >> 6 & 1) + 1)
                    if inbox[qpc.MBOX_PRI_MGID_INDEX] >= num_gids:
                        return RC_EINVAL
            # Linux 3.7: this "if" is not inside "if (slave != master)" (no braces)
            if slave != dev.master or not prof.verify_braces:
                if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
                    num_gids = eth.num_gids(dev, slave, (inbox[qpc.MBOX_ALT_SCHED_QUEUE] >> 6 & 1) + 1)
                    if inbox[qpc.MBOX_ALT_MGID_INDEX] >= num_gids:
                        return RC_EINVAL
    elif qp_type == qpc.MLX4_QP_ST_MLX and prof.mlx_qp_reserved_eperm:
        qpn = in_modifier & 0x7FFFFF
        port = (inbox[qpc.MBOX_PRI_SCHED_QUEUE] >> 6 & 1) + 1
        if (transition == QP_TRANS_INIT2RTR and slave != dev.master
                and mlx4_is_qp_reserved(dev, qpn) and not mlx4_vf_smi_enabled(dev, slave, port)):
            # only enabled VFs may create MLX proxy QPs
            return RC_EPERM
    return 0


def adjust_qp_sched_queue(dev: Device, slave: int, inbox: bytearray) -> int:
    """resource_tracker.c ``adjust_qp_sched_queue`` (profile new, IB ports)."""
    optpar = be32(inbox, qpc.MBOX_OPTPAR)
    pri = qpc.MBOX_PRI_SCHED_QUEUE
    alt = qpc.MBOX_ALT_SCHED_QUEUE
    port = mlx4_slave_convert_port(dev, slave, (inbox[pri] >> 6 & 1) + 1) - 1
    if port < 0:
        return RC_EINVAL
    pri_sched_queue = (inbox[pri] & ~(1 << 6) & 0xFF) | ((port & 1) << 6)
    if (optpar & (qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH | qpc.MLX4_QP_OPTPAR_SCHED_QUEUE)
            or inbox[pri] or eth.mlx4_is_eth(dev, port + 1)):
        inbox[pri] = pri_sched_queue
    if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
        port = mlx4_slave_convert_port(dev, slave, (inbox[alt] >> 6 & 1) + 1) - 1
        if port < 0:
            return RC_EINVAL
        inbox[alt] = (inbox[alt] & ~(1 << 6) & 0xFF) | ((port & 1) << 6)
    return 0


# -- the wrappers -----------------------------------------------------------------------------------
# Each returns (err, finding) and edits ``inbox`` in place; the dispatcher restores the input when
# err != 0, as the C never hands a rejected inbox to firmware.

def rst2init_qp_wrapper(dev, slave, in_modifier, inbox):
    if dev.profile.adjust_sched_queue:
        err = adjust_qp_sched_queue(dev, slave, inbox)
        if err:
            return err, FINDING_NONE
    adjust_proxy_tun_qkey(dev, in_modifier, inbox)
    finding = update_pkey_index(dev, slave, inbox)
    return 0, finding


def init2init_qp_wrapper(dev, slave, in_modifier, inbox):
    adjust_proxy_tun_qkey(dev, in_modifier, inbox)
    finding = update_pkey_index(dev, slave, inbox)
    return 0, finding


def _verify_pkey_gid_qkey(transition):
    def wrapper(dev, slave, in_modifier, inbox):
        if dev.profile.adjust_sched_queue:
            err = adjust_qp_sched_queue(dev, slave, inbox)
            if err:
                return err, FINDING_NONE
        err = verify_qp_parameters(dev, in_modifier, inbox, transition, slave)
        if err:
            return err, FINDING_NONE
        init2rtr_eth = transition == QP_TRANS_INIT2RTR and dev.profile.eth_ports
        if init2rtr_eth and eth.roce_verify_mac(dev, slave, inbox):
            return RC_EINVAL, FINDING_NONE
        finding = update_pkey_index(dev, slave, inbox)
        update_gid(dev, inbox, slave & 0xFF)
        adjust_proxy_tun_qkey(dev, in_modifier, inbox)
        if init2rtr_eth:
            eth.update_vport_qp_param(dev, inbox, slave & 0xFF, in_modifier & 0x7FFFFF)
        return 0, finding
    return wrapper


def _verify_qkey_gid_pkey(transition):
    def wrapper(dev, slave, in_modifier, inbox):
        if dev.profile.adjust_sched_queue:
            err = adjust_qp_sched_queue(dev, slave, inbox)
            if err:
                return err, FINDING_NONE
        err = verify_qp_parameters(dev, in_modifier, inbox, transition, slave)
        if err:
            return err, FINDING_NONE
        adjust_proxy_tun_qkey(dev, in_modifier, inbox)
        update_gid(dev, inbox, slave & 0xFF)
        finding = update_pkey_index(dev, slave, inbox)
        return 0, finding
    return wrapper


init2rtr_qp_wrapper = _verify_pkey_gid_qkey(QP_TRANS_INIT2RTR)
rtr2rts_qp_wrapper = _verify_pkey_gid_qkey(QP_TRANS_RTR2RTS)
rts2rts_qp_wrapper = _verify_pkey_gid_qkey(QP_TRANS_RTS2RTS)
sqd2sqd_qp_wrapper = _verify_qkey_gid_pkey(QP_TRANS_SQD2SQD)
sqd2rts_qp_wrapper = _verify_qkey_gid_pkey(QP_TRANS_SQD2RTS)


def sqerr2rts_qp_wrapper(dev, slave, in_modifier, inbox):
    if dev.profile.adjust_sched_queue:
        err = adjust_qp_sched_queue(dev, slave, inbox)
        if err:
            return err, FINDING_NONE
    adjust_proxy_tun_qkey(dev, in_modifier, inbox)
    return 0, FINDING_NONE


def gen_qp_wrapper(dev, slave, in_modifier, inbox):
    """2ERR, RTS2SQD, QUERY (mlx4_GEN_QP_wrapper) and 2RST: no inbox rewrite."""
    return 0, FINDING_NONE


WRAPPERS = {
    qpc.MLX4_CMD_RST2INIT_QP: rst2init_qp_wrapper,
    qpc.MLX4_CMD_INIT2INIT_QP: init2init_qp_wrapper,
    qpc.MLX4_CMD_INIT2RTR_QP: init2rtr_qp_wrapper,
    qpc.MLX4_CMD_RTR2RTS_QP: rtr2rts_qp_wrapper,
    qpc.MLX4_CMD_RTS2RTS_QP: rts2rts_qp_wrapper,
    qpc.MLX4_CMD_SQERR2RTS_QP: sqerr2rts_qp_wrapper,
    qpc.MLX4_CMD_SQD2SQD_QP: sqd2sqd_qp_wrapper,
    qpc.MLX4_CMD_SQD2RTS_QP: sqd2rts_qp_wrapper,
    qpc.MLX4_CMD_2ERR_QP: gen_qp_wrapper,
    qpc.MLX4_CMD_RTS2SQD_QP: gen_qp_wrapper,
    qpc.MLX4_CMD_2RST_QP: gen_qp_wrapper,
    qpc.MLX4_CMD_QUERY_QP: gen_qp_wrapper,
}


def modify_qp(dev: Device, opcode: int, slave: int, in_modifier: int, mailbox: bytes):
    """One QP command through the master: (output mailbox bytes, rc, finding)."""
    wrapper = WRAPPERS.get(opcode)
    if wrapper is None:
        return bytes(mailbox), RC_UNKNOWN_OPCODE, FINDING_NONE
    inbox = bytearray(mailbox)
    try:
        err, finding = wrapper(dev, slave, in_modifier, inbox)
    except Refused:
        return bytes(mailbox), RC_REFUSED, FINDING_REFUSED
    if err:
        return bytes(mailbox), err, FINDING_NONE
    return bytes(inbox), 0, finding


def rewrite(mailboxes, opcodes, slaves, in_modifiers, dev: Device):
    """Batch form over numpy arrays (already validated): (out uint8[N,256], rc int32[N], finding int8[N])."""
    n = len(mailboxes)
    out = np.empty((n, qpc.MBOX_SIZE), dtype=np.uint8)
    rc = np.empty(n, dtype=np.int32)
    finding = np.empty(n, dtype=np.int8)
    for i in range(n):
        row, rc[i], finding[i] = modify_qp(dev, int(opcodes[i]), int(slaves[i]), int(in_modifiers[i]),
                                           mailboxes[i].tobytes())
        out[i] = np.frombuffer(row, dtype=np.uint8)
    return out, rc, finding
