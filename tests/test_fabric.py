"""`madpipe snoop` over crafted SM traffic: tables, events, findings, the host view of VFs.

The captures are built with codecs.build: an SM at LID 1 programs a CA port reached by the
directed route [1] (LID 4, learned from PortInfo) and a switch port, as in the operators'
manual scenario of the spec (0xFFFF, 0xB000, 0xB030; vm1 and vm2).
"""
import json

import pytest

from madpipe.codecs import build, smp
from madpipe.codecs.capture import CaptureWriter
from madpipe.codecs.mad import IB_MGMT_METHOD_GET_RESP as GETRESP
from madpipe.codecs.mad import IB_MGMT_METHOD_SET as SET
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fabric import reference as reference_fabric
from madpipe.pipeline.fabric.model import PortId
from madpipe.pipeline.fabric.snoop import snoop_capture
from madpipe.pipeline.mlx4.snoop import FINDING_REFUSED, FINDING_SPILL

PATH = [1]
SM_LID = 1
HOST_LID = 4


def node_info(node_type=1, partition_cap=128):
    data = bytearray(64)
    data[2] = node_type
    data[28:30] = partition_cap.to_bytes(2, "big")
    return bytes(data)


def port_info(lid):
    data = bytearray(64)
    data[16:18] = lid.to_bytes(2, "big")
    return bytes(data)


class Capture:
    def __init__(self, path):
        self.w = CaptureWriter(path)
        self.tid = 0x100
        self.t = 0

    def frame(self, mad, lid_routed_to=None, answer=False):
        self.t += 1_000_000
        if lid_routed_to is None:
            f = build.build_smp_frame(mad)
        elif answer:
            f = build.build_smp_frame(mad, slid=lid_routed_to, dlid=SM_LID)
        else:
            f = build.build_smp_frame(mad, slid=SM_LID, dlid=lid_routed_to)
        self.w.write(f, self.t)

    def get(self, attr, data, path=PATH):
        self.tid += 1
        self.frame(build.smp_mad(0x01, attr, b"", self.tid, directed=True, path=path))
        self.frame(build.smp_mad(GETRESP, attr, data, self.tid, directed=True, path=path))

    def pkeys(self, block, keys, path=PATH, status=0, answer=True, lid=None, port=0):
        self.tid += 1
        kw = dict(directed=lid is None, path=path if lid is None else (), attr_mod_port=port)
        self.frame(build.pkey_table_mad(SET, block, keys, self.tid, **kw), lid)
        if answer:
            self.frame(build.pkey_table_mad(GETRESP, block, keys, self.tid, status=status, **kw), lid, True)

    def close(self):
        self.w.close()


@pytest.fixture
def scenario(tmp_path):
    path = tmp_path / "sm.pcap"
    c = Capture(path)
    c.get(smp.IB_SMP_ATTR_NODE_INFO, node_info())
    c.get(smp.IB_SMP_ATTR_PORT_INFO, port_info(HOST_LID))
    c.pkeys(0, [0xFFFF, 0xB000, 0xB030])                     # frames 5, 6: the partitions
    c.pkeys(0, [0xFFFF, 0xB000, 0xB030])                     # 7, 8: the same again: no event
    c.pkeys(0, [0xFFFF, 0xB000, 0xB031], status=0x1C)        # 9, 10: rejected by the port
    c.pkeys(1, [0x8001], answer=False)                       # 11: no answer: unconfirmed
    c.pkeys(0, [0xFFFF, 0xB000, 0xB032], lid=HOST_LID)       # 12, 13: LID-routed, same port
    c.pkeys(4, [0x7777])                                     # 14, 15: spills into row 1
    c.pkeys(8, [0x6666])                                     # 16, 17: past the table: refused
    c.pkeys(0, [0xFFFF, 0x8002], path=[1, 2], port=3)        # 18, 19: a switch's port 3
    c.close()
    return path


