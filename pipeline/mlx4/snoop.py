"""The mlx4 master's view of SubnSet MADs: ``init_pkeys`` and ``smp_snoop`` over batches.

::

    from madpipe.pipeline.mlx4 import snoop
    cache, v2p = snoop.init_pkeys(num_vfs=4, num_ports=2, pkey_table_len=128, master=0, profile="mainline")
    res = snoop.smp_snoop(cache, v2p, mads, port_num=1, status=0, num_vfs=4, master=0, profile="mainline")
    res.master_event.nonzero()    # frames that raised IB_EVENT_PKEY_CHANGE on the master

``mads`` is ``uint8[N, 256]`` (the requests, in frame order); ``port_num`` ``uint8[N]`` (1-based)
or one int; ``status`` ``uint16[N]``, the status of firmware's answer to each request (the
GetResp with the same TID), or one int. ``cache`` (``phys_pkey_cache``, ``uint16[2, 128]``) is
updated in place, ``v2p`` (``virt2phys_pkey``, ``uint8[F, 2, 128]``, F the profile's
``MLX4_MFUNC_MAX``: 80 at 3.7, 128 on mainline) only read. The result is a :class:`SnoopResult`.

``profile="3.7"`` is the seed commit (no VF events; ``port_mgmt_change_events=True`` skips the
snoop, as when the device reports port-management changes itself); ``profile="mainline"`` (or
its older name ``"new"``) is mainline (per-VF P_Key-change events from ``__propagate_pkey_ev``
for functions up to 127); a :class:`~madpipe.pipeline.mlx4.profiles.Profile` of your own sizes
and rules the run (``MAINLINE.derive(mfunc_max=80, max_num_vf=64)``: mainline rules, 80
functions). The rules, including what
happens to block numbers past the table, are in :mod:`madpipe.pipeline.mlx4.snoop_reference`.

PortInfo state: ``port_lid`` (``uint16[2]``, the LID firmware holds on each port, what the kernel
compares a Set's LID with), ``sm_lid`` (``uint16[2]``) and ``sm_sl`` (``uint8[2]``, the SM address
the master keeps). Pass your own arrays to carry them from one batch to the next (they are
updated in place); leave them out to start from zeros (no LID assigned yet). The result holds
the arrays used.

``result.slave_events`` is compact (:class:`~madpipe.pipeline.mlx4.slave_events.SlaveEvents`):
the MADs that raised VF events and the functions as bits; ``.dense()`` is the ``bool[N, F]``
that releases up to 0.1 returned, which ``dense=True`` still returns (deprecated, for one
release).

``smp_snoop_reference`` takes the same arguments and runs the pure-Python model instead of the
numba kernel; the two give identical results.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from madpipe.codecs import wire
from madpipe.pipeline.mlx4 import snoop_reference as _ref
from madpipe.pipeline.mlx4.profiles import PROFILES, Profile, resolve
from madpipe.pipeline.mlx4.slave_events import SlaveEvents
from madpipe.pipeline.mlx4.snoop_kernels import smp_snoop_kernel

FINDING_NONE = _ref.FINDING_NONE        # nothing out of range
FINDING_SPILL = _ref.FINDING_SPILL      # P_KeyTable block past the port's row, inside the table: applied
FINDING_REFUSED = _ref.FINDING_REFUSED  # would leave the kernel's table (or bad port): not applied

MLX4_MAX_PORTS = _ref.MLX4_MAX_PORTS
MLX4_MAX_PORT_PKEYS = _ref.MLX4_MAX_PORT_PKEYS
MAD_SIZE = 256


@dataclass
class SnoopResult:
    """Per-MAD outputs (length N, frame order) and the PortInfo state after the batch.

    pkey_change_bitmap  uint32[N]    bit i: P_Key i of the block changed (P_KeyTable Sets)
    master_event        bool[N]      IB_EVENT_PKEY_CHANGE on the master (bitmap non-zero)
    slave_events        SlaveEvents  which function got a P_Key-change EQE for which MAD
                                     (mainline), compact: ``.dense()`` is the bool[N, F]
                                     matrix, ``.pairs()`` its (mad, function) pairs; with
                                     ``smp_snoop(..., dense=True)`` the bool[N, F] itself
    slave_rows          int64[E]     the MADs that raised any slave event, in order, and for each
    slave_bits          uint64[E, 2] the functions as bits (f: bit f % 64 of word f // 64). The
                                     kernel writes only these, not F bytes for every MAD
    finding             int8[N]      FINDING_NONE, FINDING_SPILL or FINDING_REFUSED
    lid_change          bool[N]      IB_EVENT_LID_CHANGE on the master: a Set(PortInfo) whose LID
                                     differs from the port's LID before it (profile new also
                                     forwards it to every VF)
    client_rereg        bool[N]      IB_EVENT_CLIENT_REREGISTER: the Set(PortInfo) had the
                                     ClientReregister bit (profile new also forwards it to every VF)
    gid_change          bool[N]      profile new: a Set(GUIDInfo) the master passed to its
                                     alias-GUID code (GUID cache and VF notification for block
                                     attr_mod); never at 3.7, where the master ignores it. The
                                     master never raises IB_EVENT_GID_CHANGE on itself.
    snooped             bool[N]      a PortInfo, P_KeyTable or GUIDInfo case of smp_snoop ran
    port_lid, sm_lid, sm_sl          the PortInfo state arrays (updated in place)
    """

    pkey_change_bitmap: np.ndarray
    master_event: np.ndarray
    slave_rows: np.ndarray
    slave_bits: np.ndarray
    finding: np.ndarray
    lid_change: np.ndarray
    client_rereg: np.ndarray
    gid_change: np.ndarray
    snooped: np.ndarray
    port_lid: np.ndarray
    sm_lid: np.ndarray
    sm_sl: np.ndarray
    dense: bool = field(default=False, compare=False)
    num_functions: int = field(default=128, compare=False)
    _dense_events: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.finding)

    @property
    def slave_events(self) -> SlaveEvents | np.ndarray:
        """The slave events as :class:`SlaveEvents` (a view of slave_rows and slave_bits), or,
        for a result of ``smp_snoop(..., dense=True)``, as the ``bool[N, F]`` of releases up to
        0.1 (made once, then the same array); F is the profile's ``MLX4_MFUNC_MAX``."""
        events = SlaveEvents(self.slave_rows, self.slave_bits, len(self.finding), self.num_functions)
        if not self.dense:
            return events
        if self._dense_events is None:
            self._dense_events = events.dense()
        return self._dense_events

    @classmethod
    def empty(cls, n: int, port_lid, sm_lid, sm_sl, dense: bool = False,
              num_functions: int = 128) -> "SnoopResult":
        return cls(
            pkey_change_bitmap=np.zeros(n, dtype=np.uint32),
            master_event=np.zeros(n, dtype=np.bool_),
            slave_rows=np.empty(n, dtype=np.int64),  # room for every MAD; trimmed to those with events
            slave_bits=np.empty((n, 2), dtype=np.uint64),
            finding=np.zeros(n, dtype=np.int8),
            lid_change=np.zeros(n, dtype=np.bool_),
            client_rereg=np.zeros(n, dtype=np.bool_),
            gid_change=np.zeros(n, dtype=np.bool_),
            snooped=np.zeros(n, dtype=np.bool_),
            port_lid=port_lid,
            sm_lid=sm_lid,
            sm_sl=sm_sl,
            dense=dense,
            num_functions=num_functions,
        )


