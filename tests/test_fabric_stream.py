"""The streaming fabric snoop (fabric/snoop.py and the modules beside it, fabric/kernels.py) against its
references, bit for bit.

- ``snoop_ports`` (the per-port cache kernel) against ``smp_snoop_reference`` run port by port;
- ``intern_keys``, ``pair_answers``, ``learn_routes``, ``queue_smps``, ``note_applied`` and
  ``snoop_smps`` against plain-Python models;
- ``snoop_capture`` and `madpipe snoop`'s output against ``reference_fabric`` (the first,
  object-per-SMP implementation) on seeded SM conversations: paired and unpaired Sets, reused
  TIDs, answers before their Set, late PortInfo answers, switches, spills and refusals, damaged
  frames, pcapng, tiny batches, a tiny pairing window and events spooled to disk.

Run once more with NUMBA_DISABLE_JIT=1: the kernels then run as plain Python.
"""
from __future__ import annotations

import io
import json
import random
import struct
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from madpipe.codecs import build
from madpipe.codecs.capture import CaptureReader, CaptureWriter
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.bench import workload
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fabric import event_lines
from madpipe.pipeline.fabric import kernels as kf
from madpipe.pipeline.fabric import reference as reference_fabric
from madpipe.pipeline.fabric import snoop as fabric_snoop  # cli() swaps its snoop_capture
from madpipe.pipeline.fabric.model import PortId, PortState
from madpipe.pipeline.fabric.routes import KeyTable, route_of_key
from madpipe.pipeline.fabric.snoop import snoop_capture, snoop_ports
from madpipe.pipeline.fabric.spool import EVENT_DTYPE, events_of
from madpipe.pipeline.fabric.text import format_pkeys
from madpipe.pipeline.ingest import kernels as ki
from madpipe.pipeline.ingest.reader import Ingest
from madpipe.pipeline.mlx4 import snoop

PCAPS = Path(__file__).parent.parent / "pcaps"
SM_LID = 1
SET, GET, GETRESP = 0x02, 0x01, 0x81
NODE_DESC, NODE_INFO, PORT_INFO, PKEY_TABLE = 0x10, 0x11, 0x15, 0x16
# NodeDescriptions as nodes may send them: plain, quotes and a newline, invalid UTF-8, no NUL, empty.
NAMES = [b"Hca1", b'sw "core" 1\nrack 2', b"bad \xff\xfe utf-8", b"x" * 64, b""]


# -- snoop_ports: the per-port kernel against smp_snoop_reference, port by port ------------------

def pkey_mads(attr_mod, data) -> np.ndarray:
    """SubnSet(P_KeyTable) MADs with these attribute modifiers and SMP data."""
    mads = np.zeros((len(attr_mod), 256), np.uint8)
    mads[:, 0] = mads[:, 2] = 1
    mads[:, 1] = 0x01
    mads[:, 3] = SET
    mads[:, 17] = PKEY_TABLE
    mads[:, 20:24] = attr_mod.astype(">u4").view(np.uint8).reshape(-1, 4)
    mads[:, 64:128] = data
    return mads