def test_tables_events_findings(scenario):
    r = snoop_capture(scenario)
    host = PortId(HOST_LID, (1,), 0)
    switch = PortId(None, (1, 2), 3)
    assert set(r.ports) == {host, switch}
    t = r.ports[host].table
    assert list(t[:3]) == [0xFFFF, 0xB000, 0xB032] and t[32] == 0x8001 and not t[33:].any()
    assert r.ports[host].capacity == 128
    assert list(r.ports[switch].table[:2]) == [0xFFFF, 0x8002]
    ev = [(e.frame, e.port, e.block, e.bitmap, e.changes, e.unconfirmed) for e in r.events]
    assert ev == [
        (5, host, 0, 0b110, [(1, 0, 0xB000), (2, 0, 0xB030)], False),
        (11, host, 1, 0b1, [(32, 0, 0x8001)], True),
        (12, host, 0, 0b100, [(2, 0xB030, 0xB032)], False),
        # Block 4 lands on row 1 (the kernel's port-2 row), whose entry 0 init_pkeys set to 0xFFFF.
        (14, host, 4, 0b1, [(128, 0xFFFF, 0x7777)], False),
        (18, switch, 0, 0b10, [(1, 0, 0x8002)], False),
    ]
    assert [(f.frame, f.block, f.kind) for f in r.findings] == [
        (14, 4, FINDING_SPILL), (16, 8, FINDING_REFUSED)]
    assert r.counts["sets"] == 8 and r.counts["unconfirmed"] == 1 and r.counts["rejected"] == 1


def test_from_getresp(scenario):
    r = snoop_capture(scenario, rule="getresp")
    host = PortId(HOST_LID, (1,), 0)
    # Every successful GetResp sets what the port reported; the unanswered Set is not seen.
    assert list(r.ports[host].table[:3]) == [0xFFFF, 0xB000, 0xB032] and r.ports[host].table[32] == 0


def test_cli_text_like_smpquery(scenario, capsys):
    assert main(["snoop", "-r", str(scenario)]) == 0
    out = capsys.readouterr().out
    assert "Port lid 0x0004 path 1 port 0, 128 pkeys capacity:" in out
    assert "   0: 0xffff 0xb000 0xb032 0x0000 0x0000 0x0000 0x0000 0x0000" in out
    assert "  32: 0x8001 0x0000" in out
    assert "Port path 1,2 port 3:" in out
    assert "[2] 0xb030->0xb032" in out and "(unconfirmed)" in out
    assert "frame 16: lid 0x0004 path 1 port 0 block 8: block would write past" in out


