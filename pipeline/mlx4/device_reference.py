"""Reference model of the mlx4 master's state and P_Key mapping, as QP paravirtualization reads them.

Plain Python, written line by line from the C like :mod:`madpipe.pipeline.mlx4.paravirt_reference`
(whose docstring gives the sources, the profiles and the model's assumptions): the sizes and
return codes, the parts of ``struct mlx4_dev`` / ``mlx4_priv`` the rewrites read (:class:`Device`),
reads of ``virt2phys_pkey`` through the flat array as the C indexes it, the ``cmd.c``, ``main.c``
and ``device.h`` helpers over that state, and the virtualized SubnGetResp(P_KeyTable).

``virtual_pkey_getresp`` follows mainline's ``mlx4_MAD_IFC_wrapper`` (the seed commit has no
MAD_IFC wrapper: a VF's MAD_IFC was not paravirtualized at 3.7), see its docstring.
"""
from __future__ import annotations

import numpy as np

from madpipe.pipeline.mlx4.profiles import Profile, resolve

# Sizes (device.h) the same in every profile; MLX4_MFUNC_MAX is the profile's (profiles.py).
MLX4_MAX_PORTS = 2
MLX4_MAX_PORT_PKEYS = 128
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

# SMP data offset of a LID-routed SMP (struct ib_smp: 24-byte header, mkey, dr_slid, dr_dlid,
# 28 reserved bytes, then 64 bytes of data).
IB_SMP_DATA_OFFSET = 64


class Refused(Exception):
    """The C would read outside its array: madpipe refuses instead of guessing memory."""

    def __init__(self, offset: int, array: str, size: int):
        self.offset = offset
        self.array = array
        super().__init__(f"the C would read {array} at flat index {offset}, outside 0..{size - 1}")


class Device:
    """The parts of ``struct mlx4_dev`` / ``mlx4_priv`` the rewrites read.

    With F = the profile's ``mfunc_max`` (80 at 3.7, 128 on mainline): ``virt2phys_pkey`` is
    ``uint8[F, 2, 128]``; ``active_ports`` ``uint8[F]`` bitmasks; ``smi_enabled`` ``uint8[F, 2]``.
    ``profile`` is a name (``"3.7"``, ``"mainline"``, ``"new"``) or a
    :class:`~madpipe.pipeline.mlx4.profiles.Profile`.
    """

    def __init__(self, virt2phys_pkey, base_proxy_sqpn: int, master: int = 0, profile="3.7",
                 active_ports=None, smi_enabled=None, fw_reserved_qps: int = 0, port_types=None,
                 num_vfs: int | None = None, vport=None, smac_registered=None):
        self.profile: Profile = resolve(profile)
        self.mfunc_max = self.profile.mfunc_max
        self.virt2phys_pkey = np.asarray(virt2phys_pkey, dtype=np.uint8).reshape(-1)
        if self.virt2phys_pkey.size != self.profile.v2p_entries:
            raise ValueError(f"virt2phys_pkey: expected shape {self.profile.v2p_shape} for profile "
                             f"{self.profile.name}, got {self.virt2phys_pkey.size} entries")
        self.base_proxy_sqpn = int(base_proxy_sqpn)
        self.base_tunnel_sqpn = self.profile.base_tunnel_sqpn(self.base_proxy_sqpn)
        self.base_sqpn = self.base_proxy_sqpn - self.profile.proxy_offset
        self.master = int(master)
        self.active_ports = [3] * self.mfunc_max if active_ports is None else [int(x) for x in active_ports]
        if smi_enabled is None:
            self.smi_enabled = [[0, 0] for _ in range(self.mfunc_max)]
        else:
            self.smi_enabled = [[int(a), int(b)] for a, b in smi_enabled]
        self.fw_reserved_qps = int(fw_reserved_qps)
        # Ethernet (profile rule eth_ports; eth_reference): port types (1 IB, 2 Ethernet), the
        # VFs mlx4_get_vf_indx knows (num_vfs; None: every function), each VF's vport state
        # uint16[F, 2, 8] (eth_reference.VPORT_*) and registered source MAC indices uint8[F, 2, 128].
        self.port_types = [1, 1] if port_types is None else [int(x) for x in port_types]
        self.last_vf = self.mfunc_max - 1 if num_vfs is None else min(int(num_vfs), self.mfunc_max - 1)
        if vport is None:
            vport = np.zeros((self.mfunc_max, MLX4_MAX_PORTS, 8), dtype=np.uint16)
            vport[:, :, 0] = 4095                                   # default_vlan = MLX4_VGT
        self.vport = np.asarray(vport)
        self.smac_registered = (np.zeros((self.mfunc_max, MLX4_MAX_PORTS, 128), np.uint8)
                                if smac_registered is None else np.asarray(smac_registered))


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
    if offset < 0 or offset >= dev.profile.v2p_entries:
        raise Refused(offset, "virt2phys_pkey", dev.profile.v2p_entries)
    finding = FINDING_SPILL if index >= MLX4_MAX_PORT_PKEYS else FINDING_NONE
    return int(dev.virt2phys_pkey[offset]), finding


