"""Routes and ports as the capture names them: dense ids for route keys, and what answers say of them.

A route is the LRH LID of a LID-routed SMP or the directed-route path of a directed one (an
ingest.kernels route key); NodeInfo and PortInfo answers give the LID behind a path and the
P_Key capacities, from which :class:`Routes` names each port (:class:`PortId`).
"""
from __future__ import annotations

import numpy as np

from madpipe.codecs import wire
from madpipe.pipeline.fabric import kernels as kf
from madpipe.pipeline.fabric.model import Capacities, NodeNames, PortId
from madpipe.pipeline.ingest import kernels as ki


class KeyTable:
    """Dense ids for fixed-width byte keys, in first-seen order (fabric.kernels.intern_keys)."""

    def __init__(self, width: int, capacity: int = 1024):
        self.width = width
        self.keys = np.zeros((capacity, width), np.uint8)  # the key of each id
        self.table = np.full(2 * capacity, -1, np.int32)
        self.n = 0

    def intern(self, keys: np.ndarray) -> np.ndarray:
        ids = np.empty(len(keys), np.int32)
        done = 0
        while True:
            self.n, done = kf.intern_keys(keys, done, self.table, self.keys, self.n, ids)
            if done == len(keys):
                return ids
            self._grow()

    def _grow(self) -> None:
        keys = np.zeros((2 * len(self.keys), self.width), np.uint8)
        keys[:self.n] = self.keys[:self.n]
        self.keys = keys
        self.table = np.full(2 * len(keys), -1, np.int32)
        kf.rehash(self.keys, self.n, self.table)


def route_of_key(key) -> tuple:
    """A route key (ingest.kernels.route_key_head; a row of bytes, or its ``tolist()``) as the
    route it stands for: ``("lid", lid)`` or ``("dr", path, end_lid or None)``."""
    lid = int(key[2]) << 8 | int(key[3])
    if key[0] == ki.ROUTE_LID:
        return ("lid", lid)
    hops = int(key[4])
    return ("dr", tuple(map(int, key[5:5 + hops])), lid if key[1] else None)


class Routes:
    """Routes (ingest.kernels route keys) and what NodeInfo and PortInfo answers say about them.

    :meth:`learn` takes answers in frame order (fabric.kernels.learn_routes keeps the facts of
    each route id: the last answer winning, as in the reference); :meth:`finish` then fixes
    ``lid_of`` (route -> LID behind a directed-route path, in the order the first qualifying
    answer came) and ``caps`` (the P_Key capacities by route). Before finish, :meth:`port_id`
    names ports by what the answers so far say.
    """

    def __init__(self):
        self.table = KeyTable(ki.ROUTE_KEY_WIDTH)
        self.route: list[tuple] = []  # id -> route tuple
        self.id_of: dict[tuple, int] = {}  # route tuple -> id
        self.facts = np.full((64, kf.FACTS), -1, np.int64)  # id -> fabric.kernels.FACT_* columns
        self.seen = 0  # PortInfo answers with a LID so far
        self.caps = Capacities()  # set by finish
        self.names = NodeNames()  # NodeDescription answers, as they come
        self.lid_of: dict[tuple, int] | None = None  # set by finish

    def learn(self, hdr: np.ndarray, data: np.ndarray, key: np.ndarray) -> None:
        """Answers (rows of ingest.kernels.snoop_smps's ans_* outputs), in frame order."""
        if not len(hdr):
            return
        ids = self.table.intern(key)
        for i, row in enumerate(self.table.keys[len(self.route):self.table.n].tolist(), len(self.route)):
            route = route_of_key(row)
            self.id_of[route] = i
            self.route.append(route)
        if self.table.n > len(self.facts):
            grown = np.full((2 * self.table.n, kf.FACTS), -1, np.int64)
            grown[:len(self.facts)] = self.facts
            self.facts = grown
        self.seen = kf.learn_routes(ids, hdr, data, self.seen, self.facts)
        self._learn_names(ids, hdr, data)

    def _learn_names(self, ids: np.ndarray, hdr: np.ndarray, data: np.ndarray) -> None:
        # One answer per node and sweep: few rows, so each route's last one is taken in Python.
        rows = np.flatnonzero((hdr[:, wire.MAD_ATTR_ID] == 0) & (hdr[:, wire.MAD_ATTR_ID + 1] == wire.IB_SMP_ATTR_NODE_DESC))
        if not len(rows):
            return
        # Here, not at the top: codecs.smp builds construct's schemas (~30 ms of every start-up).
        from madpipe.codecs.smp import node_description_text

        last = {int(ids[j]): j for j in rows.tolist()}
        for i, j in last.items():
            self.names.text[self.route[i]] = node_description_text(data[j].tobytes())

    def finish(self) -> None:
        # A switch has one LID, on port 0; a CA port's PortInfo carries its own LID.
        found = []
        for i, (switch, node_cap, switch_cap, lid_any, seen_any, lid_p0, seen_p0) in enumerate(
                self.facts[:len(self.route)].tolist()):
            r = self.route[i]
            if switch >= 0:
                self.caps.switch[r] = switch == 1
                self.caps.node[r] = node_cap
            if switch_cap >= 0:
                self.caps.switch_ports[r] = switch_cap
            if switch != 1 and lid_any >= 0:
                found.append((seen_any, r, lid_any))
            elif switch == 1 and lid_p0 >= 0:
                found.append((seen_p0, r, lid_p0))
        self.lid_of = {r: lid for _, r, lid in sorted(found, key=lambda f: f[0])}

    def lid_behind(self, route: tuple) -> int | None:
        if self.lid_of is not None:
            return self.lid_of.get(route)
        i = self.id_of.get(route)
        if i is None:
            return None
        facts = self.facts[i]
        lid = facts[kf.FACT_LID_P0 if facts[kf.FACT_SWITCH] == 1 else kf.FACT_LID_ANY]
        return int(lid) if lid >= 0 else None

    def port_id(self, route: tuple, port: int) -> PortId:
        """The port a route and switch port name: by LID when it is known."""
        if route[0] == "lid":
            return PortId(route[1], None, port)
        lid = self.lid_behind(route)
        if lid is None and route[2] is not None:
            lid = route[2]
        return PortId(lid, None, port) if lid is not None else PortId(None, route[1], port)
