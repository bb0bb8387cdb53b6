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

Each port's MADs go through smp_snoop's P_KeyTable rule in frame order, as Sets with the status
decided above, on a cache of the kernel's shape ``uint16[2, 128]`` whose row 0 is the port's
table. So block numbers past the table behave as the kernel's: blocks 4..7 spill into row 1
(reported as a finding), larger ones are refused.

How it runs (bounded memory: a capture larger than memory works):

1. One pass streams batches (:meth:`Ingest.raw`, no row copy; a thread reads and walks the next
   chunks meanwhile, :mod:`madpipe.pipeline.ingest.readahead`). A kernel picks the P_KeyTable
   SMPs and their fields, and the NodeInfo and directed-route PortInfo answers, out of the read
   buffer; routes get dense ids and ports dense slots, and :func:`snoop_ports` runs each batch
   over the per-port caches ``uint16[P, 2, 128]`` in one kernel call.
2. A port is named when its first SMP is met, by the answers met so far. An SM asks a path's
   PortInfo before it programs the port's P_Keys, so the names almost always hold; when an answer
   later in the capture changes one (checked at the end), the capture is snooped once more with
   every name known from the start. The result is the same either way.
3. Pairing (rule ``set``): P_KeyTable Sets and GetResps are numbered in one sequence; a Set's
   answer is the first GetResp with its TID from its port at most ``PAIR_WINDOW`` (65536) places
   before or after it in that sequence. Sets wait, in order, until the sequence has run
   ``PAIR_WINDOW`` past them (or the file ends), so at most about 2 * PAIR_WINDOW Sets (64 bytes
   of P_Keys each) and 3 * PAIR_WINDOW GetResps are held, plus one batch (~30 MB in all). A
   capture with at most PAIR_WINDOW P_KeyTable Sets and GetResps is paired exactly as "the first
   GetResp of the TID anywhere in the capture"; past the bound, an answer further away than
   PAIR_WINDOW is not seen: the Set counts as unconfirmed (and is applied), and an earlier
   GetResp with a reused TID further away is ignored. ``pair_window=None`` lifts the bound.
4. Events and findings are spooled as fixed records (in memory up to SPOOL_MEMORY bytes, then
   in an anonymous temporary file) and read back in order when printed.

Memory is then bounded by the batch (a 4 MiB chunk, at most 64k records), the pairing window,
the fabric's size (512 bytes of cache per port, a few hundred bytes per route) and SPOOL_MEMORY.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from madpipe.pipeline.fabric import kernels as kf
from madpipe.pipeline.ingest import kernels as ki
from madpipe.pipeline.ingest import readahead
from madpipe.pipeline.mlx4 import snoop
from madpipe.pipeline.ingest.reader import Ingest

PERMISSIVE_LID = 0xFFFF
FROM_RULES = ("set", "getresp")
FINDING_TEXT = {
    snoop.FINDING_SPILL: "block past the 128-entry row, written into the next row (the kernel's spill)",
    snoop.FINDING_REFUSED: "block would write past the kernel's table: refused",
}

#: P_KeyTable Sets and GetResps a Set's answer may be away from (see the module docstring).
PAIR_WINDOW = 1 << 16
#: Bytes of event and finding records kept in memory before they go to a temporary file.
SPOOL_MEMORY = 16 << 20

METHOD_SET = kf.METHOD_SET
METHOD_GET_RESP = kf.METHOD_GET_RESP
UNBOUNDED = 1 << 62

EVENT_DTYPE = np.dtype([("frame", "<i8"), ("ts_ns", "<i8"), ("slot", "<i4"), ("block", "<u2"),
                        ("bitmap", "<u4"), ("unconfirmed", "u1"), ("old", "<u2", (32,)), ("new", "<u2", (32,))])
