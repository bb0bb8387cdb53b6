"""Fabric-wide P_Key state from a capture: every target port gets its own ``phys_pkey_cache``.

A port is named by how the SM reached it: the DLID of a LID-routed SMP, or the directed-route
path (hops 1..hop_cnt, plus the final DLID when the route ends LID-routed), and the switch port
from bits 16-31 of attr_mod. When the capture also holds a PortInfo answer that gives the LID
behind a directed-route path, that port is named by its LID as well, and LID-routed and
directed-route SMPs to it are one port. NodeInfo answers give each port's P_Key capacity.

Two rules decide what a capture's SMPs did to a table:

- ``set`` (the kernel's rule, default): a SubnSet(P_KeyTable) is applied when its SubnGetResp
  (same TID, from that port) has status 0; with no answer in the capture it is applied and
  counted as unconfirmed; with an error status it is not applied.
- ``getresp``: every SubnGetResp(P_KeyTable) with status 0 sets the table the port reported
  (answers to Get and to Set alike).

Each port's MADs go through :func:`madpipe.pipeline.snoop.smp_snoop` (the numba kernel) in frame
order, as P_KeyTable Sets with the status decided above, on a cache of the kernel's shape
``uint16[2, 128]`` whose row 0 is the port's table. So block numbers past the table behave as the
kernel's: blocks 4..7 spill into row 1 (reported as a finding), larger ones are refused.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.pipeline import snoop
from madpipe.pipeline.ingest import Ingest

PERMISSIVE_LID = 0xFFFF
FROM_RULES = ("set", "getresp")
FINDING_TEXT = {
    snoop.FINDING_SPILL: "block past the 128-entry row, written into the next row (the kernel's spill)",
    snoop.FINDING_REFUSED: "block would write past the kernel's table: refused",
}


@dataclass(frozen=True, order=True)
class PortId:
    """How a port was reached. ``lid`` is None for a port only known by its DR path."""

    lid: int | None
    dr_path: tuple[int, ...] | None
    port: int  # switch port from attr_mod bits 16-31; 0 for a channel adapter

    def label(self) -> str:
        parts = []
        if self.lid is not None:
            parts.append(f"lid 0x{self.lid:04x}")
        if self.dr_path is not None:
            parts.append("path " + (",".join(map(str, self.dr_path)) or "(local)"))
        parts.append(f"port {self.port}")
        return " ".join(parts)

    def as_json(self) -> dict:
        return {"lid": self.lid, "dr_path": list(self.dr_path) if self.dr_path is not None else None,
                "port": self.port}


@dataclass
class PortState:
    pid: PortId
    table: np.ndarray  # uint16[128], the port's phys_pkey_cache row
    blocks: set[int] = field(default_factory=set)  # blocks written at least once
    capacity: int | None = None  # NodeInfo.partition_cap, when the capture has it


@dataclass
class Event:
    frame: int
    ts: float
    port: PortId
    block: int
    bitmap: int
    changes: list[tuple[int, int, int]]  # (index in the port's table, old, new)
    unconfirmed: bool


@dataclass
class Finding:
    frame: int
    port: PortId
    block: int
    kind: int
    text: str


@dataclass
class FabricSnoop:
    ports: dict[PortId, PortState]
    events: list[Event]
    findings: list[Finding]
    counts: Counter
    file_error: str | None = None
    skipped: Counter = field(default_factory=Counter)
    host: "HostView | None" = None


@dataclass
class _Smp:
    """One P_KeyTable, PortInfo or NodeInfo SMP of the capture (only these are kept)."""

    frame: int
    ts: float
    mad: np.ndarray  # uint8[256]
    route: tuple  # ("lid", dlid) or ("dr", path, dr_dlid)

    @property
    def method(self) -> int:
        return int(self.mad[3])

    @property
    def status(self) -> int:
        return (int(self.mad[4]) << 8 | int(self.mad[5])) & 0x7FFF  # without the DR D bit

    @property
    def tid(self) -> int:
        return int.from_bytes(self.mad[8:16].tobytes(), "big")

    @property
    def attr_id(self) -> int:
        return int(self.mad[16]) << 8 | int(self.mad[17])

    @property
    def attr_mod(self) -> int:
        return int.from_bytes(self.mad[20:24].tobytes(), "big")


_KEPT_ATTRS = (smpc.IB_SMP_ATTR_PKEY_TABLE, smpc.IB_SMP_ATTR_PORT_INFO, smpc.IB_SMP_ATTR_NODE_INFO)


def collect(path: str | os.PathLike, counts: Counter) -> tuple[list[_Smp], Ingest]:
    """Pass over the capture in batches; keep the SMPs that matter, in frame order."""
    ing = Ingest(path)
    kept: list[_Smp] = []
    for batch in ing:
        counts["frames"] += len(batch)
        mads, rows = batch.mads()
        counts["mads"] += len(mads)
        if not len(mads):
            continue
        cls = mads[:, 1]
        attr = (mads[:, 16].astype(np.uint16) << 8) | mads[:, 17]
        is_smp = (cls == madc.IB_MGMT_CLASS_SUBN_LID_ROUTED) | (cls == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
        counts["smps"] += int(np.count_nonzero(is_smp))
        want = is_smp & np.isin(attr, _KEPT_ATTRS)
        for k in np.flatnonzero(want):
            row = rows[k]
            data = batch.data[row]
            kept.append(_Smp(int(batch.frame[row]), batch.ts_ns[row] / 1e9, mads[k].copy(),
                             _route(mads[k], data)))
    return kept, ing


def _route(m: np.ndarray, frame: np.ndarray) -> tuple:
    """Where an SMP goes (request) or comes from (response), in a form both directions share."""
    response = bool(m[3] & madc.IB_MGMT_METHOD_RESP)
    if m[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        hop_cnt = min(int(m[7]), 63)
        path = tuple(int(x) for x in m[129:129 + hop_cnt])
        dr_dlid = int(m[34]) << 8 | int(m[35])
        dr_slid = int(m[32]) << 8 | int(m[33])
        end_lid = dr_slid if response else dr_dlid  # the LID-routed tail, when the route has one
        return ("dr", path, None if end_lid == PERMISSIVE_LID else end_lid)
    lrh_lid = (int(frame[6]) << 8 | int(frame[7])) if response else (int(frame[2]) << 8 | int(frame[3]))
    return ("lid", lrh_lid)


def _learn_lids(smps: list[_Smp]) -> tuple[dict, dict]:
    """From PortInfo and NodeInfo answers: the LID behind each DR route, each route's capacity."""
    lid_of: dict[tuple, int] = {}
    capacity: dict[tuple, int] = {}
    switch: dict[tuple, bool] = {}
    for s in smps:
        if s.method != madc.IB_MGMT_METHOD_GET_RESP or s.status:
            continue
        if s.attr_id == smpc.IB_SMP_ATTR_NODE_INFO:
            switch[s.route] = s.mad[64 + 2] == 2  # node_type 2: switch
            capacity[s.route] = int(s.mad[64 + 28]) << 8 | int(s.mad[64 + 29])
    for s in smps:
        if s.method != madc.IB_MGMT_METHOD_GET_RESP or s.status or s.attr_id != smpc.IB_SMP_ATTR_PORT_INFO:
            continue
        if s.route[0] != "dr":
            continue
        lid = int(s.mad[64 + 16]) << 8 | int(s.mad[64 + 17])
        # A switch has one LID, on port 0; a CA port's PortInfo carries its own LID.
        if lid and (not switch.get(s.route) or (s.attr_mod & 0xFF) == 0):
            lid_of[s.route] = lid
    return lid_of, capacity