def init_pkeys(num_vfs: int = 4, num_ports: int = 2, pkey_table_len: int = 128, master: int = 0,
               profile="mainline"):
    """``init_pkeys`` of the seed commit: returns ``(cache, v2p)``.

    ``v2p`` is ``uint8[F, 2, 128]``, F the profile's ``MLX4_MFUNC_MAX`` (128 on mainline, the
    default; 80 at 3.7); ``num_vfs`` is at most its ``MLX4_MAX_NUM_VF`` (126; 64).
    ``v2p[slave, port - 1, i]`` for slave 0..num_vfs and i < pkey_table_len: ``i`` for the master
    (identity) and for index 0, ``pkey_table_len - 1`` (unassigned) otherwise;
    ``cache[port - 1, 0] = 0xFFFF``, everything else 0.
    """
    prof = resolve(profile)
    _check_config(num_vfs, master, num_ports, pkey_table_len, prof)
    # The reference's loops, as whole-array writes (the tests compare the two).
    cache = np.zeros((MLX4_MAX_PORTS, MLX4_MAX_PORT_PKEYS), dtype=np.uint16)
    v2p = np.zeros(prof.v2p_shape, dtype=np.uint8)
    v2p[:num_vfs + 1, :num_ports, 1:pkey_table_len] = pkey_table_len - 1
    v2p[master, :num_ports, :pkey_table_len] = np.arange(pkey_table_len, dtype=np.uint8)
    cache[:num_ports, 0] = wire.IB_DEFAULT_PKEY_FULL
    return cache, v2p


