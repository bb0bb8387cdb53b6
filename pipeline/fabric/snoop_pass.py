"""One pass of the fabric snoop over a capture: port slots, per-port caches, pairing, spools, counts.

:func:`madpipe.pipeline.fabric.snoop.snoop_capture` runs a :class:`SnoopPass` over a capture's
batches (once, or twice when a late answer renamed a port); the docstring of
:mod:`madpipe.pipeline.fabric.snoop` says what a pass does and what bounds its memory.
"""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from madpipe.codecs import wire
from madpipe.pipeline.fabric import kernels as kf
from madpipe.pipeline.fabric import record_kernels as kr
from madpipe.pipeline.fabric.model import FabricSnoop, HostView, PortId, PortState
from madpipe.pipeline.fabric.routes import KeyTable, Routes, route_of_key
from madpipe.pipeline.fabric.spool import (
    ARENA_BYTES,
    EVENT_DTYPE,
    FINDING_DTYPE,
    RecordArena,
    RecordList,
    Spool,
    events_of,
    findings_of,
)
from madpipe.pipeline.ingest import kernels as ki
from madpipe.pipeline.ingest.reader import Ingest
from madpipe.pipeline.mlx4 import snoop

#: The event records are written as words in the host's order (fabric.record_kernels).
LITTLE_ENDIAN = sys.byteorder == "little"

#: A pair_window that bounds nothing (snoop_capture's ``pair_window=None``).
UNBOUNDED = 1 << 62


def extract_buffers(batch: int) -> tuple:
    """What ingest.kernels.snoop_smps writes for a batch of ``batch`` records."""
    return (np.empty(batch, np.int64), np.empty(batch, np.uint8), np.empty(batch, np.uint16),
            np.empty(batch, np.uint64), np.empty(batch, np.uint32), np.empty((batch, 64), np.uint8),
            np.empty((batch, ki.ROUTE_KEY_WIDTH), np.uint8), np.empty((batch, 24), np.uint8),
            np.empty((batch, 64), np.uint8), np.empty((batch, ki.ROUTE_KEY_WIDTH), np.uint8))


def extract(raw, buffers: tuple) -> tuple:
    """The batch's P_KeyTable SMPs and the answers naming ports, picked out of its read buffer
    into ``buffers`` (ingest.kernels.snoop_smps): (SMP rows, answer rows, MADs, SMPs).

    The snoop does this on its own thread, not the reader's: what it picks out is read next by
    the pairing and the port lookup, and stays in that core's caches (on the reader's core it
    had to cross over: the 1M-frame snoop took 10-20% longer)."""
    return ki.snoop_smps(raw.buf, raw.pkt_off, raw.pkt_len, raw.code, *buffers)


class _Rows:
    """Columns of rows appended at the end and dropped from the front (the Sets waiting for their
    pairing window, the GetResps that may answer them): each row is written once, by
    fabric.kernels.queue_smps, and a drop moves only the rows that stay."""

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


