"""ibsim, opensm and the diags: capture real SM traffic, snoop it, replay it into a fresh fabric.

The first tests need no tool: ibsim's structures (include/ibsim.h), the conversion of recorded
datagrams into IB packets, the replay's frame parsing, and the bundled captures of pcaps/. The
rest run the real tools (Debian ibsim-utils, opensm, infiniband-diags); locally they skip when a
tool is missing, in CI (MADPIPE_REQUIRE_TOOLS=1) they fail. Every test ends with no process of
ours left running, whatever happened in it (the autouse fixture stops leftovers, then fails).
"""
from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import REQUIRE_TOOLS_ENV, require_tool, stop_leftover_processes

from madpipe.codecs import build
from madpipe.codecs import mad as madc
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.errors import MadpipeError
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fabric.snoop import snoop_capture
from madpipe.pipeline.sim import replay as sim_replay
from madpipe.pipeline.sim.capture import SimCapture, parse_ibnetdiscover_ports, parse_smpquery_pkeys
from madpipe.pipeline.sim.packets import datagrams_to_packets
from madpipe.pipeline.sim.processes import find_tool, find_umad2sim, leftover_processes, stop_process
from madpipe.pipeline.sim.protocol import (
    SIM_CTL_CONNECT,
    SIM_CTL_DISCONNECT,
    SIM_REQUEST_SIZE,
    SimError,
    SimRequest,
    client_info,
    parse_client_info,
    parse_sim_address,
    parse_sim_ctl,
    sim_ctl,
)
from madpipe.pipeline.sim.relay import FROM_SIM, TO_SIM, Connection, Datagram

PCAPS = Path(__file__).resolve().parent.parent / "pcaps"
TOPOLOGY = "/usr/share/doc/ibsim-utils/net-examples/net.2sw2path4hca"
PARTITIONS_A = PCAPS / "partitions-a.conf"
PARTITIONS_B = PCAPS / "partitions-b.conf"
SET_PKEYS = "mad.attr_id==0x16 && mad.method==0x02"

# What partitions-a.conf gives each port of net.2sw2path4hca: (LID, port) -> first entries.
# CA ports are port 0 (attr_mod carries no port for a CA); switch ports are the switch's LID.
TABLES_A = {
    (1, 0): [0xFFFF, 0x8001, 0x8002],  # Hca1: Default, storage full, compute full
    (2, 1): [0xFFFF, 0x8001, 0x8002],  # Switch1 port 1, facing Hca1
    (2, 2): [0xFFFF, 0x0001, 0x0002],  # Switch1 port 2, facing Hca3
    (3, 1): [0xFFFF, 0x8001],  # Switch2 port 1, facing Hca2
    (3, 2): [0xFFFF, 0x0002],  # Switch2 port 2, facing Hca4
    (4, 0): [0xFFFF, 0x8001],  # Hca2: storage full
    (5, 0): [0xFFFF, 0x0001, 0x0002],  # Hca3: storage and compute limited
    (6, 0): [0xFFFF, 0x0002],  # Hca4: compute limited
}
# partitions-b.conf after partitions-a.conf: (LID, port, index, old, new) of every change.
CHANGES_B = {
    (4, 0, 2, 0x0000, 0x8003), (3, 1, 2, 0x0000, 0x8003),  # Hca2 joins backup
    (5, 0, 1, 0x0001, 0x8001), (2, 2, 1, 0x0001, 0x8001),  # Hca3 full in storage
    (5, 0, 2, 0x0002, 0x0000), (2, 2, 2, 0x0002, 0x0000),  # Hca3 leaves compute
    (6, 0, 2, 0x0000, 0x0001), (3, 2, 2, 0x0000, 0x0001),  # Hca4 joins storage, limited
}


pytestmark = pytest.mark.usefixtures("no_process_left")