def _port_id(route: tuple, port: int, lid_of: dict) -> PortId:
    if route[0] == "lid":
        return PortId(route[1], None, port)
    lid = lid_of.get(route)
    if lid is None and route[2] is not None:
        lid = route[2]
    return PortId(lid, route[1], port)


@dataclass
class HostView:
    """The mlx4 master's view of one port: ``--host LID --vfs N``."""

    pid: PortId
    port_num: int
    num_vfs: int
    v2p: np.ndarray  # uint8[80, 2, 128] virt2phys_pkey after init_pkeys and the map file
    phys: np.ndarray  # uint16[128] the physical table at the end
    master_events: list[int]  # frames that raised IB_EVENT_PKEY_CHANGE on the master
    vf_events: dict[int, list[int]]  # vf -> frames that raised its P_Key-change event

    def virtual_table(self, vf: int) -> np.ndarray:
        """What VF ``vf`` sees: entry i is phys[virt2phys_pkey[vf][port-1][i]]."""
        return self.phys[self.v2p[vf, self.port_num - 1]]


def snoop_capture(path: str | os.PathLike, rule: str = "set", profile: str = "new", *,
                  host: int | None = None, num_vfs: int = 0, port_num: int = 1,
                  v2p: np.ndarray | None = None) -> FabricSnoop:
    """Run the fabric snoop over a capture file; see the module docstring.

    With ``host`` (a LID), that port is also run as an mlx4 master's port ``port_num`` with
    ``num_vfs`` VFs and the given ``virt2phys_pkey`` (``init_pkeys``'s when None): the result's
    ``host`` is a :class:`HostView`.
    """
    if rule not in FROM_RULES:
        raise ValueError(f"rule must be one of {FROM_RULES}, got {rule!r}")
    counts: Counter[str] = Counter()
    smps, ing = collect(path, counts)
    lid_of, capacity = _learn_lids(smps)

    # A port known by LID and by DR path is one port: name every route by its LID when known.
    def pid_for(s: _Smp) -> PortId:
        pid = _port_id(s.route, s.attr_mod >> 16, lid_of)
        return PortId(pid.lid, None, pid.port) if pid.lid is not None else pid

    pkey = [s for s in smps if s.attr_id == smpc.IB_SMP_ATTR_PKEY_TABLE]
    answers = {}
    for s in pkey:
        if s.method == madc.IB_MGMT_METHOD_GET_RESP:
            answers.setdefault((s.tid, pid_for(s)), s)
    work: dict[PortId, list[tuple[_Smp, bool]]] = defaultdict(list)
    routes: dict[PortId, list[tuple]] = defaultdict(list)
    for s in pkey:
        pid = pid_for(s)
        if s.route not in routes[pid]:
            routes[pid].append(s.route)
        if rule == "set" and s.method == madc.IB_MGMT_METHOD_SET:
            counts["sets"] += 1
            answer = answers.get((s.tid, pid))
            if answer is None:
                counts["unconfirmed"] += 1
                work[pid].append((s, True))
            elif answer.status:
                counts["rejected"] += 1
            else:
                work[pid].append((s, False))
        elif rule == "getresp" and s.method == madc.IB_MGMT_METHOD_GET_RESP:
            counts["getresps"] += 1
            if s.status:
                counts["rejected"] += 1
            else:
                work[pid].append((s, False))

    result = FabricSnoop({}, [], [], counts, ing.error, ing.skipped)
    for pid, items in work.items():
        dr = next((r[1] for r in routes[pid] if r[0] == "dr"), None)
        full = PortId(pid.lid, dr, pid.port)
        state, _ = _snoop_port(full, items, result, profile)
        if pid.lid is not None:
            routes[pid] += [r for r, lid in lid_of.items() if lid == pid.lid] + [("lid", pid.lid)]
        state.capacity = next((capacity[r] for r in routes[pid] if r in capacity), None)
        result.ports[full] = state
        if host is not None and pid.lid == host and pid.port == 0:
            result.host = _host_view(full, items, profile, num_vfs, port_num, v2p)
    if host is not None and result.host is None:
        result.host = _host_view(PortId(host, None, 0), [], profile, num_vfs, port_num, v2p)
    result.events.sort(key=lambda e: (e.frame, e.port))
    result.findings.sort(key=lambda f: (f.frame, f.port))
    counts["ports"] = len(result.ports)
    counts["events"] = len(result.events)
    counts["findings"] = len(result.findings)
    return result


