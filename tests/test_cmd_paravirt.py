"""`madpipe paravirt`: the spec's golden cases and the operators' scenario through the command line.

Expected values come from the spec (../shared/spec/mlx4-paravirt.md), not from the code under
test; OUT is also checked against ``paravirt.rewrite`` of the input, row for row.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from madpipe.codecs import qpc
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.mlx4 import eth_reference as eth_ref
from madpipe.pipeline.mlx4 import paravirt, snoop
from madpipe.pipeline.mlx4.trace import read_trace, write_trace

DATA = Path(__file__).parent / "data"
EXAMPLE = DATA / "paravirt_example.jsonl"
VFS_MAP = DATA / "paravirt_vfs.map"
P = 0x48                       # the command's default base_proxy_sqpn
T = P + 8 * 128                # base_tunnel_sqpn on mainline (the default): base_sqpn + 8 + 8 * MLX4_MFUNC_MAX
T37 = P + 8 * 80               # and at 3.7
RC, UC, UD, MLX = 0, 1, 3, 7
PRI_PKEY = "context.pri_path.pkey_index"
PRI_MGID = "context.pri_path.mgid_index"
ALT_MGID = "context.alt_path.mgid_index"
QKEY = "context.qkey"


def mailbox(st=UD, optpar=0, pkey_index=0, port=1, mgid=0, alt_mgid=0, qkey=0x11111111):
    """A QP-context mailbox with the fields the rewrites read (offsets from the spec's table)."""
    m = np.zeros(256, dtype=np.uint8)
    m[0:4] = list(optpar.to_bytes(4, "big"))
    m[8:12] = list(((3 << 28) | (st << 16)).to_bytes(4, "big"))   # flags: state RTS, service type
    m[35] = pkey_index
    m[41] = mgid
    m[64] = 0x83 | ((port - 1) << 6)                               # sched_queue: bit 6 = port - 1
    m[85] = alt_mgid
    m[108] = 0x83
    m[176:180] = list(qkey.to_bytes(4, "big"))
    return m


# The example trace of the README and `--help`: (transition, slave, in_mod, mailbox).
EXAMPLE_COMMANDS = [
    ("RST2INIT", 1, 0x1210, mailbox(UD, pkey_index=0)),              # vm1's IPoIB QP
    ("RST2INIT", 2, 0x1220, mailbox(UD, pkey_index=0)),              # vm2's IPoIB QP
    ("RST2INIT", 0, 0x1200, mailbox(UD, pkey_index=0)),              # the hypervisor's: identity
    ("INIT2RTR", 3, 0x1230, mailbox(UD, pkey_index=1, mgid=0x07)),   # UD: mgid 0x80 | 3; index 1 unassigned
    ("RTR2RTS", 5, 0x1250, mailbox(RC, optpar=0x80, mgid=0)),        # RC primary path: mgid = slave
    ("RTR2RTS", 5, 0x1251, mailbox(RC, optpar=0x80, mgid=1)),        # a slave's GID index 1: -EINVAL
    ("INIT2RTR", 0, P + 8 * 3 + 1, mailbox(UD)),                    # function 3's proxy QP0 of port 2
    ("INIT2RTR", 0, T + 8 * 3 + 1, mailbox(UD)),                    # ... and its tunnel twin (mainline)
    ("INIT2INIT", 4, 0x1240, mailbox(UD, pkey_index=200)),           # index past the row: spill
    ("INIT2INIT", 127, 0x12F0, mailbox(UD, pkey_index=200, port=2)), # past the table: refused
]
EXAMPLE_MAP = "# vf port index phys (the operators' manual: vm1 and vm2)\n1 1 0 1\n1 1 1 0\n2 1 0 2\n2 1 1 0\n"


def write(path, commands, binary=False):
    names, slaves, in_mods, boxes = zip(*commands)
    write_trace(path, list(names), list(slaves), list(in_mods), np.stack(boxes), binary=binary)
    return path


def run(capsys, *argv):
    code = main(["paravirt", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "-T", "json")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["type"] == "summary" and all(r["type"] == "command" for r in records[:-1])
    return records[:-1], records[-1]


def rewritten(path, v2p, profile):
    """paravirt.rewrite of a trace file with the command's defaults."""
    t = read_trace(path)
    return paravirt.rewrite(t.mailbox, t.transition, t.slave, t.in_mod, v2p, base_proxy_sqpn=P,
                            profile=profile, fw_reserved_qps=P - 8, return_findings=True)


def example_v2p(profile="mainline"):
    num_vfs = 64 if profile == "3.7" else 126   # the trace's largest slave, 127, cut to MLX4_MAX_NUM_VF
    _, v2p = snoop.init_pkeys(num_vfs=num_vfs, num_ports=2, pkey_table_len=128, master=0, profile=profile)
    v2p[1, 0, 0], v2p[1, 0, 1], v2p[2, 0, 0], v2p[2, 0, 1] = 1, 0, 2, 0
    return v2p


def test_example_files_are_what_the_readme_says(tmp_path):
    expected = write(tmp_path / "e.jsonl", EXAMPLE_COMMANDS)
    assert EXAMPLE.read_bytes() == expected.read_bytes()
    assert VFS_MAP.read_text() == EXAMPLE_MAP


# -- golden cases from the spec -------------------------------------------------------------------------

@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_example_trace(capsys, profile):
    cmds, summary = run_json(capsys, "-r", EXAMPLE, "--pkey-map", VFS_MAP, "--profile", profile)
    changes = {c["index"]: [tuple(x) for x in c["changes"]] for c in cmds}
    # the operators' manual: an IPoIB QP on index 0 lands on physical 1 for vm1, 2 for vm2
    assert changes[1] == [(PRI_PKEY, 0, 1)] and changes[2] == [(PRI_PKEY, 0, 2)] and changes[3] == []
    # INIT2RTR UD for slave 3: mgid_index 0x80 | 3; its index 1 is unassigned (127) by init_pkeys
    assert changes[4] == [(PRI_PKEY, 1, 127), (PRI_MGID, 0x07, 0x83)]
    # RC with optpar PRIMARY_ADDR_PATH: mgid_index = slave & 0x7F
    assert changes[5] == [(PRI_MGID, 0, 5)]
    # a slave's non-zero GID index: rejected by verify, nothing changed
    assert (cmds[5]["rc"], cmds[5]["result"], cmds[5]["reason"]) == (-22, "rejected", "verify_qp_parameters")
    assert changes[6] == []
    # a proxy QP and its tunnel twin get the same Q_Key, 0xFFFF0000 + 8 * 3 + 1 (and, UD, 0x80 | 0);
    # at 3.7 (T = P + 640) the twin's number P + 1049 is tunnel QP 409 of that table: 0xFFFF0199
    assert changes[7] == [(PRI_MGID, 0, 0x80), (QKEY, 0x11111111, 0xFFFF0019)]
    twin = 0xFFFF0019 if profile == "new" else 0xFFFF0000 + (T + 8 * 3 + 1 - T37)
    assert changes[8] == [(PRI_MGID, 0, 0x80), (QKEY, 0x11111111, twin)] and (profile == "new" or twin == 0xFFFF0199)
    # index 200 on port 1 reads virt2phys_pkey[4][1][72] (127); slave 127 port 2 leaves the table
    assert changes[9] == [(PRI_PKEY, 200, 127)] and cmds[8]["finding"] == 1
    assert "virt2phys_pkey[4][1][72] = 127" in cmds[8]["finding_text"]
    assert (cmds[9]["rc"], cmds[9]["finding"], cmds[9]["result"], changes[10]) == (-34, 2, "refused", [])
    assert [c["transition"] for c in cmds] == [c[0] for c in EXAMPLE_COMMANDS]
    assert [(c["slave"], c["in_mod"], c["qpn"]) for c in cmds[:2]] == [(1, 0x1210, 0x1210), (2, 0x1220, 0x1220)]
    assert cmds[4]["service_type"] == "RC" and cmds[0]["service_type"] == "UD"
    assert {k: summary[k] for k in ("commands", "accepted", "changed", "unchanged", "rejected", "einval",
                                    "eperm", "refused", "spill")} == {
        "commands": 10, "accepted": 8, "changed": 7, "unchanged": 1, "rejected": 1, "einval": 1,
        "eperm": 0, "refused": 1, "spill": 1}
    assert (summary["profile"], summary["base_proxy_sqpn"], summary["vfs"], summary["encoding"]) == \
        (profile, P, 64 if profile == "3.7" else 126, "json")     # MLX4_MAX_NUM_VF


def test_example_text(capsys):
    code, out, err = run(capsys, "-r", EXAMPLE, "--pkey-map", VFS_MAP)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("QP commands through the mlx4 master (profile mainline, kernel, base_proxy_sqpn "
                               "0x48 (tunnels from 0x448), master 0, VFs 1..126")
    assert lines[1].split() == ["index", "transition", "slave", "qpn", "type", "result"]
    assert lines[2].split() == ["1", "RST2INIT", "1", "0x001210", "UD", "accepted"]
    assert lines[3].split() == [PRI_PKEY, "0x00", "->", "0x01"]
    i = lines.index(next(x for x in lines if x.split()[:2] == ["4", "INIT2RTR"]))
    assert lines[i + 1].split() == [PRI_PKEY, "0x01", "->", "0x7f"]
    assert lines[i + 2].split() == [PRI_MGID, "0x07", "->", "0x83"]
    assert "      3  RST2INIT       0 0x001200  UD   accepted, no change" in lines
    assert "      6  RTR2RTS        5 0x001251  RC   rejected by verify (-EINVAL)" in lines
    assert any(x.split() == [QKEY, "0x11111111", "->", "0xffff0019"] for x in lines)
    assert "[finding: spill]" in out
    start = lines.index("Rejected commands (the master returns the error to the function; firmware never sees them):")
    assert lines[start + 1] == "  #6 RTR2RTS slave 5 qpn 0x001251 RC: rejected by verify (-EINVAL)"
    start = lines.index("Findings:")
    assert lines[start + 1].startswith("  #9 INIT2INIT slave 4 qpn 0x001240 UD: spill: P_Key index 200 on port 1")
    # (127 * 2 + 1) * 128 + 200 = 32840, past the u8[128][2][128] table's 32768 entries
    assert lines[start + 2] == ("  #10 INIT2INIT slave 127 qpn 0x0012f0 UD: refused: P_Key index 200 on port 2 of "
                                "slave 127: the C would read virt2phys_pkey at flat index 32840, outside its 32768 "
                                "entries; the row is kept as it came in")
    assert lines[-1] == ("10 commands (json trace): 8 accepted (7 changed, 1 unchanged), 1 rejected "
                         "(1 -EINVAL, 0 -EPERM), 1 refused; findings: 1 spill, 1 refused")


def test_quiet_prints_only_the_lists(capsys):
    code, out, _ = run(capsys, "-r", EXAMPLE, "-q")
    assert code == 0 and "index  transition" not in out and PRI_PKEY not in out
    assert "Rejected commands" in out and "Findings:" in out
    cmds, _ = run_json(capsys, "-r", EXAMPLE, "-q")
    assert [c["index"] for c in cmds] == [6, 9, 10]


@pytest.mark.parametrize("profile", ["3.7", "new"])
@pytest.mark.parametrize("port", [1, 2])
def test_init2rtr_ud_slave3_mgid_and_mapped_pkey_index(tmp_path, capsys, profile, port):
    trace = write(tmp_path / "t.jsonl", [("INIT2RTR", 3, 0x1234, mailbox(UD, pkey_index=5, port=port, mgid=0x07))])
    m = tmp_path / "vf3.map"
    m.write_text(f"3 {port} 5 {40 + port}\n")
    cmds, _ = run_json(capsys, "-r", trace, "--pkey-map", m, "--profile", profile, "-w", tmp_path / "o.jsonl")
    assert cmds[0]["rc"] == 0
    assert cmds[0]["changes"] == [[PRI_PKEY, 5, 40 + port], [PRI_MGID, 0x07, 0x83]]
    out = read_trace(tmp_path / "o.jsonl").mailbox[0]
    assert (out[35], out[41], out[79]) == (40 + port, 0x83, 0)     # the alternate pkey_index is untouched


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_rc_primary_and_alternate_path_take_the_slave(tmp_path, capsys, profile):
    trace = write(tmp_path / "t.jsonl", [
        ("RTR2RTS", 77, 1, mailbox(RC, optpar=0x80, mgid=0, alt_mgid=0x33)),
        ("SQD2RTS", 77, 2, mailbox(UC, optpar=0x81)),
        ("INIT2RTR", 77, 3, mailbox(RC, optpar=0, mgid=9, alt_mgid=9)),   # no address path: untouched
    ])
    cmds, _ = run_json(capsys, "-r", trace, "--profile", profile)
    assert [c["changes"] for c in cmds] == [[[PRI_MGID, 0, 77]], [[PRI_MGID, 0, 77], [ALT_MGID, 0, 77]], []]
    assert [c["rc"] for c in cmds] == [0, 0, 0]


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_verify_rejection_is_listed_and_the_row_kept(tmp_path, capsys, profile):
    rejected = mailbox(RC, optpar=0x01, alt_mgid=2)
    trace = write(tmp_path / "t.bin", [("SQD2SQD", 6, 0x99, rejected)], binary=True)
    code, out, _ = run(capsys, "-r", trace, "-w", tmp_path / "o.bin", "--profile", profile)
    assert code == 0
    assert "  #1 SQD2SQD slave 6 qpn 0x000099 RC: rejected by verify (-EINVAL)" in out.splitlines()
    assert (read_trace(tmp_path / "o.bin").mailbox[0] == rejected).all()


def test_profile_new_eperm_and_port_not_owned(tmp_path, capsys):
    rate = mailbox(UD)
    rate[196] = 1                                                   # a VF setting a rate limit
    trace = write(tmp_path / "t.jsonl", [
        ("INIT2RTR", 1, 0x1300, rate),
        ("INIT2RTR", 1, 0x10, mailbox(MLX)),                        # MLX QP on a reserved QP number
        ("INIT2RTR", 128, 0x1300, mailbox(UD)),                      # no such function: owns no port
    ])
    cmds, summary = run_json(capsys, "-r", trace)
    assert [(c["rc"], c["reason"]) for c in cmds] == [
        (-1, "verify_qp_parameters"), (-1, "verify_qp_parameters"), (-22, "adjust_qp_sched_queue")]
    assert (summary["eperm"], summary["einval"], summary["vfs"]) == (2, 1, 126)
    code, out, _ = run(capsys, "-r", trace, "-q")
    assert code == 0
    assert "#3 INIT2RTR slave 128 qpn 0x001300 UD: rejected: port not owned (-EINVAL)" in out
    assert "#1 INIT2RTR slave 1 qpn 0x001300 UD: rejected by verify (-EPERM)" in out
    cmds, _ = run_json(capsys, "-r", trace, "--profile", "3.7")
    assert [c["rc"] for c in cmds] == [0, 0, paravirt.RC_REFUSED]  # 3.7 had neither check


def test_operators_manual_scenario(tmp_path, capsys):
    ipoib = mailbox(UD, pkey_index=0)
    trace = write(tmp_path / "ipoib.jsonl", [("RST2INIT", 1, 0x1210, ipoib), ("RST2INIT", 2, 0x1220, ipoib),
                                             ("RST2INIT", 0, 0x1200, ipoib)])
    m = tmp_path / "vfs.map"
    m.write_text(EXAMPLE_MAP)
    code, _, err = run(capsys, "-r", trace, "--pkey-map", m, "-w", tmp_path / "o.jsonl")
    assert code == 0 and err == ""
    phys = [0xFFFF, 0xB000, 0xB030]                     # Default 0x7fff full, 0x3000, 0x3030
    got = read_trace(tmp_path / "o.jsonl").mailbox[:, 35]
    assert list(got) == [1, 2, 0] and [phys[i] for i in got] == [0xB000, 0xB030, 0xFFFF]


# -- OUT, encodings, kernel and reference ------------------------------------------------------------

def random_commands(n, seed):
    rng = np.random.default_rng(seed)
    boxes = rng.integers(0, 256, size=(n, 256), dtype=np.uint8)
    boxes[:, 9] = rng.choice([RC, UC, UD, 6, MLX, 0x13], n)
    boxes[:, 0:4] = 0
    boxes[:, 3] = rng.choice([0, 0x80, 0x01, 0x81, 0x10], n)
    boxes[:, 2] = rng.choice([0, 1], n)                              # SCHED_QUEUE optpar
    boxes[:, 196:198] *= rng.random((n, 1)) < 0.2                    # mostly no rate limit
    boxes[:, 41] *= rng.random(n) < 0.3                              # mostly GID index 0
    boxes[:, 85] *= rng.random(n) < 0.3
    names = rng.choice(list(paravirt.TRANSITIONS), n)
    slaves = rng.choice([0, 1, 2, 3, 40, 79, 80, 126, 127, 128, 300], n)
    qpns = rng.choice([0x10, P - 1, P, P + 100, T37, T37 + 639, T37 + 640, T, T + 1023, T + 1024, 0x5000,
                       0xAB000000 | (T + 3)], n)
    return list(zip(names, slaves, qpns, boxes))


@pytest.mark.parametrize("profile", ["3.7", "new"])
@pytest.mark.parametrize("binary", [False, True])
def test_out_equals_rewrite_of_the_input(tmp_path, capsys, profile, binary):
    trace = write(tmp_path / "in", random_commands(300, seed=7), binary=binary)
    m = tmp_path / "vfs.map"
    m.write_text(EXAMPLE_MAP)
    code, _, err = run(capsys, "-r", trace, "-w", tmp_path / "out", "--profile", profile, "--pkey-map", m, "-q")
    assert code == 0, err
    assert (tmp_path / "out").read_bytes()[:16] == (b"madpipe-qptrace\0" if binary else b'{"transition": "')
    got = read_trace(tmp_path / "out")
    t = read_trace(trace)
    out, rc, finding = rewritten(trace, example_v2p("3.7" if profile == "3.7" else "mainline"), profile)
    assert (got.mailbox == out).all()
    assert (got.transition == t.transition).all() and (got.slave == t.slave).all() and (got.in_mod == t.in_mod).all()
    assert len(set(rc.tolist())) >= 3 and set(finding.tolist()) >= {0, 2}   # the trace exercises the paths


def test_encoding_flags(tmp_path, capsys):
    for flag, magic in (("--binary", b"madpipe-qptrace\0"), ("--json", b'{"transition": ')):
        for src in (EXAMPLE, write(tmp_path / "e.bin", EXAMPLE_COMMANDS, binary=True)):
            code, out, _ = run(capsys, "-r", src, "-w", tmp_path / "o", flag, "-q", "--force")  # o again
            assert code == 0 and (tmp_path / "o").read_bytes().startswith(magic)
            assert (read_trace(tmp_path / "o").mailbox == rewritten(EXAMPLE, *_defaults())[0]).all()
            assert out.splitlines()[-1].endswith(f"records to {tmp_path / 'o'} ({flag[2:]})")


def _defaults():
    _, v2p = snoop.init_pkeys(num_vfs=126, num_ports=2, pkey_table_len=128, master=0)
    return v2p, "mainline"


@pytest.mark.parametrize("profile", ["3.7", "new"])
def test_kernel_and_reference_give_the_same_output(tmp_path, capsys, profile):
    trace = write(tmp_path / "in.bin", random_commands(120, seed=11), binary=True)
    outputs, written = [], []
    for model in ([], ["--reference"]):
        for fmt in ("text", "json"):
            code, out, _ = run(capsys, "-r", trace, "-w", tmp_path / "o.bin", "--profile", profile, "-T", fmt, *model,
                               "--force")  # o.bin again
            assert code == 0
            outputs.append(out.replace("reference", "kernel"))
            written.append((tmp_path / "o.bin").read_bytes())
    assert outputs[0] == outputs[2] and outputs[1] == outputs[3]
    assert written[0] == written[1] == written[2] == written[3]


def test_write_to_stdout_sends_the_report_to_stderr(tmp_path, capsys):
    code, out, err = run(capsys, "-r", EXAMPLE, "-w", "-")
    assert code == 0
    (tmp_path / "o.jsonl").write_text(out)
    assert (read_trace(tmp_path / "o.jsonl").mailbox == rewritten(EXAMPLE, *_defaults())[0]).all()
    assert err.startswith("QP commands through the mlx4 master") and "records to <stdout> (json)" in err


def test_empty_trace(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cmds, summary = run_json(capsys, "-r", empty, "-w", tmp_path / "o.jsonl")
    assert cmds == [] and summary["commands"] == 0 and summary["vfs"] == 0
    assert (tmp_path / "o.jsonl").read_bytes() == b""


def test_master_and_vfs(tmp_path, capsys):
    # --master 2: function 2's row is the identity, so its index 5 stays 5; slave 1's index 5 is unassigned.
    trace = write(tmp_path / "t.jsonl", [("RST2INIT", 2, 1, mailbox(UD, pkey_index=5)),
                                         ("RST2INIT", 1, 2, mailbox(UD, pkey_index=5))])
    cmds, summary = run_json(capsys, "-r", trace, "--master", "2")
    assert [c["changes"] for c in cmds] == [[], [[PRI_PKEY, 5, 127]]] and summary["master"] == 2
    # --vfs 1: function 2 does not exist; its row is zeros (the C's zeroed array), index 5 -> 0.
    cmds, summary = run_json(capsys, "-r", trace, "--vfs", "1")
    assert cmds[0]["changes"] == [[PRI_PKEY, 5, 0]] and summary["vfs"] == 1


# -- help and errors ---------------------------------------------------------------------------------------

def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["paravirt", "--help"])
    out, _ = capsys.readouterr()
    assert exc.value.code == 0
    assert "examples:" in out and "madpipe paravirt -r tests/data/paravirt_example.jsonl" in out
    assert "--base-proxy-sqpn N" in out and "default 0x48" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "paravirt" in capsys.readouterr().out


def _bad_json(tmp_path):
    p = tmp_path / "bad.jsonl"
    good = {"transition": "INIT2RTR", "slave": 1, "in_mod": 1, "mailbox": "00" * 256}
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "slave": "x"}) + "\n")
    return p