def need_sim_tools(*extra: str) -> None:
    """Skip (locally) or fail (CI) unless ibsim, opensm, the diags and libumad2sim.so are here."""
    for name in ("ibsim", "opensm", "smpquery", "ibnetdiscover", *extra):
        try:
            find_tool(name)  # also looks in /usr/sbin, where opensm and the diags live
        except SimError:
            require_tool(name)
    try:
        find_umad2sim()
    except SimError as exc:
        if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
            pytest.fail(f"{exc}; {REQUIRE_TOOLS_ENV}=1 forbids skipping tool tests", pytrace=False)
        pytest.skip(str(exc))
    if not os.path.isfile(TOPOLOGY):
        pytest.fail(f"{TOPOLOGY} is missing although ibsim-utils is installed", pytrace=False)


# -- ibsim's structures -------------------------------------------------------------------------------

def test_sim_request_layout_is_ibsim_h():
    mad = bytes(range(256))
    req = SimRequest(dlid=0x0004, slid=0xFFFF, dqp=1, sqp=0x10203, status=110, mad=mad)
    raw = req.pack()
    assert len(raw) == SIM_REQUEST_SIZE == 288
    # dlid and slid: a network-order u16 stored in a host-order u32
    assert raw[0:4] == socket.htons(0x0004).to_bytes(4, sys.byteorder)
    assert raw[4:8] == socket.htons(0xFFFF).to_bytes(4, sys.byteorder)
    assert raw[8:20] == struct.pack(">III", 1, 0x10203, 110)  # dqp, sqp, status: network order
    assert raw[20:24] == bytes(4)  # padding before the u64
    assert raw[24:32] == struct.pack(">Q", 256)  # length, big endian
    assert raw[32:] == mad
    assert SimRequest.unpack(raw) == req
    with pytest.raises(ValueError, match="288"):
        SimRequest.unpack(raw[:-1])


def test_sim_ctl_and_client_info():
    msg = sim_ctl(3, SIM_CTL_CONNECT, client_info(40000, "Hca1", issm=True))
    assert len(msg) == 80
    assert struct.unpack_from("=IIII", msg) == (0xDEADBEEF, 3, SIM_CTL_CONNECT, 44)
    clientid, ctl_type, length, data = parse_sim_ctl(msg)
    assert (clientid, ctl_type, length) == (3, SIM_CTL_CONNECT, 44)
    assert parse_client_info(data) == (40000, 0, 1, "Hca1")
    assert parse_sim_ctl(b"\0" * 80) is None  # wrong magic
    assert parse_sim_ctl(msg[:-1]) is None


@pytest.mark.parametrize("text, expected", [("127.0.0.1:7070", ("127.0.0.1", 7070)),
                                            ("7070", ("127.0.0.1", 7070)),
                                            ("localhost:8000", ("localhost", 8000))])
def test_parse_sim_address(text, expected):
    assert parse_sim_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:x", "1:70000", ":0"])
def test_parse_sim_address_errors(text):
    with pytest.raises(MadpipeError, match="HOST:PORT"):
        parse_sim_address(text)


def test_parse_smpquery_and_ibnetdiscover_output():
    text = ("   0: 0xffff 0x8001 0x0000 0x0000 0x0000 0x0000 0x0000 0x0000\n"
            "   8: 0x0000 0x0000 0x0000 0x0000 0x0000 0x0000 0x0000 0x0002\n"
            "16 pkeys capacity for this port\n")
    assert parse_smpquery_pkeys(text) == [0xFFFF, 0x8001] + [0] * 13 + [2]
    ports = parse_ibnetdiscover_ports(
        "CA     4  1 0x0000000000100004 4x SDR - SW     3  1 0x0000000000200001 ( 'Hca2' - 'Switch2' )\n"
        "SW     3  8 0x0000000000200001 4x SDR                                    'Switch2'\n"
        "ibwarn: something\n")
    assert [(p.kind, p.lid, p.port, p.guid) for p in ports] == [
        ("SW", 3, 0, 0x200001), ("SW", 3, 8, 0x200001), ("CA", 4, 1, 0x100004)]


