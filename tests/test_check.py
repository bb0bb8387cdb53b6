"""`madpipe check`: opensm's partitions.conf grammar, and captures of opensm runs checked against the
file opensm was given (passes) and against another one (fails with exactly the ports the two files
disagree on). The expectations come from the files as this test reads (or writes) them, never from
madpipe's output.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from madpipe.pipeline.check.partitions_conf import PolicyError, parse_policy, read_policy
from madpipe.pipeline.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
PCAPS = ROOT / "pcaps"
EXAMPLES = Path(__file__).resolve().parent / "data" / "opensm-partition-config-examples.conf"


# -- the grammar ---------------------------------------------------------------------------------------

def test_opensm_doc_examples_parse_as_opensm_reads_them():
    policy = read_policy(EXAMPLES)
    parts = policy.partitions
    assert [p.name for p in parts] == ["Default", "Default", "NewPartition", "YetAnotherOne", "YetAnotherOne",
                                       "ShareIO", "ShareIO", "ShareIO", "ShareIO", "ShareIO", "Default"]
    assert [m.what for m in parts[1].members] == ["ALL", "ALL_SWITCHES", "SELF"]
    assert [m.membership for m in parts[1].members] == ["limited", "full", "full"]
    new = parts[2]
    assert new.pkey == 1 and "ipoib" in new.flags  # no P_Key: opensm's counter gives the first free one
    assert [(m.guid, m.membership) for m in new.members] == [
        (0x123456, "full"), (0x3456789034, "limited"), (0x2134af2306, "limited")]  # "limi": a prefix
    assert parts[3].pkey == parts[4].pkey == 0x300
    share = [[(m.guid & 0xFF, m.membership) for m in p.members] for p in parts[5:10]]
    assert share == [[(0x51, "full"), (0x52, "full")],
                     [(0x53, "limited"), (0x54, "limited"), (0x55, "full")],
                     [(0x56, "limited"), (0x57, "limited"), (0x58, "full")],
                     [(0x59, "full"), (0x5a, "full")],
                     [(0x5b, "full"), (0x5c, "limited"), (0x5d, "full")]]
    last = parts[10]  # header on one line, mgid lines, members on the last line of the statement
    assert last.mgids == ["ff12:401b::0707", "ff12:601b::16", "ff12:401b::16", "ff12:601b::2", "ff12::1"]
    assert [(m.what, m.membership, m.line) for m in last.members] == [("ALL", "full", 27)]
    assert policy.warnings == []


def test_continuations_comments_and_pkey_forms():
    text = ("# a comment\n"
            "0x8010 : 0x10=full, # the rest of the line is a comment; even this ;\n"
            "   0x11=both,\n"
            "   NONE, 0x12=limited ;  other=17,mtu=4,rate=3,sl=1,scope=2,Q_Key=0x1b,TClass=0,FlowLabel=0,"
            "indx0 : SELF ; last=0 : ALL_CAS=f\n")
    parts = parse_policy(text).partitions
    assert parts[0].name == "" and parts[0].pkey == 0x10  # bit 15 dropped, as opensm does
    assert [(m.guid, m.membership) for m in parts[0].members] == [(0x10, "full"), (0x11, "both"), (0x12, "limited")]
    assert parts[1].pkey == 17 and set(parts[1].flags) == {"mtu", "rate", "sl", "scope", "Q_Key", "TClass",
                                                           "FlowLabel", "indx0"}
    assert parts[2].name == "last" and parts[2].pkey == 1  # P_Key 0: generated
    assert [(m.what, m.membership) for m in parts[2].members] == [("ALL_CAS", "full")]


@pytest.mark.parametrize("text, where, words", [
    ("Default=0x7fff ALL=full;\n", ":1:1:", "no partition definition"),
    ("Default=0x7fff : ALL=full;\nstorage=0x80z1 : ALL;\n", ":2:9:", "P_Key '0x80z1'"),
    ("storage=0x18001 : ALL;\n", ":1:9:", "16-bit"),
    ("storage=1 :\n  0x10,\n  0xfoo=full;\n", ":3:3:", "bad PortGUID '0xfoo'"),
    ("storage=1 : 0;\n", ":1:13:", "bad PortGUID '0'"),
    ("storage=1 : 0x10000000000000000;\n", ":1:13:", "64-bit"),
    ("storage=1,, ipoib : ALL;\n", ":1:11:", "empty flag"),
    ("storage=1 : ALL;\nx=2\n : ALL;\n", ":2:1:", "no partition definition"),
])
def test_bad_input_is_one_line_with_line_and_column(text, where, words):
    with pytest.raises(PolicyError) as err:
        parse_policy(text, "p.conf")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("p.conf" + where) and words in msg, msg


def test_what_opensm_only_warns_about_is_a_warning():
    policy = parse_policy("storage=1, bogus, defmember=sometimes, mtu=x : 0x10=fuul, mgid=ff12::zz\n", "p.conf")
    assert [m.membership for m in policy.partitions[0].members] == ["limited"]
    assert len(policy.warnings) == 5 and all(w.startswith("p.conf:1:") for w in policy.warnings)
    assert policy.partitions[0].mgids == []


def test_unreadable_and_binary_files_are_one_line(tmp_path, capsys):
    bad = tmp_path / "p.conf"
    bad.write_bytes(b"Default=0x7fff : ALL;\nst\xffrage=1 : ALL;\n")
    rc = main(["check", "--partitions", str(bad), str(PCAPS / "opensm_partitions.pcap")])
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"madpipe check: {bad}:2:3: not UTF-8 text (byte 0xff at offset 24)"
    rc = main(["check", "--partitions", str(tmp_path / "none.conf"), str(PCAPS / "opensm_partitions.pcap")])
    assert rc == 2 and "cannot read" in capsys.readouterr().err


# -- what the test expects, from the files alone -----------------------------------------------------

STATEMENT = re.compile(r"^(\w+)=(0x[0-9a-fA-F]+)[^:]*:(.*);", re.M)


def tables_from_simple_file(path: Path, all_ports: set[int]) -> dict[int, set[int]]:
    """GUID -> P_Keys, for files of one-line statements 'name=0xPKEY[, flags] : GUID=full|limited, ...;'
    and 'ALL=full' (the bundled files and the ones this test writes)."""
    tables: dict[int, dict[int, int]] = {g: {0x7FFF: 0x7FFF} for g in all_ports}
    for _name, pkey, members in STATEMENT.findall(path.read_text()):
        base = int(pkey, 16) & 0x7FFF
        for member in members.split(","):
            port, _, how = (s.strip() for s in member.partition("="))
            key = base | 0x8000 if how in ("full", "both") else base
            for g in (all_ports if port == "ALL" else [int(port, 16)]):
                tables[g][base] = key
    return {g: set(t.values()) for g, t in tables.items()}


def _check_json(capsys, conf, capture) -> tuple[int, list[dict]]:
    rc = main(["check", "--partitions", str(conf), str(capture), "-T", "json"])
    return rc, [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def assert_fails_exactly_where_files_differ(capsys, capture, given: Path, other: Path, ca_guids: set[int]):
    want_given, want_other = (tables_from_simple_file(f, ca_guids) for f in (given, other))
    differ = {g for g in ca_guids if want_given[g] != want_other[g]}
    assert differ, "the two files must disagree somewhere"
    rc, recs = _check_json(capsys, other, capture)
    assert rc == 1
    bad = [r for r in recs if r["type"] == "port" and r["status"] != "ok" and r["status"] != "not checked"]
    end_ports = {r["guid"] for r in bad if r["facing"] is None}
    switch_ports = [r["facing"] for r in bad if r["facing"] is not None]
    assert end_ports == differ  # each CA whose table the files disagree on...
    assert sorted(switch_ports) == sorted(differ)  # ...and the one switch port facing it
    for r in bad:
        guid = r["facing"] or r["guid"]
        assert r["status"] == "violation" and set(r["pkeys"]) == want_given[guid]
        lacks, surplus = want_other[guid] - want_given[guid], want_given[guid] - want_other[guid]
        assert set(r["missing"]) | {m["required"] for m in r["membership"]} == lacks
        assert set(r["extra"]) | {m["held"] for m in r["membership"]} == surplus
    summary = recs[-1]
    assert summary["type"] == "summary" and summary["violation"] == 2 * len(differ) and not summary["passed"]


# -- the bundled captures --------------------------------------------------------------------------

BUNDLED_CAS = {0x100001, 0x100004, 0x100007, 0x10000A}  # partitions-a.conf's comment: ibnetdiscover -p


@pytest.mark.parametrize("capture, conf", [("opensm_partitions.pcap", "partitions-a.conf"),
                                           ("opensm_partitions_queries.pcap", "partitions-a.conf"),
                                           ("opensm_partitions_changed.pcap", "partitions-b.conf")])
def test_bundled_captures_pass_against_their_file(capture, conf, capsys):
    rc, recs = _check_json(capsys, PCAPS / conf, PCAPS / capture)
    assert rc == 0
    ports = [r for r in recs if r["type"] == "port"]
    ok = [r for r in ports if r["status"] == "ok"]
    assert {r["guid"] for r in ok if r["facing"] is None} >= BUNDLED_CAS  # every CA checked...
    assert {r["facing"] for r in ok if r["facing"] is not None} == BUNDLED_CAS  # ...and the switch port facing it
    assert recs[-1]["passed"] is True and recs[-1]["violation"] == 0
    # each port named by its node's NodeDescription: ibsim's net.2sw2path4hca calls them so
    assert {r["guid"]: r["node_description"] for r in ok if r["guid"] in BUNDLED_CAS} == {
        0x100001: "Hca1", 0x100004: "Hca2", 0x100007: "Hca3", 0x10000A: "Hca4"}


@pytest.mark.parametrize("capture, given, other", [
    ("opensm_partitions.pcap", "partitions-a.conf", "partitions-b.conf"),
    ("opensm_partitions_changed.pcap", "partitions-b.conf", "partitions-a.conf")])
def test_bundled_captures_fail_where_the_files_differ(capture, given, other, capsys):
    assert_fails_exactly_where_files_differ(capsys, PCAPS / capture, PCAPS / given, PCAPS / other, BUNDLED_CAS)


def test_text_report_and_the_never_programmed(tmp_path, capsys):
    conf = tmp_path / "p.conf"
    conf.write_text((PCAPS / "partitions-a.conf").read_text() + "extra=0x10 : ALL_SWITCHES=full ;\n"
                    "ghost=0x11 : 0x0000000000abcdef=full ;\n")
    rc = main(["check", "--partitions", str(conf), str(PCAPS / "opensm_partitions.pcap"), "--from", "set"])
    out = capsys.readouterr().out
    assert rc == 1
    # the switches' port 0 were never Set (already right); now the policy gives them 0x8010 too
    assert re.search(r"^Never programmed: path 1 guid 0x0000000000200000: the policy gives it 0x8010 0xffff", out, re.M)
    assert f"{conf}:8:14: 0x0000000000abcdef: no such port in the capture" in out
    assert out.strip().splitlines()[-1].startswith("0 of 8 ports break the policy (0 P_Keys missing, 0 extra, "
                                                    "0 wrong membership); 2 ports the policy names never programmed")


# -- ibsim: a fabric of 52 nodes -------------------------------------------------------------------

def big_topology(switches: int = 4, per_switch: int = 12) -> str:
    """ibsim's topology format: a chain of switches, each with its HCAs (H<switch>_<n>)."""
    lines = []
    for s in range(1, switches + 1):
        lines.append(f'Switch\t24 "S{s}"')
        lines += [f'[{h}]\t"H{s}_{h}"[1]' for h in range(1, per_switch + 1)]
        if s > 1:
            lines.append(f'[20]\t"S{s - 1}"[21]')
        if s < switches:
            lines.append(f'[21]\t"S{s + 1}"[20]')
        lines.append("")
    for s in range(1, switches + 1):
        lines += [f'Hca\t1 "H{s}_{h}"\n[1]\t"S{s}"[{h}]\n' for h in range(1, per_switch + 1)]
    return "\n".join(lines)