@pytest.mark.parametrize("port_num", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_snoop_ports_matches_reference_port_by_port(seed, port_num):
    rng = np.random.default_rng(seed)
    ports, n = 6, 600
    slot = rng.integers(0, ports, n).astype(np.int32)
    block = rng.choice([0, 0, 1, 2, 3, 4, 5, 7, 8, 9, 300, 0xFFFF], n)
    attr_mod = (block | (rng.integers(0, 4, n) << 16)).astype(np.uint32)  # switch-port bits are ignored
    palette = rng.integers(0, 0x10000, (3, 32)).astype(">u2").view(np.uint8)
    data = palette[rng.integers(0, 3, n)].copy()
    flip = rng.random(n) < 0.3
    data[flip, rng.integers(0, 64, int(flip.sum()))] ^= 0x5A
    caches = np.empty((ports, 2, 128), np.uint16)
    for p in range(ports):
        caches[p] = snoop.init_pkeys(num_vfs=0)[0]
    caches[2, 0, 5] = 0x1234  # a cache that is not fresh
    start = caches.copy()
    bitmap, finding, old = snoop_ports(caches, slot, attr_mod, data, port_num)
    for p in range(ports):
        mine = np.flatnonzero(slot == p)
        cache, v2p = snoop.init_pkeys(num_vfs=0)
        cache[:] = start[p]
        res = snoop.smp_snoop_reference(cache, v2p, pkey_mads(attr_mod[mine], data[mine]), port_num, 0, num_vfs=0)
        assert np.array_equal(caches[p], cache), p
        assert np.array_equal(bitmap[mine], res.pkey_change_bitmap)
        assert np.array_equal(finding[mine], res.finding)
        assert np.array_equal(bitmap[mine] != 0, res.master_event)
        assert not res.slave_events.any()
        # old: the entries the block covered, before the item (replayed on a copy of the start).
        flat = start[p].ravel().copy()
        for i in mine:
            bn = int(attr_mod[i]) & 0xFFFF
            first = (port_num - 1) * 128 + bn * 32
            if finding[i] == snoop.FINDING_REFUSED:
                continue
            assert list(old[i]) == list(flat[first:first + 32])
            flat[first:first + 32] = data[i].view(">u2")


def test_snoop_ports_checks_its_arguments():
    caches = np.zeros((2, 2, 128), np.uint16)
    ok = dict(slot=np.zeros(1, np.int32), attr_mod=np.zeros(1, np.uint32), data=np.zeros((1, 64), np.uint8))
    with pytest.raises(ValueError, match="slot must be in 0..1"):
        snoop_ports(caches, np.array([2], np.int32), ok["attr_mod"], ok["data"])
    with pytest.raises(ValueError, match="data must have dtype uint8"):
        snoop_ports(caches, ok["slot"], ok["attr_mod"], np.zeros((1, 64), np.uint16))
    with pytest.raises(ValueError, match="port_num must be in 1..2"):
        snoop_ports(caches, ok["slot"], ok["attr_mod"], ok["data"], port_num=3)
    with pytest.raises(ValueError, match="phys_pkey_cache must have shape"):
        snoop_ports(np.zeros((2, 128), np.uint16), ok["slot"], ok["attr_mod"], ok["data"])


# -- intern_keys and pair_answers against plain Python -------------------------------------------

def random_route_keys(rng, n):
    """Route keys as ingest.kernels.snoop_smps lays them out, with garbage where nothing is read."""
    keys = rng.integers(0, 256, (n, 72), dtype=np.uint8)  # garbage past the hops, before the port
    hops = rng.choice([0, 0, 1, 2, 3, 4, 7, 60, 63], n)
    for i in range(n):
        used = 4 * ((5 + hops[i] + 3) // 4)
        keys[i, :used] = 0
        keys[i, 0] = rng.choice([1, 2])
        keys[i, 1] = rng.choice([0, 1])
        keys[i, 2:4] = rng.choice([0, 1, 2], 2)
        keys[i, 4] = hops[i]
        keys[i, 5:5 + hops[i]] = rng.choice([1, 2], hops[i])
        keys[i, 68:72] = 0
        keys[i, 69] = rng.choice([0, 3])
    return keys


def meaning(key) -> bytes:
    return key[:5 + key[4]].tobytes() + key[68:].tobytes()


@pytest.mark.parametrize("seed", range(3))
def test_intern_keys_gives_first_seen_ids_and_grows(seed):
    rng = np.random.default_rng(seed)
    distinct = random_route_keys(rng, 3000)
    table = KeyTable(72, capacity=4)  # grows many times
    seen: dict[bytes, int] = {}
    for _ in range(4):
        keys = distinct[rng.integers(0, len(distinct), 2000)]
        ids = table.intern(keys)
        want = [seen.setdefault(meaning(k), len(seen)) for k in keys]
        assert ids.tolist() == want
    assert table.n == len(seen)
    assert [meaning(table.keys[i]) for i in range(table.n)] == list(seen)
    # What is kept of a key is its meaning, with zeros elsewhere: what route_of_key reads.
    for i in range(table.n):
        k = table.keys[i]
        assert not k[4 * ((5 + k[4] + 3) // 4):68].any()


def test_route_key_hash_spreads_lids_and_ports():
    """Keys that differ in a LID's low byte or a switch port spread over a table (a hash whose
    products only carried bits upward put 1025 ports in 67 of 2048 slots)."""
    hash_key = getattr(kf._hash_key, "py_func", kf._hash_key)
    keys = np.zeros((1200, 72), np.uint8)
    keys[:, 0] = ki.ROUTE_LID
    keys[:, 1] = 1
    keys[:1000, 2:4] = np.arange(1, 1001).astype(">u2").view(np.uint8).reshape(-1, 2)
    keys[1000:, 2:4] = [0, 7]
    keys[1000:, 68:70] = np.arange(200).astype(">u2").view(np.uint8).reshape(-1, 2)  # switch ports
    words = keys.view(np.uint32)
    slots = {hash_key(words, row, 2, 17) & 2047 for row in range(len(keys))}
    assert len(slots) > 0.7 * 2048 * (1 - np.exp(-len(keys) / 2048))  # a random hash fills ~908


def pair_model(sets, resps, window):
    """The first GetResp with the Set's TID and slot within the window, by brute force."""
    out = []
    for tid, slot, seq in sets:
        for rtid, rslot, rseq, status in resps:
            if (rtid, rslot) == (tid, slot) and abs(rseq - seq) <= window:
                out.append(status)
                break
        else:
            out.append(-1)
    return out


@pytest.mark.parametrize("window", [0, 1, 3, 10, 1 << 40])
@pytest.mark.parametrize("seed", range(3))
def test_pair_answers_matches_brute_force(seed, window):
    rng = random.Random(seed)
    sets, resps = [], []
    for seq in range(400):
        tid = rng.choice([1, 2, 3, 2**63 + 5, 2**64 - 1, rng.getrandbits(64)])
        slot = rng.randrange(3)
        if rng.random() < 0.5:
            sets.append((tid, slot, seq))
        else:
            resps.append((tid, slot, seq, rng.choice([0, 0, 0x1C, 4])))
    answer = np.empty(len(sets), np.int32)
    kf.pair_answers(np.array([s[0] for s in sets], np.uint64), np.array([s[1] for s in sets], np.int32),
                    np.array([s[2] for s in sets], np.int64), np.array([r[0] for r in resps], np.uint64),
                    np.array([r[1] for r in resps], np.int32), np.array([r[2] for r in resps], np.int64),
                    np.array([r[3] for r in resps], np.int32), window, answer)
    assert answer.tolist() == pair_model(sets, resps, window)


def learn_model(ids, hdr, data, seen, routes):
    """learn_routes answer by answer, with dicts (what Routes.learn was before the kernel)."""
    facts = {r: [-1] * kf.FACTS for r in range(routes)}
    for r, h, d in zip(ids.tolist(), hdr.tolist(), data.tolist()):
        f = facts[r]
        if h[17] == 0x11:
            f[kf.FACT_SWITCH], f[kf.FACT_NODE_CAP] = int(d[2] == 2), d[28] << 8 | d[29]
        elif h[17] == 0x12:
            f[kf.FACT_SWITCH_CAP] = d[14] << 8 | d[15]
        elif h[17] == 0x15 and d[16] << 8 | d[17]:
            for lid_col, seen_col, counts in ((kf.FACT_LID_ANY, kf.FACT_SEEN_ANY, True),
                                              (kf.FACT_LID_P0, kf.FACT_SEEN_P0, h[23] == 0)):
                if counts:
                    f[lid_col] = d[16] << 8 | d[17]
                    f[seen_col] = seen if f[seen_col] < 0 else f[seen_col]
            seen += 1
    return [facts[r] for r in range(routes)], seen


@pytest.mark.parametrize("seed", range(3))
def test_learn_routes_matches_answer_by_answer(seed):
    rng = np.random.default_rng(seed)
    n, routes = 500, 7
    ids = rng.integers(0, routes, n).astype(np.int32)
    hdr = rng.integers(0, 256, (n, 24), dtype=np.uint8)
    hdr[:, 17] = rng.choice([0x10, 0x11, 0x12, 0x15, 0x15], n)  # 0x10: NodeDescription, passed over
    hdr[:, 23] = rng.choice([0, 0, 1, 5], n)
    data = rng.integers(0, 256, (n, 64), dtype=np.uint8)
    data[:, 2] = rng.choice([1, 2], n)
    data[rng.random(n) < 0.3, 16:18] = 0  # PortInfo answers without a LID count for nothing
    facts = np.full((routes, kf.FACTS), -1, np.int64)
    seen = 0
    for part in np.array_split(np.arange(n), 4):  # batch by batch, as Routes.learn calls it
        seen = kf.learn_routes(ids[part], hdr[part], data[part], seen, facts)
    want, want_seen = learn_model(ids, hdr, data, 0, routes)
    assert facts.tolist() == want
    assert seen == want_seen


@pytest.mark.parametrize("seed", range(3))
def test_queue_smps_numbers_and_queues_in_order(seed):
    rng = np.random.default_rng(seed)
    k, records = 300, 400
    method = rng.choice([SET, GET, GETRESP, 0x07], k).astype(np.uint8)
    status = rng.integers(0, 0x8000, k).astype(np.uint16)
    tid = rng.integers(0, 2**63, k).astype(np.uint64) * 2 + 1
    slot = rng.integers(0, 9, k).astype(np.int32)
    attr_mod = rng.integers(0, 2**32, k).astype(np.uint32)
    data = rng.integers(0, 256, (k, 64), dtype=np.uint8)
    rec = np.sort(rng.choice(records, k, replace=False)).astype(np.int64)
    frame = np.arange(1000, 1000 + records, dtype=np.int64)
    ts_ns = rng.integers(0, 2**62, records).astype(np.int64)
    pending = {name: np.zeros((k + 5,) + shape, dtype) for name, dtype, shape in
               (("seq", np.int64, ()), ("tid", np.uint64, ()), ("slot", np.int32, ()), ("frame", np.int64, ()),
                ("ts_ns", np.int64, ()), ("attr_mod", np.uint32, ()), ("data", np.uint8, (64,)))}
    answers = {name: np.zeros(k + 5, dtype) for name, dtype in
               (("seq", np.int64), ("tid", np.uint64), ("slot", np.int32), ("status", np.int32))}
    seq, n_pending, n_answers = kf.queue_smps(
        method, status, tid, slot, attr_mod, data, rec, frame, ts_ns, 40,
        *(pending[c] for c in ("seq", "tid", "slot", "frame", "ts_ns", "attr_mod", "data")), 5,
        *(answers[c] for c in ("seq", "tid", "slot", "status")), 5)
    numbered = np.flatnonzero((method == SET) | (method == GETRESP))
    number = dict(zip(numbered.tolist(), range(40, 40 + len(numbered))))
    sets = np.flatnonzero(method == SET)
    resps = np.flatnonzero(method == GETRESP)
    assert (seq, n_pending, n_answers) == (40 + len(numbered), 5 + len(sets), 5 + len(resps))
    assert not pending["seq"][:5].any() and not answers["seq"][:5].any()  # rows before n_* untouched
    pending = {name: col[:n_pending] for name, col in pending.items()}  # the rest: room never used
    answers = {name: col[:n_answers] for name, col in answers.items()}
    assert pending["seq"][5:].tolist() == [number[i] for i in sets.tolist()]
    for name, want in (("tid", tid[sets]), ("slot", slot[sets]), ("frame", frame[rec[sets]]),
                       ("ts_ns", ts_ns[rec[sets]]), ("attr_mod", attr_mod[sets]), ("data", data[sets])):
        assert np.array_equal(pending[name][5:], want), name
    assert answers["seq"][5:].tolist() == [number[i] for i in resps.tolist()]
    for name, want in (("tid", tid[resps]), ("slot", slot[resps]), ("status", status[resps])):
        assert np.array_equal(answers[name][5:], want), name


@pytest.mark.parametrize("seed", range(3))
def test_note_applied_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    n, ports = 400, 12
    slot = rng.integers(0, ports - 2, n).astype(np.int32)  # the last ports get nothing
    attr_mod = (rng.integers(0, 8, n) | (rng.integers(0, 4, n) << 16)).astype(np.uint32)
    finding = rng.choice([0, 0, snoop.FINDING_SPILL, snoop.FINDING_REFUSED], n).astype(np.int8)
    blocks = np.zeros(ports, np.uint16)
    blocks[3] = 0x100
    first_order = np.full(ports, -1, np.int64)
    first_order[4] = 0  # met in an earlier call
    n_first = kf.note_applied(slot, attr_mod, finding, blocks, first_order, 1)
    want_blocks = np.zeros(ports, np.uint16)
    want_blocks[3] = 0x100
    written = finding != snoop.FINDING_REFUSED
    np.bitwise_or.at(want_blocks, slot[written], (1 << (attr_mod[written] & 0xFFFF)).astype(np.uint16))
    assert blocks.tolist() == want_blocks.tolist()
    order = [4] + [p for p in dict.fromkeys(slot.tolist()) if p != 4]
    assert n_first == len(order)
    assert [int(np.flatnonzero(first_order == i)[0]) for i in range(n_first)] == order
    assert (first_order[ports - 2:] == -1).all()


# -- seeded SM conversations -----------------------------------------------------------------------

class Conversation:
    """An SM at LID 1 talking to LID-routed and directed-route ports, written as a capture."""

    PATHS = [(), (1,), (1, 2), (1, 3), (2, 4, 6), (3,) * 9]
    LIDS = list(range(2, 9))

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.frames: list[bytes] = []
        self.later: list[tuple[int, bytes]] = []  # (op index to emit at, frame)
        self.tid = seed << 32
        self.palette = [[0xFFFF, 0x8001, 0x8002], [0xFFFF, 0x8001], [0x7FFF, 0x8003, 0, 0x8004],
                        [self.rng.randrange(1 << 16) for _ in range(32)]]

    def route(self):
        """(directed, path or lid, dr lid): where the next SMP goes."""
        if self.rng.random() < 0.4:
            return False, self.rng.choice(self.LIDS), None
        path = self.rng.choice(self.PATHS)
        end = self.rng.choice([None, None, None, self.rng.choice(self.LIDS)])
        return True, path, end

    def smp(self, method, attr, data, tid, route, attr_mod=0, status=0, answer=False):
        directed, where, end = route
        if directed:
            ends = {"dr_slid": end} if answer else {"dr_dlid": end}
            if end is None:
                ends = {}
            mad = build.smp_mad(method, attr, data, tid, attr_mod, status=status, directed=True, path=where, **ends)
            return build.build_smp_frame(mad)
        mad = build.smp_mad(method, attr, data, tid, attr_mod, status=status)
        return build.build_smp_frame(mad, slid=where if answer else SM_LID, dlid=SM_LID if answer else where)

    def next_tid(self):
        if self.rng.random() < 0.1 and self.tid & 0xFFFF:
            return self.tid - self.rng.randrange(min(self.tid & 0xFFFF, 5) + 1)  # a reused TID
        self.tid += 1
        return self.tid

    def op(self, i):
        r = self.rng.random()
        if r < 0.06:
            name = self.rng.choice(NAMES)
            self.frames.append(self.smp(GETRESP, NODE_DESC, name.ljust(64, b"\0"), self.next_tid(), self.route(),
                                        status=self.rng.choice([0, 0, 0, 0x1C]), answer=True))
        elif r < 0.11:
            route = self.route()
            data = bytearray(64)
            data[2] = self.rng.choice([1, 1, 2])
            data[28:30] = self.rng.choice([32, 64, 128, 256]).to_bytes(2, "big")
            self.frames.append(self.smp(GETRESP, NODE_INFO, bytes(data), self.next_tid(), route,
                                        status=self.rng.choice([0, 0, 0, 0x1C]), answer=True))
        elif r < 0.21:
            path = self.rng.choice(self.PATHS)
            end = self.rng.choice([None, None, self.rng.choice(self.LIDS)])
            data = bytearray(64)
            data[16:18] = self.rng.choice(self.LIDS + [0]).to_bytes(2, "big")
            self.frames.append(self.smp(GETRESP, PORT_INFO, bytes(data), self.next_tid(), (True, path, end),
                                        attr_mod=self.rng.choice([0, 0, 1, 3]), answer=True))
        elif r < 0.75:
            route = self.route()
            block = self.rng.choice([0, 0, 0, 1, 2, 3, 4, 5, 8, 300])
            attr_mod = block | (self.rng.choice([0, 0, 0, 1, 3]) << 16)
            keys = list(self.rng.choice(self.palette))
            if self.rng.random() < 0.3:
                keys[self.rng.randrange(len(keys))] ^= 0x0F0F
            data = struct.pack(f">{len(keys)}H", *keys).ljust(64, b"\0")
            tid = self.next_tid()
            set_frame = self.smp(SET, PKEY_TABLE, data, tid, route, attr_mod)
            how = self.rng.random()
            status = self.rng.choice([0, 0, 0, 0x1C])
            answer = self.smp(GETRESP, PKEY_TABLE, data, tid, route, attr_mod, status=status, answer=True)
            if how < 0.1:
                self.frames += [answer, set_frame]  # the answer first (reordered capture)
            elif how < 0.8:
                self.frames.append(set_frame)
                self.later.append((i + self.rng.randrange(4), answer))
            else:
                self.frames.append(set_frame)  # never answered
        elif r < 0.88:
            route = self.route()
            tid = self.next_tid()
            keys = self.rng.choice(self.palette)
            data = struct.pack(f">{len(keys)}H", *keys).ljust(64, b"\0")
            self.frames.append(self.smp(GET, PKEY_TABLE, b"", tid, route, self.rng.choice([0, 1])))
            self.frames.append(self.smp(GETRESP, PKEY_TABLE, data, tid, route, self.rng.choice([0, 1]),
                                        status=self.rng.choice([0, 0, 0x1C]), answer=True))
        elif r < 0.94:
            mad = build.gmp_mad(0x03, GET, 0x35, self.next_tid())
            self.frames.append(build.build_gmp_frame(mad, slid=2, dlid=SM_LID))
        else:
            good = self.smp(SET, PKEY_TABLE, b"\xff" * 64, self.next_tid(), self.route())
            cut = self.rng.choice([5, 30, 200, len(good) - 1])
            self.frames.append(good[:cut])  # damaged: short, or a MAD cut before its end
        due = [f for at, f in self.later if at <= i]
        self.later = [(at, f) for at, f in self.later if at > i]
        self.frames += due

    def build(self, ops: int) -> list[bytes]:
        for i in range(ops):
            self.op(i)
        self.frames += [f for _, f in self.later]
        return self.frames


def write_capture(path, frames, fmt="pcap"):
    if fmt == "pcap":
        with CaptureWriter(path) as w:
            for i, f in enumerate(frames):
                w.write(f, 1_000_000 * (i + 1))
        return path
    from test_capture import pcapng_bytes  # the pcapng writer the capture tests use

    Path(path).write_bytes(pcapng_bytes([(1000 * (i + 1), f) for i, f in enumerate(frames)], linktype=247))
    return path


def late_port_info(tmp_path) -> Path:
    """Sets to a path before the PortInfo answer that names its LID; a switch answered on port 3 first."""
    c = Conversation(0)
    keys = struct.pack(">3H", 0xFFFF, 0x8001, 0x8002).ljust(64, b"\0")
    frames = [c.smp(SET, PKEY_TABLE, keys, 1, (True, (1,), None)),
              c.smp(SET, PKEY_TABLE, keys[:2] + b"\x80\x09" + keys[4:], 2, (False, 4, None)),
              c.smp(SET, PKEY_TABLE, keys, 3, (True, (1, 2), None)),
              c.smp(GETRESP, PORT_INFO, bytes(16) + b"\x00\x05" + bytes(46), 4, (True, (1, 2), None), 3, answer=True),
              c.smp(GETRESP, PORT_INFO, bytes(16) + b"\x00\x04" + bytes(46), 5, (True, (1,), None), answer=True),
              c.smp(GETRESP, NODE_INFO, bytes(2) + b"\x02" + bytes(61), 6, (True, (1, 2), None), answer=True),
              c.smp(GETRESP, PORT_INFO, bytes(16) + b"\x00\x06" + bytes(46), 7, (True, (1, 2), None), 0, answer=True),
              c.smp(SET, PKEY_TABLE, keys, 8, (True, (1, 2), None))]
    return write_capture(tmp_path / "late.pcap", frames)


def cli(impl, path, argv, **kw) -> tuple[int, str]:
    """`madpipe snoop` with fabric_snoop.snoop_capture replaced by ``impl`` (keywords passed along)."""
    real = fabric_snoop.snoop_capture
    fabric_snoop.snoop_capture = lambda *a, **k: impl(*a, **k, **kw)
    try:
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["snoop", "-r", str(path), *argv])
        return code, out.getvalue()
    finally:
        fabric_snoop.snoop_capture = real


ARGVS = [[], ["-T", "json"], ["--from", "getresp"], ["--from", "getresp", "-T", "json"],
         ["--host", "4", "--vfs", "3", "-T", "json"], ["--host", "0x5", "--vfs", "2", "-P", "2", "--profile", "3.7"]]


def assert_same(path, argvs=ARGVS, ref_kw=None, **kw):
    for argv in argvs:
        want = cli(reference_fabric.snoop_capture, path, argv, **(ref_kw or {}))
        got = cli(snoop_capture, path, argv, **kw)
        assert got == want, argv


def assert_same_result(path, **kw):
    """The Python API too: ports, events, findings, counts, host view."""
    want = reference_fabric.snoop_capture(path)
    got = snoop_capture(path, **kw)
    assert list(got.ports) == list(want.ports)
    for pid in want.ports:
        a, b = want.ports[pid], got.ports[pid]
        assert (b.pid, b.blocks, b.capacity, b.node) == (a.pid, a.blocks, a.capacity, a.node)
        assert np.array_equal(b.table, a.table) and b.table.dtype == a.table.dtype
    assert list(got.events) == list(want.events)
    assert list(got.findings) == list(want.findings)
    assert list(got.counts.items()) == list(want.counts.items())
    assert (got.file_error, got.skipped) == (want.file_error, want.skipped)
    return got


@pytest.mark.parametrize("seed", range(6))
def test_conversations_match_the_reference(tmp_path, seed):
    path = write_capture(tmp_path / "c.pcap", Conversation(seed).build(150))
    got = assert_same_result(path)
    assert got.counts["sets"] > 20 and len(got.ports) > 3
    assert 0 < sum(st.node is not None for st in got.ports.values()) < len(got.ports)  # named and unnamed
    assert_same(path)


def test_conversation_in_tiny_batches_pcapng_and_spooled(tmp_path):
    frames = Conversation(7).build(200)
    for fmt in ("pcap", "pcapng"):
        path = write_capture(tmp_path / f"c.{fmt}", frames, fmt)
        assert_same_result(path, batch=5, spool_memory=300)
        assert_same(path, batch=7, spool_memory=1000)


def test_a_late_answer_renames_ports_and_takes_a_second_pass(tmp_path):
    path = late_port_info(tmp_path)
    got = assert_same_result(path, batch=2)  # the answers come batches after the Sets they name
    assert got.passes == 2
    assert assert_same_result(path).passes == 1  # one batch: its answers are learned before its Sets
    # The path [1] is LID 4 (learned after its Set), and so one port with the LID-routed Set;
    # [1, 2] is a switch whose port-0 PortInfo (LID 6) counts, not port 3's (LID 5).
    assert {(p.lid, p.dr_path, p.port) for p in got.ports} == {(4, (1,), 0), (6, (1, 2), 0)}
    assert_same(path)
    # When the answers come first, one pass is enough.
    frames = Conversation(3).build(60)
    assert snoop_capture(write_capture(tmp_path / "c.pcap", frames)).passes == 1


@pytest.mark.parametrize("window", [0, 2, 9])
def test_a_small_pairing_window_is_the_reference_with_that_window(tmp_path, window):
    path = write_capture(tmp_path / "c.pcap", Conversation(11).build(300))
    assert_same(path, ARGVS[:2], ref_kw={"pair_window": window}, pair_window=window, batch=16)
    # A window as long as the capture is the unbounded rule.
    assert_same(path, ARGVS[:1], pair_window=10_000)


def test_synthetic_workload_matches_the_reference(tmp_path):
    mads, _, _ = workload.sm_mads(3000, seed=4)
    path = tmp_path / "w.pcap"
    workload.write_capture(path, workload.mad_frames(mads, ports=40))
    assert_same_result(path)
    assert_same(path, ARGVS[:3])


@pytest.mark.parametrize("name", ["infiniband_endace_erf_2008.pcap", "opensm_partitions.pcap",
                                  "opensm_partitions_changed.pcap", "opensm_partitions_queries.pcap"])
def test_real_captures_match_the_reference(name):
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{name} is not in pcaps/")
    assert_same_result(path)
    assert_same(path, ARGVS + [["--host", "2", "--vfs", "2", "-T", "json"]])


def test_mutated_conversations_match_the_reference(tmp_path):
    rng = random.Random(5)
    frames = Conversation(9).build(120)
    for trial in range(6):
        mutated = []
        for f in frames:
            f = bytearray(f)
            for _ in range(rng.choice([0, 0, 0, 1, 3])):
                f[rng.randrange(len(f))] = rng.randrange(256)
            mutated.append(bytes(f))
        path = write_capture(tmp_path / f"m{trial}.pcap", mutated)
        assert_same_result(path)
        assert_same(path, ARGVS[:2])


def test_truncated_capture_keeps_what_came_before(tmp_path):
    path = write_capture(tmp_path / "c.pcap", Conversation(2).build(80))
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-100])
    got = assert_same_result(cut)
    assert got.file_error and "truncated record" in got.file_error
    code, _ = cli(snoop_capture, cut, [])
    assert code == 1


# -- the extraction kernel against decode_frame and the reference's routes -----------------------

def test_snoop_smps_matches_the_decoder(tmp_path):
    frames = Conversation(4).build(150)
    path = write_capture(tmp_path / "c.pcap", frames)
    want_pkey, want_ans, mads, smps = [], [], 0, 0
    with CaptureReader(path) as cap:
        for i, pkt in enumerate(cap):
            rec = decode_frame(pkt.data)
            if "mad" not in rec or "error" in rec:
                continue
            mads += 1
            m = rec["mad"]
            if m["mgmt_class"] not in (0x01, 0x81):
                continue
            smps += 1
            start = len(pkt.data) - 6 - 256
            route = reference_fabric._route(np.frombuffer(pkt.data[start:start + 256], np.uint8),
                                            np.frombuffer(pkt.data, np.uint8))
            if m["attr_id"] == PKEY_TABLE:
                want_pkey.append((i, route, m["attr_mod"] >> 16, m["tid"], m["method"], m["status"] & 0x7FFF,
                                  m["attr_mod"]))
            elif m["method"] == GETRESP and not m["status"] & 0x7FFF and (
                    m["attr_id"] in (NODE_INFO, NODE_DESC) or (m["attr_id"] == PORT_INFO and m["mgmt_class"] == 0x81)):
                want_ans.append((route, m["attr_id"]))
    raw = next(iter(Ingest(path).raw()))
    n = len(raw)
    out = (np.empty(n, np.int64), np.empty(n, np.uint8), np.empty(n, np.uint16), np.empty(n, np.uint64),
           np.empty(n, np.uint32), np.empty((n, 64), np.uint8), np.empty((n, 72), np.uint8),
           np.empty((n, 24), np.uint8), np.empty((n, 64), np.uint8), np.empty((n, 72), np.uint8))
    k, a, got_mads, got_smps = ki.snoop_smps(raw.buf, raw.pkt_off, raw.pkt_len, raw.code, *out)
    rec, method, status, tid, attr_mod, _, key, ans_hdr, _, ans_key = out
    assert (got_mads, got_smps) == (mads, smps)
    got_pkey = [(int(rec[j]), route_of_key(key[j]), int(key[j, 68]) << 8 | int(key[j, 69]),
                 int(tid[j]), int(method[j]), int(status[j]), int(attr_mod[j])) for j in range(k)]
    assert got_pkey == want_pkey
    assert [(route_of_key(ans_key[j]), int(ans_hdr[j, 17])) for j in range(a)] == want_ans
    assert len(want_pkey) > 50 and len(want_ans) > 5


def test_spool_in_memory_reads_back_in_chunks_and_its_default_bound(monkeypatch):
    from madpipe.pipeline.fabric import spool

    records = np.zeros(150_000, EVENT_DTYPE)
    records["frame"] = np.arange(len(records))
    kept = spool.Spool(EVENT_DTYPE, memory=1 << 30)
    kept.append(records[:10])
    kept.append(records[10:])
    chunks = list(kept)
    assert kept.file is None and max(map(len, chunks)) == spool.CHUNK
    assert np.concatenate(chunks)["frame"].tolist() == records["frame"].tolist()
    assert spool.SPOOL_MEMORY <= spool.spool_memory() <= spool.SPOOL_MEMORY_MAX
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    assert spool.spool_memory() == spool.SPOOL_MEMORY  # unknown: the least


def test_events_spill_to_a_file_and_read_back(tmp_path):
    path = write_capture(tmp_path / "c.pcap", Conversation(8).build(200))
    got = snoop_capture(path, spool_memory=500)
    assert got.events.spool.file is not None  # went to disk
    want = reference_fabric.snoop_capture(path)
    assert list(got.events) == list(want.events) and len(got.events) == len(want.events)
    assert got.events[0] == want.events[0] and got.events[-1] == want.events[-1]
    assert got.events[3:6] == want.events[3:6]
    with pytest.raises(IndexError):
        got.events[len(want.events)]


def test_json_lines_parse(tmp_path):
    path = write_capture(tmp_path / "c.pcap", Conversation(1).build(100))
    _, out = cli(snoop_capture, path, ["-T", "json"])
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["type"] for r in records} >= {"port", "event", "summary"}
    assert records[-1]["events"] == sum(r["type"] == "event" for r in records)


