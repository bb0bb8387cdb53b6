"""Kernel profiles as data: the sizes and the rules of one mlx4 master, in one frozen record.

Every API of this package that takes ``profile=`` takes a name (``"3.7"``, ``"mainline"``, or
``"new"``, an alias of mainline) or a :class:`Profile`, and sizes its arrays from it::

    from madpipe.pipeline.mlx4.profiles import MAINLINE, resolve
    distro = MAINLINE.derive(name="distro-80", mfunc_max=80, max_num_vf=64)  # mainline rules, 80 functions
    cache, v2p = snoop.init_pkeys(num_vfs=64, profile=distro)             # v2p is uint8[80, 2, 128]

Sources. Profile 3.7 is the seed commit 54679e148287 (Linux 3.7, ``/work/shared/seed``) and the
3.7 tree's ``include/linux/mlx4/device.h``. Profile mainline is torvalds/linux today; the line
numbers below are those of the mlx4 files as read (Mellanox OFED 5.0's copy of mainline's
``drivers/net/ethernet/mellanox/mlx4`` and ``drivers/infiniband/hw/mlx4``: the same code, whose
lines can sit a few lines off today's mainline), each quoted so that a grep finds it in any tree.

Sizes (``include/linux/mlx4/device.h``)::

    3.7       MLX4_MAX_NUM_PF = 16, MLX4_MAX_NUM_VF = 64,  MLX4_MFUNC_MAX = 80
    mainline  MLX4_MAX_NUM_PF = 16, MLX4_MAX_NUM_VF = 126, MLX4_MFUNC_MAX = 128   (device.h:133-136)

and from them, on the master (P = base_proxy_sqpn = base_sqpn + 8):

- ``virt2phys_pkey`` is ``u8[MLX4_MFUNC_MAX][MLX4_MAX_PORTS][MLX4_MAX_PORT_PKEYS]`` (mlx4_ib.h,
  ``struct pkey_mgt``); ``active_ports``/``smi_enabled`` one row a function.
- ``base_tunnel_sqpn = base_sqpn + 8 + 8 * MLX4_MFUNC_MAX`` (qp.c:849), so T = P + 8 * mfunc_max;
  ``mlx4_get_parav_qkey`` (main.c:1357) gives Q_Keys to P .. T + 8 * mfunc_max - 1.
- ``mlx4_is_qp_reserved`` (device.h:1239): ``base_sqpn <= qpn < base_sqpn + 8 + 16 *
  MLX4_MFUNC_MAX`` on the master, or ``qpn < reserved_qps_cnt[MLX4_QP_REGION_FW]``.
- ``caps.sqp_demux = MLX4_MAX_NUM_SLAVES`` on the master (main.c:1289), ``MLX4_MAX_NUM_SLAVES =
  min(MLX4_MAX_NUM_PF + MLX4_MAX_NUM_VF, MLX4_MFUNC_MAX)`` (mlx4.h:255): the functions
  ``__propagate_pkey_ev`` (mad.c:339) loops over; 128 on mainline. The seed loops
  ``for (slave = 0; slave <= num_vfs; ++slave)`` instead.
- ``num_vfs`` is at most ``MLX4_MAX_NUM_VF`` (main.c:4570 ``if (total_vfs > MLX4_MAX_NUM_VF)``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: The flag bits the paravirt kernels take in their ``rules`` argument (one per Profile rule).
RULE_VERIFY_BRACES = 1 << 0
RULE_XRC_LIKE_RC = 1 << 1
RULE_CLEAR_FPP = 1 << 2
RULE_RATE_LIMIT_EPERM = 1 << 3
RULE_MLX_QP_RESERVED_EPERM = 1 << 4
RULE_ADJUST_SCHED_QUEUE = 1 << 5
RULE_ETH_PORTS = 1 << 6


@dataclass(frozen=True)
class Profile:
    """One kernel's sizes and rules. Derive your own with :meth:`derive`.

    Sizes (device.h, mlx4_ib.h):

    - ``mfunc_max``: ``MLX4_MFUNC_MAX``, the functions the master's tables hold (80, 128).
    - ``max_num_vf``: ``MLX4_MAX_NUM_VF``, the most VFs ``num_vfs`` may ask for (64, 126).
    - ``max_num_pf``: ``MLX4_MAX_NUM_PF`` (16), for ``MLX4_MAX_NUM_SLAVES``.
    - ``max_ports`` (``MLX4_MAX_PORTS``, 2), ``max_port_pkeys`` (``MLX4_MAX_PORT_PKEYS``, 128),
      ``num_alias_guid_rec_in_port`` (mlx4_ib.h ``NUM_ALIAS_GUID_REC_IN_PORT``, 16): the same in
      every kernel, and fixed here (the kernels' cache and mailbox layouts are built on them).

    Rules (True: the kernel has it):

    - ``slave_events``: smp_snoop's SR-IOV events (mad.c): ``__propagate_pkey_ev`` after a
      changed P_Key block (mad.c:285), LID change and client reregister forwarded to every VF
      (``handle_lid_change_event`` mad.c:1187, ``handle_client_rereg_event`` mad.c:1196), and a
      Set(GUIDInfo) handed to ``mlx4_ib_update_cache_on_guid_change`` (mad.c:301). None at 3.7.
    - ``verify_braces``: ``verify_qp_parameters`` checks the alternate path for slaves only; the
      seed's missing braces apply it to the master too.
    - ``xrc_like_rc``: ``case MLX4_QP_ST_XRC`` beside RC and UC in ``verify_qp_parameters`` and
      ``update_gid`` (resource_tracker.c:3339, 738).
    - ``clear_fpp``: ``qp_ctx->params2 &= ~cpu_to_be32(MLX4_QP_BIT_FPP)`` for slaves
      (resource_tracker.c:3292).
    - ``rate_limit_eperm``: ``if (qp_ctx->rate_limit_params) return -EPERM`` for slaves
      (resource_tracker.c:3294).
    - ``mlx_qp_reserved_eperm``: ``case MLX4_QP_ST_MLX`` ... "only enabled VFs may create MLX
      proxy QPs" (resource_tracker.c:3373-3381).
    - ``adjust_sched_queue``: ``adjust_qp_sched_queue`` (resource_tracker.c:3898) before the
      wrappers that carry an address path.
    - ``eth_ports``: the Ethernet (RoCE) branches of those wrappers (``mlx4_is_eth``): per-slave
      GID counts in ``verify_qp_parameters``, ``roce_verify_mac`` and ``update_vport_qp_param`` in
      INIT2RTR, the base GID index in ``update_gid``, the forced sched_queue write
      (:mod:`.eth_reference` has the lines). Without it every port is InfiniBand.
    """

    name: str
    mfunc_max: int
    max_num_vf: int
    slave_events: bool
    verify_braces: bool
    xrc_like_rc: bool
    clear_fpp: bool
    rate_limit_eperm: bool
    mlx_qp_reserved_eperm: bool
    adjust_sched_queue: bool
    eth_ports: bool
    max_num_pf: int = 16
    max_ports: int = 2
    max_port_pkeys: int = 128
    num_alias_guid_rec_in_port: int = 16

    def __post_init__(self):
        for name in ("mfunc_max", "max_num_vf", "max_num_pf"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"profile {self.name}: {name} must be an int, got {value!r}")
        # Function numbers travel in a u8 and a 128-bit event mask; VFs are functions 1..num_vfs.
        if not 2 <= self.mfunc_max <= 128:
            raise ValueError(f"profile {self.name}: mfunc_max must be in 2..128, got {self.mfunc_max}")
        if not 1 <= self.max_num_vf <= self.mfunc_max - 1:
            raise ValueError(f"profile {self.name}: max_num_vf must be in 1..mfunc_max - 1 = "
                             f"{self.mfunc_max - 1}, got {self.max_num_vf}")
        fixed = {"max_ports": 2, "max_port_pkeys": 128, "num_alias_guid_rec_in_port": 16}
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise ValueError(f"profile {self.name}: {name} is {value} in every mlx4 kernel "
                                 f"(the models' layouts are built on it), got {getattr(self, name)}")
        for name in ("slave_events", "verify_braces", "xrc_like_rc", "clear_fpp", "rate_limit_eperm",
                     "mlx_qp_reserved_eperm", "adjust_sched_queue", "eth_ports"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"profile {self.name}: {name} must be True or False, got {getattr(self, name)!r}")

    def derive(self, **changes) -> "Profile":
        """A copy with ``changes`` (``dataclasses.replace``), e.g. ``MAINLINE.derive(name="distro",
        mfunc_max=80, max_num_vf=64)``."""
        return dataclasses.replace(self, **changes)

    # -- derived sizes ---------------------------------------------------------------------------

    @property
    def v2p_shape(self) -> tuple[int, int, int]:
        """The shape of ``virt2phys_pkey``: ``(mfunc_max, 2, 128)``."""
        return (self.mfunc_max, self.max_ports, self.max_port_pkeys)

    @property
    def v2p_entries(self) -> int:
        return self.mfunc_max * self.max_ports * self.max_port_pkeys

    @property
    def max_num_slaves(self) -> int:
        """``MLX4_MAX_NUM_SLAVES = min(MLX4_MAX_NUM_PF + MLX4_MAX_NUM_VF, MLX4_MFUNC_MAX)``: the
        master's ``caps.sqp_demux``."""
        return min(self.max_num_pf + self.max_num_vf, self.mfunc_max)

    @property
    def proxy_offset(self) -> int:
        """``base_proxy_sqpn - base_sqpn`` (qp.c:848): 8."""
        return 8

    @property
    def tunnel_offset(self) -> int:
        """``base_tunnel_sqpn - base_sqpn = 8 + 8 * MLX4_MFUNC_MAX`` (qp.c:849)."""
        return 8 + 8 * self.mfunc_max

    @property
    def reserved_sqps(self) -> int:
        """QPs from ``base_sqpn`` on that ``mlx4_is_qp_reserved`` counts on the master:
        ``8 + 16 * MLX4_MFUNC_MAX`` (device.h:1241)."""
        return 8 + 16 * self.mfunc_max

    def base_tunnel_sqpn(self, base_proxy_sqpn: int) -> int:
        """T = P + 8 * mfunc_max."""
        return int(base_proxy_sqpn) + 8 * self.mfunc_max

    @property
    def rules(self) -> int:
        """The paravirt rules as the kernels' bit mask (``RULE_*``)."""
        bits = 0
        for flag, bit in ((self.verify_braces, RULE_VERIFY_BRACES), (self.xrc_like_rc, RULE_XRC_LIKE_RC),
                          (self.clear_fpp, RULE_CLEAR_FPP), (self.rate_limit_eperm, RULE_RATE_LIMIT_EPERM),
                          (self.mlx_qp_reserved_eperm, RULE_MLX_QP_RESERVED_EPERM),
                          (self.adjust_sched_queue, RULE_ADJUST_SCHED_QUEUE), (self.eth_ports, RULE_ETH_PORTS)):
            if flag:
                bits |= bit
        return bits


#: The seed commit (Linux 3.7).
PROFILE_37 = Profile(name="3.7", mfunc_max=80, max_num_vf=64, slave_events=False, verify_braces=False,
                     xrc_like_rc=False, clear_fpp=False, rate_limit_eperm=False, mlx_qp_reserved_eperm=False,
                     adjust_sched_queue=False, eth_ports=False)

#: torvalds/linux today.
MAINLINE = Profile(name="mainline", mfunc_max=128, max_num_vf=126, slave_events=True, verify_braces=True,
                   xrc_like_rc=True, clear_fpp=True, rate_limit_eperm=True, mlx_qp_reserved_eperm=True,
                   adjust_sched_queue=True, eth_ports=True)

#: Built-in names; "new" is mainline's older name.
PROFILES: dict[str, Profile] = {"3.7": PROFILE_37, "mainline": MAINLINE, "new": MAINLINE}

#: Rule fields, in the order of the table the CLI and README show.
RULE_FIELDS = ("slave_events", "verify_braces", "xrc_like_rc", "clear_fpp", "rate_limit_eperm",
               "mlx_qp_reserved_eperm", "adjust_sched_queue", "eth_ports")


def resolve(profile) -> Profile:
    """A :class:`Profile` from a built-in name or a Profile; a one-line error otherwise."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str) and profile in PROFILES:
        return PROFILES[profile]
    raise ValueError(f"profile: expected one of {', '.join(repr(p) for p in PROFILES)} or a Profile, "
                     f"got {profile!r}")


def table() -> str:
    """The built-in profiles side by side, one row a size or rule (for --help and the README)."""
    rows = [("", "3.7", "mainline")]
    rows += [(name, str(getattr(PROFILE_37, name)), str(getattr(MAINLINE, name)))
             for name in ("mfunc_max", "max_num_vf", "max_num_slaves")]
    rows.append(("virt2phys_pkey", "x".join(map(str, PROFILE_37.v2p_shape)),
                 "x".join(map(str, MAINLINE.v2p_shape))))
    rows.append(("tunnel base T - P", str(8 * PROFILE_37.mfunc_max), str(8 * MAINLINE.mfunc_max)))
    rows.append(("reserved QPs from base_sqpn", str(PROFILE_37.reserved_sqps), str(MAINLINE.reserved_sqps)))
    rows += [(name, "yes" if getattr(PROFILE_37, name) else "no", "yes" if getattr(MAINLINE, name) else "no")
             for name in RULE_FIELDS]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {a:<{width}}  {b:<8}  {c}" for a, b, c in rows)
