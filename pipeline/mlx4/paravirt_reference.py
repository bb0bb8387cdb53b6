"""Reference model of the mlx4 master's QP-context paravirtualization, in plain Python.

Written line by line from the C, one function per kernel function, so that a reader can hold
this file next to the source and check it. The numba kernels in ``kernels_paravirt`` must give
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
would read ``virt2phys_pkey`` outside its ``u8[80][2][128]`` array; :data:`RC_UNKNOWN_OPCODE`
(-38, ``-ENOSYS``) for an opcode that is not one of the twelve QP commands (only reachable through
the raw kernels, the Python API validates names). Whenever ``rc != 0`` the output mailbox is the
input mailbox: the C returns before the inbox reaches firmware.

Findings (``finding``, the same codes as ``snoop``): 0 none; 1 the P_Key index was 128..255 and
the read spilled into the next row of the flat table (port 2's row for port 1, the next
function's port-1 row for port 2), reproduced bit for bit; 2 refused (would leave the table).

Model assumptions and what of mainline is left out:

- Every port is InfiniBand. The Ethernet/RoCE branches (``mlx4_is_eth``: base GID index in
  ``update_gid``, ``mlx4_get_slave_num_gids`` in verify, ``roce_verify_mac``,
  ``update_vport_qp_param`` with VST VLAN and spoof-check state, the forced sched_queue write for
  Ethernet ports) are not modelled.
- The resource tracker is not modelled: the QP is taken to exist, be owned by the issuing
  function and be in the right state (no ``-ENOENT``/``-EBUSY``/``-EPERM`` from ``get_res``), and
  ``RST2INIT``'s MTT/CQ/SRQ checks pass. ``SUSPEND_QP``, ``UNSUSPEND_QP`` and ``UPDATE_QP`` are not
  among the transitions.
- ``mlx4_is_qp_reserved`` is ``base_sqpn <= qpn < base_sqpn + 8 + 16*80`` (the master's view,
  ``base_sqpn = base_proxy_sqpn - 8``) or ``qpn < fw_reserved_qps`` (``caps.reserved_qps_cnt[FW]``,
  default 0: pass the firmware's count when it matters).
- ``mlx4_get_active_ports`` is an ``active_ports`` bitmask per function (bit p-1 set when physical
  port p is assigned); as in C, function 0 always has every port and a function outside 1..79
  has none. ``mlx4_vf_smi_enabled`` is an ``smi_enabled[slave][port-1]`` table.
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

``virtual_pkey_getresp`` follows mainline's ``mlx4_MAD_IFC_wrapper`` (the seed commit has no
MAD_IFC wrapper: a VF's MAD_IFC was not paravirtualized at 3.7), see its docstring.
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import qpc

# Sizes (mlx4.h, device.h)
MLX4_MFUNC_MAX = 80
MLX4_MAX_PORTS = 2
MLX4_MAX_PORT_PKEYS = 128
V2P_ENTRIES = MLX4_MFUNC_MAX * MLX4_MAX_PORTS * MLX4_MAX_PORT_PKEYS  # 20480 bytes, flat
MLX4_RESERVED_QKEY_BASE = 0xFFFF0000

# Return codes
RC_OK = 0
RC_EPERM = -1
RC_EINVAL = -22
RC_REFUSED = -34  # -ERANGE: madpipe refuses a read outside virt2phys_pkey
RC_UNKNOWN_OPCODE = -38  # -ENOSYS: not a QP command (raw kernels only)

# Findings
FINDING_NONE = 0
FINDING_SPILL = 1
FINDING_REFUSED = 2

PROFILES = ("3.7", "new")

# enum qp_transition (resource_tracker.c): the transitions verify_qp_parameters knows.
QP_TRANS_INIT2RTR = qpc.MLX4_CMD_INIT2RTR_QP
QP_TRANS_RTR2RTS = qpc.MLX4_CMD_RTR2RTS_QP
QP_TRANS_RTS2RTS = qpc.MLX4_CMD_RTS2RTS_QP
QP_TRANS_SQERR2RTS = qpc.MLX4_CMD_SQERR2RTS_QP
QP_TRANS_SQD2SQD = qpc.MLX4_CMD_SQD2SQD_QP
QP_TRANS_SQD2RTS = qpc.MLX4_CMD_SQD2RTS_QP

# SMP data offset of a LID-routed SMP (struct ib_smp: 24-byte header, mkey, dr_slid, dr_dlid,
# 28 reserved bytes, then 64 bytes of data).
IB_SMP_DATA_OFFSET = 64


class Refused(Exception):
    """The C would read outside its array: madpipe refuses instead of guessing memory."""

    def __init__(self, offset: int, array: str = "virt2phys_pkey", size: int = V2P_ENTRIES):
        self.offset = offset
        self.array = array
        super().__init__(f"the C would read {array} at flat index {offset}, outside 0..{size - 1}")


class Device:
    """The parts of ``struct mlx4_dev`` / ``mlx4_priv`` the rewrites read.

    ``virt2phys_pkey`` is ``uint8[80, 2, 128]``; ``active_ports`` ``uint8[80]`` bitmasks;
    ``smi_enabled`` ``uint8[80, 2]``. ``profile`` is ``"3.7"`` or ``"new"``.
    """

    def __init__(self, virt2phys_pkey, base_proxy_sqpn: int, master: int = 0, profile: str = "3.7",
                 active_ports=None, smi_enabled=None, fw_reserved_qps: int = 0):
        if profile not in PROFILES:
            raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
        self.virt2phys_pkey = np.asarray(virt2phys_pkey, dtype=np.uint8).reshape(-1)
        self.base_proxy_sqpn = int(base_proxy_sqpn)
        self.base_tunnel_sqpn = self.base_proxy_sqpn + 8 * MLX4_MFUNC_MAX
        self.base_sqpn = self.base_proxy_sqpn - 8
        self.master = int(master)
        self.profile = profile
        self.active_ports = [3] * MLX4_MFUNC_MAX if active_ports is None else [int(x) for x in active_ports]
        if smi_enabled is None:
            self.smi_enabled = [[0, 0] for _ in range(MLX4_MFUNC_MAX)]
        else:
            self.smi_enabled = [[int(a), int(b)] for a, b in smi_enabled]
        self.fw_reserved_qps = int(fw_reserved_qps)

    @property
    def new(self) -> bool:
        return self.profile == "new"


# -- small C helpers ------------------------------------------------------------------------------

def be32(buf, offset: int) -> int:
    """be32_to_cpu(*(__be32 *)(buf + offset))."""
    return int.from_bytes(bytes(buf[offset:offset + 4]), "big")


def put_be32(buf, offset: int, value: int) -> None:
    """*(__be32 *)(buf + offset) = cpu_to_be32(value)."""
    buf[offset:offset + 4] = (value & 0xFFFFFFFF).to_bytes(4, "big")


def virt2phys_pkey_read(dev: Device, slave: int, port_index: int, index: int) -> tuple[int, int]:
    """``priv->virt2phys_pkey[slave][port_index][index]`` read as C does, through the flat array.

    Returns (value, finding): finding 1 when ``index`` is past the 128-entry row (the read lands
    in a later row). Raises :class:`Refused` when the flat offset leaves the table.
    """
    offset = (slave * MLX4_MAX_PORTS + port_index) * MLX4_MAX_PORT_PKEYS + index
    if offset < 0 or offset >= V2P_ENTRIES:
        raise Refused(offset)
    finding = FINDING_SPILL if index >= MLX4_MAX_PORT_PKEYS else FINDING_NONE
    return int(dev.virt2phys_pkey[offset]), finding


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
    """resource_tracker.c ``update_gid`` (IB ports), ``u8 slave``."""
    slave &= 0xFF                          # u8 parameter
    optpar = be32(inbox, qpc.MBOX_OPTPAR)
    ts = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    if ts == qpc.MLX4_QP_ST_UD:
        inbox[qpc.MBOX_PRI_MGID_INDEX] = (0x80 | slave) & 0xFF
    if dev.new:
        rc_like = ts in (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_XRC, qpc.MLX4_QP_ST_UC)
    else:
        rc_like = ts in (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC)
    if rc_like:
        if optpar & qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH:
            inbox[qpc.MBOX_PRI_MGID_INDEX] = slave & 0x7F
        if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
            inbox[qpc.MBOX_ALT_MGID_INDEX] = slave & 0x7F


def mlx4_get_parav_qkey(dev: Device, qpn: int) -> int | None:
    """main.c ``mlx4_get_parav_qkey``: the reserved Q_Key of a proxy or tunnel QP, else None.

    At the seed it reads ``caps.sqp_start`` and ``caps.base_tunnel_sqpn``; mainline reads
    ``phys_caps.base_proxy_sqpn`` and ``phys_caps.base_tunnel_sqpn``. Both are modelled as
    P = ``base_proxy_sqpn`` and T = P + 8 * 80 (see the module docstring).
    """
    qk = MLX4_RESERVED_QKEY_BASE
    if qpn >= dev.base_tunnel_sqpn + 8 * MLX4_MFUNC_MAX or qpn < dev.base_proxy_sqpn:
        return None                        # -EINVAL
    if qpn >= dev.base_tunnel_sqpn:
        qk += qpn - dev.base_tunnel_sqpn   # tunnel qp
    else:
        qk += qpn - dev.base_proxy_sqpn
    return qk & 0xFFFFFFFF


def adjust_proxy_tun_qkey(dev: Device, in_modifier: int, inbox: bytearray) -> None:
    """resource_tracker.c ``adjust_proxy_tun_qkey``."""
    qpn = in_modifier & 0xFFFFFF
    qkey = mlx4_get_parav_qkey(dev, qpn)
    if qkey is None:
        return
    put_be32(inbox, qpc.MBOX_QKEY, qkey)   # context->qkey = cpu_to_be32(qkey);


# -- checks -----------------------------------------------------------------------------------------

def mlx4_is_qp_reserved(dev: Device, qpn: int) -> bool:
    """device.h ``mlx4_is_qp_reserved`` on the master (see the module docstring)."""
    return ((dev.base_sqpn <= qpn < dev.base_sqpn + 8 + 16 * MLX4_MFUNC_MAX)
            or qpn < dev.fw_reserved_qps)


def mlx4_vf_smi_enabled(dev: Device, slave: int, port: int) -> bool:
    """cmd.c ``mlx4_vf_smi_enabled``."""
    if slave < 1 or slave >= MLX4_MFUNC_MAX or port < 1 or port > MLX4_MAX_PORTS:
        return False
    return bool(dev.smi_enabled[slave][port - 1])


def verify_qp_parameters(dev: Device, in_modifier: int, inbox: bytearray, transition: int,
                         slave: int) -> int:
    """resource_tracker.c ``verify_qp_parameters``, ``u8 slave``. Returns 0 or a negative errno."""
    slave &= 0xFF                          # u8 parameter
    qp_type = (be32(inbox, qpc.MBOX_FLAGS) >> 16) & 0xFF
    optpar = be32(inbox, qpc.MBOX_OPTPAR)
    address_path_transitions = (QP_TRANS_INIT2RTR, QP_TRANS_RTR2RTS, QP_TRANS_RTS2RTS,
                                QP_TRANS_SQD2SQD, QP_TRANS_SQD2RTS)

    if not dev.new:
        # Linux 3.7: the second "if" is not inside "if (slave != master)" (no braces).
        if qp_type in (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_UC):
            if transition in address_path_transitions:
                if slave != dev.master:
                    # slaves have only gid index 0
                    if optpar & qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH:
                        if inbox[qpc.MBOX_PRI_MGID_INDEX]:
                            return RC_EINVAL
                if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
                    if inbox[qpc.MBOX_ALT_MGID_INDEX]:
                        return RC_EINVAL
        return 0

    if slave != dev.master:
        inbox[qpc.MBOX_PARAMS2_FPP] &= ~qpc.MLX4_QP_BIT_FPP & 0xFF   # params2 &= ~cpu_to_be32(FPP)
        # setting QP rate-limit is disallowed for VFs
        if inbox[qpc.MBOX_RATE_LIMIT] or inbox[qpc.MBOX_RATE_LIMIT + 1]:
            return RC_EPERM

    if qp_type in (qpc.MLX4_QP_ST_RC, qpc.MLX4_QP_ST_XRC, qpc.MLX4_QP_ST_UC):
        if transition in address_path_transitions:
            if slave != dev.master:
                if optpar & qpc.MLX4_QP_OPTPAR_PRIMARY_ADDR_PATH:
                    num_gids = 1           # IB port
                    if inbox[qpc.MBOX_PRI_MGID_INDEX] >= num_gids:
                        return RC_EINVAL
                if optpar & qpc.MLX4_QP_OPTPAR_ALT_ADDR_PATH:
                    num_gids = 1           # IB port
                    if inbox[qpc.MBOX_ALT_MGID_INDEX] >= num_gids:
                        return RC_EINVAL
    elif qp_type == qpc.MLX4_QP_ST_MLX:
        qpn = in_modifier & 0x7FFFFF
        port = (inbox[qpc.MBOX_PRI_SCHED_QUEUE] >> 6 & 1) + 1
        if (transition == QP_TRANS_INIT2RTR and slave != dev.master
                and mlx4_is_qp_reserved(dev, qpn) and not mlx4_vf_smi_enabled(dev, slave, port)):
            # only enabled VFs may create MLX proxy QPs
            return RC_EPERM
    return 0


def mlx4_get_active_ports(dev: Device, slave: int) -> int:
    """cmd.c ``mlx4_get_active_ports`` as a bitmask (bit p-1: physical port p)."""
    if slave == 0:
        return (1 << MLX4_MAX_PORTS) - 1
    if slave < 1 or slave >= MLX4_MFUNC_MAX:   # mlx4_get_vf_indx() < 0
        return 0
    return dev.active_ports[slave] & ((1 << MLX4_MAX_PORTS) - 1)


def mlx4_slave_convert_port(dev: Device, slave: int, port: int) -> int:
    """cmd.c ``mlx4_slave_convert_port``: the physical port of a function's port, or -EINVAL."""
    actv_ports = mlx4_get_active_ports(dev, slave)
    m = bin(actv_ports).count("1")
    if port <= 0 or port > m:
        return RC_EINVAL
    n = 0
    while not actv_ports >> n & 1:         # find_first_bit
        n += 1
    if port <= n:
        port = n + 1
    return port


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
            or inbox[pri]):                # || mlx4_is_eth(dev, port + 1): IB only
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
    if dev.new:
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
        if dev.new:
            err = adjust_qp_sched_queue(dev, slave, inbox)
            if err:
                return err, FINDING_NONE
        err = verify_qp_parameters(dev, in_modifier, inbox, transition, slave)
        if err:
            return err, FINDING_NONE
        # (mainline INIT2RTR: roce_verify_mac() here, Ethernet only)
        finding = update_pkey_index(dev, slave, inbox)
        update_gid(dev, inbox, slave & 0xFF)
        adjust_proxy_tun_qkey(dev, in_modifier, inbox)
        return 0, finding
    return wrapper