# -- cmd.c, main.c and device.h helpers ------------------------------------------------------------

def mlx4_get_parav_qkey(dev: Device, qpn: int) -> int | None:
    """main.c ``mlx4_get_parav_qkey``: the reserved Q_Key of a proxy or tunnel QP, else None.

    At the seed it reads ``caps.sqp_start`` and ``caps.base_tunnel_sqpn``; mainline reads
    ``phys_caps.base_proxy_sqpn`` and ``phys_caps.base_tunnel_sqpn``. Both are modelled as
    P = ``base_proxy_sqpn`` and T = P + 8 * MLX4_MFUNC_MAX (qp.c:849 ``base_tunnel_sqpn =
    base_sqpn + 8 + 8 * MLX4_MFUNC_MAX``; see paravirt_reference's docstring).
    """
    qk = MLX4_RESERVED_QKEY_BASE
    # if (qpn >= dev->phys_caps.base_tunnel_sqpn + 8 * MLX4_MFUNC_MAX ||
    #     qpn < dev->phys_caps.base_proxy_sqpn)
    #         return -EINVAL;
    if qpn >= dev.base_tunnel_sqpn + 8 * dev.mfunc_max or qpn < dev.base_proxy_sqpn:
        return None                        # -EINVAL
    if qpn >= dev.base_tunnel_sqpn:
        qk += qpn - dev.base_tunnel_sqpn   # tunnel qp
    else:
        qk += qpn - dev.base_proxy_sqpn
    return qk & 0xFFFFFFFF


def mlx4_is_qp_reserved(dev: Device, qpn: int) -> bool:
    """device.h ``mlx4_is_qp_reserved`` on the master (see paravirt_reference's docstring).

    ``(qpn < base_sqpn + 8 + 16 * MLX4_MFUNC_MAX * !!mlx4_is_master(dev) && qpn >= base_sqpn)
    || (qpn < dev->caps.reserved_qps_cnt[MLX4_QP_REGION_FW])`` (device.h:1241).
    """
    return ((dev.base_sqpn <= qpn < dev.base_sqpn + dev.profile.reserved_sqps)
            or qpn < dev.fw_reserved_qps)


def mlx4_vf_smi_enabled(dev: Device, slave: int, port: int) -> bool:
    """cmd.c ``mlx4_vf_smi_enabled``."""
    if slave < 1 or slave >= dev.mfunc_max or port < 1 or port > MLX4_MAX_PORTS:
        return False
    return bool(dev.smi_enabled[slave][port - 1])


def mlx4_get_active_ports(dev: Device, slave: int) -> int:
    """cmd.c ``mlx4_get_active_ports`` as a bitmask (bit p-1: physical port p)."""
    if slave == 0:
        return (1 << MLX4_MAX_PORTS) - 1
    if slave < 1 or slave > dev.last_vf:       # mlx4_get_vf_indx() < 0: slave > num_vfs
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
    v2p = np.asarray(virt2phys_pkey, dtype=np.uint8).reshape(-1)   # u8[MLX4_MFUNC_MAX][2][128], flat
    table = [int(x) for x in phys_table] + [0] * 32     # kcalloc'd, filled for i < 128
    out = bytearray(template_mad)
    index = block & 0xFFFFFFFF                          # u32 index = be32_to_cpu(smp->attr_mod)
    start = (index * 32) & 0xFFFFFFFF                   # vidx = index * 32 (u32 arithmetic)
    end = ((index + 1) * 32) & 0xFFFFFFFF
    finding = FINDING_NONE if index < MLX4_MAX_PORT_PKEYS // 32 else FINDING_SPILL
    vidx = start - (1 << 32) if start >= 1 << 31 else start   # int vidx
    while (vidx & 0xFFFFFFFF) < end:                    # vidx < (index + 1) * 32, unsigned compare
        offset = (slave * MLX4_MAX_PORTS + port_num - 1) * MLX4_MAX_PORT_PKEYS + vidx
        if offset < 0 or offset >= v2p.size:
            raise Refused(offset, "virt2phys_pkey", v2p.size)
        pidx = int(v2p[offset])                         # pidx = virt2phys_pkey[slave][port - 1][vidx]
        if pidx >= len(table):
            raise Refused(pidx, "the kcalloc'd P_Key table", len(table))
        if pidx >= MLX4_MAX_PORT_PKEYS:
            finding = FINDING_SPILL
        slot = IB_SMP_DATA_OFFSET + 2 * (vidx % 32)     # outtab[vidx % 32] (vidx >= 0 here)
        out[slot:slot + 2] = table[pidx].to_bytes(2, "big")
        vidx += 1
    return bytes(out), finding