def _run_kernel(items, profile, num_vfs=0, port_num=1, v2p=None):
    """smp_snoop over one port's MADs, as Sets with status 0 (the rule already chose them)."""
    cache, init_v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=0)
    v2p = init_v2p if v2p is None else v2p
    before = cache.copy().ravel()
    if not items:
        return cache, v2p, before, None
    mads = np.stack([s.mad for s, _ in items])
    mads[:, 3] = madc.IB_MGMT_METHOD_SET  # getresp rule: the reported table is applied like a Set
    status = np.zeros(len(items), np.uint16)
    res = snoop.smp_snoop(cache, v2p, mads, port_num, status, num_vfs=num_vfs, master=0, profile=profile)
    return cache, v2p, before, res


def _snoop_port(pid: PortId, items, result: FabricSnoop, profile: str):
    cache, _, flat, res = _run_kernel(items, profile)
    state = PortState(pid, cache[0].copy())
    for n, (s, unconfirmed) in enumerate(items):
        block = s.attr_mod & 0xFFFF
        kind = int(res.finding[n])
        if kind:
            result.findings.append(Finding(s.frame, pid, block, kind, FINDING_TEXT[kind]))
        if kind != snoop.FINDING_REFUSED:
            state.blocks.add(block)
        bitmap = int(res.pkey_change_bitmap[n])
        if not bitmap:
            continue
        changes = []  # replay the bitmap over a flat copy to name each change's old value
        for i in range(32):
            if bitmap >> i & 1:
                idx = block * 32 + i
                new = int(s.mad[64 + 2 * i]) << 8 | int(s.mad[65 + 2 * i])
                changes.append((idx, int(flat[idx]), new))
                flat[idx] = new
        result.events.append(Event(s.frame, s.ts, pid, block, bitmap, changes, unconfirmed))
    return state, res


def _host_view(pid, items, profile, num_vfs, port_num, v2p) -> HostView:
    cache, v2p, _, res = _run_kernel(items, profile, num_vfs, port_num, v2p)
    master, vfs = [], {vf: [] for vf in range(1, num_vfs + 1)}
    for n, (s, _) in enumerate(items):
        if res.master_event[n]:
            master.append(s.frame)
        for vf in np.flatnonzero(res.slave_events[n]):
            vfs.setdefault(int(vf), []).append(s.frame)
    return HostView(pid, port_num, num_vfs, v2p, cache[port_num - 1].copy(), master, vfs)


def format_pkeys(table: np.ndarray, entries: int) -> list[str]:
    """``smpquery pkeys`` layout: 8 P_Keys a line, prefixed by the first index."""
    lines = []
    for start in range(0, entries, 8):
        row = " ".join(f"0x{int(p):04x}" for p in table[start:start + 8])
        lines.append(f"{start:4d}: {row}")
    return lines


def shown_entries(state: PortState) -> int:
    """How many entries to print: the NodeInfo capacity when known, else through the last block written."""
    if state.capacity:
        return min(state.capacity, len(state.table))
    last = max((b for b in state.blocks if b < 4), default=0)
    return (last + 1) * 32