# -- the text kernels against the Python formats they replace -------------------------------------

def format_pkeys_as_first_written(table, entries):
    lines = []
    for start in range(0, entries, 8):
        row = " ".join(f"0x{int(p):04x}" for p in table[start:start + 8])
        lines.append(f"{start:4d}: {row}")
    return lines


def test_pkey_lines_kernel_and_format_pkeys():
    from madpipe.pipeline.fabric import output as fabric_output

    rng = np.random.default_rng(3)
    tables = rng.integers(0, 1 << 16, (40, 128)).astype(np.uint16)
    tables[0] = 0
    tables[1] = 0xFFFF
    entries = rng.choice([1, 5, 8, 9, 31, 32, 64, 65, 96, 127, 128], 40)
    states = [PortState(None, t, set(), int(e)) for t, e in zip(tables, entries)]
    got = fabric_output._pkey_lines(states)
    for t, e, text in zip(tables, entries, got):
        want = format_pkeys_as_first_written(t, int(e))
        assert format_pkeys(t, int(e)) == want
        assert text == "".join(line + "\n" for line in want)
    short = np.arange(20, dtype=np.uint16)  # a table shorter than a block: the Python path
    assert format_pkeys(short, 20) == format_pkeys_as_first_written(short, 20)


@pytest.mark.parametrize("seed", range(3))
def test_pkey_lines_without_zero_lines_is_the_filter_of_the_text(seed):
    # numpy picks the lines with a P_Key; the text filter it replaced says what they are.
    from madpipe.pipeline.fabric import output as fabric_output

    rng = np.random.default_rng(seed)
    tables = rng.integers(0, 1 << 16, (60, 128)).astype(np.uint16)
    lines = tables.reshape(60, 16, 8)
    lines[rng.random((60, 16)) < 0.6] = 0  # whole lines of 0x0000
    tables[:3] = 0  # ports with no P_Key at all
    tables[5, 8] = 1  # one P_Key in a line of zeros
    entries = rng.choice([1, 5, 8, 9, 31, 32, 64, 65, 96, 127, 128], 60)
    entries[0] = entries[5] = 128
    states = [PortState(None, t, set(), int(e)) for t, e in zip(tables, entries)]
    want = [fabric_output._nonzero_lines(text) for text in fabric_output._pkey_lines(states)]
    assert fabric_output._pkey_lines(states, nonzero=True) == want
    assert want[0] == "     (every entry 0x0000)\n" and "   8: 0x0001 0x0000" in want[5]


