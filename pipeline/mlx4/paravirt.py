"""The mlx4 master's QP-context paravirtualization: the checked Python API.

What the SR-IOV master does to the inbox of a QP state transition a function (PF or VF) sends
it, as ``resource_tracker.c`` does it, at Linux 3.7 (profile ``"3.7"``, the seed) or mainline
(profile ``"mainline"``, alias ``"new"``, or a :class:`~madpipe.pipeline.mlx4.profiles.Profile` of
your own); and the virtualized SubnGetResp(P_KeyTable) a function receives::

    from madpipe.pipeline.mlx4 import paravirt
    out, rc = paravirt.rewrite(mailboxes, "INIT2RTR", slave, qpn, v2p,
                               base_proxy_sqpn=P, master=0, profile="3.7")
    out, rc, finding = paravirt.rewrite(..., return_findings=True)
    vf_mad = paravirt.virtual_pkey_getresp(phys_table, v2p, slave, port_num, block, template_mad)

The rules, the kernel sources they come from and the parts of mainline left out are in
``paravirt_reference``'s docstring. In short:

- ``rc``: 0 accepted; -22 (``-EINVAL``) rejected by ``verify_qp_parameters`` (or, profile new,
  by ``adjust_qp_sched_queue``); -1 (``-EPERM``) where mainline refuses; :data:`RC_REFUSED` (-34,
  ``-ERANGE``) where the C would read outside ``virt2phys_pkey``. For any ``rc != 0`` the output
  row is the input row.
- ``finding`` (``int8``): 0 none, 1 the P_Key index (128..255) spilled into the next row of the
  flat table (reproduced bit for bit), 2 refused.
- Sizes come from the profile: F = ``mfunc_max`` functions (80 at 3.7, 128 on mainline), so
  ``v2p`` is ``uint8[F, 2, 128]`` and ``active_ports``/``smi_enabled`` have F rows.
- QP numbers: the proxy QPs are ``P .. P + 8F - 1`` (``P = base_proxy_sqpn``), the tunnel QPs
  ``T .. T + 8F - 1`` with ``T = P + 8F`` (:func:`base_tunnel_sqpn`); function f owns
  ``P + 8f + k`` and ``T + 8f + k`` (k = 0, 1: QP0 of port 1, 2; k = 2, 3: QP1 of port 1, 2).
  There is no default for ``P``: it depends on the firmware (``base_sqpn + 8``).

Kernels compile once per process and are cached on disk (``madpipe.pipeline.kernels.jit``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from madpipe.codecs import qpc
from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.kernels import populate
from madpipe.pipeline.mlx4 import device_reference as device_ref
from madpipe.pipeline.mlx4 import eth_reference as eth_ref
from madpipe.pipeline.mlx4 import paravirt_kernels as K
from madpipe.pipeline.mlx4 import paravirt_reference as ref
from madpipe.pipeline.mlx4.profiles import PROFILES as PROFILES  # noqa: F401  (re-exported)
from madpipe.pipeline.mlx4.profiles import RULE_ETH_PORTS, Profile, resolve

MAX_PORTS = device_ref.MLX4_MAX_PORTS
MAX_PORT_PKEYS = device_ref.MLX4_MAX_PORT_PKEYS

RC_OK = device_ref.RC_OK
RC_EPERM = device_ref.RC_EPERM
RC_EINVAL = device_ref.RC_EINVAL
RC_REFUSED = device_ref.RC_REFUSED
FINDING_NONE = device_ref.FINDING_NONE
FINDING_SPILL = device_ref.FINDING_SPILL
FINDING_REFUSED = device_ref.FINDING_REFUSED

#: Transition name -> code (the mlx4 command opcode), in the order of the spec's table.
TRANSITIONS = dict(qpc.TRANSITIONS)
TRANSITION_NAMES = {code: name for name, code in TRANSITIONS.items()}

_QPN_SPACE = 1 << 24


class Refused(MadpipeError, ValueError):
    """virtual_pkey_getresp: the C would read outside ``virt2phys_pkey`` (or its P_Key table)."""


class GetResp(NamedTuple):
    """virtual_pkey_getresp(..., return_finding=True): the MAD and its finding (0 or 1)."""
    mad: np.ndarray
    finding: int


def base_tunnel_sqpn(base_proxy_sqpn: int, profile="3.7") -> int:
    """T = P + 8 * MLX4_MFUNC_MAX (80 at 3.7, 128 on mainline): the first tunnel QP number."""
    return resolve(profile).base_tunnel_sqpn(base_proxy_sqpn)


# -- argument checking ------------------------------------------------------------------------------

def _array(name: str, value, dtype, shape: tuple, profile: Profile | None = None) -> np.ndarray:
    """``value`` as-is when it is a C-contiguous ndarray of ``dtype`` and ``shape`` (None = any);
    a shape error names the ``profile`` the shape comes from."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array of {np.dtype(dtype).name}, got {type(value).__name__}")
    if value.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype}")
    want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        why = "" if profile is None else f" for profile {profile.name} (MLX4_MFUNC_MAX {profile.mfunc_max})"
        raise ValueError(f"{name}: expected shape {want}{why}, got {value.shape}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous (use np.ascontiguousarray)")
    return value