def test_cli_json(scenario, capsys):
    assert main(["snoop", "-r", str(scenario), "-T", "json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    types = [r["type"] for r in records]
    assert types == ["port", "port"] + ["event"] * 5 + ["finding"] * 2 + ["summary"]
    port = records[0]
    assert port["lid"] == HOST_LID and port["dr_path"] == [1] and len(port["pkeys"]) == 128
    assert records[-1]["events"] == 5


def test_ports_titled_by_their_node_description(tmp_path, capsys):
    path = tmp_path / "names.pcap"
    c = Capture(path)
    c.get(smp.IB_SMP_ATTR_PORT_INFO, port_info(HOST_LID))
    c.get(smp.IB_SMP_ATTR_NODE_DESC, b"old name".ljust(64, b"\0"))
    c.get(smp.IB_SMP_ATTR_NODE_DESC, b'host "a"\n\xff'.ljust(64, b"\0"))  # the last answer wins
    c.pkeys(0, [0xFFFF, 0x8001])                                        # frames 7, 8
    c.pkeys(0, [0xFFFF, 0x8002], path=[1, 2], port=3)  # a switch whose node never answered
    c.pkeys(8, [0x6666])                                                # a finding
    c.close()
    name = 'host "a"\n\ufffd'  # invalid UTF-8 replaced, as decode shows it
    for snoop in (snoop_capture, reference_fabric.snoop_capture):
        r = snoop(path)
        assert {pid.port: st.node for pid, st in r.ports.items()} == {0: name, 3: None}
    assert main(["snoop", "-r", str(path)]) == 0
    out = capsys.readouterr().out
    title = 'lid 0x0004 path 1 port 0 "host \\"a\\"\\n\\ufffd"'  # JSON escapes keep it one line
    assert f"Port {title}:" in out and "Port path 1,2 port 3:" in out
    assert f"      7     0.006000  {title}     0 0x00000002  [1] 0x0000->0x8001" in out.splitlines()
    assert f"  frame 11: {title} block 8: block would write past the kernel's table: refused" in out
    assert main(["snoop", "-r", str(path), "-T", "json"]) == 0
    ports = [json.loads(line) for line in capsys.readouterr().out.splitlines()][:2]
    assert [(p["port"], p["node_description"]) for p in ports] == [(0, name), (3, None)]


def test_operators_manual_host_view(scenario, tmp_path, capsys):
    # vm1 (VF 1) maps its index 0 -> physical 1, 1 -> 0; vm2 maps 0 -> 2, 1 -> 0.
    m = tmp_path / "vfs.map"
    m.write_text("# vf port index phys\n1 1 0 1\n1 1 1 0\n2 1 0 2\n2 1 1 0\n")
    assert main(["snoop", "-r", str(scenario), "--host", "4", "--vfs", "2", "--pkey-map", str(m),
                 "-T", "json"]) == 0
    records = {(r["type"], r.get("vf")): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    host = records[("host", None)]
    assert host["master_events"] == [5, 11, 12, 14]
    vm1, vm2 = records[("vf", 1)], records[("vf", 2)]
    assert vm1["pkeys"][:2] == [0xB000, 0xFFFF] and vm2["pkeys"][:2] == [0xB032, 0xFFFF]
    # Frame 5 changed physical 1 and 2: both VMs; frame 12 changed physical 2: vm2 only.
    # Frame 11 changed physical 32 and frame 14 the spill (index 128): no VM maps them.
    assert vm1["events"] == [5] and vm2["events"] == [5, 12]


@pytest.mark.parametrize("argv,words", [
    (["--vfs", "2"], "give --host LID too"),
    (["--host", "4"], "--vfs must be 1..126 with --host (MLX4_MAX_NUM_VF of profile mainline)"),
    (["--host", "4", "--vfs", "2", "-P", "3"], "-P must be 1 or 2"),
])
def test_cli_errors(scenario, capsys, argv, words):
    assert main(["snoop", "-r", str(scenario), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_bad_map_file(scenario, tmp_path, capsys):
    m = tmp_path / "bad.map"
    m.write_text("1 1 0 1\n3 1 0 200\n")
    assert main(["snoop", "-r", str(scenario), "--host", "4", "--vfs", "2", "--pkey-map", str(m)]) == 2
    assert "bad.map, line 2, field vf: 3 is outside 1..2" in capsys.readouterr().err


def switch_info(partition_enforcement_cap):
    data = bytearray(64)
    data[14:16] = partition_enforcement_cap.to_bytes(2, "big")  # IBA 14.2.5.4, bits 112-127
    return bytes(data)


@pytest.mark.parametrize("with_switch_info", [True, False])
def test_capacity_of_switch_ports(tmp_path, with_switch_info):
    # NodeInfo.PartitionCap is the switch's port 0; its external ports use SwitchInfo's cap.
    path = tmp_path / "sw.pcap"
    c = Capture(path)
    sw = [1, 2]
    c.get(smp.IB_SMP_ATTR_NODE_INFO, node_info(node_type=2, partition_cap=8), path=sw)
    if with_switch_info:
        c.get(smp.IB_SMP_ATTR_SWITCH_INFO, switch_info(64), path=sw)
    c.pkeys(0, [0xFFFF], path=sw, port=0)
    c.pkeys(0, [0xFFFF, 0x8001], path=sw, port=3)
    c.close()
    for snoop in (snoop_capture, reference_fabric.snoop_capture):
        r = snoop(path)
        caps = {pid.port: st.capacity for pid, st in r.ports.items()}
        assert caps == {0: 8, 3: 64 if with_switch_info else None}