def random_partitions(cas: list[int], seed: int) -> str:
    rng = random.Random(seed)
    lines = ["Default=0x7fff, ipoib : ALL=full;"]
    for n, name in enumerate(("storage", "compute", "backup"), 1):
        members = [f"0x{g:016x}={rng.choice(('full', 'limited', 'both'))}" for g in cas if rng.random() < 0.5]
        lines.append(f"{name}=0x{0x8000 | n:04x}, ipoib : {', '.join(members)};")
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_a_52_node_ibsim_fabric(tmp_path, capsys):
    from test_sim import need_sim_tools

    from madpipe.pipeline.sim.capture import SimCapture

    need_sim_tools()
    topo = tmp_path / "net.52"
    topo.write_text(big_topology())
    with SimCapture(topo) as sim:  # the port GUIDs, by ibnetdiscover (ibsim numbers them the same each run)
        cas = sorted({p.guid for p in sim.ports() if p.kind == "CA"})
    assert len(cas) == 48
    given, other = tmp_path / "a.conf", tmp_path / "b.conf"
    given.write_text(random_partitions(cas, 1))
    other.write_text(random_partitions(cas, 2))
    capture = tmp_path / "big.pcap"
    assert main(["capture", "--sim", str(topo), "--sm-node", "H1_1", "--partitions", str(given),
                 "-w", str(capture)]) == 0
    capsys.readouterr()
    rc, recs = _check_json(capsys, given, capture)
    assert rc == 0, [r for r in recs if r.get("status") not in ("ok", "not checked")][:3]
    assert sum(r.get("status") == "ok" for r in recs) == 48 + 48 + 4  # CAs, switch ports facing them, port 0s
    assert_fails_exactly_where_files_differ(capsys, capture, given, other, set(cas))