def smp_snoop(cache, v2p, mads, port_num, status, num_vfs: int = 4, master: int = 0, profile="new", *,
              num_ports: int = 2, pkey_table_len: int = 128, port_mgmt_change_events: bool = False,
              port_lid=None, sm_lid=None, sm_sl=None, dense: bool = False) -> SnoopResult:
    """Snoop a batch with the numba kernel; see the module docstring."""
    args = _prepare(cache, v2p, mads, port_num, status, num_vfs, master, profile, num_ports, pkey_table_len,
                    port_lid, sm_lid, sm_sl)
    prof, mads, port_num, status, port_lid, sm_lid, sm_sl = args
    res = SnoopResult.empty(mads.shape[0], port_lid, sm_lid, sm_sl, _dense_requested(dense), prof.mfunc_max)
    n_slave = smp_snoop_kernel(mads, port_num, status, cache, v2p, port_lid, sm_lid, sm_sl,
                               num_vfs, master, num_ports, pkey_table_len, prof.mfunc_max,
                               prof.num_alias_guid_rec_in_port, prof.slave_events,
                               bool(port_mgmt_change_events), sys.byteorder == "little",
                               res.pkey_change_bitmap, res.master_event, res.slave_rows, res.slave_bits,
                               res.finding, res.lid_change, res.client_rereg, res.gid_change, res.snooped)
    res.slave_rows = res.slave_rows[:n_slave]
    res.slave_bits = res.slave_bits[:n_slave]
    return res


def smp_snoop_reference(cache, v2p, mads, port_num, status, num_vfs: int = 4, master: int = 0,
                        profile="new", *, num_ports: int = 2, pkey_table_len: int = 128,
                        port_mgmt_change_events: bool = False, port_lid=None, sm_lid=None,
                        sm_sl=None, dense: bool = False) -> SnoopResult:
    """The same as :func:`smp_snoop`, computed by the pure-Python reference one MAD at a time."""
    args = _prepare(cache, v2p, mads, port_num, status, num_vfs, master, profile, num_ports, pkey_table_len,
                    port_lid, sm_lid, sm_sl)
    prof, mads, port_num, status, port_lid, sm_lid, sm_sl = args
    res = SnoopResult.empty(mads.shape[0], port_lid, sm_lid, sm_sl, _dense_requested(dense), prof.mfunc_max)
    state = _ref.SnoopState(cache, v2p, port_lid, sm_lid, sm_sl)
    n_slave = 0
    for n in range(mads.shape[0]):
        out = _ref.smp_snoop_one(state, mads[n], int(port_num[n]), int(status[n]), num_vfs=num_vfs, master=master,
                                 profile=prof, num_ports=num_ports, pkey_table_len=pkey_table_len,
                                 port_mgmt_change_events=bool(port_mgmt_change_events))
        res.pkey_change_bitmap[n] = out.pkey_change_bitmap
        res.master_event[n] = out.master_event
        if out.slave_events:
            res.slave_rows[n_slave] = n
            res.slave_bits[n_slave] = 0
            for slave in out.slave_events:
                res.slave_bits[n_slave, slave >> 6] |= np.uint64(1 << (slave & 63))
            n_slave += 1
        res.finding[n] = out.finding
        res.lid_change[n] = out.lid_change
        res.client_rereg[n] = out.client_rereg
        res.gid_change[n] = out.gid_change
        res.snooped[n] = out.snooped
    res.slave_rows = res.slave_rows[:n_slave]
    res.slave_bits = res.slave_bits[:n_slave]
    return res


