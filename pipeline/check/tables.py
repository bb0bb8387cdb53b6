"""The P_Key tables a capture leaves, checked against the partitions.conf that should have made them.

What each port must hold is derived as opensm 3.3 does (``osm_prtn.c``, ``osm_prtn_config.c``,
``osm_pkey_mgr.c``), with ``allow_both_pkeys`` off unless asked:

- the Default partition (0x7fff) first: every end port a limited member, the SM's port full;
- then every statement in file order; for each (partition, port) the last word wins: ``full``
  gives the P_Key with bit 15 set, ``limited`` without, ``both`` both (with allow_both_pkeys;
  without it, opensm makes a ``both`` member full);
- ``ALL`` is every end port, ``ALL_CAS``/``ALL_SWITCHES``/``ALL_ROUTERS`` those of one node type
  (a switch's end port is its port 0), ``SELF`` the SM's port;
- a switch's external port facing an end port holds that port's table (partition enforcement);
  ports between switches are not checked.

The capture says which ports exist and where: each NodeInfo answer gives a node's type and the
GUID of the port it was reached at (CA port, switch port 0), by directed-route path or LID; the
SM's port is the node its directed routes start at (a path of no hops); snoop's ports carry LID,
path and switch port. Each port's table is compared as sets of P_Keys, whatever the index.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from madpipe.codecs import smp
from madpipe.pipeline.check.partitions_conf import DEFAULT_PKEY, Member, Policy
from madpipe.pipeline.fabric.diff import FULL_MEMBER, PARTITION_MASK, NodeGuids, node_infos, port_order
from madpipe.pipeline.fabric.model import FabricSnoop, PortId

NODE_TYPE_KEYWORDS = {"ALL_CAS": smp.NODE_TYPE_CA, "ALL_SWITCHES": smp.NODE_TYPE_SWITCH,
                      "ALL_ROUTERS": smp.NODE_TYPE_ROUTER}


@dataclass
class Fabric:
    """The end ports a capture's NodeInfo answers name, and the SM's port."""

    end_ports: dict[int, NodeGuids]  # port GUID -> the node's GUIDs and type
    by_path: dict[tuple[int, ...], NodeGuids]
    by_lid: dict[int, NodeGuids]
    sm_guid: int | None

    @classmethod
    def of_capture(cls, path: str | os.PathLike) -> Fabric:
        by_path, by_lid = node_infos(path)
        end_ports = {g.port_guid: g for g in (*by_path.values(), *by_lid.values())}
        sm = by_path.get(())
        return cls(end_ports, by_path, by_lid, sm.port_guid if sm else None)

    def where(self, guid: int) -> str:
        """How the capture reached an end port: ``lid 0x0004``, ``path 1,3,1``, or both."""
        lids = [f"lid 0x{lid:04x}" for lid, g in self.by_lid.items() if g.port_guid == guid]
        paths = ["path " + (",".join(map(str, p)) or "(local)") for p, g in self.by_path.items() if g.port_guid == guid]
        return " ".join(lids[:1] + paths[:1])

    def peer(self, pid: PortId, switch: NodeGuids) -> NodeGuids | None:
        """The node at the other end of a switch's port ``pid.port``, when the capture's directed
        routes say: the node one hop further, or the one before for the port the route came in by."""
        if pid.dr_path is None:
            return None
        if pid.dr_path and pid.port == switch.local_port:
            return self.by_path.get(pid.dr_path[:-1])
        return self.by_path.get(pid.dr_path + (pid.port,))

    def node(self, pid: PortId) -> NodeGuids | None:
        info = self.by_path.get(pid.dr_path) if pid.dr_path is not None else None
        if info is None and pid.lid is not None:
            info = self.by_lid.get(pid.lid)
        return info


def required_tables(policy: Policy, fabric: Fabric, allow_both: bool = False
                    ) -> tuple[dict[int, set[int]], list[Member]]:
    """Port GUID -> the P_Keys its table must hold, for every end port of ``fabric``; and the
    members naming a port the capture never saw (a GUID no NodeInfo answer gives, SELF unknown)."""
    state: dict[tuple[int, int], set[str]] = {}
    for guid in fabric.end_ports:
        state[DEFAULT_PKEY, guid] = {"limited"}
    if fabric.sm_guid is not None:
        state[DEFAULT_PKEY, fabric.sm_guid] = {"full"}
    absent = []
    for part in policy.partitions:
        for m in part.members:
            ports = _member_ports(m, fabric)
            if not ports:
                if m.what in ("guid", "SELF"):
                    absent.append(m)
                continue
            kinds = {"full", "limited"} if m.membership == "both" and allow_both else (
                {"full"} if m.membership == "both" else {m.membership})
            for guid in ports:
                state[part.pkey, guid] = kinds
    tables: dict[int, set[int]] = {guid: set() for guid in fabric.end_ports}
    for (pkey, guid), kinds in state.items():
        for k in kinds:
            tables[guid].add(pkey | FULL_MEMBER if k == "full" else pkey)
    return tables, absent


def _member_ports(m: Member, fabric: Fabric) -> list[int]:
    if m.what == "ALL":
        return list(fabric.end_ports)
    if m.what in NODE_TYPE_KEYWORDS:
        return [g for g, info in fabric.end_ports.items() if info.node_type == NODE_TYPE_KEYWORDS[m.what]]
    guid = fabric.sm_guid if m.what == "SELF" else m.guid
    return [guid] if guid in fabric.end_ports else []


@dataclass
class PortCheck:
    """One port: ``status`` is ok, violation, never programmed (the policy gives it P_Keys but the
    capture holds no table for it) or not checked (``why``)."""

    status: str
    guid: int | None  # the end port's GUID; for a switch's external port, the switch's node GUID
    pid: PortId | None = None
    facing: int | None = None  # a switch's external port: the end port it faces
    required: set[int] = field(default_factory=set)
    held: set[int] = field(default_factory=set)
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    membership: list[tuple[int, int]] = field(default_factory=list)  # (held, required)
    why: str = ""  # not checked: why; never programmed: where the capture met the port
    node: str | None = None  # the node's NodeDescription, when the capture has it


@dataclass
class CaptureCheck:
    path: str
    policy: Policy
    ports: list[PortCheck]
    absent: list[Member]
    sm_guid: int | None
    file_error: str | None = None

    @property
    def violations(self) -> list[PortCheck]:
        return [p for p in self.ports if p.status in ("violation", "never programmed")]


def compare(required: set[int], held: set[int]) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """(missing, extra, wrong membership) of a table holding ``held`` that must hold ``required``."""
    missing, extra, wrong = [], [], []
    for base in sorted({k & PARTITION_MASK for k in required | held}):
        want = {k for k in required if k & PARTITION_MASK == base}
        have = {k for k in held if k & PARTITION_MASK == base}
        lacks, surplus = sorted(want - have), sorted(have - want)
        if want and have and len(lacks) == 1 and len(surplus) == 1:
            wrong.append((surplus[0], lacks[0]))
        else:
            missing += lacks
            extra += surplus
    return missing, extra, wrong


def check_snoop(result: FabricSnoop, fabric: Fabric, policy: Policy, path: str = "",
                allow_both: bool = False) -> CaptureCheck:
    """Every port of ``result`` against ``policy``; then the end ports it never programmed."""
    tables, absent = required_tables(policy, fabric, allow_both)
    checks, seen = [], set()
    for pid in sorted(result.ports, key=port_order):
        held = {int(k) for k in result.ports[pid].table if int(k) & PARTITION_MASK}
        node = result.ports[pid].node
        info = fabric.node(pid)
        if info is None:
            checks.append(PortCheck("not checked", None, pid, held=held,
                                    why="no NodeInfo answer in the capture names this port", node=node))
            continue
        if pid.port and info.node_type == smp.NODE_TYPE_SWITCH:
            peer = fabric.peer(pid, info)
            if peer is None or peer.node_type == smp.NODE_TYPE_SWITCH:
                why = "a link between switches" if peer else "the capture does not say what it faces"
                checks.append(PortCheck("not checked", info.node_guid, pid, held=held, why=why, node=node))
                continue
            guid, facing = info.node_guid, peer.port_guid
            required = tables.get(facing, set())
        else:
            guid, facing = info.port_guid, None
            required = tables.get(guid, set())
            seen.add(guid)
        missing, extra, wrong = compare(required, held)
        status = "violation" if missing or extra or wrong else "ok"
        checks.append(PortCheck(status, guid, pid, facing, required, held, missing, extra, wrong, node=node))
    for guid in sorted(set(tables) - seen):
        if tables[guid]:
            checks.append(PortCheck("never programmed", guid, required=tables[guid], missing=sorted(tables[guid]),
                                    why=fabric.where(guid)))
    return CaptureCheck(path, policy, checks, absent, fabric.sm_guid, result.file_error)


def check_capture(path: str | os.PathLike, policy: Policy, rule: str = "getresp",
                  allow_both: bool = False) -> CaptureCheck:
    """Snoop ``path`` (``rule``: ``getresp``, the last table each port reported, or ``set``, the
    kernel's rule) and check it against ``policy``."""
    from madpipe.pipeline.fabric.snoop import snoop_capture  # the kernels: imported once the CLI has planned numba

    result = snoop_capture(path, rule)
    return check_snoop(result, Fabric.of_capture(path), policy, os.fspath(path), allow_both)