def changes_as_texts(chunk, text):
    """Each event's changes as the printers' Python formats write them (text, or JSON's members)."""
    from madpipe.pipeline.fabric import output as fabric_output

    if text:
        return [fabric_output._changes_text(ev.changes) for ev in events_of(chunk, [None] * 64)]
    return [json.dumps([list(c) for c in ev.changes], separators=(",", ":"))[1:-1]
            for ev in events_of(chunk, [None] * 64)]


def events_as_python_formats(events, ports, t0_ns=None):
    """The events with Python's % formats, a line at a time (fabric_output._EVENT_TEXT with times
    relative to t0_ns, or with t0_ns None _EVENT_JSON): what the kernels must write byte for byte."""
    from madpipe.pipeline.fabric import output as fabric_output
    from madpipe.pipeline.fabric import text_kernels as kt

    text = t0_ns is not None
    ports = np.array(ports, dtype=object)
    flags = np.array(["", " (unconfirmed)"] if text else ["false", "true"], dtype=object)
    template = fabric_output._EVENT_TEXT if text else fabric_output._EVENT_JSON
    lines = []
    for chunk in events.spool:
        if text:
            ts = [kt.relative_time_text(t, t0_ns) for t in chunk["ts_ns"].tolist()]
        else:
            ts = (chunk["ts_ns"] / 1e9).tolist()
        lines += map(template.__mod__, zip(
            chunk["frame"].tolist(), ts, ports[chunk["slot"]].tolist(), chunk["block"].tolist(),
            chunk["bitmap"].tolist(), changes_as_texts(chunk, text),
            flags[chunk["unconfirmed"]].tolist()))
    return "".join(lines)


