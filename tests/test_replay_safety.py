"""`madpipe replay` on real hardware: Sets refused without --allow-set, --dry-run opens nothing, the
summary names the ports the Sets change. The expectations come from decoding the capture here.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.cli.main import main

CAPTURE = str(Path(__file__).resolve().parent.parent / "pcaps" / "opensm_partitions.pcap")
STATE_CHANGING = (0x02, 0x05, 0x07, 0x15)  # Set, Trap, TrapRepress, Delete


def _requests() -> list[dict]:
    with CaptureReader(CAPTURE) as cap:
        recs = [decode_frame(p.data, p.frame) for p in cap]
    return [r for r in recs if "mad" in r and not r["mad"]["method"] & 0x80]


def _pkey_set_ports() -> list[str]:
    """Where each SubnSet(P_KeyTable) of the capture goes, as smpquery -D writes the path."""
    ports = []
    for r in _requests():
        if r["mad"]["method"] == 0x02 and r["mad"]["attr_id"] == 0x16:
            path = "DR " + ",".join(map(str, [0, *r["smp"]["initial_path"]]))
            switch_port = r["mad"]["attr_mod"] >> 16
            ports.append(f"{path}{f' port {switch_port}' if switch_port else ''} (PKeyTable)")
    return ports


def test_umad_refuses_sets_without_allow_set(capsys):
    sets = sum(r["mad"]["method"] in STATE_CHANGING for r in _requests())
    assert sets > 8  # the P_KeyTable Sets and opensm's PortInfo/SwitchInfo/LFT Sets
    rc = main(["replay", "-r", CAPTURE, "--umad", "no_such_ca0", "--only", "requests"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    (line,) = err.splitlines()  # one line, and no attempt at the device (it does not exist)
    assert line.startswith(f"madpipe replay: refused: {sets} of {len(_requests())} MADs would set or "
                           "announce state on umad device no_such_ca0 (")
    assert "--allow-set" in line and "no_such_ca0: " not in line


def test_umad_sends_gets_without_allow_set(capsys):
    """Gets alone are not refused: the device is opened (and here found missing)."""
    rc = main(["replay", "-r", CAPTURE, "--umad", "no_such_ca0", "-Y", "mad.method==0x01"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused" not in err


def test_allow_set_opens_the_device(capsys):
    rc = main(["replay", "-r", CAPTURE, "--umad", "no_such_ca0", "--only", "requests", "--allow-set"])
    err = capsys.readouterr().err
    assert rc == 2 and "refused" not in err and err.strip().splitlines()[-1].startswith("madpipe replay: ")


def test_dry_run_names_every_mad_and_the_ports_sets_change(capsys):
    pkey_sets = "mad.attr_id==0x16 && mad.method==0x02"
    rc = main(["replay", "-r", CAPTURE, "--umad", "no_such_ca0", "-Y", pkey_sets, "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    expected = _pkey_set_ports()
    assert len(expected) == 8
    lines = out.splitlines()
    assert len(lines) == 8 + 2
    for line, port in zip(lines, expected):
        assert line.endswith(f"changes {port}") and "SubnMgmtDR Set PKeyTable" in line
    assert lines[-1] == f"8 Sets would change 8 ports: {', '.join(expected)}"
    assert "nothing sent" in err and "refused without --allow-set" in err


def test_dry_run_json_and_sim_attaches_nowhere(capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody answers here: an attach would fail
    rc = main(["replay", "-r", CAPTURE, "--sim", f"127.0.0.1:{port}", "--only", "requests",
               "--dry-run", "-T", "json"])
    out = capsys.readouterr().out
    assert rc == 0
    recs = [json.loads(x) for x in out.splitlines()]
    mads, summary = recs[:-1], recs[-1]
    requests = _requests()
    assert [m["frame"] for m in mads] == [r["frame"] for r in requests]
    assert [m["changes_state"] for m in mads] == [r["mad"]["method"] in STATE_CHANGING for r in requests]
    assert summary["would_send"] == len(requests) and summary["dry_run"] is True
    assert set(_pkey_set_ports()) <= set(summary["set_ports"])
