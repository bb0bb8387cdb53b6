"""The P_Key state of two captures, port by port: what ``madpipe diff`` prints.

Each capture goes through :func:`madpipe.pipeline.fabric.snoop.snoop_capture` (the same rule, ``set``
or ``getresp``), which leaves every port the SM programmed with its final ``phys_pkey_cache``
row. The ports of A and B are then paired and their tables compared entry by entry.

Pairing. A port is the same port in both captures when, in this order:

1. both captures hold a NodeInfo answer for it and the GUIDs agree: the port GUID of a channel
   adapter, the node GUID plus the port number for a switch port (what ``ibnetdiscover -p`` and
   an opensm partitions file name);
2. else the LID and port number agree;
3. else the directed-route path and port number agree.

A pairing by LID or path is never made against the GUIDs: two ports whose GUIDs are both known
and differ are two ports, whatever their LIDs. Ports left over are only in A or only in B (the
other capture never set their table).

Entries. Index ``i`` of a paired port (block ``i // 32``) compares ``a = A[i]`` with ``b = B[i]``;
an entry is present when its low 15 bits are not zero (0x0000 and 0x8000 are not P_Keys, IBA
10.9.1). When they differ, the change is:

- ``added``: absent in A, present in B;
- ``removed``: present in A, absent in B;
- ``membership``: the same partition (low 15 bits), bit 15 flipped: full <-> limited member;
- ``changed``: another partition at that index (or 0x0000 <-> 0x8000).

Partitions. The same tables compared as sets of partitions, whatever the index: a partition is
``added``, ``removed``, or its ``membership`` changed (a port holding a partition both ways
counts as a full member). This is the level a partitions file speaks at; the entry level is the
one a VF's ``virt2phys_pkey`` indexes into.

VF view. With ``host``/``num_vfs`` both captures also run the port at that LID as an mlx4 master's
port (the same ``virt2phys_pkey``, from ``init_pkeys`` and a map file), and each VF's virtual
table (``phys[virt2phys_pkey[vf][port-1][i]]``) is compared the same way.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from madpipe.codecs import mad, smp
from madpipe.codecs.capture import CaptureReader
from madpipe.pipeline.fabric.model import FabricSnoop, PortId, PortState

KINDS = ("added", "removed", "membership", "changed")
PARTITION_KINDS = ("added", "removed", "membership")
KIND_TEXT = {"added": "added", "removed": "removed", "membership": "membership", "changed": "P_Key changed"}
PKEY_ENTRIES = 128  # one phys_pkey_cache row
BLOCK_ENTRIES = 32
FULL_MEMBER = 0x8000
PARTITION_MASK = 0x7FFF
NODE_TYPE_SWITCH = 2


def present(pkey: int) -> bool:
    """A table entry holds a P_Key: its low 15 bits are not zero."""
    return bool(pkey & PARTITION_MASK)


def membership(pkey: int) -> str:
    return "full" if pkey & FULL_MEMBER else "limited"


def entry_kind(a: int, b: int) -> str:
    """How entry ``a`` became ``b`` (they differ): one of KINDS."""
    if not present(a) and present(b):
        return "added"
    if present(a) and not present(b):
        return "removed"
    if present(a) and (a ^ b) == FULL_MEMBER:
        return "membership"
    return "changed"


@dataclass(frozen=True)
class EntryChange:
    index: int  # in the port's table (block * 32 + entry)
    kind: str  # one of KINDS
    a: int
    b: int

    @property
    def block(self) -> int:
        return self.index // BLOCK_ENTRIES


@dataclass(frozen=True)
class PartitionChange:
    partition: int  # the P_Key's low 15 bits
    kind: str  # one of PARTITION_KINDS
    a: int | None  # the P_Key A held for it (full wins), None when absent
    b: int | None


def compare_tables(a: np.ndarray, b: np.ndarray) -> list[EntryChange]:
    """The entries where two P_Key tables differ, in index order."""
    a = np.asarray(a, np.uint16)
    b = np.asarray(b, np.uint16)
    if a.shape != b.shape:
        raise ValueError(f"tables differ in shape: {a.shape} and {b.shape}")
    return [EntryChange(i, entry_kind(int(a[i]), int(b[i])), int(a[i]), int(b[i]))
            for i in np.flatnonzero(a != b).tolist()]


def partitions(table: np.ndarray) -> dict[int, int]:
    """partition (low 15 bits) -> the P_Key the table holds for it, full membership winning."""
    out: dict[int, int] = {}
    for p in np.asarray(table).tolist():
        part = p & PARTITION_MASK
        if part:
            out[part] = out.get(part, 0) | p
    return out


def compare_partitions(a: np.ndarray, b: np.ndarray) -> list[PartitionChange]:
    """The partitions two tables hold differently, by partition number."""
    pa, pb = partitions(a), partitions(b)
    out = []
    for part in sorted(pa.keys() | pb.keys()):
        ka, kb = pa.get(part), pb.get(part)
        if ka is None:
            out.append(PartitionChange(part, "added", None, kb))
        elif kb is None:
            out.append(PartitionChange(part, "removed", ka, None))
        elif ka != kb:
            out.append(PartitionChange(part, "membership", ka, kb))
    return out


# -- port GUIDs from NodeInfo answers -------------------------------------------------------------

@dataclass(frozen=True)
class NodeGuids:
    node_type: int
    node_guid: int
    port_guid: int
    local_port: int = 0  # the port the NodeInfo request entered by (a switch's link to the asker)


def node_infos(path: str | os.PathLike) -> tuple[dict[tuple[int, ...], NodeGuids], dict[int, NodeGuids]]:
    """What the capture's successful SubnGetResp(NodeInfo) say: (by directed-route path, by LID).

    A directed-route answer is keyed by its path (hops 1..hop_cnt); a LID-routed one by the LID
    it came from (its SLID). The last answer for a key wins. One pass, numpy over batches; only
    the NodeInfo answers are parsed.
    """
    from madpipe.pipeline.ingest.reader import Ingest

    by_path: dict[tuple[int, ...], NodeGuids] = {}
    by_lid: dict[int, NodeGuids] = {}
    for batch in Ingest(path):
        mads, rows = batch.mads()
        if not len(mads):
            continue
        status = (mads[:, 4].astype(np.int32) << 8 | mads[:, 5]) & 0x7FFF  # bit 15: DR direction
        pick = np.flatnonzero(np.isin(mads[:, 1], (mad.IB_MGMT_CLASS_SUBN_LID_ROUTED,
                                                   mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE))
                              & (mads[:, 3] == mad.IB_MGMT_METHOD_GET_RESP)
                              & (mads[:, 16] == 0) & (mads[:, 17] == smp.IB_SMP_ATTR_NODE_INFO)
                              & (status == 0))
        for j in pick.tolist():
            m = mads[j]
            info = smp.NodeInfo.parse(m[64:128].tobytes())
            guids = NodeGuids(info.node_type, info.node_guid, info.port_guid, info.local_port_num)
            if m[1] == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE:
                hops = min(int(m[7]), 63)
                by_path[tuple(int(x) for x in m[129:129 + hops])] = guids
            else:
                row = batch.data[rows[j]]
                by_lid[int(row[6]) << 8 | int(row[7])] = guids
    return by_path, by_lid


def port_guid(pid: PortId, by_path: dict, by_lid: dict) -> int | None:
    """The GUID that names a port: a CA's port GUID, a switch's node GUID (with ``pid.port``)."""
    info = None
    if pid.dr_path is not None:
        info = by_path.get(pid.dr_path)
    if info is None and pid.lid is not None:
        info = by_lid.get(pid.lid)
    if info is None:
        return None
    return info.node_guid if info.node_type == NODE_TYPE_SWITCH else info.port_guid


# -- the diff --------------------------------------------------------------------------------------

@dataclass
class Side:
    """One capture as the diff saw it."""

    path: str
    snoop: FabricSnoop
    guids: dict[PortId, int | None]  # each port's naming GUID, None where no NodeInfo answer names it

    @property
    def ports(self) -> dict[PortId, PortState]:
        return self.snoop.ports


@dataclass
class PortDiff:
    """A port of A paired with a port of B (``status`` "changed" or "same"), or a port only one
    capture has (``status`` "only_a" / "only_b": the other side is None)."""

    status: str
    a: PortState | None
    b: PortState | None
    guid: int | None = None
    entries: list[EntryChange] = field(default_factory=list)
    partitions: list[PartitionChange] = field(default_factory=list)

    @property
    def pid(self) -> PortId:
        state = self.a or self.b
        assert state is not None  # a port diff always has at least one side
        return state.pid

    @property
    def b_named_differently(self) -> bool:
        return self.a is not None and self.b is not None and self.a.pid != self.b.pid


@dataclass
class VFDiff:
    vf: int
    v2p: np.ndarray  # uint8[128]: the VF's index -> physical index on the host port
    a: np.ndarray  # uint16[128] the VF's virtual table in A
    b: np.ndarray
    entries: list[EntryChange]
    partitions: list[PartitionChange]


@dataclass
class CaptureDiff:
    a: Side
    b: Side
    ports: list[PortDiff]  # every port of either capture, in port order
    vfs: list[VFDiff] | None = None  # with a host: every VF, changed or not

    @property
    def changed(self) -> list[PortDiff]:
        return [p for p in self.ports if p.status != "same"]

    @property
    def vfs_changed(self) -> list[VFDiff]:
        return [v for v in self.vfs or () if v.entries]

    @property
    def differ(self) -> bool:
        return bool(self.changed or self.vfs_changed)

    def counts(self) -> Counter:
        c: Counter[str] = Counter({"ports_a": len(self.a.ports), "ports_b": len(self.b.ports)})
        for p in self.ports:
            c[p.status] += 1
            for e in p.entries:
                c["entries_" + e.kind] += 1
        if self.vfs is not None:
            c["vfs"] = len(self.vfs)
            c["vfs_changed"] = len(self.vfs_changed)
        return c


def port_order(pid: PortId):
    """LID-named ports by LID, then path-only ports by path: the order ``madpipe snoop`` prints."""
    return (pid.lid is None, pid.lid or 0, pid.dr_path or (), pid.port)


def pair_ports(a: dict[PortId, int | None], b: dict[PortId, int | None]
               ) -> tuple[list[tuple[PortId, PortId]], list[PortId], list[PortId]]:
    """Pair the ports of two captures (each: PortId -> naming GUID or None); see the module docstring.

    Returns (pairs, only in a, only in b).
    """
    left_a = sorted(a, key=port_order)
    left_b = sorted(b, key=port_order)
    pairs = []

    def stage(key, guarded: bool):
        nonlocal left_a, left_b
        index: dict = {}
        for pid in left_b:
            k = key(pid, b[pid])
            if k is not None:
                index.setdefault(k, []).append(pid)
        taken = set()
        rest_a = []
        for pid in left_a:
            k = key(pid, a[pid])
            match = None
            for cand in index.get(k, ()) if k is not None else ():
                if cand in taken:
                    continue
                if guarded and a[pid] is not None and b[cand] is not None and a[pid] != b[cand]:
                    continue
                match = cand
                break
            if match is None:
                rest_a.append(pid)
            else:
                taken.add(match)
                pairs.append((pid, match))
        left_a = rest_a
        left_b = [pid for pid in left_b if pid not in taken]

    stage(lambda pid, guid: (guid, pid.port) if guid is not None else None, False)
    stage(lambda pid, guid: (pid.lid, pid.port) if pid.lid is not None else None, True)
    stage(lambda pid, guid: (pid.dr_path, pid.port) if pid.dr_path is not None else None, True)
    return pairs, left_a, left_b


def read_side(path: str | os.PathLike, rule: str, host: int | None, num_vfs: int, port_num: int,
              v2p: np.ndarray | None, profile="new") -> Side:
    from madpipe.pipeline.fabric.snoop import snoop_capture  # the kernels: imported once the CLI has planned numba

    result = snoop_capture(path, rule, profile, host=host, num_vfs=num_vfs, port_num=port_num, v2p=v2p)
    by_path, by_lid = node_infos(path)
    guids = {pid: port_guid(pid, by_path, by_lid) for pid in result.ports}
    return Side(os.fspath(path), result, guids)


def diff_captures(path_a: str | os.PathLike, path_b: str | os.PathLike, rule: str = "set", *,
                  host: int | None = None, num_vfs: int = 0, port_num: int = 1,
                  v2p: np.ndarray | None = None, profile="new") -> CaptureDiff:
    """Compare the P_Key state the SM left in two captures; see the module docstring.

    ``host``, ``num_vfs``, ``port_num``, ``v2p`` and ``profile`` are ``snoop_capture``'s,
    applied to both.
    """
    for path in (path_a, path_b):  # both readable before either is read whole
        CaptureReader(path).close()
    a = read_side(path_a, rule, host, num_vfs, port_num, v2p, profile)
    b = read_side(path_b, rule, host, num_vfs, port_num, v2p, profile)
    return diff_sides(a, b)


def diff_sides(a: Side, b: Side) -> CaptureDiff:
    pairs, only_a, only_b = pair_ports(a.guids, b.guids)
    ports = []
    for pa, pb in pairs:
        sa, sb = a.ports[pa], b.ports[pb]
        entries = compare_tables(sa.table, sb.table)
        ports.append(PortDiff("changed" if entries else "same", sa, sb, a.guids[pa] or b.guids[pb],
                              entries, compare_partitions(sa.table, sb.table)))
    ports += [PortDiff("only_a", a.ports[p], None, a.guids[p]) for p in only_a]
    ports += [PortDiff("only_b", None, b.ports[p], b.guids[p]) for p in only_b]
    ports.sort(key=lambda p: port_order(p.pid))
    vfs = None
    ha, hb = a.snoop.host, b.snoop.host
    if ha is not None and hb is not None:
        vfs = []
        for vf in range(1, ha.num_vfs + 1):
            ta, tb = ha.virtual_table(vf), hb.virtual_table(vf)
            vfs.append(VFDiff(vf, ha.v2p[vf, ha.port_num - 1].copy(), ta, tb, compare_tables(ta, tb),
                              compare_partitions(ta, tb)))
    return CaptureDiff(a, b, ports, vfs)