def test_relative_times_are_exact_and_the_kernel_writes_them():
    from decimal import ROUND_HALF_EVEN, Decimal

    from madpipe.pipeline.fabric import text_kernels as kt

    rng = np.random.default_rng(6)
    t0 = 1_700_000_000 * 10**9 + 123_456_789  # an epoch time: a float of it is 238 ns coarse
    d = np.concatenate([rng.integers(-10**12, 10**15, 2000), [0, 499, 500, 501, 1500, 2500, -499, -500, -501,
                                                                -1500, 999_999_500, 10**9 - 1, 9_999_999_999_500,
                                                                -(10**12) - 500]])
    ts = (t0 + d).astype(np.int64)
    for t, delta in zip(ts.tolist(), d.tolist()):
        exact = (Decimal(delta) / Decimal(10**9)).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
        want = format(exact, "f").replace("-0.000000", "0.000000").rjust(12)
        assert kt.relative_time_text(t, t0) == want, delta
    chunk = np.zeros(len(ts), EVENT_DTYPE)
    chunk["ts_ns"] = ts
    buf, ends = event_lines.relative_times(chunk, t0)
    text = buf.tobytes().decode("ascii")
    ends = ends.tolist()
    assert [text[a:b] for a, b in zip([0] + ends[:-1], ends)] == [kt.relative_time_text(t, t0) for t in ts.tolist()]