# -- argument checks ---------------------------------------------------------------------------

def check_v2p(v2p, profile="new") -> None:
    """Raise a one-line ValueError unless ``v2p`` is a ``uint8[F, 2, 128]`` for ``profile``."""
    prof = resolve(profile)
    _check_array("v2p", v2p, np.uint8, prof.v2p_shape, profile=prof)


def _dense_requested(dense) -> bool:
    if dense:
        warnings.warn("smp_snoop(..., dense=True) is deprecated and goes in the next release: "
                      "use result.slave_events.dense() for the bool[N, F] matrix",
                      DeprecationWarning, stacklevel=3)
    return bool(dense)


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


def _check_config(num_vfs, master, num_ports, pkey_table_len, prof: Profile) -> None:
    _check_int("num_vfs", num_vfs, 0, (1 << 31) - 1)
    if num_vfs > prof.max_num_vf:
        raise ValueError(f"num_vfs must be in 0..{prof.max_num_vf} (MLX4_MAX_NUM_VF of profile {prof.name}), "
                         f"got {num_vfs}")
    _check_int("master", master, 0, num_vfs)
    _check_int("num_ports", num_ports, 1, MLX4_MAX_PORTS)
    _check_int("pkey_table_len", pkey_table_len, 1, MLX4_MAX_PORT_PKEYS)


def _check_array(name: str, arr, dtype, shape, *, writeable: bool = False, profile: Profile | None = None) -> None:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of {np.dtype(dtype).name}, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype}")
    if len(shape) != arr.ndim or any(want is not None and want != got for want, got in zip(shape, arr.shape)):
        want = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        why = "" if profile is None else f" for profile {profile.name} (MLX4_MFUNC_MAX {profile.mfunc_max})"
        raise ValueError(f"{name} must have shape {want}{why}, got {list(arr.shape)}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writeable and not arr.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is updated in place")


def _per_mad(name: str, value, dtype, n: int, high: int):
    """An array of length n, or one int broadcast to it."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        _check_array(name, value, dtype, (n,))
        return value
    if isinstance(value, np.ndarray):  # 0-d array
        value = value.item()
    _check_int(name, value, 0, high)
    return np.full(n, value, dtype=dtype)


def _state(name: str, value, dtype):
    if value is None:
        return np.zeros(MLX4_MAX_PORTS, dtype=dtype)
    _check_array(name, value, dtype, (MLX4_MAX_PORTS,), writeable=True)
    return value


def _prepare(cache, v2p, mads, port_num, status, num_vfs, master, profile, num_ports, pkey_table_len,
             port_lid, sm_lid, sm_sl):
    prof = resolve(profile)
    _check_config(num_vfs, master, num_ports, pkey_table_len, prof)
    _check_array("cache", cache, np.uint16, (MLX4_MAX_PORTS, MLX4_MAX_PORT_PKEYS), writeable=True)
    _check_array("v2p", v2p, np.uint8, prof.v2p_shape, profile=prof)
    _check_array("mads", mads, np.uint8, (None, MAD_SIZE))
    n = mads.shape[0]
    port_num = _per_mad("port_num", port_num, np.uint8, n, 0xFF)
    status = _per_mad("status", status, np.uint16, n, 0xFFFF)
    return (prof, mads, port_num, status, _state("port_lid", port_lid, np.uint16), _state("sm_lid", sm_lid, np.uint16),
            _state("sm_sl", sm_sl, np.uint8))


__all__ = [
    "FINDING_NONE", "FINDING_REFUSED", "FINDING_SPILL", "PROFILES", "Profile", "SlaveEvents", "SnoopResult", "init_pkeys",
    "smp_snoop",
    "smp_snoop_reference",
]