# -- recorded datagrams -> IB packets ----------------------------------------------------------------

def _datagram(ts, direction, req, conn=0):
    return Datagram(ts, conn, direction, req.pack())


def test_datagrams_to_packets_does_what_ibsim_does_to_requests():
    conn = Connection(0, slot=3, node="Hca1", client=("127.0.0.1", 1), start_ns=0)
    get = build.smp_mad(madc.IB_MGMT_METHOD_GET, 0x0011, b"", tid=0x1234)
    resp = build.smp_mad(madc.IB_MGMT_METHOD_GET_RESP, 0x0011, b"", tid=(3 << 48) | 0x1234)
    dr_get = build.smp_mad(madc.IB_MGMT_METHOD_GET, 0x0015, b"", tid=0x99, directed=True, path=[1, 3])
    perf = build.gmp_mad(madc.IB_MGMT_CLASS_PERF_MGMT, madc.IB_MGMT_METHOD_GET, 0x0012, tid=7)
    datagrams = [
        _datagram(100, TO_SIM, SimRequest(4, 0, 0, 0, 0, get)),  # slid 0: "auto"
        _datagram(200, FROM_SIM, SimRequest(5, 4, 0, 0, 0, resp)),  # ibsim filled 5 in
        _datagram(300, TO_SIM, SimRequest(0xFFFF, 0xFFFF, 0, 0, 0, dr_get)),
        _datagram(400, FROM_SIM, SimRequest(0xFFFF, 0xFFFF, 0, 0, 110, dr_get)),
        _datagram(500, TO_SIM, SimRequest(4, 0, 1, 1, 0, perf)),
    ]
    counts = Counter()
    packets = datagrams_to_packets(datagrams, [conn], counts)
    assert [ts for ts, _ in packets] == [100, 200, 300, 500]
    assert counts["returned undeliverable"] == 1 and counts["packets"] == 4
    recs = [decode_frame(p) for _, p in packets]
    assert all(r["icrc_ok"] and r["vcrc_ok"] and "error" not in r for r in recs)
    request, answer, dr, gmp = recs
    assert (request["lrh"]["slid"], request["lrh"]["dlid"], request["lrh"]["vl"]) == (5, 4, 15)
    assert request["mad"]["tid"] == answer["mad"]["tid"] == (3 << 48) | 0x1234  # the slot in 48-63
    assert (answer["lrh"]["slid"], answer["lrh"]["dlid"]) == (4, 5)
    assert (dr["lrh"]["slid"], dr["lrh"]["dlid"]) == (0xFFFF, 0xFFFF)  # permissive
    assert dr["smp"]["initial_path"] == [1, 3]
    assert (gmp["lrh"]["vl"], gmp["bth"]["dqp"], gmp["deth"]["qkey"]) == (0, 1, 0x80010000)
    assert (gmp["lrh"]["slid"], gmp["lrh"]["dlid"]) == (5, 4)


def test_unknown_source_lid_is_counted():
    conn = Connection(0, slot=0, node="Hca1", client=("127.0.0.1", 1), start_ns=0)
    get = build.smp_mad(madc.IB_MGMT_METHOD_GET, 0x0011, b"", tid=1)
    counts = Counter()
    datagrams_to_packets([_datagram(1, TO_SIM, SimRequest(4, 0, 0, 0, 0, get)),
                          Datagram(2, 0, TO_SIM, b"short")], [conn], counts)
    assert counts["source LID unknown"] == 1 and counts["not a sim_request"] == 1


# -- what replay sends -----------------------------------------------------------------------------------