def test_event_line_kernels_equal_the_python_formats():
    import io

    from madpipe.pipeline.fabric import output as fabric_output

    rng = np.random.default_rng(5)
    n = 700
    chunk = np.zeros(n, EVENT_DTYPE)
    chunk["frame"] = rng.choice([1, 9, 10, 999_999, 9_999_999, 10_000_000, 123_456_789], n)
    chunk["ts_ns"] = rng.choice([0, 1, 999_999_499, 999_999_500, 10**9, 123_456 * 10**9 + 7, -5 * 10**8], n)
    chunk["slot"] = rng.integers(-1, 5, n)
    chunk["block"] = rng.choice([0, 7, 99, 12345, 0xFFFF], n)
    chunk["bitmap"] = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32) & rng.choice(
        [0xFFFFFFFF, 1, 0x80000000, 0], n).astype(np.uint32)
    chunk["unconfirmed"] = rng.integers(0, 2, n)
    chunk["old"] = rng.integers(0, 1 << 16, (n, 32))
    chunk["new"] = rng.integers(0, 1 << 16, (n, 32))
    ports = [PortId(0x12, None, 0), PortId(None, (0, 1, 3), 2), PortId(0xFFFF, None, 36),
             PortId(None, (), 0), PortId(0x1, (0, 5), 1)]

    class Events:  # a RecordList's two attributes the printer reads
        spool = [chunk[:300], chunk[300:]]

    Events.ports = ports
    for t0_ns in (0, 1_250_000_000, 1_700_000_000 * 10**9 + 123_456_789, -10**9):
        fast = io.StringIO()
        fabric_output._events_text(Events, t0_ns, fast)
        assert fast.getvalue() == events_as_python_formats(Events, [f"{p.label():<28}" for p in ports] + [""], t0_ns)
        assert fast.getvalue().count("\n") == n
    fast = io.StringIO()
    fabric_output._events_json(Events, fast)
    assert fast.getvalue() == events_as_python_formats(Events, [event_lines.port_json(p) for p in ports] + [""])
    named = chunk["slot"] >= 0  # (slot -1, the printers' empty sentinel, names no port: not JSON)
    records = [json.loads(line) for line, ok in zip(fast.getvalue().splitlines(), named) if ok]
    assert [r["frame"] for r in records] == chunk["frame"][named].tolist()
    assert [r["unconfirmed"] for r in records] == chunk["unconfirmed"][named].astype(bool).tolist()


