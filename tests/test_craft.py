"""`madpipe craft` and ``encode_record``: frames as crafted, clear errors, the JSON round trip
decode -> craft --from-json, and crafted captures as tshark reads them."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from madpipe.codecs import mad as madc
from madpipe.codecs.capture import LINKTYPE_ERF, LINKTYPE_INFINIBAND, CaptureReader, CaptureWriter
from madpipe.codecs.craft import getresp, smp_get
from madpipe.codecs.encode import EncodeError, encode_record
from madpipe.codecs.frame import decode_frame
from madpipe.codecs.layers import BTH, DETH, GRH, LRH
from madpipe.codecs.mad_layers import CMMAD, SAMAD, PerfMAD, PortCounters, SMPDirected
from madpipe.pipeline.cli.main import main

PCAPS = Path(__file__).parent.parent / "pcaps"
REAL = PCAPS / "infiniband_endace_erf_2008.pcap"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def craft(capsys, tmp_path, *argv, name="out.pcap"):
    path = tmp_path / name
    code, _, err = run(capsys, "craft", *argv, "-w", path)
    assert code == 0, err
    return path


def frames(path):
    with CaptureReader(path) as cap:
        return list(cap)


def records(path):
    return [decode_frame(p.data, p.frame) for p in frames(path)]


# ------------------------------------------------------------------ frames as crafted
def test_help_ends_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["craft", "--help"])
    out = capsys.readouterr().out
    tail = out.rstrip().splitlines()
    assert "examples:" in out and tail[-1].strip().startswith("madpipe craft --from-json")
    assert "-D PATH" in out and "--pkeys LIST" in out and "--from-json FILE" in out


def test_subnset_pkey_table_lid_routed(capsys, tmp_path):
    path = craft(capsys, tmp_path, "--method", "set", "--attr", "pkey-table", "--block", "1",
                 "--pkeys", "0xffff,0x8001", "-L", "4", "-P", "3", "--tid", "0x1234", "--slid", "2")
    (r,) = records(path)
    assert r["icrc_ok"] and r["vcrc_ok"] and "error" not in r
    assert (r["lrh"]["vl"], r["lrh"]["dlid"], r["lrh"]["slid"]) == (15, 4, 2)
    assert (r["bth"]["dqp"], r["deth"]["sqp"], r["deth"]["qkey"]) == (0, 0, 0)
    assert (r["mad"]["mgmt_class"], r["mad"]["method"], r["mad"]["attr_id"]) == (1, 2, 0x16)
    assert r["mad"]["attr_mod"] == 0x00030001 and r["mad"]["tid"] == 0x1234
    assert r["attr"]["block"] == 1 and r["attr"]["pkeys"] == [0xFFFF, 0x8001] + [0] * 30
    with CaptureReader(path) as cap:
        assert cap.linktype == LINKTYPE_ERF and cap.nanosecond


def test_directed_route_get_and_getresp(capsys, tmp_path):
    path = craft(capsys, tmp_path, "--attr", "port-info", "-D", "0,1,3", "-P", "2")
    craft(capsys, tmp_path, "--method", "getresp", "--attr", "port-info", "-D", "0,1,3", "-P", "2",
          "-f", "port_state=4", "-f", "lid=7", "--append")
    get, resp = records(path)
    for r in (get, resp):
        assert r["lrh"]["slid"] == r["lrh"]["dlid"] == 0xFFFF and r["mad"]["mgmt_class"] == 0x81
        assert r["smp"]["hop_cnt"] == 2 and r["smp"]["initial_path"] == [1, 3] and r["mad"]["attr_mod"] == 2
    assert get["mad"]["method"] == 1 and get["mad"]["status"] == 0
    assert resp["mad"]["method"] == 0x81 and resp["mad"]["status"] == madc.IB_SMP_DIRECTION
    assert resp["attr"]["port_state"] == 4 and resp["attr"]["lid"] == 7


def test_sweep_of_blocks_and_ports_counts_tids_up(capsys, tmp_path):
    path = craft(capsys, tmp_path, "--attr", "pkeys", "--block", "0-1", "-P", "1,3", "-L", "9", "--tid", "10")
    rs = records(path)
    assert [r["mad"]["attr_mod"] for r in rs] == [0x10000, 0x30000, 0x10001, 0x30001]
    assert [r["mad"]["tid"] for r in rs] == [10, 11, 12, 13]
    assert [p.ts_ns for p in frames(path)] == [0, 1000, 2000, 3000]


def test_local_port_hop_count_zero_and_infiniband_link_type(capsys, tmp_path):
    path = craft(capsys, tmp_path, "--attr", "node-info", "-D", "0", "--linktype", "infiniband", "--time", "5")
    (p,) = frames(path)
    r = decode_frame(p.data)
    assert r["smp"]["hop_cnt"] == 0 and p.ts_ns == 5_000_000_000
    with CaptureReader(path) as cap:
        assert cap.linktype == LINKTYPE_INFINIBAND


@pytest.mark.parametrize("argv,message", [
    (["--method", "set", "--attr", "pkey-table", "--pkeys", "0x1ffff", "-L", "4"],
     "P_Key 0x1ffff is past the maximum 0xffff"),
    (["--attr", "pkey-table", "--block", "2048", "-L", "4"], "PKeyTable block 2048 is past the maximum 2047"),
    (["--attr", "guid-info", "--block", "32", "-L", "4"], "GUIDInfo block 32 is past the maximum 31"),
    (["--attr", "node-info", "-D", "0,1", "--hop-cnt", "64"], "hop count 64 is past the maximum 63"),
    (["--attr", "node-info", "-D", "0," + ",".join(["1"] * 64)], "64 hops, a directed route holds at most 63"),
    (["--attr", "node-info", "-D", "1,3"], "starts at the local port 0"),
    (["--attr", "node-info", "-D", "0,256"], "port 256 does not fit a byte"),
    (["--attr", "port-info", "-L", "3", "-P", "256"], "port 256 is past the maximum 255"),
    (["--attr", "pkey-table", "-L", "4", "--pkeys", ",".join(["1"] * 33)], "holds 32 P_Keys, not 33"),
    (["--attr", "node-info", "--block", "1", "-L", "3"], "NodeInfo has no blocks"),
    (["--attr", "node-info", "-L", "3", "-P", "1"], "NodeInfo takes no port"),
    (["--attr", "nodeinf", "-L", "3"], "unknown SMP attribute 'nodeinf'"),
    (["--attr", "port-info", "-L", "3", "-f", "port_stat=1"], "PortInfo has no field 'port_stat'"),
    (["--attr", "port-info", "-L", "3", "-f", "port_state=16"], "port_state=0x10 does not fit its 4 bits"),
    (["--attr", "port-info", "-L", "0x10000"], "a LID is 16 bits"),
    (["--attr", "port-info"], "give a destination: -L LID"),
    (["-L", "3"], "say what to build"),
    (["--attr", "port-info", "-L", "x"], "-L 'x' is not a number"),
    (["--attr", "node-info", "-L", "3", "--pkeys", "1"], "--pkeys fills a P_KeyTable block"),
    (["--attr", "port-info", "-L", "3", "--linktype", "usb"], "madpipe writes 197 (erf) or 247"),
])
def test_impossible_values_are_one_line_errors(capsys, tmp_path, argv, message):
    path = tmp_path / "e.pcap"
    code, out, err = run(capsys, "craft", *argv, "-w", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("madpipe craft: ") and message in err, err
    assert not path.exists()


def test_raw_sends_impossible_values_on_purpose(capsys, tmp_path):
    path = craft(capsys, tmp_path, "--method", "set", "--attr", "pkey-table", "--block", "2048",
                 "--pkeys", "0x1ffff,0x8001", "-L", "4", "--raw")
    craft(capsys, tmp_path, "--attr", "node-info", "-D", "0,1", "--hop-cnt", "200", "--raw", "--append")
    pkeys, hops = records(path)
    assert pkeys["attr"]["block"] == 2048 and pkeys["attr"]["pkeys"][:2] == [0xFFFF, 0x8001]
    assert hops["smp"]["hop_cnt"] == 200 and "hop count 200 exceeds 63" in hops["error"]


# ------------------------------------------------------------------ decode -> craft --from-json
def mixed_capture(capsys, tmp_path) -> Path:
    """SMPs through the CLI, GMPs (SA behind a GRH, PerfMgt, CM) through the layers."""
    path = craft(capsys, tmp_path, "--method", "set", "--attr", "pkey-table", "--block", "0",
                 "--pkeys", "0xffff,0x8001,0x7fff", "-L", "4", "-P", "2", "--time", "1.5", name="mixed.pcap")
    craft(capsys, tmp_path, "--attr", "port-info", "-D", "0,1,3,5", "-P", "1-2", "--time", "2",
          "--append", name="mixed.pcap")
    craft(capsys, tmp_path, "--method", "getresp", "--attr", "sm-info", "-D", "0,2", "-f", "priority=7",
          "-f", "sm_state=3", "-f", "guid=0x0002c9020020b4dd", "--append", "--time", "3", name="mixed.pcap")
    craft(capsys, tmp_path, "--method", "set", "--attr", "node-description", "-L", "3",
          "-f", "node_string=switch-1 HCA", "--append", "--time", "3.25", name="mixed.pcap")
    gmps = [
        LRH(slid=4, dlid=1) / GRH(sgid="fe80::2:c903:0:1f2d", dgid="fe80::1", hoplmt=1) / BTH(psn=77)
        / DETH() / SAMAD(tid=0xBB9647F9E, comp_mask=0x30) / bytes(range(200)),
        LRH(slid=1, dlid=4, sl=3) / BTH() / DETH() / PerfMAD(tid=5, attr_mod=0)
        / PortCounters(port_select=1, counter_select=0xFFFF, port_xmit_data=123456),
        LRH(slid=4, dlid=2) / BTH(pkey=0x8001) / DETH() / CMMAD(tid=0x10278648E9) / (b"\x42" * 232),
    ]
    gmps.append(getresp(gmps[0], data=b"\x01" * 200))
    with CaptureWriter(path, append=True) as w:
        for i, pkt in enumerate(gmps):
            w.write(bytes(pkt), ts_ns=4_000_000_000 + i * 1234)
    return path


@pytest.mark.parametrize("linktype", ["erf", "infiniband"])
def test_json_round_trip_gives_identical_capture_bytes(capsys, tmp_path, linktype):
    source = mixed_capture(capsys, tmp_path)
    if linktype == "infiniband":
        plain = tmp_path / "plain.pcap"
        with CaptureWriter(plain, linktype=LINKTYPE_INFINIBAND) as w:
            for p in frames(source):
                w.write(p.data, p.ts_ns)
        source = plain
    code, out, err = run(capsys, "decode", "-r", source, "-T", "json")
    assert code == 0 and "0 with errors" in err
    (tmp_path / "m.json").write_text(out)
    rebuilt = craft(capsys, tmp_path, "--from-json", tmp_path / "m.json", "--linktype", linktype,
                    name="rebuilt.pcap")
    assert rebuilt.read_bytes() == source.read_bytes()
    assert len(frames(rebuilt)) == 9


def test_real_capture_mads_round_trip(capsys, tmp_path):
    code, out, _ = run(capsys, "decode", "-r", REAL, "-T", "json", "-Y", "mad")
    assert code == 0
    (tmp_path / "m.json").write_text(out)
    rebuilt = frames(craft(capsys, tmp_path, "--from-json", tmp_path / "m.json"))
    originals = [p for p in frames(REAL) if "mad" in decode_frame(p.data)]
    assert len(rebuilt) == len(originals) == 17
    assert [p.data for p in rebuilt] == [p.data for p in originals]
    # decode's ts is a float of seconds: at 2008's epoch time it keeps ~0.24 µs, not the nanosecond
    assert all(abs(a.ts_ns - b.ts_ns) < 250 for a, b in zip(rebuilt, originals))


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(PCAPS.glob("opensm*.pcap")), ids=lambda p: p.name)
def test_encode_record_rebuilds_what_the_record_holds(path):
    """opensm/ibsim leave bytes past hop_cnt in directed-route paths (and return_path[0] = 1);
    the JSON record has only hops 1..hop_cnt, so those come back zero and nothing else differs."""
    for p in frames(path):
        record = json.loads(json.dumps(decode_frame(p.data, p.frame)))
        expect = LRH(p.data)
        if SMPDirected in expect:
            dr = expect[SMPDirected]
            dr.initial_path, dr.return_path = dr.initial_hops, dr.return_hops
            del expect.icrc, expect.vcrc
        assert encode_record(record) == bytes(expect), f"{path.name} frame {p.frame}"


def test_edited_json_is_crafted_as_edited(capsys, tmp_path):
    src = craft(capsys, tmp_path, "--method", "set", "--attr", "pkey-table", "--pkeys", "0xffff",
                "-D", "0,1", name="src.pcap")
    craft(capsys, tmp_path, "--attr", "node-info", "-L", "5", "--append", name="src.pcap")
    _, out, _ = run(capsys, "decode", "-r", src, "-T", "json")
    first, second = (json.loads(line) for line in out.splitlines())
    first["attr"]["pkeys"][1] = 0x8002
    first["attr"]["block"] = 7
    first["smp"].update(hop_cnt=2, initial_path=[1, 4], return_path=[0, 0])
    del first["lrh"]["pktlen"]  # computed when left out
    second["mad"]["method"] = 2
    second["attr"]["node_guid"] = 0x0002C903000A0B0C
    second["attr"] = {"name": "NodeInfo", "node_guid": second["attr"]["node_guid"]}  # the rest: zero
    (tmp_path / "e.json").write_text(json.dumps(first) + "\n\n" + json.dumps(second) + "\n")
    r1, r2 = records(craft(capsys, tmp_path, "--from-json", tmp_path / "e.json"))
    assert r1["attr"]["pkeys"][:3] == [0xFFFF, 0x8002, 0] and r1["mad"]["attr_mod"] == 7
    assert r1["smp"]["initial_path"] == [1, 4] and r1["lrh"]["pktlen"] == 72 and r1["icrc_ok"]
    assert r2["mad"]["method"] == 2 and r2["attr"]["node_guid"] == 0x0002C903000A0B0C
    assert r2["attr"]["num_ports"] == 0 and r2["vcrc_ok"]


def test_stdin_and_crcs_given_on_purpose(capsys, tmp_path, monkeypatch):
    import io

    record = decode_frame(bytes(smp_get("node-info", lid=3)), 1, 0.5)
    record.update(icrc=0x01020304, vcrc=0xABCD)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(record) + "\n"))
    (p,) = frames(craft(capsys, tmp_path, "--from-json", "-"))
    assert p.data[-6:] == bytes.fromhex("04030201cdab") and p.ts_ns == 500_000_000
    assert decode_frame(p.data)["icrc_ok"] is False


@pytest.mark.parametrize("edit,message", [
    (lambda r: r.update(frame=3, payload_len=100), "line 1: frame 3: not a MAD: the record keeps no payload bytes"),
    (lambda r: r.update(skipped="ERF type 2 is not InfiniBand (21)"), "skipped ERF record"),
    (lambda r: r["attr"].update(port_stat=1), "attr has no field 'port_stat'"),
    (lambda r: r["smp"].update(hop_cnt=3), "smp.initial_path has 2 hops but smp.hop_cnt is 3"),
    (lambda r: r["lrh"].update(dlid="four"), "lrh.dlid must be an integer"),
    (lambda r: r["mad"].update(tid=1 << 64), "mad.tid 18446744073709551616 does not fit its 64 bits"),
    (lambda r: r.update(colour="red"), "unknown key 'colour'"),
    (lambda r: r["attr"].update(port_state=16), "attr.port_state 16 does not fit its 4 bits"),
    (lambda r: r["smp"].update(initial_path=[1, 256]), "smp.initial_path: a port is a byte"),
])
def test_records_that_cannot_be_encoded_are_one_line_errors(capsys, tmp_path, edit, message):
    record = json.loads(json.dumps(decode_frame(bytes(smp_get("port-info", dr_path=[1, 2], attr_mod=1)), 1)))
    edit(record)
    (tmp_path / "bad.json").write_text(json.dumps(record) + "\n")
    code, _, err = run(capsys, "craft", "--from-json", tmp_path / "bad.json", "-w", tmp_path / "x.pcap")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.pcap").exists()


def test_not_json_is_an_error(capsys, tmp_path):
    (tmp_path / "bad.json").write_text("{\n")
    code, _, err = run(capsys, "craft", "--from-json", tmp_path / "bad.json", "-w", tmp_path / "x.pcap")
    assert code == 2 and "bad.json line 1: not JSON" in err


def test_encode_error_is_a_value_error():
    with pytest.raises(ValueError):
        encode_record({"frame": 1, "lrh": {"lnh": 0}, "raw_len": 12})
    with pytest.raises(EncodeError, match="frame 9: the record has no 'lrh' object"):
        encode_record({"frame": 9})


# ------------------------------------------------------------------ tshark reads what craft writes
FIELDS = {
    "method": "infiniband.mad.method", "attr_id": "infiniband.mad.attributeid",
    "attr_mod": "infiniband.mad.attributemodifier", "tid": "infiniband.mad.transactionid",
    "mgmt_class": "infiniband.mad.mgmtclass", "dlid": "infiniband.lrh.dlid",
    "slid": "infiniband.lrh.slid", "vl": "infiniband.lrh.vl", "dqp": "infiniband.bth.destqp",
    "qkey": "infiniband.deth.q_key", "hop_cnt": "infiniband.smpdirected.hopcount",
    "initial_path": "infiniband.smpdirected.initialpath", "status": "infiniband.smpdirected.smpstatus",
    "membership": "infiniband.p_keytable.membershiptype", "pkey_base": "infiniband.p_keytable.p_keybase",
    "port_state": "infiniband.portinfo.portstate", "lid": "infiniband.portinfo.lid",
    "sm_priority": "infiniband.sminfo.priority", "icrc": "infiniband.invariant.crc",
    "vcrc": "infiniband.variant.crc", "malformed": "_ws.malformed", "expert": "_ws.expert",
    "info": "_ws.col.Info",
}


def tshark_frames(tshark, path, config_dir):
    cmd = [tshark, "-n", "-r", str(path), "-T", "json"]
    for field in FIELDS.values():
        cmd += ["-e", field]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(config_dir)})
    assert done.returncode == 0, done.stderr
    return [{k: pkt["_source"]["layers"].get(f) for k, f in FIELDS.items()}
            for pkt in json.loads(done.stdout)]


def one(values):
    assert values is not None and len(values) == 1, values
    return int(values[0], 0)


@pytest.mark.tools("tshark")
def test_crafted_captures_open_in_tshark_with_fields_as_crafted(capsys, tmp_path, tshark):
    path = mixed_capture(capsys, tmp_path)
    craft(capsys, tmp_path, "--method", "getresp", "--attr", "port-info", "-L", "6", "-P", "1",
          "-f", "port_state=4", "-f", "lid=6", "--append", "--tid", "99", name="mixed.pcap")
    config = tmp_path / "wireshark"
    config.mkdir()
    theirs = tshark_frames(tshark, path, config)
    mine = frames(path)
    assert len(theirs) == len(mine) == 10
    for p, t in zip(mine, theirs):
        r = decode_frame(p.data, p.frame)
        label = f"frame {p.frame}"
        assert t["malformed"] is None and t["expert"] is None, label
        assert "Malformed" not in " ".join(t["info"]), label
        for key in ("method", "attr_id", "attr_mod", "tid", "mgmt_class"):
            assert one(t[key]) == r["mad"][key], f"{label} {key}"
        assert (one(t["dlid"]), one(t["slid"]), one(t["vl"])) == (r["lrh"]["dlid"], r["lrh"]["slid"], r["lrh"]["vl"])
        assert (one(t["dqp"]), one(t["qkey"])) == (r["bth"]["dqp"], r["deth"]["qkey"])
        if t["icrc"] is not None:  # tshark shows the wire bytes as a big-endian number
            assert one(t["icrc"]) == int.from_bytes(p.data[-6:-2], "big"), label
            assert one(t["vcrc"]) == int.from_bytes(p.data[-2:], "big"), label
        attr = r.get("attr", {})
        if "hop_cnt" in r.get("smp", {}):
            assert one(t["hop_cnt"]) == r["smp"]["hop_cnt"] and one(t["status"]) == r["mad"]["status"]
            path_bytes = bytes.fromhex(t["initial_path"][0].replace(":", ""))
            assert list(path_bytes[1:1 + r["smp"]["hop_cnt"]]) == r["smp"]["initial_path"], label
        if attr.get("name") == "PKeyTable":
            keys = [int(m, 0) << 15 | int(b, 0) for m, b in zip(t["membership"], t["pkey_base"])]
            assert keys == attr["pkeys"], label
        if attr.get("name") == "PortInfo":
            assert (one(t["port_state"]), one(t["lid"])) == (attr["port_state"], attr["lid"]), label
        if attr.get("name") == "SMInfo":
            assert one(t["sm_priority"]) == attr["priority"] == 7, label
    assert [one(t["method"]) for t in theirs][:1] == [2] and one(theirs[-1]["port_state"]) == 4