def _integers(name: str, value, n: int, lo: int, hi: int, dtype) -> np.ndarray:
    """A scalar or a length-n array of integers in lo..hi, as a C-contiguous ``dtype`` array."""
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_):
        raise ValueError(f"{name}: expected integers, got {arr.dtype if arr.dtype != object else type(value).__name__}")
    if arr.ndim == 0:
        if not lo <= int(arr) <= hi:
            raise ValueError(f"{name}: values must be in {lo}..{hi}, got {int(arr)}")
        return np.full(n, arr, dtype=dtype)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected a scalar or shape ({n},), got {arr.shape}")
    info = np.iinfo(arr.dtype)
    if info.min >= lo and info.max <= hi:  # every value of the dtype is in range: nothing to scan
        return np.ascontiguousarray(arr, dtype=dtype)
    if n and (int(arr.min()) < lo or int(arr.max()) > hi):
        bad = arr[(arr < lo) | (arr > hi)][0]
        raise ValueError(f"{name}: values must be in {lo}..{hi}, got {int(bad)}")
    return np.ascontiguousarray(arr, dtype=dtype)


_VALID_CODE = np.zeros(256, dtype=np.bool_)
_VALID_CODE[list(TRANSITION_NAMES)] = True


def _transitions(value, n: int) -> np.ndarray:
    """Names ("INIT2RTR"), or opcodes, one or per row -> uint8[n] opcodes."""
    valid = ", ".join(TRANSITIONS)
    if isinstance(value, str):
        if value not in TRANSITIONS:
            raise ValueError(f"transition: unknown name {value!r}; valid: {valid}")
        return np.full(n, TRANSITIONS[value], dtype=np.uint8)
    arr = np.asarray(value)
    if arr.ndim == 0:
        return _transitions(arr.item() if arr.dtype.kind in "US" else arr.reshape(1).repeat(n), n)
    if arr.shape != (n,):
        raise ValueError(f"transition: expected one name or shape ({n},), got {arr.shape}")
    if arr.dtype.kind in "USO":
        names, inverse = np.unique(arr.astype(str), return_inverse=True)
        unknown = [str(x) for x in names if str(x) not in TRANSITIONS]
        if unknown:
            raise ValueError(f"transition: unknown name {unknown[0]!r}; valid: {valid}")
        codes = np.array([TRANSITIONS[str(x)] for x in names], dtype=np.uint8)
        return codes[inverse.reshape(-1)] if n else np.zeros(0, dtype=np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
        # A table lookup, not np.isin: this check runs on every call, in front of a kernel that
        # rewrites ~20M mailboxes a second.
        in_byte = arr if arr.dtype == np.uint8 else np.where((arr >= 0) & (arr <= 0xFF), arr, 0).astype(np.uint8)
        ok = _VALID_CODE[in_byte] if arr.dtype == np.uint8 else _VALID_CODE[in_byte] & (arr >= 0) & (arr <= 0xFF)
        if not ok.all():
            raise ValueError(f"transition: unknown code {int(arr[~ok][0])}; valid: "
                             + ", ".join(f"{name}={code:#04x}" for name, code in TRANSITIONS.items()))
        return np.ascontiguousarray(arr, dtype=np.uint8)
    raise ValueError(f"transition: expected names or opcodes, got {arr.dtype}")


def _eth_options(prof: Profile, port_types, num_vfs, vport, smac_registered):
    """The Ethernet device state (see :func:`rewrite`), checked, with defaults: (port_types,
    last_vf, vport, smac_registered)."""
    f = prof.mfunc_max
    if port_types is None:
        port_types = np.ones(MAX_PORTS, dtype=np.uint8)
    else:
        port_types = _array("port_types", np.ascontiguousarray(port_types, dtype=np.uint8)
                            if isinstance(port_types, (list, tuple)) else port_types, np.uint8, (MAX_PORTS,))
    if num_vfs is None:
        last_vf = f - 1
    elif isinstance(num_vfs, bool) or not isinstance(num_vfs, (int, np.integer)) or not 0 <= num_vfs <= prof.max_num_vf:
        raise ValueError(f"num_vfs: expected None or an int in 0..{prof.max_num_vf} (MLX4_MAX_NUM_VF of profile "
                         f"{prof.name}), got {num_vfs!r}")
    else:
        last_vf = int(num_vfs)
    if vport is None:
        vport = vport_state(prof)
    else:
        vport = _array("vport", vport, np.uint16, (f, MAX_PORTS, eth_ref.VPORT_COLUMNS), prof)
    if smac_registered is None:
        smac_registered = np.zeros((f, MAX_PORTS, 128), dtype=np.uint8)
    else:
        if isinstance(smac_registered, np.ndarray) and smac_registered.dtype == np.bool_:
            smac_registered = smac_registered.astype(np.uint8)
        smac_registered = _array("smac_registered", smac_registered, np.uint8, (f, MAX_PORTS, 128), prof)
    return port_types, last_vf, vport, smac_registered


def _kernel_rules(prof: Profile, port_types: np.ndarray, vport: np.ndarray) -> int:
    """The profile's rule bits for the kernels, without the Ethernet rule when it can change nothing
    (no Ethernet port, no VF with VST or spoof check): the kernels then skip those branches."""
    rules = prof.rules
    if rules & RULE_ETH_PORTS and not (port_types == eth_ref.MLX4_PORT_TYPE_ETH).any():
        vst = vport[:, :, eth_ref.VPORT_DEFAULT_VLAN] != eth_ref.MLX4_VGT
        if not (vst.any() or vport[:, :, eth_ref.VPORT_SPOOFCHK].any()):
            rules &= ~RULE_ETH_PORTS
    return rules


def vport_state(profile="mainline") -> np.ndarray:
    """Every VF's vport state as ``ip link set ... vf`` leaves it by default: ``uint16[F, 2, 8]``,
    columns ``VPORT_*`` (default_vlan MLX4_VGT = 4095, i.e. no VST; QoS 0; link auto; spoof
    check off; indices 0). Set ``vport[vf, port - 1, VPORT_DEFAULT_VLAN] = 100`` for VST."""
    state = np.zeros((resolve(profile).mfunc_max, MAX_PORTS, eth_ref.VPORT_COLUMNS), dtype=np.uint16)
    state[:, :, eth_ref.VPORT_DEFAULT_VLAN] = eth_ref.MLX4_VGT
    return state


def _options(base_proxy_sqpn, master, prof: Profile, active_ports, smi_enabled, fw_reserved_qps):
    f = prof.mfunc_max
    if isinstance(base_proxy_sqpn, bool) or not isinstance(base_proxy_sqpn, (int, np.integer)):
        raise ValueError(f"base_proxy_sqpn: expected an int, got {type(base_proxy_sqpn).__name__}")
    p = int(base_proxy_sqpn)
    if p < 8 or p % 8 or p + 16 * f > _QPN_SPACE:
        raise ValueError(f"base_proxy_sqpn: expected a multiple of 8 in 8..{_QPN_SPACE - 16 * f} "
                         f"(base_sqpn + 8, with the proxy and tunnel QPs inside the 24-bit QP space), got {p}")
    if isinstance(master, bool) or not isinstance(master, (int, np.integer)) or not 0 <= master < f:
        raise ValueError(f"master: expected a function number in 0..{f - 1} (profile {prof.name}), got {master!r}")
    if active_ports is None:
        active_ports = np.full(f, 3, dtype=np.uint8)
    else:
        active_ports = _array("active_ports", active_ports, np.uint8, (f,), prof)
    if smi_enabled is None:
        smi_enabled = np.zeros((f, MAX_PORTS), dtype=np.uint8)
    else:
        if isinstance(smi_enabled, np.ndarray) and smi_enabled.dtype == np.bool_:
            smi_enabled = smi_enabled.astype(np.uint8)
        smi_enabled = _array("smi_enabled", smi_enabled, np.uint8, (f, MAX_PORTS), prof)
    if (isinstance(fw_reserved_qps, bool) or not isinstance(fw_reserved_qps, (int, np.integer))
            or not 0 <= fw_reserved_qps <= _QPN_SPACE):
        raise ValueError(f"fw_reserved_qps: expected an int in 0..{_QPN_SPACE}, got {fw_reserved_qps!r}")
    return p, int(master), active_ports, smi_enabled, int(fw_reserved_qps)


def _prepare(mailboxes, transition, slave, qpn, v2p, base_proxy_sqpn, master, profile,
             active_ports, smi_enabled, fw_reserved_qps, eth=(None, None, None, None)):
    prof = resolve(profile)
    mailboxes = _array("mailboxes", mailboxes, np.uint8, (None, qpc.MBOX_SIZE))
    n = mailboxes.shape[0]
    codes = _transitions(transition, n)
    slaves = _integers("slave", slave, n, -(1 << 31), (1 << 31) - 1, np.int32)
    qpns = _integers("qpn", qpn, n, 0, (1 << 32) - 1, np.uint32)
    v2p = _array("v2p", v2p, np.uint8, prof.v2p_shape, prof)
    opts = _options(base_proxy_sqpn, master, prof, active_ports, smi_enabled, fw_reserved_qps)
    return mailboxes, codes, slaves, qpns, v2p, prof, opts + _eth_options(prof, *eth)


def _out(out, mailboxes: np.ndarray) -> np.ndarray:
    """rewrite's ``out``: the input's shape, writeable, and either the input or apart from it."""
    out = _array("out", out, np.uint8, mailboxes.shape)
    if not out.flags.writeable:
        raise ValueError("out: must be writeable")
    same = out.ctypes.data == mailboxes.ctypes.data
    if not same and np.may_share_memory(out, mailboxes):  # O(1): compares the arrays' bounds
        raise ValueError("out: overlaps mailboxes without being it (pass mailboxes itself to rewrite in place)")
    return out


# -- rewrite ----------------------------------------------------------------------------------------

def rewrite(mailboxes, transition, slave, qpn, v2p, *, base_proxy_sqpn, master=0, profile="3.7",
            active_ports=None, smi_enabled=None, fw_reserved_qps=0, port_types=None, num_vfs=None, vport=None,
            smac_registered=None, return_findings=False, out=None):
    """Rewrite QP-context mailboxes as the mlx4 master does before handing them to firmware.

    mailboxes: ``uint8[N, 256]`` (not modified). transition: a name from :data:`TRANSITIONS`
    ("INIT2RTR"...) or opcodes, one for all rows or one per row. slave: the issuing function
    (int or ``int[N]``; values outside 0..F-1 are handled, never crash). qpn: the command's input
    modifier (int or ``int[N]``, 0..2**32-1). v2p: ``uint8[F, 2, 128]`` ``virt2phys_pkey``, F the
    profile's ``mfunc_max`` (80 at 3.7, 128 on mainline). base_proxy_sqpn: P (required). master:
    the master's function number. profile: "3.7", "mainline" ("new") or a
    :class:`~madpipe.pipeline.mlx4.profiles.Profile`. Mainline options: active_ports ``uint8[F]``
    (bitmask of the physical ports each function owns; default both), smi_enabled
    ``uint8/bool[F, 2]`` (default none), fw_reserved_qps (``caps.reserved_qps_cnt[FW]``, default 0).

    Ethernet ports (mainline's ``eth_ports`` rule; :mod:`.eth_reference` has the rules and the C):
    port_types ``uint8[2]`` (1 InfiniBand, the default, or 2 Ethernet, per physical port);
    num_vfs (the VFs ``mlx4_get_vf_indx`` knows, which the RoCE GID split counts; default every
    function); vport ``uint16[F, 2, 8]``, each VF's vport state per port (:func:`vport_state`,
    columns ``eth_reference.VPORT_*``: default_vlan, default_qos, link_state, spoofchk, vlan_idx,
    mac_idx, qos_vport, vlan_proto); smac_registered ``uint8/bool[F, 2, 128]``, the source MAC
    indices each function registered (``roce_verify_mac``; default none).

    out: a ``uint8[N, 256]`` buffer to write into (reused from call to call, its pages are
    already mapped: the fastest way); it may be ``mailboxes`` itself (in place), but not overlap
    it otherwise. Without it, one new array, written once.

    Returns ``(out, rc)``, or ``(out, rc, finding)`` with ``return_findings=True``.
    """
    mailboxes, codes, slaves, qpns, v2p, prof, opts = _prepare(
        mailboxes, transition, slave, qpn, v2p, base_proxy_sqpn, master, profile, active_ports,
        smi_enabled, fw_reserved_qps, (port_types, num_vfs, vport, smac_registered))
    p, master, active_ports, smi_enabled, fw_reserved, port_types, last_vf, vport, smac = opts
    n = mailboxes.shape[0]
    fresh = out is None
    out = np.empty_like(mailboxes) if fresh else _out(out, mailboxes)
    rc = np.empty(n, dtype=np.int32)
    finding = np.empty(n, dtype=np.int8)
    # A new output: every row is written, so its pages are mapped on another core meanwhile
    # (0.83x the call's time for 1M mailboxes; for smp_snoop's flags and rewrite_inplace's return
    # codes, 5-6 MB, it gained nothing measurable).
    mapping = populate.ahead(out, rc, finding) if fresh else None
    K.rewrite_kernel(mailboxes, out, codes, slaves, qpns, v2p, p, master, _kernel_rules(prof, port_types, vport),
                     prof.mfunc_max,
                     active_ports, smi_enabled, fw_reserved, port_types, last_vf, vport, smac, rc, finding)
    if mapping is not None:
        mapping.result()
    return (out, rc, finding) if return_findings else (out, rc)


def rewrite_inplace(mailboxes, transition, slave, qpn, v2p, *, base_proxy_sqpn, master=0, profile="3.7",
                    active_ports=None, smi_enabled=None, fw_reserved_qps=0, port_types=None, num_vfs=None,
                    vport=None, smac_registered=None, return_findings=False):
    """:func:`rewrite`, writing into ``mailboxes`` itself; returns ``(mailboxes, rc[, finding])``.

    Rows with ``rc != 0`` are left exactly as they were.
    """
    mailboxes, codes, slaves, qpns, v2p, prof, opts = _prepare(
        mailboxes, transition, slave, qpn, v2p, base_proxy_sqpn, master, profile, active_ports,
        smi_enabled, fw_reserved_qps, (port_types, num_vfs, vport, smac_registered))
    p, master, active_ports, smi_enabled, fw_reserved, port_types, last_vf, vport, smac = opts
    n = mailboxes.shape[0]
    rc = np.empty(n, dtype=np.int32)
    finding = np.empty(n, dtype=np.int8)
    K.rewrite_inplace_kernel(mailboxes, codes, slaves, qpns, v2p, p, master, _kernel_rules(prof, port_types, vport),
                             prof.mfunc_max,
                             active_ports, smi_enabled, fw_reserved, port_types, last_vf, vport, smac, rc, finding)
    return (mailboxes, rc, finding) if return_findings else (mailboxes, rc)


def rewrite_reference(mailboxes, transition, slave, qpn, v2p, *, base_proxy_sqpn, master=0, profile="3.7",
                      active_ports=None, smi_enabled=None, fw_reserved_qps=0, port_types=None, num_vfs=None,
                      vport=None, smac_registered=None, return_findings=False):
    """:func:`rewrite` computed by the pure-Python reference model (slow; for checking)."""
    mailboxes, codes, slaves, qpns, v2p, prof, opts = _prepare(
        mailboxes, transition, slave, qpn, v2p, base_proxy_sqpn, master, profile, active_ports,
        smi_enabled, fw_reserved_qps, (port_types, num_vfs, vport, smac_registered))
    p, master, active_ports, smi_enabled, fw_reserved, port_types, last_vf, vport, smac = opts
    dev = device_ref.Device(v2p, p, master=master, profile=prof, active_ports=active_ports,
                            smi_enabled=smi_enabled, fw_reserved_qps=fw_reserved, port_types=port_types,
                            num_vfs=last_vf, vport=vport, smac_registered=smac)
    out, rc, finding = ref.rewrite(mailboxes, codes, slaves, qpns, dev)
    return (out, rc, finding) if return_findings else (out, rc)


# -- virtualized SubnGetResp(P_KeyTable) ------------------------------------------------------------

def virtual_pkey_getresp(phys_table, v2p, slave, port_num, block, template_mad, *, profile="mainline",
                         return_finding=False):
    """The SubnGetResp(P_KeyTable) a function receives for ``block`` (mainline MAD_IFC wrapper).

    phys_table: ``uint16[128]``, that port's physical P_Key table. v2p: ``uint8[F, 2, 128]``, F the
    profile's ``mfunc_max`` (default mainline, 128: the MAD_IFC wrapper is mainline's).
    slave: the asking function (the master goes through the same path with its own row).
    port_num: 1 or 2. block: the SMP's attribute modifier, 0..2**32-1 (the C does not
    range-check it). template_mad: ``uint8[256]``, what firmware returned for the master's last
    physical block read; everything outside the 32 P_Keys is copied from it.

    Entry v of the block is ``phys_table[v2p[slave][port_num - 1][v]]`` read through the flat
    ``u8[F][2][128]`` table, so blocks past 3 read the next rows like the C (finding 1); a
    ``v2p`` value of 128..159 reads 0 from the zeroed tail of the C's table (finding 1).
    Raises :class:`Refused` (a ValueError) where the C would read outside ``virt2phys_pkey`` or
    past its 160-entry table; nothing is returned then.

    Returns the ``uint8[256]`` MAD, or :class:`GetResp` ``(mad, finding)`` with
    ``return_finding=True``.
    """
    prof = resolve(profile)
    phys_table = _array("phys_table", phys_table, np.uint16, (MAX_PORT_PKEYS,))
    v2p = _array("v2p", v2p, np.uint8, prof.v2p_shape, prof)
    template_mad = _array("template_mad", template_mad, np.uint8, (256,))
    for name, value in (("slave", slave), ("port_num", port_num), ("block", block)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}: expected an int, got {type(value).__name__}")
    if port_num not in (1, 2):
        raise ValueError(f"port_num: expected 1 or 2 (1-based), got {port_num}")
    if not 0 <= block < 1 << 32:
        raise ValueError(f"block: expected the 32-bit attribute modifier, 0..{(1 << 32) - 1}, got {block}")
    try:
        mad, finding = device_ref.virtual_pkey_getresp(phys_table, v2p, int(slave), int(port_num), int(block),
                                                       template_mad.tobytes())
    except device_ref.Refused as exc:
        raise Refused(f"virtual_pkey_getresp(slave={slave}, port_num={port_num}, block={block}): "
                      f"refused, {exc}") from None
    mad = np.frombuffer(mad, dtype=np.uint8).copy()
    return GetResp(mad, finding) if return_finding else mad
