"""The fabric snoop of `madpipe snoop`, as first written: one Python object per SMP, the whole capture in memory.

This is the reference :mod:`madpipe.pipeline.fabric.snoop` is tested against, output for output: it
keeps every kept SMP of the capture as a Python object, learns LIDs and capacities from the
whole capture, pairs each Set with the first GetResp of its TID from its port anywhere in the
capture, and runs each port's MADs through the pure-Python ``smp_snoop_reference``. Clear, slow
(~0.1M frames/s) and bounded only by memory.

``pair_window`` (default None: unbounded) applies fabric's bounded pairing rule instead: a Set's
answer is the first GetResp with its TID from its port among the P_KeyTable Sets and GetResps
at most ``pair_window`` places before or after it (see :data:`madpipe.pipeline.fabric.snoop.PAIR_WINDOW`).
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.ib_headers import IB_PERMISSIVE_LID
from madpipe.pipeline.fabric.model import (
    FINDING_TEXT,
    FROM_RULES,
    Capacities,
    Event,
    FabricSnoop,
    Finding,
    HostView,
    NodeNames,
    PortId,
    PortState,
)
from madpipe.pipeline.ingest.reader import Ingest
from madpipe.pipeline.mlx4 import snoop


@dataclass
class _Smp:
    """One P_KeyTable, PortInfo or NodeInfo SMP of the capture (only these are kept)."""

    frame: int
    ts_ns: int
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


_KEPT_ATTRS = (smpc.IB_SMP_ATTR_PKEY_TABLE, smpc.IB_SMP_ATTR_PORT_INFO, smpc.IB_SMP_ATTR_NODE_INFO,
               smpc.IB_SMP_ATTR_SWITCH_INFO, smpc.IB_SMP_ATTR_NODE_DESC)


def collect(path: str | os.PathLike, counts: Counter) -> tuple[list[_Smp], Ingest, int | None]:
    """Pass over the capture in batches; keep the SMPs that matter, in frame order. Also the
    time of the first frame."""
    ing = Ingest(path)
    kept: list[_Smp] = []
    first_ts_ns = None
    for batch in ing:
        if first_ts_ns is None and len(batch):
            first_ts_ns = int(batch.ts_ns[0])
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
            kept.append(_Smp(int(batch.frame[row]), int(batch.ts_ns[row]), mads[k].copy(),
                             _route(mads[k], data)))
    return kept, ing, first_ts_ns


def _route(m: np.ndarray, frame: np.ndarray) -> tuple:
    """Where an SMP goes (request) or comes from (response), in a form both directions share."""
    response = bool(m[3] & madc.IB_MGMT_METHOD_RESP)
    if m[1] == madc.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
        hop_cnt = min(int(m[7]), 63)
        path = tuple(int(x) for x in m[129:129 + hop_cnt])
        dr_dlid = int(m[34]) << 8 | int(m[35])
        dr_slid = int(m[32]) << 8 | int(m[33])
        end_lid = dr_slid if response else dr_dlid  # the LID-routed tail, when the route has one
        return ("dr", path, None if end_lid == IB_PERMISSIVE_LID else end_lid)
    lrh_lid = (int(frame[6]) << 8 | int(frame[7])) if response else (int(frame[2]) << 8 | int(frame[3]))
    return ("lid", lrh_lid)


def _learn_lids(smps: list[_Smp]) -> tuple[dict, Capacities, NodeNames]:
    """From PortInfo, NodeInfo, SwitchInfo and NodeDescription answers: the LID behind each DR
    route, capacities, node names."""
    lid_of: dict[tuple, int] = {}
    caps = Capacities()
    names = NodeNames()
    switch = caps.switch
    for s in smps:
        if s.method != madc.IB_MGMT_METHOD_GET_RESP or s.status:
            continue
        if s.attr_id == smpc.IB_SMP_ATTR_NODE_DESC:
            names.text[s.route] = smpc.node_description_text(s.mad[64:128].tobytes())
        if s.attr_id == smpc.IB_SMP_ATTR_NODE_INFO:
            switch[s.route] = s.mad[64 + 2] == 2  # node_type 2: switch
            caps.node[s.route] = int(s.mad[64 + 28]) << 8 | int(s.mad[64 + 29])
        elif s.attr_id == smpc.IB_SMP_ATTR_SWITCH_INFO:
            caps.switch_ports[s.route] = int(s.mad[64 + 14]) << 8 | int(s.mad[64 + 15])
    for s in smps:
        if s.method != madc.IB_MGMT_METHOD_GET_RESP or s.status or s.attr_id != smpc.IB_SMP_ATTR_PORT_INFO:
            continue
        if s.route[0] != "dr":
            continue
        lid = int(s.mad[64 + 16]) << 8 | int(s.mad[64 + 17])
        # A switch has one LID, on port 0; a CA port's PortInfo carries its own LID.
        if lid and (not switch.get(s.route) or (s.attr_mod & 0xFF) == 0):
            lid_of[s.route] = lid
    return lid_of, caps, names


def _port_id(route: tuple, port: int, lid_of: dict) -> PortId:
    if route[0] == "lid":
        return PortId(route[1], None, port)
    lid = lid_of.get(route)
    if lid is None and route[2] is not None:
        lid = route[2]
    return PortId(lid, route[1], port)


def snoop_capture(path: str | os.PathLike, rule: str = "set", profile: str = "new", *,
                  host: int | None = None, num_vfs: int = 0, port_num: int = 1,
                  v2p: np.ndarray | None = None, pair_window: int | None = None) -> FabricSnoop:
    """Run the fabric snoop over a capture file; see the module docstring.

    With ``host`` (a LID), that port is also run as an mlx4 master's port ``port_num`` with
    ``num_vfs`` VFs and the given ``virt2phys_pkey`` (``init_pkeys``'s when None): the result's
    ``host`` is a :class:`HostView`.
    """
    if rule not in FROM_RULES:
        raise ValueError(f"rule must be one of {FROM_RULES}, got {rule!r}")
    counts: Counter[str] = Counter()
    smps, ing, first_ts_ns = collect(path, counts)
    lid_of, capacity, names = _learn_lids(smps)

    # A port known by LID and by DR path is one port: name every route by its LID when known.
    def pid_for(s: _Smp) -> PortId:
        pid = _port_id(s.route, s.attr_mod >> 16, lid_of)
        return PortId(pid.lid, None, pid.port) if pid.lid is not None else pid

    pkey = [s for s in smps if s.attr_id == smpc.IB_SMP_ATTR_PKEY_TABLE]
    # Sets and GetResps are numbered in one sequence; answers[(tid, port)]: (seq, GetResp) in order.
    seq = {}
    answers = defaultdict(list)
    for s in pkey:
        if s.method in (madc.IB_MGMT_METHOD_SET, madc.IB_MGMT_METHOD_GET_RESP):
            seq[id(s)] = len(seq)
        if s.method == madc.IB_MGMT_METHOD_GET_RESP:
            answers[(s.tid, pid_for(s))].append((seq[id(s)], s))

    def answer_to(s):
        here = seq[id(s)]
        for at, answer in answers.get((s.tid, pid_for(s)), ()):
            if pair_window is None or abs(at - here) <= pair_window:
                return answer
        return None
    work: dict[PortId, list[tuple[_Smp, bool]]] = defaultdict(list)
    routes: dict[PortId, list[tuple]] = defaultdict(list)
    for s in pkey:
        pid = pid_for(s)
        if s.route not in routes[pid]:
            routes[pid].append(s.route)
        if rule == "set" and s.method == madc.IB_MGMT_METHOD_SET:
            counts["sets"] += 1
            answer = answer_to(s)
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

    result = FabricSnoop({}, [], [], counts, ing.error, ing.skipped, first_ts_ns=first_ts_ns)
    for pid, items in work.items():
        dr = next((r[1] for r in routes[pid] if r[0] == "dr"), None)
        full = PortId(pid.lid, dr, pid.port)
        state, _ = _snoop_port(full, items, result, profile)
        if pid.lid is not None:
            routes[pid] += [r for r, lid in lid_of.items() if lid == pid.lid] + [("lid", pid.lid)]
        state.capacity = capacity.of(routes[pid], pid.port)
        state.node = names.of(routes[pid])
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
    cache, init_v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=0, profile=profile)
    v2p = init_v2p if v2p is None else v2p
    before = cache.copy().ravel()
    if not items:
        return cache, v2p, before, None
    mads = np.stack([s.mad for s, _ in items])
    mads[:, 3] = madc.IB_MGMT_METHOD_SET  # getresp rule: the reported table is applied like a Set
    status = np.zeros(len(items), np.uint16)
    res = snoop.smp_snoop_reference(cache, v2p, mads, port_num, status, num_vfs=num_vfs, master=0, profile=profile)
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
        result.events.append(Event(s.frame, s.ts_ns, pid, block, bitmap, changes, unconfirmed))
    return state, res


def _host_view(pid, items, profile, num_vfs, port_num, v2p) -> HostView:
    cache, v2p, _, res = _run_kernel(items, profile, num_vfs, port_num, v2p)
    master, vfs = [], {vf: [] for vf in range(1, num_vfs + 1)}
    slave_events = res.slave_events.dense() if res is not None else None
    for n, (s, _) in enumerate(items):
        if res.master_event[n]:
            master.append(s.frame)
        for vf in np.flatnonzero(slave_events[n]):
            vfs.setdefault(int(vf), []).append(s.frame)
    return HostView(pid, port_num, num_vfs, v2p, cache[port_num - 1].copy(), master, vfs)