def test_replay_items_from_a_capture(tmp_path):
    path = PCAPS / "opensm_partitions.pcap"
    counts = Counter()
    items = sim_replay.load_items(str(path), counts=counts)
    assert len(items) == counts["frames"] == 248
    requests = sim_replay.load_items(str(path), only="requests")
    assert len(requests) == 124 and not any(it.mad[3] & 0x80 for it in requests)
    sets = sim_replay.load_items(str(path), display_filter=SET_PKEYS)
    assert len(sets) == 8 and all(it.mad[16:18] == b"\x00\x16" and it.mad[3] == 2 for it in sets)
    assert all(it.dlid == it.slid == 0xFFFF and it.dqp == 0 for it in sets)
    mapped = sim_replay.load_items(str(path), display_filter=SET_PKEYS, map_lid={0xFFFF: 9})
    assert {it.dlid for it in mapped} == {9}


def test_replay_reoriginates_directed_route_requests(tmp_path):
    mad = bytearray(build.smp_mad(madc.IB_MGMT_METHOD_GET, 0x0015, b"", tid=1, directed=True, path=[1]))
    mad[6] = 1  # hop_ptr as a capture in the middle of the path would show it
    path = tmp_path / "one.pcap"
    from madpipe.codecs.capture import CaptureWriter

    with CaptureWriter(path) as w:
        w.write(build.build_smp_frame(bytes(mad)), 0)
    (item,) = sim_replay.load_items(str(path))
    assert item.mad[6] == 0 and item.mad[7] == 1 and item.expects_answer


# -- the bundled captures (made by madpipe capture; see pcaps/README.md) -------------------------------

def _final_tables(result) -> dict:
    return {(pid.lid, pid.port): [int(x) for x in st.table] for pid, st in result.ports.items()}


@pytest.mark.parametrize("name", ["opensm_partitions.pcap", "opensm_partitions_changed.pcap",
                                  "opensm_partitions_queries.pcap"])
def test_bundled_capture_decodes_clean(name):
    with CaptureReader(PCAPS / name) as cap:
        records = [decode_frame(p.data, p.frame) for p in cap]
        assert cap.error is None and cap.linktype == 197
    assert records and all(r["icrc_ok"] and r["vcrc_ok"] and "error" not in r for r in records)
    assert all(r["mad"]["mgmt_class"] in (0x01, 0x81) and r["lrh"]["vl"] == 15 for r in records)


def test_bundled_capture_tables():
    result = snoop_capture(PCAPS / "opensm_partitions.pcap")
    tables = _final_tables(result)
    assert set(tables) == set(TABLES_A)
    for key, head in TABLES_A.items():
        assert tables[key] == head + [0] * (128 - len(head)), key
    assert result.counts["sets"] == 8 and not result.counts["unconfirmed"]


def test_bundled_changed_capture_events():
    result = snoop_capture(PCAPS / "opensm_partitions_changed.pcap")
    second = [e for e in result.events if e.frame > 248]  # run 2 starts after run 1's 248 frames
    got = {(e.port.lid, e.port.port, i, old, new) for e in second for i, old, new in e.changes}
    assert got == CHANGES_B
    assert all(e.block == 0 for e in second)


# -- with the real tools -------------------------------------------------------------------------------

def _smpquery_key(fabric_ports, lid, port):
    """(LID, port) as snoop names it -> as smpquery takes it: a CA's port 0 is its only port."""
    kinds = {p.lid: p for p in fabric_ports if p.kind == "CA"}
    return (lid, kinds[lid].port) if lid in kinds and port == 0 else (lid, port)


@pytest.fixture(scope="module")
def opensm_runs(tmp_path_factory):
    """opensm with partitions-a.conf, then partitions-b.conf, on ibsim; every table read after each.

    Returns a dict: capture_a (opensm's first run only), capture_ab (both runs and the queries),
    ports (ibnetdiscover), pkeys_a and pkeys_b ({(lid, port): table} by smpquery), run_b (the
    second opensm ToolRun).
    """
    need_sim_tools()
    out = tmp_path_factory.mktemp("sim")
    capture = SimCapture(TOPOLOGY, sm_node="Hca1")
    try:
        with capture:
            capture.run_opensm(PARTITIONS_A)
            capture.write(out / "a.pcap")
            ports = capture.ports()
            pkeys_a = capture.query_pkeys()
            run_b = capture.run_opensm(PARTITIONS_B)
            pkeys_b = capture.query_pkeys()
            capture.write(out / "ab.pcap")
    finally:
        left = stop_leftover_processes()
    assert not left
    return {"capture_a": out / "a.pcap", "capture_ab": out / "ab.pcap", "ports": ports,
            "pkeys_a": pkeys_a, "pkeys_b": pkeys_b, "run_b": run_b}


