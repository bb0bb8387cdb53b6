"""The fabric snoop's data model: how a port is named, its table, the events and findings, the result.

Shared by :mod:`madpipe.pipeline.fabric.snoop` and the object-per-SMP
:mod:`madpipe.pipeline.fabric.reference`, so that both answer in the same types.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from madpipe.pipeline.mlx4.snoop_reference import FINDING_REFUSED, FINDING_SPILL

#: The rules that decide what a capture's SMPs did to a table (see :mod:`madpipe.pipeline.fabric.snoop`).
FROM_RULES = ("set", "getresp")
FINDING_TEXT = {
    FINDING_SPILL: "block past the 128-entry row, written into the next row (the kernel's spill)",
    FINDING_REFUSED: "block would write past the kernel's table: refused",
}


class PortId(NamedTuple):
    """How a port was reached. ``lid`` is None for a port only known by its DR path.

    A named tuple (ordered, hashed and compared as its fields): the snoop makes one or two per
    port met, and a frozen dataclass's ``__init__`` and ``__hash__`` ran in Python."""

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
class Capacities:
    """P_Key table sizes the capture's answers give, by route.

    NodeInfo.PartitionCap covers a channel adapter's ports and a switch's port 0;
    SwitchInfo.PartitionEnforcementCap covers a switch's external ports (IBA 14.2.5.3-4).
    """

    node: dict[tuple, int] = field(default_factory=dict)  # route -> NodeInfo.partition_cap
    switch_ports: dict[tuple, int] = field(default_factory=dict)  # route -> SwitchInfo's cap
    switch: dict[tuple, bool] = field(default_factory=dict)  # route -> NodeInfo says a switch

    def of(self, routes, port: int) -> int | None:
        """The capacity of switch port ``port`` (0 for a CA) reached by any of ``routes``."""
        for r in routes:
            if port and self.switch.get(r):
                if r in self.switch_ports:
                    return self.switch_ports[r]
            elif r in self.node:
                return self.node[r]
        return None


@dataclass
class NodeNames:
    """What NodeDescription answers (IBA 14.2.5.2) call the nodes, by route: the last answer wins."""

    text: dict[tuple, str] = field(default_factory=dict)  # route -> NodeDescription as text

    def of(self, routes) -> str | None:
        """The name of the node reached by any of ``routes`` (the first route that has one)."""
        return next((self.text[r] for r in routes if r in self.text), None)


def titled(label: str, node: str | None) -> str:
    """A port's label followed by its node's NodeDescription, quoted (JSON escapes: one ASCII line)."""
    if node is None:
        return label
    import json  # here: most captures have no NodeDescription

    return f"{label} {json.dumps(node)}"


@dataclass
class PortState:
    pid: PortId
    table: np.ndarray  # uint16[128], the port's phys_pkey_cache row
    blocks: set[int] = field(default_factory=set)  # blocks written at least once
    capacity: int | None = None  # NodeInfo.partition_cap, when the capture has it
    node: str | None = None  # the NodeDescription of the port's node, when the capture has it

    def title(self) -> str:
        """The port's label and its node's name: ``lid 0x0003 path 1,3 port 1 "Switch2"``."""
        return titled(self.pid.label(), self.node)


@dataclass
class Event:
    frame: int
    ts_ns: int  # the capture's time of the frame, integer nanoseconds
    port: PortId
    block: int
    bitmap: int
    changes: list[tuple[int, int, int]]  # (index in the port's table, old, new)
    unconfirmed: bool

    @property
    def ts(self) -> float:
        """Seconds (the float JSON shows)."""
        return self.ts_ns / 1e9


@dataclass
class Finding:
    frame: int
    port: PortId
    block: int
    kind: int
    text: str


@dataclass
class FabricSnoop:
    """What snoop_capture found. ``events`` and ``findings`` are sequences in frame order (lists, or
    RecordList views of records spooled as they were found)."""

    ports: dict[PortId, PortState]
    events: Sequence[Event]
    findings: Sequence[Finding]
    counts: Counter
    file_error: str | None = None
    skipped: Counter = field(default_factory=Counter)
    host: "HostView | None" = None
    passes: int = 1  # passes over the capture (2 when an answer renamed a port after it was met)
    first_ts_ns: int | None = None  # the capture's first frame: event times count from it, as decode's do


@dataclass
class HostView:
    """The mlx4 master's view of one port: ``--host LID --vfs N``."""

    pid: PortId
    port_num: int
    num_vfs: int
    v2p: np.ndarray  # uint8[F, 2, 128] virt2phys_pkey after init_pkeys and the map file (F: the profile's)
    phys: np.ndarray  # uint16[128] the physical table at the end
    master_events: list[int]  # frames that raised IB_EVENT_PKEY_CHANGE on the master
    vf_events: dict[int, list[int]]  # vf -> frames that raised its P_Key-change event

    def virtual_table(self, vf: int) -> np.ndarray:
        """What VF ``vf`` sees: entry i is phys[virt2phys_pkey[vf][port-1][i]]."""
        return self.phys[self.v2p[vf, self.port_num - 1]]