def _cut_binary(tmp_path):
    p = write(tmp_path / "cut.bin", EXAMPLE_COMMANDS[:2], binary=True)
    p.write_bytes(p.read_bytes()[:-7])
    return p


def _map(tmp_path, text):
    p = tmp_path / "x.map"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("argv,words", [
    (lambda d: ["-r", d / "none.jsonl"], "none.jsonl: cannot read: No such file or directory"),
    (lambda d: ["-r", _bad_json(d)], "bad.jsonl: line 2: field slave: expected an integer"),
    (lambda d: ["-r", _cut_binary(d)], "cut.bin: record 2: truncated (257 of 264 bytes)"),
    (lambda d: ["-r", EXAMPLE, "--pkey-map", d / "none.map"], "none.map: cannot read"),
    (lambda d: ["-r", EXAMPLE, "--pkey-map", _map(d, "1 1 0\n")], "x.map, line 1: expected 'VF PORT INDEX PHYS'"),
    (lambda d: ["-r", EXAMPLE, "--pkey-map", _map(d, "1 3 0 1\n")], "x.map, line 1, field port: 3 is outside 1..2"),
    (lambda d: ["-r", write(d / "t.jsonl", EXAMPLE_COMMANDS[:2]), "--pkey-map", _map(d, "5 1 0 1\n")],
     "field vf: 5 is outside 1..2 (--vfs defaults to the trace's largest slave, 2: give --vfs)"),
    (lambda d: ["-r", EXAMPLE, "--base-proxy-sqpn", "0x49"], "--base-proxy-sqpn must be a multiple of 8"),
    (lambda d: ["-r", EXAMPLE, "--base-proxy-sqpn", "0"], "--base-proxy-sqpn must be a multiple of 8"),
    (lambda d: ["-r", EXAMPLE, "--vfs", "127"], "--vfs must be 0..126 (MLX4_MAX_NUM_VF of profile mainline), got 127"),
    (lambda d: ["-r", EXAMPLE, "--vfs", "65", "--profile", "3.7"], "--vfs must be 0..64 (MLX4_MAX_NUM_VF of profile 3.7)"),
    (lambda d: ["-r", EXAMPLE, "--master", "127"], "--master must be a function number 0..126"),
    (lambda d: ["-r", EXAMPLE, "--master", "3", "--vfs", "2"], "--master 3 is not one of the functions 0..2"),
    (lambda d: ["-r", EXAMPLE, "--binary"], "--binary chooses the encoding of -w OUT: give -w OUT too"),
    (lambda d: ["-r", EXAMPLE, "-w", d / "no" / "dir" / "o.bin"], "o.bin: cannot write"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, words):
    code, out, err = run(capsys, *argv(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("madpipe paravirt: ") and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_argparse_rejects_bad_values(capsys):
    for argv in (["--profile", "4.0"], ["--vfs", "two"], ["--binary", "--json"]):
        with pytest.raises(SystemExit) as exc:
            main(["paravirt", "-r", str(EXAMPLE), *argv])
        assert exc.value.code == 2
        assert "madpipe paravirt: error:" in capsys.readouterr().err


def test_readme_example_is_the_real_output(capsys):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## QP-context rewriting: `madpipe paravirt`", 1)[1].split("\n## ", 1)[0]
    sample = section.split("with the operators' manual map:\n\n", 1)[1]
    shown = sample.split("```\n", 1)[1].split("```", 1)[0].splitlines()
    code, out, _ = run(capsys, "-r", EXAMPLE, "--pkey-map", VFS_MAP)
    assert code == 0
    lines = out.splitlines()
    assert len(shown) > 10 and all(line in lines for line in shown if line != "...")


def test_a_small_trace_does_not_load_numba():
    probe = ("import sys; from madpipe.pipeline.cli.main import main; "
             f"code = main(['paravirt', '-r', {str(EXAMPLE)!r}, '-q']); print('numba' in sys.modules, code)")
    env = {k: v for k, v in os.environ.items() if k not in ("MADPIPE_JIT", "NUMBA_DISABLE_JIT")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.splitlines()[-1] == "False 0"


# -- the Ethernet (RoCE) path from the command line ------------------------------------------------

VF_STATE = ("# vf port settings (ip link set DEV vf N ...)\n"
            "1 2 vlan 100 qos 3 spoofchk on mac-index 5 smac 5   # VST 802.1Q\n"
            "2 2 vlan 200 proto 802.1ad state disable vlan-index 7 qos-vport 9 smac 0\n"
            "3 2 smac 0,1,2\n")


def with_smac(m, index):
    """A mailbox whose primary path names source-MAC index ``index`` (roce_verify_mac reads it)."""
    m[eth_ref.MBOX_PRI_GRH_MYLMC] = index
    return m


# Commands on port 2: INIT2RTR applies the vport state (update_vport_qp_param), UD and RC alike;
# roce_verify_mac accepts only a source MAC the VF registered.
ETH_COMMANDS = [
    ("INIT2RTR", 1, 0x1210, with_smac(mailbox(UD, port=2), 5)),
    ("INIT2RTR", 2, 0x1220, mailbox(UD, port=2)),
    ("INIT2RTR", 3, 0x1230, mailbox(RC, port=2)),
    ("INIT2RTR", 1, 0x1211, mailbox(UD, port=1)),      # port 1 stays InfiniBand
    ("RST2INIT", 2, 0x1221, mailbox(UD, port=2)),
    ("INIT2RTR", 1, 0x1212, mailbox(UD, port=2)),      # VF 1 did not register MAC 0: -EINVAL
]


def test_port_type_and_vf_state_give_the_apis_rewrite(tmp_path, capsys):
    # The file means what the API's arrays say, set by hand here from the module docstring's words.
    trace = write(tmp_path / "eth.jsonl", ETH_COMMANDS)
    state = tmp_path / "vfs.txt"
    state.write_text(VF_STATE)
    out = tmp_path / "out.jsonl"
    code, text, err = run(capsys, "-r", trace, "--port-type", "2=eth", "--vf-state", state, "-w", out)
    assert code == 0, err
    assert "port 1 InfiniBand, port 2 Ethernet, VF state" in text
    vport = paravirt.vport_state("mainline")
    vport[1, 1, :] = [100, 3, 0, 1, 0, 5, 0, 0]          # vlan, qos, link auto, spoofchk, vlan_idx, mac_idx
    vport[2, 1, :] = [200, 0, 2, 0, 7, 0, 9, 1]          # state disable, vlan_idx 7, qos_vport 9, 802.1ad
    smac = np.zeros((128, 2, 128), np.uint8)
    smac[1, 1, 5] = 1
    smac[2, 1, 0] = 1
    smac[3, 1, [0, 1, 2]] = 1
    t = read_trace(str(trace))
    _, v2p = snoop.init_pkeys(num_vfs=3, profile="mainline")
    want, rc = paravirt.rewrite(t.mailbox, t.transition, t.slave, t.in_mod, v2p, base_proxy_sqpn=P,
                                profile="mainline", fw_reserved_qps=P - 8, port_types=[1, 2], num_vfs=3,
                                vport=vport, smac_registered=smac)
    assert np.array_equal(read_trace(str(out)).mailbox, want)
    # and the state reached the mailboxes: VF 1's QoS 3 and MAC index 5, VF 2's qos_vport 9;
    # VF 1's unregistered MAC refused
    assert rc.tolist() == [0, 0, 0, 0, 0, paravirt.RC_EINVAL]
    assert (want[0, qpc.MBOX_PRI_SCHED_QUEUE] >> 3) & 7 == 3 and want[0, eth_ref.MBOX_PRI_GRH_MYLMC] & 0x7F == 5
    assert want[1, eth_ref.MBOX_QOS_VPORT] == 9 and want[1, eth_ref.MBOX_PRI_VLAN_INDEX] == 7
    assert want[3, eth_ref.MBOX_QOS_VPORT] == 0      # port 1: no vport rewrite
    ib = tmp_path / "ib.jsonl"
    assert run(capsys, "-r", trace, "-w", ib)[0] == 0
    assert not np.array_equal(read_trace(str(ib)).mailbox, want)   # the options changed something
    records, summary = run_json(capsys, "-r", trace, "--port-type", "2=eth", "--vf-state", state)
    assert summary["port_types"] == ["ib", "eth"] and summary["vf_state"] == str(state)
    assert [r["rc"] for r in records] == rc.tolist()


def _state(tmp_path, text):
    p = tmp_path / "vfs.txt"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("argv,words", [
    (lambda d: ["--port-type", "3=eth"], "--port-type: expected 1=ib, 1=eth, 2=ib or 2=eth, got '3=eth'"),
    (lambda d: ["--port-type", "2=roce"], "--port-type: expected 1=ib"),
    (lambda d: ["--port-type", "2=eth", "--port-type", "2=ib"], "--port-type: port 2 given twice"),
    (lambda d: ["--vf-state", _state(d, "1 2 vlan 5\n")], "--vf-state sets the VFs' Ethernet vport state"),
    (lambda d: ["--port-type", "1=eth", "--profile", "3.7"], "profile 3.7 has no Ethernet rules"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "1 2 vlan\n")], "vfs.txt:1: expected 'VF PORT'"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "\n1 2 color red\n")],
     "vfs.txt:2: unknown setting 'color'"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "1 2 vlan 4096\n")],
     "vfs.txt:1, vlan: 4096 is outside 0..4095"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "1 2 qos x\n")], "vfs.txt:1, qos: not an integer: 'x'"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "1 2 spoofchk yes\n")],
     "vfs.txt:1, spoofchk: expected off or on, got 'yes'"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "1 3 vlan 5\n")], "vfs.txt:1, port: 3 is outside 1..2"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", _state(d, "1 2 smac 1,128\n")],
     "vfs.txt:1, smac: 128 is outside 0..127"),
    (lambda d: ["--port-type", "2=eth", "--vf-state", d / "none.txt"], "none.txt: cannot read"),
])
def test_ethernet_option_errors_are_one_line(tmp_path, capsys, argv, words):
    trace = write(tmp_path / "eth.jsonl", ETH_COMMANDS)
    code, out, err = run(capsys, "-r", trace, *argv(tmp_path))
    assert code == 2 and out == ""
    assert err.startswith("madpipe paravirt: ") and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_the_readmes_vf_state_file_is_the_one_its_example_runs_with(tmp_path, capsys):
    shown = (DATA / "paravirt_vf_state.txt").read_text()
    assert shown in (Path(__file__).parent.parent / "README.md").read_text()
    code, out, err = run(capsys, "-r", EXAMPLE, "--port-type", "2=eth", "--vf-state", DATA / "paravirt_vf_state.txt",
                         "-w", tmp_path / "o.jsonl")
    assert code == 0 and "port 2 Ethernet, VF state" in out, err