class SnoopPass:
    """The state of one snoop_capture pass: slots, caches, pending Sets, spools, counts."""

    def __init__(self, routes: Routes, rule: str, profile: str, pair_window: int, host, num_vfs, port_num, v2p,
                 spool_memory: int, batch: int):
        self.routes = routes
        self.rule = rule
        self.profile = profile
        self.window = pair_window
        self.counts: Counter[str] = Counter()
        self.first_ts_ns: int | None = None
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
        self.event_arena = RecordArena(EVENT_DTYPE, min(ARENA_BYTES, spool_memory))
        self.findings = Spool(FINDING_DTYPE, spool_memory)
        self.host = host
        self.host_slot = -1
        if host is not None:
            self.host_cache, init_v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128,
                                                         master=0, profile=profile)
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
            # The new keys as Python ints at once: a numpy row's bytes one by one cost ~1 us each.
            for i, key in enumerate(self.ports.keys[first_new:self.ports.n].tolist(), first_new):
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
        self.caches[slot, :, 0] = wire.IB_DEFAULT_PKEY_FULL  # init_pkeys: entry 0 of each row is the default P_Key
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
        ok = raw.code == ki.REC_OK
        c["frames"] += int(np.count_nonzero(ok))
        if self.first_ts_ns is None and ok.any():
            self.first_ts_ns = int(raw.ts_ns[np.argmax(ok)])
        c["mads"] += mads
        if not mads:
            return
        c["smps"] += smps
        if not k:
            return
        slot = self.slots(key[:k])
        method, status, tid, attr_mod, rows = method[:k], status[:k], tid[:k], attr_mod[:k], rec[:k]
        if self.rule == "getresp":
            resp = np.flatnonzero(method == wire.IB_MGMT_METHOD_GET_RESP)
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

    def decide(self, final: bool, upto: int = 0) -> None:
        """Pair the Sets whose window has passed (all at the end; at least the first ``upto``: a live
        stream's Sets whose answer has come) and apply them, in order."""
        if not len(self.pending):
            return
        sets = self.pending.view()
        answers = self.answers.view()
        n = len(sets["seq"]) if final else int(np.searchsorted(sets["seq"], self.seq - 1 - self.window, "right"))
        n = max(n, min(upto, len(sets["seq"])))
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
            columns = (changed, np.ascontiguousarray(items["frame"], np.int64),
                       np.ascontiguousarray(items["ts_ns"], np.int64), slot, block, bitmap,
                       np.ascontiguousarray(items["unconfirmed"], np.bool_))
            if LITTLE_ENDIAN:
                ev = self.event_arena.take(len(changed))
                kr.event_records(*columns, old.view(np.int64), data.view(np.int64), kr.words(ev))
            else:
                ev = kr.records_by_numpy(*columns, old, data)
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
        # a LID-routed SubnSet(P_KeyTable): what the rule already chose it to be
        mads[:, wire.MAD_MGMT_CLASS] = wire.IB_MGMT_CLASS_SUBN_LID_ROUTED
        mads[:, wire.MAD_METHOD] = wire.IB_MGMT_METHOD_SET
        mads[:, wire.MAD_ATTR_ID + 1] = wire.IB_SMP_ATTR_PKEY_TABLE  # be16, high byte 0
        mads[:, wire.MAD_ATTR_MOD:wire.MAD_ATTR_MOD + 4] = attr_mod.astype(">u4").view(np.uint8).reshape(-1, 4)
        mads[:, wire.SMP_DATA:wire.SMP_DATA + wire.IB_SMP_DATA_SIZE] = data
        res = snoop.smp_snoop(self.host_cache, self.host_v2p, mads, self.host_port_num, 0,
                              num_vfs=self.host_num_vfs, master=0, profile=self.profile)
        frames = frame.tolist()
        for i in np.flatnonzero(res.master_event).tolist():
            self.host_master.append(frames[i])
        for i, vf in zip(*res.slave_events.pairs()):
            self.host_vfs.setdefault(int(vf), []).append(frames[int(i)])

    # -- the result ---------------------------------------------------------------------------
    def close(self) -> None:
        self.event_arena.close()
        self.events.close()
        self.findings.close()

    def port_id(self, slot: int) -> PortId:
        """The port at ``slot`` as the result names it, from what the pass has met so far: its LID
        and the first directed route that reached it."""
        pid = self.pids[slot]
        dr = next((r[1] for r in self.slot_routes[slot] if r[0] == "dr"), None)
        return PortId(pid.lid, dr, pid.port)

    def result(self, ing: Ingest) -> FabricSnoop:
        self.event_arena.close()  # no more events
        full = [self.port_id(slot) for slot in range(len(self.pids))]
        result = FabricSnoop({}, RecordList(self.events, events_of, full), RecordList(self.findings, findings_of, full),
                             self.counts, ing.error, ing.skipped, first_ts_ns=self.first_ts_ns)
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
            result.ports[full[slot]] = PortState(full[slot], table, {b for b in range(16) if mask >> b & 1}, capacity,
                                                 self.routes.names.of(routes))
        if self.host is not None:
            met = self.host_slot >= 0 and self.first_order[self.host_slot] >= 0
            pid = full[self.host_slot] if met else PortId(self.host, None, 0)
            result.host = HostView(pid, self.host_port_num, self.host_num_vfs, self.host_v2p,
                                   self.host_cache[self.host_port_num - 1].copy(), self.host_master, self.host_vfs)
        self.counts["ports"] = len(result.ports)
        self.counts["events"] = len(self.events)
        self.counts["findings"] = len(self.findings)
        return result