@pytest.mark.slow
def test_snoop_gives_the_tables_smpquery_reads(opensm_runs):
    result = snoop_capture(opensm_runs["capture_a"])
    ports, pkeys = opensm_runs["ports"], opensm_runs["pkeys_a"]
    assert len(ports) == 22 and len(result.ports) == 8
    snooped = {}
    for pid, state in result.ports.items():
        assert pid.lid is not None, f"{pid.label()}: no LID learned for this directed route"
        key = _smpquery_key(ports, pid.lid, pid.port)
        table = [int(x) for x in state.table]
        read = pkeys[key]
        assert table[:len(read)] == read and not any(table[len(read):]), pid.label()
        # smpquery prints as many entries as the port's capacity: NodeInfo's for CA ports and a
        # switch's port 0, SwitchInfo's for a switch's external ports.
        assert state.capacity == len(read), pid.label()
        snooped[key] = table
    # every port opensm changed is in the snoop; every other one still has ibsim's default table
    for key, read in pkeys.items():
        assert key in snooped or (read[0] == 0xFFFF and not any(read[1:])), key  # ibsim's default


@pytest.mark.slow
def test_second_run_events_name_exactly_what_changed(opensm_runs):
    before, after, ports = opensm_runs["pkeys_a"], opensm_runs["pkeys_b"], opensm_runs["ports"]
    expected = {(*key, i, old, new) for key in before
                for i, (old, new) in enumerate(zip(before[key], after[key])) if old != new}
    assert expected  # partitions-b.conf does change tables
    run_b = opensm_runs["run_b"]
    result = snoop_capture(opensm_runs["capture_ab"])
    events = [e for e in result.events if run_b.start_ns / 1e9 <= e.ts <= run_b.end_ns / 1e9]
    got = set()
    for e in events:
        key = _smpquery_key(ports, e.port.lid, e.port.port)
        assert {i // 32 for i, _, _ in e.changes} == {e.block}
        assert e.bitmap == sum(1 << (i % 32) for i, _, _ in e.changes)
        got |= {(*key, i, old, new) for i, old, new in e.changes}
    assert got == expected
    assert not [e for e in result.events if e.ts > run_b.end_ns / 1e9]  # queries change nothing


def _tables_by_dr_path(capture: SimCapture, result) -> dict:
    """Every snooped port's table read back by its directed route (a fresh fabric has no LIDs)."""
    got = {}
    for pid in result.ports:
        path = "0," + ",".join(map(str, pid.dr_path)) if pid.dr_path else "0"
        args = ["-D", "pkeys", path] + ([str(pid.port)] if pid.port else [])
        got[pid] = parse_smpquery_pkeys(capture.smpquery(*args))
    return got


def _assert_tables(result, read: dict) -> None:
    for pid, state in result.ports.items():
        table = [int(x) for x in state.table]
        assert table[:len(read[pid])] == read[pid] and not any(table[len(read[pid]):]), pid.label()


@pytest.mark.slow
def test_replaying_the_sets_into_a_fresh_fabric(opensm_runs, capsys):
    result = snoop_capture(opensm_runs["capture_a"])
    with SimCapture(TOPOLOGY, sm_node="Hca1") as fresh:  # DR paths start at Hca1
        assert main(["replay", "-r", str(opensm_runs["capture_a"]), "--sim", f"127.0.0.1:{fresh.port}",
                     "--node", "Hca1", "-Y", SET_PKEYS, "--top", "-T", "json"]) == 0
        read = _tables_by_dr_path(fresh, result)
    _assert_tables(result, read)
    lines = capsys.readouterr().out.splitlines()
    summary = json.loads(lines[-1])
    assert summary["type"] == "summary"
    assert summary["sent"] == summary["answered"] == 8
    assert summary["timed_out"] == summary["undeliverable"] == summary["answered_with_MAD_status"] == 0


@pytest.mark.slow
def test_replay_through_libibumad_under_umad2sim(opensm_runs, tmp_path):
    """--umad: libibumad by ctypes, in a process with libumad2sim.so preloaded (device ibsim0)."""
    result = snoop_capture(opensm_runs["capture_a"])
    answers = tmp_path / "answers.pcap"
    with SimCapture(TOPOLOGY, sm_node="Hca1") as fresh:  # DR paths start at Hca1
        proc = subprocess.run(
            [sys.executable, "-m", "madpipe.pipeline.cli.main", "replay", "-r", str(opensm_runs["capture_a"]),
             "--umad", "ibsim0", "-Y", SET_PKEYS, "--top", "--allow-set", "-w", str(answers)],
            env=fresh.tool_env("Hca1"), cwd=fresh.workdir, capture_output=True, text=True,
            timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        read = _tables_by_dr_path(fresh, result)
    _assert_tables(result, read)
    assert "answered                              8" in proc.stdout
    with CaptureReader(answers) as cap:
        got = [decode_frame(p.data) for p in cap]
    assert len(got) == 8 and all(r["mad"]["method"] == 0x81 and r["vcrc_ok"] for r in got)


@pytest.mark.slow
def test_capture_command(opensm_runs, tmp_path, capsys):
    out = tmp_path / "cli.pcap"
    assert main(["capture", "--sim", TOPOLOGY, "--sm-node", "Hca1", "--partitions", str(PARTITIONS_A),
                 "--then", str(PARTITIONS_B), "-w", str(out)]) == 0
    text = capsys.readouterr().out
    assert "opensm -e -f opensm-1.log -P partitions-a.conf --once" in text
    assert "opensm -e -f opensm-2.log -P partitions-b.conf --once" in text
    result = snoop_capture(out)
    final = {_smpquery_key(opensm_runs["ports"], pid.lid, pid.port): [int(x) for x in st.table[:64]]
             for pid, st in result.ports.items()}
    assert all(final[k] == opensm_runs["pkeys_b"][k] for k in final)


def test_busy_port_is_one_clear_line(tmp_path, capsys):
    """A capture's private network has every port free, save those of another capture sharing it
    (one started from the same thread while this one runs): there a busy port is refused."""
    need_sim_tools()
    with SimCapture(TOPOLOGY), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # the test thread is inside the first capture's namespace here
        port = s.getsockname()[1]
        base = port - 5  # the port in use is in the middle of BASE..BASE+10
        rc = main(["capture", "--sim", TOPOLOGY, "--port", str(base), "-w", str(tmp_path / "x.pcap")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith(f"madpipe capture: UDP port {port} on 127.0.0.1 is in use")
    assert not (tmp_path / "x.pcap").exists()


def test_missing_tool_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # ibsim lives in /usr/bin: not found now
    rc = main(["capture", "--sim", TOPOLOGY, "-w", str(tmp_path / "x.pcap")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "madpipe capture: ibsim is not installed (install the Debian packages ibsim-utils, "
        "opensm and infiniband-diags)")


def test_replay_without_a_simulator_is_one_clear_line(capsys):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.bind(("127.0.0.1", 0))  # a port nobody answers on
        port = s.getsockname()[1]
    rc = main(["replay", "-r", str(PCAPS / "opensm_partitions.pcap"), "--sim", f"127.0.0.1:{port}"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("madpipe replay: ") and f"127.0.0.1:{port}" in err


def test_nothing_left_running_when_the_test_body_fails():
    need_sim_tools()
    started = {}
    with pytest.raises(RuntimeError, match="the test failed here"), \
            SimCapture(TOPOLOGY, sm_node="Hca1") as capture:
        started["ibsim"] = capture.ibsim.proc
        capture.run_opensm(PARTITIONS_A)
        raise RuntimeError("the test failed here")
    assert started["ibsim"].poll() is not None
    assert leftover_processes() == []
    assert not os.path.exists(capture.workdir)


def test_a_tool_is_stopped_when_ibsim_dies():
    need_sim_tools()
    with SimCapture(TOPOLOGY, sm_node="Hca1", tool_timeout=20) as capture:
        capture.run_opensm(PARTITIONS_A)
        stop_process(capture.ibsim.proc)
        with pytest.raises(SimError, match=r"smpquery lost ibsim \(it exited with status"):
            capture.smpquery("pkeys", "1", "1")  # umad2sim alone would wait for ibsim forever
    assert leftover_processes() == []


@pytest.mark.slow
def test_a_tool_that_hangs_is_stopped_by_pid():
    need_sim_tools()
    with SimCapture(TOPOLOGY, sm_node="Hca1", tool_timeout=1.0) as capture:
        log = os.path.join(capture.workdir, "osm.log")
        with pytest.raises(SimError, match="did not finish within 1 s and was stopped"):
            capture.run("opensm", "-f", log, "-P", str(PARTITIONS_A))  # no --once: it would stay
        assert leftover_processes() == [capture.ibsim.proc.pid]
    assert leftover_processes() == []


def test_replay_without_node_starts_where_the_capture_did(capsys):
    """--sim without --node: the node the capture's directed routes start at (its SM's), not
    ibsim's default (Switch1, from where 5 of the 8 Sets' routes lead nowhere)."""
    need_sim_tools()
    capture = str(PCAPS / "opensm_partitions.pcap")
    assert sim_replay.origin_node(capture) == "Hca1"
    assert sim_replay.origin_node(str(PCAPS / "infiniband_endace_erf_2008.pcap")) is None
    with SimCapture(TOPOLOGY) as fresh:
        rc = main(["replay", "-r", capture, "--sim", str(fresh.port), "-Y", SET_PKEYS, "--top"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "on Hca1 (where the capture's directed routes start; --node to choose)" in err
    assert re.search(r"^  answered +8$", out, re.M), out


def test_undeliverable_mads_are_said_and_exit_1(capsys):
    need_sim_tools()
    capture = str(PCAPS / "opensm_partitions.pcap")
    with SimCapture(TOPOLOGY) as fresh:
        rc = main(["replay", "-r", capture, "--sim", str(fresh.port), "--node", "Switch1",
                   "-Y", SET_PKEYS, "--top", "-T", "json"])
    out, err = capsys.readouterr()
    summary = json.loads(out.splitlines()[-1])
    assert rc == 1
    first = next(json.loads(ln)["frame"] for ln in out.splitlines()
                 if json.loads(ln).get("result") == "undeliverable")
    assert err.splitlines()[-1] == (f"madpipe replay: {summary['undeliverable']} came back undeliverable "
                                    f"(first: frame {first}) of 8 MADs")
    assert summary["undeliverable"] == 5 and summary["answered"] == 3


def test_replay_from_a_node_the_fabric_lacks_names_it(capsys):
    need_sim_tools()
    with SimCapture(TOPOLOGY) as fresh:
        rc = main(["replay", "-r", str(PCAPS / "opensm_partitions.pcap"), "--sim", str(fresh.port),
                   "--node", "Hca9"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("madpipe replay: ibsim at 127.0.0.1:") and "refused to attach (unknown node" in err


def test_capture_takes_the_bare_name_of_an_ibsim_example(tmp_path, capsys):
    need_sim_tools()
    out = tmp_path / "a.pcap"
    assert main(["capture", "--sim", os.path.basename(TOPOLOGY), "--sm-node", "Hca1", "-w", str(out)]) == 0
    assert f"madpipe capture: ibsim on {TOPOLOGY}, " in capsys.readouterr().err
    with CaptureReader(out) as cap:
        assert sum(1 for _ in cap) > 200


def test_an_unknown_topology_name_lists_the_examples(tmp_path, capsys):
    need_sim_tools()
    rc = main(["capture", "--sim", "net.nope", "-w", str(tmp_path / "x.pcap")])
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not (tmp_path / "x.pcap").exists()
    assert err.startswith(f"madpipe capture: net.nope: no such topology file, nor an example of ibsim's in "
                          f"{os.path.dirname(TOPOLOGY)} (")
    assert "net.2sw2path4hca," in err


def _replay_under_umad2sim(env: dict, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBSIM_", "SIM_"))} | env
    env["LD_PRELOAD"] = find_umad2sim()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "madpipe.pipeline.cli.main", "replay", "-r",
                           str(PCAPS / "opensm_partitions.pcap"), "--umad", "ibsim0", "--only", "requests", "--allow-set"],
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return proc, time.monotonic() - start


def test_umad_without_ibsim_settings_is_one_line_not_a_hang():
    """umad2sim retries its connect for ever: madpipe checks first and names what it would wait for."""
    need_sim_tools()
    proc, seconds = _replay_under_umad2sim({})
    assert proc.returncode == 2 and seconds < 20  # generous: it answers in well under a second
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("madpipe replay: libumad2sim.so is preloaded but IBSIM_SERVER_NAME is not set")
    assert line.endswith("set IBSIM_SERVER_NAME=127.0.0.1 IBSIM_SERVER_PORT=7070 SIM_HOST=NODE")


def test_umad_with_no_ibsim_at_the_address_names_it():
    need_sim_tools()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # a port nobody answers on
        port = s.getsockname()[1]
    proc, seconds = _replay_under_umad2sim({"IBSIM_SERVER_NAME": "127.0.0.1", "IBSIM_SERVER_PORT": str(port)})
    assert proc.returncode == 2 and seconds < 20
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"madpipe replay: libumad2sim.so is preloaded and waits for ibsim at 127.0.0.1:{port} "
                           "(IBSIM_SERVER_NAME, IBSIM_SERVER_PORT), which ")


@pytest.mark.slow
def test_umad_open_that_never_returns_times_out():
    """Something answers umad2sim's first question as ibsim would, then nothing: the open times out."""
    need_sim_tools()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

        def pong():  # answers a DISCONNECT (the check's ping) and nothing else
            while True:
                try:
                    data, addr = s.recvfrom(4096)
                except OSError:
                    return
                msg = parse_sim_ctl(data)
                if msg is not None and msg[1] == SIM_CTL_DISCONNECT:
                    s.sendto(data, addr)

        threading.Thread(target=pong, daemon=True).start()
        proc, seconds = _replay_under_umad2sim({"IBSIM_SERVER_NAME": "127.0.0.1", "IBSIM_SERVER_PORT": str(port),
                                                "SIM_HOST": "Hca1"})
    assert proc.returncode == 2 and seconds < 40, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"madpipe replay: umad_open_port of 'ibsim0' (umad2sim waits for ibsim at 127.0.0.1:{port}) "
        "did not return within 10 s")


@pytest.mark.parametrize("command", [["capture", "--sim", "net.2sw2path4hca"],
                                     ["replay", "-r", "pcaps/opensm_partitions.pcap", "--sim", "7070"]])
def test_capture_and_replay_keep_an_existing_w_file(command, tmp_path, capsys):
    from madpipe.pipeline.cli.main import main

    out = tmp_path / "exists.pcap"
    out.write_bytes(b"mine")
    assert main([*command, "-w", str(out)]) == 2  # refused before a fabric is started or a MAD sent
    assert capsys.readouterr().err.strip().endswith("exists.pcap: exists: --force to overwrite it")
    assert out.read_bytes() == b"mine"