FINDING_DTYPE = np.dtype([("frame", "<i8"), ("slot", "<i4"), ("block", "<u2"), ("kind", "i1")])


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
class PortState:
    pid: PortId
    table: np.ndarray  # uint16[128], the port's phys_pkey_cache row
    blocks: set[int] = field(default_factory=set)  # blocks written at least once
    capacity: int | None = None  # NodeInfo.partition_cap, when the capture has it


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


# -- the Python API around kernels_fabric -------------------------------------------------------

def snoop_ports(phys_pkey_cache: np.ndarray, slot: np.ndarray, attr_mod: np.ndarray, data: np.ndarray,
                port_num: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """smp_snoop of SubnSet(P_KeyTable)s answered with status 0, each on its own port's cache.

    ``phys_pkey_cache`` ``uint16[P, 2, 128]`` (updated in place): P masters' caches, as
    ``init_pkeys`` leaves them or later; item n goes to ``phys_pkey_cache[slot[n]]`` (``int32[N]``)
    with attribute modifier ``attr_mod[n]`` (``uint32[N]``) and SMP data ``data[n]`` (``uint8[N, 64]``),
    on physical port ``port_num`` (1 or 2) of a master with no VFs. Returns
    ``(pkey_change_bitmap uint32[N], finding int8[N], old uint16[N, 32])``: what
    :func:`madpipe.pipeline.mlx4.snoop.smp_snoop` gives for the same MADs run port by port, and the
    entries each block covered before it (garbage for refused items).
    """
    snoop._check_array("phys_pkey_cache", phys_pkey_cache, np.uint16,
                       (None, snoop.MLX4_MAX_PORTS, snoop.MLX4_MAX_PORT_PKEYS), writeable=True)
    n = len(slot)
    snoop._check_array("slot", slot, np.int32, (n,))
    snoop._check_array("attr_mod", attr_mod, np.uint32, (n,))
    snoop._check_array("data", data, np.uint8, (n, 64))
    snoop._check_int("port_num", port_num, 1, snoop.MLX4_MAX_PORTS)
    if n and (int(slot.min()) < 0 or int(slot.max()) >= len(phys_pkey_cache)):
        raise ValueError(f"slot must be in 0..{len(phys_pkey_cache) - 1}")
    bitmap = np.empty(n, np.uint32)
    finding = np.empty(n, np.int8)
    old = np.empty((n, 32), np.uint16)
    kf.snoop_ports(slot, attr_mod, data, port_num, phys_pkey_cache, bitmap, finding, old)
    return bitmap, finding, old


class KeyTable:
    """Dense ids for fixed-width byte keys, in first-seen order (kernels_fabric.intern_keys)."""

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


def route_of_key(key: np.ndarray) -> tuple:
    """A route key (kernels_ingest.route_key) as the route it stands for:
    ``("lid", lid)`` or ``("dr", path, end_lid or None)``."""
    lid = int(key[2]) << 8 | int(key[3])
    if key[0] == ki.ROUTE_LID:
        return ("lid", lid)
    hops = int(key[4])
    return ("dr", tuple(int(x) for x in key[5:5 + hops]), lid if key[1] else None)


class Spool:
    """Fixed records appended in order and read back in order; past ``memory`` bytes they are
    written to an anonymous temporary file, so that memory stays bounded whatever the count."""

    def __init__(self, dtype: np.dtype, memory: int = SPOOL_MEMORY):
        self.dtype = np.dtype(dtype)
        self.memory = memory
        self.chunks: list[np.ndarray] = []
        self.held = 0
        self.file = None
        self.on_disk = 0
        self.count = 0

    def append(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.chunks.append(records)
        self.held += records.nbytes
        self.count += len(records)
        if self.held > self.memory:
            if self.file is None:
                import tempfile  # only a spill needs it

                self.file = tempfile.TemporaryFile(prefix="madpipe-spool-")
            self.file.seek(0, os.SEEK_END)
            for chunk in self.chunks:
                self.file.write(chunk.tobytes())
                self.on_disk += len(chunk)
            self.chunks, self.held = [], 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        """The records, as arrays of up to 64k records each."""
        if self.file is not None:
            done, size = 0, self.dtype.itemsize
            while done < self.on_disk:  # seek each time: another reader may have moved the file
                take = min(self.on_disk - done, 1 << 16)
                self.file.seek(done * size)
                yield np.frombuffer(self.file.read(take * size), self.dtype)
                done += take
        yield from self.chunks

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class RecordList(Sequence):
    """A read-only sequence of objects made from a Spool's records, one chunk at a time.

    ``ports[slot]`` is the PortId of the records' ``slot`` field; printers that want speed read
    ``spool`` chunk by chunk and never make the objects.
    """

    def __init__(self, spool: Spool, make, ports: list):
        self.spool = spool
        self.make = make  # (chunk of records, ports) -> list of objects
        self.ports = ports

    def __len__(self) -> int:
        return len(self.spool)

    def __iter__(self):
        for chunk in self.spool:
            yield from self.make(chunk, self.ports)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("record index out of range")
        for chunk in self.spool:
            if index < len(chunk):
                return self.make(chunk[index:index + 1], self.ports)[0]
            index -= len(chunk)
        raise IndexError("record index out of range")


def events_of(chunk: np.ndarray, ports: list) -> list[Event]:
    """EVENT_DTYPE records as Event objects."""
    out = []
    ts_ns = chunk["ts_ns"].tolist()
    olds, news = chunk["old"].tolist(), chunk["new"].tolist()
    for j, (frame, slot, block, bitmap, unconfirmed) in enumerate(zip(
            chunk["frame"].tolist(), chunk["slot"].tolist(), chunk["block"].tolist(), chunk["bitmap"].tolist(),
            chunk["unconfirmed"].tolist())):
        old, new = olds[j], news[j]
        changes = [(block * 32 + i, old[i], new[i]) for i in range(32) if bitmap >> i & 1]
        out.append(Event(frame, ts_ns[j], ports[slot], block, bitmap, changes, bool(unconfirmed)))
    return out


def findings_of(chunk: np.ndarray, ports: list) -> list[Finding]:
    """FINDING_DTYPE records as Finding objects."""
    return [Finding(frame, ports[slot], block, kind, FINDING_TEXT[kind]) for frame, slot, block, kind in zip(
        chunk["frame"].tolist(), chunk["slot"].tolist(), chunk["block"].tolist(), chunk["kind"].tolist())]


# -- what the capture says about routes ----------------------------------------------------------

class Routes:
    """Routes (kernels_ingest route keys) and what NodeInfo and PortInfo answers say about them.

    :meth:`learn` takes answers in frame order (kernels_fabric.learn_routes keeps the facts of
    each route id: the last answer winning, as in the reference); :meth:`finish` then fixes
    ``lid_of`` (route -> LID behind a directed-route path, in the order the first qualifying
    answer came) and ``caps`` (the P_Key capacities by route). Before finish, :meth:`port_id`
    names ports by what the answers so far say.
    """

    def __init__(self):
        self.table = KeyTable(ki.ROUTE_KEY_WIDTH)
        self.route: list[tuple] = []  # id -> route tuple
        self.id_of: dict[tuple, int] = {}  # route tuple -> id
        self.facts = np.full((64, kf.FACTS), -1, np.int64)  # id -> kernels_fabric.FACT_* columns
        self.seen = 0  # PortInfo answers with a LID so far
        self.caps = Capacities()  # set by finish
        self.lid_of: dict[tuple, int] | None = None  # set by finish

    def learn(self, hdr: np.ndarray, data: np.ndarray, key: np.ndarray) -> None:
        """Answers (rows of kernels_ingest.snoop_smps's ans_* outputs), in frame order."""
        if not len(hdr):
            return
        ids = self.table.intern(key)
        for i in range(len(self.route), self.table.n):
            route = route_of_key(self.table.keys[i])
            self.id_of[route] = i
            self.route.append(route)
        if self.table.n > len(self.facts):
            grown = np.full((2 * self.table.n, kf.FACTS), -1, np.int64)
            grown[:len(self.facts)] = self.facts
            self.facts = grown
        self.seen = kf.learn_routes(ids, hdr, data, self.seen, self.facts)

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


# -- pass 2: the snoop ---------------------------------------------------------------------------

class _Rows:
    """Columns of rows appended at the end and dropped from the front (the Sets waiting for their
    pairing window, the GetResps that may answer them): each row is written once, by
    kernels_fabric.queue_smps, and a drop moves only the rows that stay."""

    def __init__(self, capacity: int, **columns):
        self.cols = {name: np.empty((capacity,) + tuple(shape), dtype) for name, (dtype, shape) in columns.items()}
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def reserve(self, k: int) -> dict:
        """Room for ``k`` more rows; the columns (valid until the next change) to write them into
        from row ``n``, which the writer then moves on."""
        if self.n + k > len(self.cols["seq"]):
            size = max(2 * len(self.cols["seq"]), self.n + k)
            for name, col in self.cols.items():
                grown = np.empty((size,) + col.shape[1:], col.dtype)
                grown[:self.n] = col[:self.n]
                self.cols[name] = grown
        return self.cols

    def view(self, stop: int | None = None) -> dict:
        """The first ``stop`` rows (all by default), as views: valid until the next change."""
        stop = self.n if stop is None else stop
        return {name: col[:stop] for name, col in self.cols.items()}

    def drop_front(self, k: int) -> None:
        if k:
            for col in self.cols.values():
                col[:self.n - k] = col[k:self.n]  # overlapping: numpy copies as memmove does
            self.n -= k


class _Run:
    """The state of one snoop_capture pass: slots, caches, pending Sets, spools, counts."""

    def __init__(self, routes: Routes, rule: str, profile: str, pair_window: int, host, num_vfs, port_num, v2p,
                 spool_memory: int, batch: int):
        self.routes = routes
        self.rule = rule
        self.profile = profile
        self.window = pair_window
        self.counts: Counter[str] = Counter()
        self.ports = KeyTable(ki.ROUTE_KEY_WIDTH)  # route key + switch port -> id
        self.port_slot = np.empty(0, np.int32)  # that id -> slot
        self.port_route: list[tuple] = []  # that id -> (route, switch port)
        self.slot_of: dict[PortId, int] = {}
        self.pids: list[PortId] = []
        self.slot_routes: list[list[tuple]] = []
        self.caches = np.empty((0, snoop.MLX4_MAX_PORTS, snoop.MLX4_MAX_PORT_PKEYS), np.uint16)
        self.blocks = np.zeros(0, np.uint16)  # bit b: block b written at least once (b < 8 always)
        self.first_order = np.zeros(0, np.int64)  # slot -> order of its first applied item (-1: none)
        self.n_first = 0  # slots with an applied item
        self.seq = 0  # next number in the Set/GetResp sequence
        # Sets waiting for their answer's window, in seq order; GetResps that may still answer one.
        # Room for what a bounded window can hold (pages never written take no memory), so the
        # columns need not grow: growing copied them and faulted fresh pages in, ~5 ms a 1M snoop.
        rows = 3 * pair_window + 2 * batch if pair_window < UNBOUNDED else 1024
        self.pending = _Rows(rows, seq=(np.int64, ()), tid=(np.uint64, ()), slot=(np.int32, ()), frame=(np.int64, ()),
                             ts_ns=(np.int64, ()), attr_mod=(np.uint32, ()), data=(np.uint8, (64,)))
        self.answers = _Rows(rows, seq=(np.int64, ()), tid=(np.uint64, ()), slot=(np.int32, ()), status=(np.int32, ()))
        self.events = Spool(EVENT_DTYPE, spool_memory)
        self.findings = Spool(FINDING_DTYPE, spool_memory)
        self.host = host
        self.host_slot = -1
        if host is not None:
            self.host_cache, init_v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=0)
            self.host_v2p = init_v2p if v2p is None else v2p
            self.host_num_vfs = num_vfs
            self.host_port_num = port_num
            self.host_master: list[int] = []
            self.host_vfs: dict[int, list[int]] = {vf: [] for vf in range(1, num_vfs + 1)}

    # -- slots --------------------------------------------------------------------------------
    def slots(self, keys: np.ndarray) -> np.ndarray:
        ids = self.ports.intern(keys)
        first_new = len(self.port_slot)
        if self.ports.n > first_new:
            new = np.empty(self.ports.n - first_new, np.int32)
            for i in range(first_new, self.ports.n):
                key = self.ports.keys[i]
                route = route_of_key(key)
                port = int(key[ki.ROUTE_KEY_PORT]) << 8 | int(key[ki.ROUTE_KEY_PORT + 1])
                self.port_route.append((route, port))
                pid = self.routes.port_id(route, port)
                slot = self.slot_of.get(pid)
                if slot is None:
                    slot = self._new_slot(pid)
                self.slot_routes[slot].append(route)
                new[i - first_new] = slot
            self.port_slot = np.concatenate([self.port_slot, new])
        return self.port_slot[ids]

    def _new_slot(self, pid: PortId) -> int:
        slot = len(self.pids)
        self.slot_of[pid] = slot
        self.pids.append(pid)
        self.slot_routes.append([])
        if slot == len(self.caches):
            grown = np.empty((max(16, 2 * slot),) + self.caches.shape[1:], np.uint16)
            grown[:slot] = self.caches
            self.caches = grown
            more = len(grown) - len(self.blocks)
            self.blocks = np.concatenate([self.blocks, np.zeros(more, np.uint16)])
            self.first_order = np.concatenate([self.first_order, np.full(more, -1, np.int64)])
        self.caches[slot] = 0
        self.caches[slot, :, 0] = 0xFFFF  # init_pkeys: entry 0 of each row is the default P_Key
        if self.host is not None and pid.lid == self.host and pid.port == 0:
            self.host_slot = slot
        return slot

    # -- one batch ----------------------------------------------------------------------------
    def names_hold(self) -> bool:
        """Whether every port met was named as the finished Routes name it."""
        return all(self.routes.port_id(route, port) == self.pids[slot]
                   for (route, port), slot in zip(self.port_route, self.port_slot.tolist()))

    def batch(self, raw, buffers, learn: bool) -> None:
        """One batch: its SMPs picked out into ``buffers`` (:func:`extract`), then snooped."""
        k, a, mads, smps = extract(raw, buffers)
        rec, method, status, tid, attr_mod, data, key, ans_hdr, ans_data, ans_key = buffers
        if learn:
            self.routes.learn(ans_hdr[:a], ans_data[:a], ans_key[:a])
        c = self.counts
        c["frames"] += int(np.count_nonzero(raw.code == ki.REC_OK))
        c["mads"] += mads
        if not mads:
            return
        c["smps"] += smps
        if not k:
            return
        slot = self.slots(key[:k])
        method, status, tid, attr_mod, rows = method[:k], status[:k], tid[:k], attr_mod[:k], rec[:k]
        if self.rule == "getresp":
            resp = np.flatnonzero(method == METHOD_GET_RESP)
            if not len(resp):
                return
            c["getresps"] += len(resp)
            bad = status[resp] != 0
            if bad.any():
                c["rejected"] += int(np.count_nonzero(bad))
            ok = resp[~bad]
            self.apply({"frame": raw.frame[rows[ok]], "ts_ns": raw.ts_ns[rows[ok]], "slot": slot[ok],
                        "attr_mod": attr_mod[ok], "data": data[ok], "unconfirmed": np.zeros(len(ok), np.bool_)})
            return
        p = self.pending.reserve(k)
        r = self.answers.reserve(k)
        self.seq, self.pending.n, self.answers.n = kf.queue_smps(
            method, status, tid, slot, attr_mod, data[:k], rows, raw.frame, raw.ts_ns, self.seq,
            p["seq"], p["tid"], p["slot"], p["frame"], p["ts_ns"], p["attr_mod"], p["data"], self.pending.n,
            r["seq"], r["tid"], r["slot"], r["status"], self.answers.n)
        if len(self.pending) and self.seq - 1 - int(self.pending.cols["seq"][0]) >= 2 * self.window:
            self.decide(final=False)

    def decide(self, final: bool) -> None:
        """Pair the Sets whose window has passed (all at the end) and apply them, in order."""
        if not len(self.pending):
            return
        sets = self.pending.view()
        answers = self.answers.view()
        n = len(sets["seq"]) if final else int(np.searchsorted(sets["seq"], self.seq - 1 - self.window, "right"))
        if n:
            answer = np.empty(n, np.int32)
            kf.pair_answers(sets["tid"][:n], sets["slot"][:n], sets["seq"][:n], answers["tid"], answers["slot"],
                            answers["seq"], answers["status"], self.window, answer)
            c = self.counts
            c["sets"] += n
            unconfirmed = answer < 0
            rejected = answer > 0
            # Counter keys in the order the reference meets them (the JSON summary shows that order).
            firsts = sorted((int(np.argmax(flag)), name) for name, flag in
                            (("unconfirmed", unconfirmed), ("rejected", rejected)) if flag.any())
            for _, name in firsts:
                c[name] += int(np.count_nonzero(unconfirmed if name == "unconfirmed" else rejected))
            items = self.pending.view(n)
            if rejected.any():
                applied = np.flatnonzero(~rejected)
                items = {name: col[applied] for name, col in items.items()}
                unconfirmed = unconfirmed[applied]
            items["unconfirmed"] = unconfirmed
            self.apply(items)  # before the drop below: items may be views of the waiting rows
        self.pending.drop_front(n)
        oldest = int(self.pending.cols["seq"][0]) if len(self.pending) else self.seq
        answers = self.answers.view()
        self.answers.drop_front(int(np.searchsorted(answers["seq"], oldest - self.window, "left")))

    def apply(self, items: dict) -> None:
        """Run applied Sets (or reported tables) through the per-port caches; spool what they did."""
        slot = np.ascontiguousarray(items["slot"], dtype=np.int32)
        n = len(slot)
        if not n:
            return
        attr_mod = np.ascontiguousarray(items["attr_mod"])
        data = np.ascontiguousarray(items["data"])
        bitmap = np.empty(n, np.uint32)
        finding = np.empty(n, np.int8)
        old = np.empty((n, 32), np.uint16)
        kf.snoop_ports(slot, attr_mod, data, 1, self.caches, bitmap, finding, old)
        self.n_first = kf.note_applied(slot, attr_mod, finding, self.blocks, self.first_order, self.n_first)
        block = (attr_mod & 0xFFFF).astype(np.uint16)
        changed = np.flatnonzero(bitmap)
        if len(changed):
            ev = np.empty(len(changed), EVENT_DTYPE)  # every field is set below
            ev["frame"] = items["frame"][changed]
            ev["ts_ns"] = items["ts_ns"][changed]
            ev["slot"] = slot[changed]
            ev["block"] = block[changed]
            ev["bitmap"] = bitmap[changed]
            ev["unconfirmed"] = items["unconfirmed"][changed]
            ev["old"] = old[changed]
            ev["new"] = data[changed].view(">u2")
            self.events.append(ev)
        found = np.flatnonzero(finding)
        if len(found):
            fi = np.zeros(len(found), FINDING_DTYPE)
            fi["frame"] = items["frame"][found]
            fi["slot"] = slot[found]
            fi["block"] = block[found]
            fi["kind"] = finding[found]
            self.findings.append(fi)
        if self.host_slot >= 0:
            mine = np.flatnonzero(slot == self.host_slot)
            if len(mine):
                self._host(items["frame"][mine], attr_mod[mine], data[mine])

    def _host(self, frame, attr_mod, data) -> None:
        mads = np.zeros((len(frame), snoop.MAD_SIZE), np.uint8)
        mads[:, 1] = 0x01  # a LID-routed SubnSet(P_KeyTable): what the rule already chose it to be
        mads[:, 3] = METHOD_SET
        mads[:, 17] = 0x16
        mads[:, 20:24] = attr_mod.astype(">u4").view(np.uint8).reshape(-1, 4)
        mads[:, 64:128] = data
        res = snoop.smp_snoop(self.host_cache, self.host_v2p, mads, self.host_port_num, 0,
                              num_vfs=self.host_num_vfs, master=0, profile=self.profile)
        frames = frame.tolist()
        for i in np.flatnonzero(res.master_event).tolist():
            self.host_master.append(frames[i])
        for i, vf in zip(*np.nonzero(res.slave_events)):
            self.host_vfs.setdefault(int(vf), []).append(frames[int(i)])

    # -- the result ---------------------------------------------------------------------------
    def close(self) -> None:
        self.events.close()
        self.findings.close()

    def result(self, ing: Ingest) -> FabricSnoop:
        full = []
        for slot, pid in enumerate(self.pids):
            dr = next((r[1] for r in self.slot_routes[slot] if r[0] == "dr"), None)
            full.append(PortId(pid.lid, dr, pid.port))
        result = FabricSnoop({}, RecordList(self.events, events_of, full), RecordList(self.findings, findings_of, full),
                             self.counts, ing.error, ing.skipped)
        behind: dict[int, list[tuple]] = {}  # LID -> the routes that lead to it, in lid_of's order
        for r, lid in self.routes.lid_of.items():
            behind.setdefault(lid, []).append(r)
        applied = np.flatnonzero(self.first_order[:len(self.pids)] >= 0)
        applied = applied[np.argsort(self.first_order[applied])]
        tables = self.caches[applied, 0]  # one copy of every applied port's row 0
        for slot, table, mask in zip(applied.tolist(), tables, self.blocks[applied].tolist()):
            pid = self.pids[slot]
            routes = list(self.slot_routes[slot])
            if pid.lid is not None:
                routes += behind.get(pid.lid, []) + [("lid", pid.lid)]
            capacity = self.routes.caps.of(routes, pid.port)
            result.ports[full[slot]] = PortState(full[slot], table, {b for b in range(16) if mask >> b & 1}, capacity)
        if self.host is not None:
            met = self.host_slot >= 0 and self.first_order[self.host_slot] >= 0
            pid = full[self.host_slot] if met else PortId(self.host, None, 0)
            result.host = HostView(pid, self.host_port_num, self.host_num_vfs, self.host_v2p,
                                   self.host_cache[self.host_port_num - 1].copy(), self.host_master, self.host_vfs)
        self.counts["ports"] = len(result.ports)
        self.counts["events"] = len(self.events)
        self.counts["findings"] = len(self.findings)
        return result


#: Read buffers the reader thread cycles through: it reads and walks the next chunks while the
#: snoop works on one (4 let it read on through a pairing decision; 2 stalled it, 8 ran slower).
READ_AHEAD_SETS = 4


def extract_buffers(batch: int) -> tuple:
    """What kernels_ingest.snoop_smps writes for a batch of ``batch`` records."""
    return (np.empty(batch, np.int64), np.empty(batch, np.uint8), np.empty(batch, np.uint16),
            np.empty(batch, np.uint64), np.empty(batch, np.uint32), np.empty((batch, 64), np.uint8),
            np.empty((batch, ki.ROUTE_KEY_WIDTH), np.uint8), np.empty((batch, 24), np.uint8),
            np.empty((batch, 64), np.uint8), np.empty((batch, ki.ROUTE_KEY_WIDTH), np.uint8))


def extract(raw, buffers: tuple) -> tuple:
    """The batch's P_KeyTable SMPs and the answers naming ports, picked out of its read buffer
    into ``buffers`` (kernels_ingest.snoop_smps): (SMP rows, answer rows, MADs, SMPs).

    The snoop does this on its own thread, not the reader's: what it picks out is read next by
    the pairing and the port lookup, and stays in that core's caches (on the reader's core it
    had to cross over: the 1M-frame snoop took 10-20% longer)."""
    return ki.snoop_smps(raw.buf, raw.pkt_off, raw.pkt_len, raw.code, *buffers)


def snoop_capture(path: str | os.PathLike, rule: str = "set", profile: str = "new", *,
                  host: int | None = None, num_vfs: int = 0, port_num: int = 1,
                  v2p: np.ndarray | None = None, pair_window: int | None = PAIR_WINDOW,
                  batch: int = 1 << 16, spool_memory: int = SPOOL_MEMORY) -> FabricSnoop:
    """Run the fabric snoop over a capture file; see the module docstring.

    With ``host`` (a LID), that port is also run as an mlx4 master's port ``port_num`` with
    ``num_vfs`` VFs and the given ``virt2phys_pkey`` (``init_pkeys``'s when None): the result's
    ``host`` is a :class:`HostView`. ``pair_window`` None pairs over the whole capture (memory then
    grows with the number of Sets).
    """
    if rule not in FROM_RULES:
        raise ValueError(f"rule must be one of {FROM_RULES}, got {rule!r}")
    if profile not in snoop.PROFILES:
        raise ValueError(f"profile must be one of {snoop.PROFILES}, got {profile!r}")
    window = UNBOUNDED if pair_window is None else int(pair_window)
    if window < 0:
        raise ValueError(f"pair_window must be >= 0, got {pair_window}")
    buffers = extract_buffers(batch)
    routes = Routes()

    def one_pass(learn: bool):
        run = _Run(routes, rule, profile, window, host, num_vfs, port_num, v2p, spool_memory, batch)
        ing = Ingest(path, batch)
        for raw in readahead.ahead(ing.raw(sets=READ_AHEAD_SETS), sets=READ_AHEAD_SETS):
            run.batch(raw, buffers, learn)
        run.decide(final=True)
        return run, ing

    run, ing = one_pass(learn=True)
    routes.finish()
    if not run.names_hold():
        # An answer late in the capture renamed a port met before it (a PortInfo naming the LID
        # behind a path after Sets to that path): snoop again, knowing every name from the start.
        run.close()
        run, ing = one_pass(learn=False)
        result = run.result(ing)
        result.passes = 2
        return result
    return run.result(ing)


_PKEY_LINE = "%4d: " + " ".join(["0x%s"] * 8)


def format_pkeys(table: np.ndarray, entries: int) -> list[str]:
    """``smpquery pkeys`` layout: 8 P_Keys a line, prefixed by the first index."""
    hexes = np.asarray(table, dtype=">u2").tobytes().hex()
    keys = [hexes[i:i + 4] for i in range(0, len(hexes), 4)]
    lines = []
    for start in range(0, entries, 8):
        row = keys[start:start + 8]
        if len(row) == 8:
            lines.append(_PKEY_LINE % (start, *row))
        else:
            lines.append(f"{start:4d}: " + " ".join("0x" + k for k in row))
    return lines


def shown_entries(state: PortState) -> int:
    """How many entries to print: the NodeInfo capacity when known, else through the last block written."""
    if state.capacity:
        return min(state.capacity, len(state.table))
    last = max((b for b in state.blocks if b < 4), default=0)
    return (last + 1) * 32
