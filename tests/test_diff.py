"""`madpipe diff`: the two opensm runs of the bundled captures, and crafted captures for each kind.

The opensm test derives what the diff must say from the two partitions files and the port GUIDs
the capture's own NodeInfo answers give (decoded here with decode_frame, not with the code under
test), never from a stored diff.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from madpipe.codecs import build, smp
from madpipe.codecs.capture import CaptureReader, CaptureWriter
from madpipe.codecs.frame import decode_frame
from madpipe.codecs.mad import IB_MGMT_METHOD_GET_RESP as GETRESP
from madpipe.codecs.mad import IB_MGMT_METHOD_SET as SET
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fabric import diff
from madpipe.pipeline.fabric.model import PortId
from madpipe.pipeline.fabric.snoop import snoop_capture

PCAPS = Path(__file__).parent.parent / "pcaps"
RUN_A = PCAPS / "opensm_partitions.pcap"
RUN_AB = PCAPS / "opensm_partitions_changed.pcap"


# -- what the partitions files say ----------------------------------------------------------------

def read_partitions(path: Path) -> dict:
    """opensm partitions file -> {"ALL": {partition: pkey}, guid: {partition: pkey}} (full -> bit 15).

    Handles the forms the bundled files use: 'Name=PKey[, flags] : member[=full|limited], ... ;'
    with members ALL or a port GUID; a member without '=' is limited (opensm's default).
    """
    text = re.sub(r"#.*", "", path.read_text())
    ports: dict = {}
    for statement in filter(None, (s.strip() for s in text.split(";"))):
        head, members = statement.split(":")
        pkey = int(head.split("=")[1].split(",")[0], 16) & 0x7FFF
        for member in filter(None, (m.strip() for m in members.split(","))):
            name, _, kind = member.partition("=")
            assert kind in ("", "full", "limited"), member
            key = "ALL" if name == "ALL" else int(name, 16)
            table = ports.setdefault(key, {})
            table[pkey] = table.get(pkey, 0) | pkey | (0x8000 if kind == "full" else 0)
    return ports


def expected_table(conf: dict, guid: int) -> dict:
    """partition -> P_Key that a CA port should hold (full membership wins)."""
    table = dict(conf.get("ALL", {}))
    for part, pkey in conf.get(guid, {}).items():
        table[part] = table.get(part, 0) | pkey
    return table


def topology(path: Path):
    """From the capture's NodeInfo answers: DR path -> naming GUID, the CA GUIDs, and each link
    (guid, port) -> (guid, port), a node at path P being entered at NodeInfo.local_port_num
    from port P[-1] of the node at P[:-1]."""
    info = {}
    with CaptureReader(path) as cap:
        for pkt in cap:
            r = decode_frame(pkt.data, pkt.frame)
            if r.get("attr", {}).get("name") == "NodeInfo" and r["mad"]["method"] == GETRESP:
                info[tuple(r["smp"]["initial_path"])] = r["attr"]
    guid = {p: a["port_guid"] if a["node_type"] == 1 else a["node_guid"] for p, a in info.items()}
    cas = {guid[p] for p, a in info.items() if a["node_type"] == 1}
    peer = {}
    for p, a in info.items():
        if p:
            peer[(guid[p[:-1]], p[-1])] = (guid[p], a["local_port_num"])
            peer[(guid[p], a["local_port_num"])] = (guid[p[:-1]], p[-1])
    return guid, cas, peer


def node_names(path: Path) -> dict:
    """DR path -> the NodeDescription the node answered, as decode_frame decodes it."""
    names = {}
    with CaptureReader(path) as cap:
        for pkt in cap:
            r = decode_frame(pkt.data, pkt.frame)
            if r.get("attr", {}).get("name") == "NodeDescription" and r["mad"]["method"] == GETRESP:
                names[tuple(r["smp"]["initial_path"])] = bytes.fromhex(r["attr"]["node_string"]).rstrip(b"\0").decode()
    return names


def facing_ca(port_guid: int, port: int, cas, peer) -> int | None:
    """The CA port a programmed port stands for: itself, or the CA a switch port faces."""
    if port == 0 and port_guid in cas:
        return port_guid
    other = peer.get((port_guid, port))
    return other[0] if other and other[0] in cas else None


def as_partitions(table) -> dict:
    out = {}
    for p in table:
        if p & 0x7FFF:
            out[p & 0x7FFF] = out.get(p & 0x7FFF, 0) | p
    return out


def test_opensm_runs_diff_names_the_partitions_file_changes(capsys):
    conf_a = read_partitions(PCAPS / "partitions-a.conf")
    conf_b = read_partitions(PCAPS / "partitions-b.conf")
    guid_of, cas, peer = topology(RUN_AB)
    assert len(cas) == 4

    # Both runs left every programmed port with the P_Keys its partitions file gives it.
    for path, conf in ((RUN_A, conf_a), (RUN_AB, conf_b)):
        ports = snoop_capture(path).ports
        assert len(ports) == 8
        for pid, state in ports.items():
            ca = facing_ca(guid_of[pid.dr_path], pid.port, cas, peer)
            assert ca is not None, pid
            assert as_partitions(state.table) == expected_table(conf, ca), (path.name, pid)

    assert main(["diff", str(RUN_A), str(RUN_AB), "-T", "json"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = node_names(RUN_AB)
    assert sorted(names.values()) == ["Hca1", "Hca2", "Hca3", "Hca4", "Switch1", "Switch2"]
    got = set()
    for r in records:
        if r["type"] in ("port", "entry", "partition"):
            assert r["guid"] == guid_of[tuple(r["dr_path"])]  # named as NodeInfo names it
        if r["type"] == "port":
            assert r["node_description"] == names[tuple(r["dr_path"])]
        if r["type"] == "partition":
            got.add((r["guid"], r["port"], r["partition"], r["kind"], r["a"], r["b"]))
    want = set()
    for r in records:
        if r["type"] != "port":
            continue
        assert r["status"] in ("same", "changed")  # the same 8 ports in both
        ca = facing_ca(r["guid"], r["port"], cas, peer)
        ta, tb = expected_table(conf_a, ca), expected_table(conf_b, ca)
        for part in ta.keys() | tb.keys():
            a, b = ta.get(part), tb.get(part)
            if a != b:
                kind = "added" if a is None else "removed" if b is None else "membership"
                want.add((r["guid"], r["port"], part, kind, a, b))
    assert got == want
    # What the files changed, in their own words: storage Hca3 limited -> full and Hca4 joins
    # limited; compute loses Hca3; backup (0x8003) holds Hca2; each on the CA and its switch port.
    kinds = sorted((part, kind) for _, _, part, kind, _, _ in got)
    assert kinds == sorted([(0x0001, "membership")] * 2 + [(0x0001, "added")] * 2
                           + [(0x0002, "removed")] * 2 + [(0x0003, "added")] * 2)
    summary = records[-1]
    assert summary["type"] == "summary" and summary["differ"] is True
    assert (summary["changed"], summary["same"], summary["only_a"], summary["only_b"]) == (6, 2, 0, 0)

    # Entry level: exactly the indices where the two tables differ.
    a_ports, b_ports = snoop_capture(RUN_A).ports, snoop_capture(RUN_AB).ports
    entries = {(r["lid"], r["port"], r["index"]): (r["a"], r["b"]) for r in records if r["type"] == "entry"}
    want_entries = {}
    for pid, state in a_ports.items():
        other = b_ports[pid]
        for i in np.flatnonzero(state.table != other.table).tolist():
            want_entries[(pid.lid, pid.port, i)] = (int(state.table[i]), int(other.table[i]))
    assert entries == want_entries


def test_opensm_runs_text(capsys):
    assert main(["diff", str(RUN_A), str(RUN_AB)]) == 1
    out = capsys.readouterr().out
    assert 'Port lid 0x0005 path 1,2 port 0 "Hca3" guid 0x0000000000100007, 64 pkeys capacity:' in out
    lines = out.splitlines()
    start = lines.index('Port lid 0x0005 path 1,2 port 0 "Hca3" guid 0x0000000000100007, 64 pkeys capacity:')
    assert lines[start + 1].split() == ["block", "index", "change", "a", "b", "membership"]
    assert lines[start + 2].split() == ["0", "1", "membership", "0x0001", "0x8001", "limited", "->", "full"]
    assert lines[start + 3].split() == ["0", "2", "removed", "0x0002", "0x0000", "was", "limited"]
    assert lines[start + 4] == "  partitions: 0x0001 limited -> full, 0x0002 removed (was limited)"
    assert lines[-1] == ("8 ports in a, 8 in b: 6 changed, 2 unchanged, 0 only in a, 0 only in b; entries: "
                         "4 added, 2 removed, 2 membership changed, 0 P_Key changed")


def test_same_capture_no_difference(capsys):
    assert main(["diff", str(RUN_A), str(RUN_A)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "no differences: 8 ports with the same P_Key tables"
    assert "Port " not in out


# -- crafted captures ------------------------------------------------------------------------------

def node_info(node_type: int, guid: int, cap: int = 128) -> bytes:
    data = bytearray(64)
    data[2] = node_type
    data[12:20] = guid.to_bytes(8, "big")  # node GUID
    data[20:28] = (guid + 1 if node_type == 1 else guid).to_bytes(8, "big")  # port GUID
    data[28:30] = cap.to_bytes(2, "big")
    return bytes(data)


def port_info(lid: int) -> bytes:
    data = bytearray(64)
    data[16:18] = lid.to_bytes(2, "big")
    return bytes(data)


class Capture:
    """An SM's directed-route SMPs, each answered (GetResp with status 0)."""

    def __init__(self, path):
        self.w = CaptureWriter(path)
        self.tid = 0x100
        self.t = 0

    def pair(self, request: bytes, answer: bytes) -> None:
        for mad in (request, answer):
            self.t += 1_000_000
            self.w.write(build.build_smp_frame(mad), self.t)

    def node(self, path, node_type, guid, lid=None):
        self.tid += 1
        self.pair(build.smp_mad(0x01, smp.IB_SMP_ATTR_NODE_INFO, b"", self.tid, directed=True, path=path),
                  build.smp_mad(GETRESP, smp.IB_SMP_ATTR_NODE_INFO, node_info(node_type, guid), self.tid,
                                directed=True, path=path))
        if lid is not None:
            self.tid += 1
            self.pair(build.smp_mad(0x01, smp.IB_SMP_ATTR_PORT_INFO, b"", self.tid, directed=True, path=path),
                      build.smp_mad(GETRESP, smp.IB_SMP_ATTR_PORT_INFO, port_info(lid), self.tid,
                                    directed=True, path=path))

    def pkeys(self, path, keys, block=0, port=0):
        self.tid += 1
        kw = dict(directed=True, path=path, attr_mod_port=port)
        self.pair(build.pkey_table_mad(SET, block, keys, self.tid, **kw),
                  build.pkey_table_mad(GETRESP, block, keys, self.tid, **kw))

    def close(self):
        self.w.close()


CA1, CA2, CA3, SW = 0x10, 0x20, 0x30, 0x1000


@pytest.fixture
def crafted(tmp_path):
    """A: CA1 (LID 4, path 1), CA2 (LID 5, path 2), a switch's port 3 (path 3), CA3 (LID 7, path 4).
    B: CA1 moved to path 5 with LID 9 (same GUID), CA2 gone, a new CA at LID 7 (another GUID),
    the switch port unchanged, and a port known by its path only (path 6)."""
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    c = Capture(a)
    c.node([1], 1, CA1, lid=4)
    c.node([2], 1, CA2, lid=5)
    c.node([3], 2, SW)
    c.node([4], 1, CA3, lid=7)
    c.pkeys([1], [0xFFFF, 0x8001, 0x0002, 0x8003, 0x0004], block=0)
    c.pkeys([1], [0x8020], block=1)
    c.pkeys([2], [0xFFFF, 0x8001])
    c.pkeys([3], [0xFFFF, 0x0005], port=3)
    c.pkeys([4], [0xFFFF, 0x8001])
    c.close()
    c = Capture(b)
    c.node([5], 1, CA1, lid=9)
    c.node([3], 2, SW)
    c.node([4], 1, 0x40, lid=7)
    # index 1 full -> limited, 2 limited -> full, 3 another partition, 4 removed, 5 added;
    # block 1: entry 32 removed.
    c.pkeys([5], [0xFFFF, 0x0001, 0x8002, 0x8007, 0x0000, 0x8008], block=0)
    c.pkeys([5], [0x0000], block=1)
    c.pkeys([3], [0xFFFF, 0x0005], port=3)
    c.pkeys([4], [0xFFFF, 0x8001])
    c.pkeys([6], [0xFFFF, 0x8009])
    c.close()
    return a, b


def test_crafted_kinds_and_pairing(crafted):
    d = diff.diff_captures(*crafted)
    by_status = {}
    for p in d.ports:
        by_status.setdefault(p.status, []).append(p)
    moved = next(p for p in d.ports if p.guid == CA1 + 1)
    assert moved.status == "changed" and moved.b_named_differently
    assert moved.a.pid == PortId(4, (1,), 0) and moved.b.pid == PortId(9, (5,), 0)
    assert [(e.index, e.block, e.kind, e.a, e.b) for e in moved.entries] == [
        (1, 0, "membership", 0x8001, 0x0001),
        (2, 0, "membership", 0x0002, 0x8002),
        (3, 0, "changed", 0x8003, 0x8007),
        (4, 0, "removed", 0x0004, 0x0000),
        (5, 0, "added", 0x0000, 0x8008),
        (32, 1, "removed", 0x8020, 0x0000),
    ]
    assert [(c.partition, c.kind, c.a, c.b) for c in moved.partitions] == [
        (1, "membership", 0x8001, 0x0001), (2, "membership", 0x0002, 0x8002), (3, "removed", 0x8003, None),
        (4, "removed", 0x0004, None), (7, "added", None, 0x8007), (8, "added", None, 0x8008),
        (0x20, "removed", 0x8020, None)]
    # Same LID 7 but another GUID: two ports, not one.
    assert {(p.status, p.guid) for p in d.ports if 7 in (p.pid.lid,)} == {("only_a", CA3 + 1), ("only_b", 0x41)}
    assert {p.guid for p in by_status["only_a"]} == {CA2 + 1, CA3 + 1}
    assert {(p.pid, p.guid) for p in by_status["only_b"]} == {
        (PortId(7, (4,), 0), 0x41), (PortId(None, (6,), 0), None)}
    assert [(p.pid, p.guid) for p in by_status["same"]] == [(PortId(None, (3,), 3), SW)]
    c = d.counts()
    assert (c["changed"], c["same"], c["only_a"], c["only_b"]) == (1, 1, 2, 2)
    assert (c["entries_added"], c["entries_removed"], c["entries_membership"], c["entries_changed"]) == (1, 2, 2, 1)


def test_crafted_text_and_json(crafted, capsys):
    a, b = map(str, crafted)
    assert main(["diff", a, b]) == 1
    out = capsys.readouterr().out
    assert "Port lid 0x0004 path 1 port 0 (in b: lid 0x0009 path 5 port 0) guid 0x0000000000000011, " \
           "128 pkeys capacity:" in out
    assert "      0     3  P_Key changed 0x8003  0x8007\n" in out
    assert "      1    32  removed       0x8020  0x0000  was full\n" in out
    assert "Only in a: port lid 0x0005 path 2 port 0 guid 0x0000000000000021, 128 pkeys capacity " \
           "(b never set its table):\n   0: 0xffff 0x8001 0x0000" in out
    assert "Only in b: port path 6 port 0 (a never set its table):" in out
    assert out.splitlines()[-1] == ("4 ports in a, 4 in b: 1 changed, 1 unchanged, 2 only in a, 2 only in b; "
                                    "entries: 1 added, 2 removed, 2 membership changed, 1 P_Key changed")
    assert main(["diff", a, b, "-T", "json"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ports = [r for r in records if r["type"] == "port"]
    assert [r["status"] for r in ports].count("only_a") == 2 and len(ports) == 6
    moved = next(r for r in ports if r["guid"] == CA1 + 1)
    assert moved["b_port"] == {"lid": 9, "dr_path": [5], "port": 0} and moved["lid"] == 4
    only = next(r for r in ports if r["status"] == "only_b" and r["guid"] is None)
    assert only["pkeys"][:2] == [0xFFFF, 0x8009] and len(only["pkeys"]) == 128
    entries = [r for r in records if r["type"] == "entry"]
    assert [(r["index"], r["kind"]) for r in entries] == [
        (1, "membership"), (2, "membership"), (3, "changed"), (4, "removed"), (5, "added"), (32, "removed")]
    assert records[-1]["entries"] == {"added": 1, "removed": 2, "membership": 2, "changed": 1}


def test_vf_view(tmp_path, capsys):
    """The operators' manual scenario across two captures: vm2's index 0 points at physical 2."""
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    for path, keys in ((a, [0xFFFF, 0xB000, 0xB030]), (b, [0xFFFF, 0xB000, 0x3030])):
        c = Capture(path)
        c.node([1], 1, CA1, lid=4)
        c.pkeys([1], keys)
        c.close()
    m = tmp_path / "vfs.map"
    m.write_text("1 1 0 1\n1 1 1 0\n2 1 0 2\n2 1 1 0\n")
    argv = ["diff", str(a), str(b), "--host", "4", "--vfs", "2", "--pkey-map", str(m)]
    assert main(argv + ["-T", "json"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    vfs = {r["vf"]: r for r in records if r["type"] == "vf"}
    assert vfs[1]["status"] == "same" and vfs[2]["status"] == "changed"
    assert vfs[2]["pkeys_a"][:2] == [0xB030, 0xFFFF] and vfs[2]["pkeys_b"][:2] == [0x3030, 0xFFFF]
    assert [(r["vf"], r["index"], r["phys_index"], r["kind"], r["a"], r["b"]) for r in records
            if r["type"] == "vf_entry"] == [(2, 0, 2, "membership", 0xB030, 0x3030)]
    assert records[-1]["vfs"] == 2 and records[-1]["vfs_changed"] == 1
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "VFs of host lid 0x0004 port 1 (2 VFs, mlx4 virt2phys_pkey):\n  VF 1: no difference\n  VF 2:\n" in out
    assert "        0     2  membership    0xb030  0x3030  full -> limited\n" in out
    assert out.splitlines()[-1].endswith("; VFs: 1 of 2 see a difference")


def test_entry_kinds():
    assert diff.entry_kind(0x0000, 0x8001) == "added"
    assert diff.entry_kind(0x8001, 0x0000) == "removed"
    assert diff.entry_kind(0x8001, 0x8000) == "removed"  # 0x8000 is no P_Key
    assert diff.entry_kind(0x0001, 0x8001) == "membership"
    assert diff.entry_kind(0x0001, 0x8002) == "changed"
    assert diff.entry_kind(0x0000, 0x8000) == "changed"
    # A partition held both ways counts as full; moving an entry is no partition change.
    assert diff.compare_partitions(np.array([0xFFFF, 0x0001, 0x8001, 0], np.uint16),
                                   np.array([0xFFFF, 0, 0, 0x8001], np.uint16)) == []


def test_pairing_by_lid_then_path_never_against_guids():
    P = PortId
    pairs, only_a, only_b = diff.pair_ports(
        {P(4, (1,), 0): None, P(None, (2,), 3): None, P(5, None, 0): 0x99},
        {P(4, (7,), 0): None, P(None, (2,), 3): 0x55, P(5, None, 0): 0x98})
    assert pairs == [(P(4, (1,), 0), P(4, (7,), 0)), (P(None, (2,), 3), P(None, (2,), 3))]
    assert only_a == [P(5, None, 0)] and only_b == [P(5, None, 0)]


@pytest.mark.parametrize("argv,words", [
    (["--vfs", "2"], "give --host LID too"),
    (["--host", "4"], "--vfs must be 1..126 with --host (MLX4_MAX_NUM_VF of profile mainline)"),
    (["--host", "4", "--vfs", "2", "-P", "3"], "-P must be 1 or 2"),
])
def test_cli_errors(argv, words, capsys):
    assert main(["diff", str(RUN_A), str(RUN_A), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_missing_and_cut_captures(tmp_path, capsys):
    assert main(["diff", str(RUN_A), str(tmp_path / "none.pcap")]) == 2
    err = capsys.readouterr().err
    assert "none.pcap: cannot open" in err and len(err.strip().splitlines()) == 1
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(RUN_A.read_bytes()[:-100])
    assert main(["diff", str(RUN_A), str(cut)]) == 2  # trouble, as diff(1), after what could be read
    captured = capsys.readouterr()
    assert captured.out.startswith("a: ") and "cut.pcap: " in captured.err