def _verify_qkey_gid_pkey(transition):
    def wrapper(dev, slave, in_modifier, inbox):
        if dev.new:
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
    if dev.new:
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


# -- virtualized SubnGetResp(P_KeyTable) ------------------------------------------------------------

def virtual_pkey_getresp(phys_table, virt2phys_pkey, slave: int, port_num: int, block: int,
                         template_mad) -> tuple[bytes, int]:
    """cmd.c ``mlx4_MAD_IFC_wrapper``, P_KeyTable case: the 256-byte MAD a function receives.

    ``phys_table``: that port's 128 physical P_Keys (what ``get_full_pkey_table`` reads into a
    zeroed ``kcalloc`` of ``(128 / 32 + 1) * 32`` entries, so entries 128..159 read as 0);
    ``template_mad``: the MAD firmware returned for the master's last physical block read, which
    the C leaves in the outbox around the 32 entries it writes. ``block`` is the whole 32-bit
    attribute modifier. Returns (mad bytes, finding): finding 1 when the entries do not all come
    from the function's own row and the physical table (block past the row, the u32 arithmetic
    of ``index * 32`` wrapping, or a ``virt2phys_pkey`` value of 128..159). Raises
    :class:`Refused` where the C would read outside ``virt2phys_pkey`` or past the 160-entry
    ``table``.
    """
    v2p = np.asarray(virt2phys_pkey, dtype=np.uint8).reshape(-1)
    table = [int(x) for x in phys_table] + [0] * 32     # kcalloc'd, filled for i < 128
    out = bytearray(template_mad)
    index = block & 0xFFFFFFFF                          # u32 index = be32_to_cpu(smp->attr_mod)
    start = (index * 32) & 0xFFFFFFFF                   # vidx = index * 32 (u32 arithmetic)
    end = ((index + 1) * 32) & 0xFFFFFFFF
    finding = FINDING_NONE if index < MLX4_MAX_PORT_PKEYS // 32 else FINDING_SPILL
    vidx = start - (1 << 32) if start >= 1 << 31 else start   # int vidx
    while (vidx & 0xFFFFFFFF) < end:                    # vidx < (index + 1) * 32, unsigned compare
        offset = (slave * MLX4_MAX_PORTS + port_num - 1) * MLX4_MAX_PORT_PKEYS + vidx
        if offset < 0 or offset >= V2P_ENTRIES:
            raise Refused(offset)
        pidx = int(v2p[offset])                         # pidx = virt2phys_pkey[slave][port - 1][vidx]
        if pidx >= len(table):
            raise Refused(pidx, "the kcalloc'd P_Key table", len(table))
        if pidx >= MLX4_MAX_PORT_PKEYS:
            finding = FINDING_SPILL
        slot = IB_SMP_DATA_OFFSET + 2 * (vidx % 32)     # outtab[vidx % 32] (vidx >= 0 here)
        out[slot:slot + 2] = table[pidx].to_bytes(2, "big")
        vidx += 1
    return bytes(out), finding