def test_json_event_kernel_writes_every_decimal_length_across_word_edges(monkeypatch):
    """json_kernels (and text_kernels) append words of up to 16 bytes at any offset in a uint64 word: every length
    of each decimal it writes (frame to 19 digits, index past 4 digits, P_Keys of 1..5) at every
    offset (port texts of 8 lengths shift each record), against Python's % format; formatted
    97 events at a time by the writer's threads, written in order."""
    import io

    from madpipe.pipeline.fabric import output as fabric_output

    rng = np.random.default_rng(8)
    n = 3000
    edges = [0, 9, 10, 99, 100, 999, 1000, 9999, 10000, 65535]
    chunk = np.zeros(n, EVENT_DTYPE)
    chunk["frame"] = rng.choice([0, 7, 9999, 10**4, 99_999_999, 10**8, 10**12 + 3, 10**16 - 1, 10**16,
                                 2**63 - 1], n)
    chunk["ts_ns"] = rng.integers(0, 2 * 10**18, n)
    chunk["slot"] = rng.integers(-1, 8, n)
    chunk["block"] = rng.choice([0, 1, 312, 313, 3124, 0xFFFF], n)
    chunk["bitmap"] = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32) & rng.choice(
        [0xFFFFFFFF, 1, 0x80000000, 0, 0x10001, 7], n).astype(np.uint32)
    chunk["unconfirmed"] = rng.integers(0, 2, n)
    chunk["old"] = np.where(rng.random((n, 32)) < 0.5, rng.choice(edges, (n, 32)), rng.integers(0, 1 << 16, (n, 32)))
    chunk["new"] = np.where(rng.random((n, 32)) < 0.5, rng.choice(edges, (n, 32)), rng.integers(0, 1 << 16, (n, 32)))
    ports = [PortId(lid, None, port) for lid, port in ((1, 0), (0x12, 1), (0x123, 12), (0xFFFF, 255))] + [
        PortId(None, (0, 1), 0), PortId(None, (0, 1, 2, 3), 3), PortId(None, tuple(range(20)), 7),
        PortId(None, (), 0)]

    class Events:  # a RecordList's two attributes the printer reads
        spool = [chunk[:1], chunk[1:1000], chunk[1000:]]

    Events.ports = ports
    monkeypatch.setattr(event_lines, "FORMAT_RECORDS", 97)
    fast = io.StringIO()
    fabric_output._events_json(Events, fast)
    assert fast.getvalue() == events_as_python_formats(Events, [event_lines.port_json(p) for p in ports] + [""])
    # The text writer appends words too: labels of every width from 0 to 40 shift each line.
    titles = [p.label() for p in ports]
    for width in (0, 1, 7, 13, 28, 40):
        fast = io.StringIO()
        fabric_output._events_text(Events, 10**9, fast, width=width)
        assert fast.getvalue() == events_as_python_formats(Events, [f"{t:<{width}}" for t in titles] + [""], 10**9)
    # What comes before the events (the port tables) is written first, while the first chunks
    # (here more than FORMAT_AHEAD of them) are formatted; with no events, it is still written.
    assert len(chunk) > fabric_output.FORMAT_AHEAD * event_lines.FORMAT_RECORDS
    fast = io.StringIO()
    fabric_output._events_text(Events, 10**9, fast, width=28, before=lambda: fast.write("TABLES\n"))
    assert fast.getvalue() == "TABLES\n" + events_as_python_formats(Events, [f"{t:<28}" for t in titles] + [""], 10**9)

    class NoEvents:
        spool: list = []

    NoEvents.ports = ports
    fast = io.StringIO()
    fabric_output._events_json(NoEvents, fast, before=lambda: fast.write("TABLES\n"))
    assert fast.getvalue() == "TABLES\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "latin-1"])
def test_snoop_text_reaches_any_stdout_encoding_whole_and_in_order(encoding, monkeypatch, capsys):
    """Event lines go to stdout's binary stream only where its text layer would write the same
    bytes; a UTF-16 stdout gets them through the text layer like every other line."""
    import io
    import sys

    path = str(PCAPS / "opensm_partitions.pcap")
    assert main(["snoop", "-r", path]) == 0
    want = capsys.readouterr().out
    assert "P_Key change events" in want
    stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    monkeypatch.setattr(sys, "stdout", stream)
    assert main(["snoop", "-r", path]) == 0
    stream.flush()
    assert stream.buffer.getvalue().decode(encoding) == want
