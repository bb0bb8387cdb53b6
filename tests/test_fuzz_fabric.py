"""``madpipe fuzz --target opensm|diags``: a malicious fabric's answers to opensm and the diags.

The first tests need no tool: the answer mutator (seeded per answer, edits that replay), the
crash-site and sanitizer parsers on real gdb and ASan output, the wrong-answer check on built
MADs. The rest run ibsim, opensm and the diags (skipped locally without them, failed in CI): a
short seeded run of each target that must end cleanly, and a planted bug (an smpquery stand-in
that trusts NodeInfo.NumPorts, tests/data/planted_smpquery.c, built with gcc) found as a crash with
its crash site, minimised to the one edit that matters, saved and replayed; built with ASan, the
same bug is a sanitizer report.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool

from madpipe.codecs import build
from madpipe.codecs import smp as smpc
from madpipe.codecs.capture import CaptureReader
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fuzz.mutate.answers import AnswerMutator, Edit, answer_key, apply_edits, get_field
from madpipe.pipeline.fuzz.targets import fabric_checks as checks
from madpipe.pipeline.sim.processes import find_tool, leftover_processes

DATA = Path(__file__).parent / "data"
GETRESP = 0x81


pytestmark = pytest.mark.usefixtures("no_process_left")


def node_info_answer(num_ports=8, local_port=1, node_type=smpc.NODE_TYPE_SWITCH, **mad) -> bytes:
    data = smpc.NodeInfo.build(dict(base_version=1, class_version=1, node_type=node_type, num_ports=num_ports,
                                    sys_guid=0x200000, node_guid=0x200000, port_guid=0x200000, partition_cap=8,
                                    device_id=0, revision=0xA1, local_port_num=local_port, vendor_id=0,
                                    resv0=bytes(24)))
    return build.smp_mad(mad.pop("method", GETRESP), mad.pop("attr_id", smpc.IB_SMP_ATTR_NODE_INFO), data,
                         tid=7, **mad)


SMPQUERY_NODEINFO = """# Node info: Lid 2
BaseVers:........................1
ClassVers:.......................1
NodeType:........................Switch
NumPorts:........................8
SystemGuid:......................0x0000000000200000
Guid:............................0x0000000000200000
PortGuid:........................0x0000000000200000
PartCap:.........................8
DevId:...........................0x0000
Revision:........................0x000000a1
LocalPort:.......................1
VendorId:........................0x000000
"""


# -- the answer mutator ------------------------------------------------------------------------------

def test_an_answer_gets_the_same_edits_whatever_else_happens():
    mad = node_info_answer()
    key = answer_key(mad, 2) + "#0"
    a, b = AnswerMutator(1, 1.0), AnswerMutator(1, 1.0)
    first = a.edits(17, key, mad)
    a.edits(3, "other#0", mad)  # other answers in between change nothing
    assert first and first == b.edits(17, key, mad)
    assert a.edits(18, key, mad) != first or a.edits(19, key, mad) != first
    assert AnswerMutator(2, 1.0).edits(17, key, mad) != first or AnswerMutator(3, 1.0).edits(17, key, mad) != first


def test_rate_is_the_share_of_answers_mutated():
    mad = node_info_answer()
    m = AnswerMutator(1, 0.1)
    hit = sum(bool(m.edits(c, answer_key(mad, 2) + "#0", mad)) for c in range(2000))
    assert 120 < hit < 280
    assert not any(AnswerMutator(1, 0.0).edits(c, "k#0", mad) for c in range(200))


def test_edits_reach_the_fields_the_issue_names():
    m = AnswerMutator(1, 1.0)
    seen = set()
    answers = [node_info_answer(),
               build.smp_mad(GETRESP, smpc.IB_SMP_ATTR_PORT_INFO, bytes(64), tid=1, directed=True, path=[1]),
               build.smp_mad(GETRESP, smpc.IB_SMP_ATTR_SWITCH_INFO, bytes(64), tid=1),
               build.smp_mad(GETRESP, smpc.IB_SMP_ATTR_PKEY_TABLE, bytes(64), tid=1, attr_mod=0x10001),
               build.smp_mad(GETRESP, smpc.IB_SMP_ATTR_LINEAR_FORWARD_TABLE, bytes(64), tid=1, attr_mod=1)]
    for c in range(3000):
        mad = answers[c % len(answers)]
        for e in m.edits(c, answer_key(mad, 1) + "#0", mad):
            assert 0 <= e.new < 1 << e.width and e.new != e.old
            assert get_field(apply_edits(mad, [e]), e.bit, e.width) == e.new
            seen.add(e.field.split("[")[0])
    for name in ("attr.num_ports", "attr.local_port_num", "attr.lid", "attr.capability_mask", "attr.linear_fdb_top",
                 "attr.pkeys", "attr.ports", "smp.hop_ptr", "smp.hop_cnt", "smp.initial_path", "mad.attr_mod",
                 "mad.status", "mad.attr_id"):
        assert name in seen, name


def test_a_tid_edit_flips_the_same_bits_of_whatever_tid_the_tool_chose():
    mad = node_info_answer()
    e = Edit("mad.tid", 64, 64, 7, 7 ^ 0x100)
    other = bytearray(mad)
    other[8:16] = (0x1234).to_bytes(8, "big")
    assert int.from_bytes(apply_edits(bytes(other), [e])[8:16], "big") == 0x1234 ^ 0x100


# -- verdicts -----------------------------------------------------------------------------------------

GDB_BT = """#0  __pthread_kill_implementation (threadid=<optimized out>, signo=signo@entry=6, no_tid=no_tid@entry=0) at ./nptl/pthread_kill.c:44
#1  0x00007fd47b45ff4f in __pthread_kill_internal (signo=6, threadid=<optimized out>) at ./nptl/pthread_kill.c:78
#2  0x00007fd47b410fb2 in __GI_raise (sig=sig@entry=6) at ../sysdeps/posix/raise.c:26
#3  0x00007fd47b3fb472 in __GI_abort () at ./stdlib/abort.c:79
#4  0x00007fd47b45442f in __libc_message (action=action@entry=do_abort, fmt=fmt@entry=0x7fd47b56f459 "%s\\n") at ../sysdeps/posix/libc_fatal.c:156
#5  0x00007fd47b46986a in malloc_printerr (str=str@entry=0x7fd47b572158 "double free or corruption (!prev)") at ./malloc/malloc.c:5662
#6  0x00007fd47b46b8dc in _int_free (av=0x7fd47b5a8c60 <main_arena>, p=0x565246827860, have_lock=<optimized out>, have_lock@entry=0) at ./malloc/malloc.c:4587
#7  0x00007fd47b46df5f in __GI___libc_free (mem=<optimized out>) at ./malloc/malloc.c:3385
#8  0x00007fd47b5e9406 in ibnd_discover_fabric () from /lib/x86_64-linux-gnu/libibnetdisc.so.5
#9  0x000056522d630a10 in ?? ()"""

ASAN = """=================================================================
==28238==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x604000000034 at pc 0x563aaec981c3
WRITE of size 4 at 0x604000000034 thread T0
    #0 0x7f0000000001 in __interceptor_memcpy ../../../../src/libsanitizer/sanitizer_common/x.inc:827
    #1 0x563aaec981c2 in planted_fault /src/planted_smpquery.c:17
    #2 0x7fe158245249 in __libc_start_call_main ../sysdeps/nptl/libc_start_call_main.h:58
"""


def test_crash_site_is_the_first_frame_past_libc_and_the_abort_path():
    assert checks.crash_site(GDB_BT.splitlines()) == "ibnd_discover_fabric [libibnetdisc.so.5]"
    assert checks.crash_site(["#0  planted_fault (num_ports=255) at /tmp/x/planted_smpquery.c:21"]) == \
        "planted_fault (planted_smpquery.c:21)"


def test_sanitizer_reports_are_found_with_their_site():
    assert checks.sanitizer_report(ASAN) == ("AddressSanitizer: heap-buffer-overflow",
                                             "planted_fault (planted_smpquery.c:17)")
    assert checks.sanitizer_report("x.c:12:5: runtime error: index 9 out of bounds\n")[0].startswith("runtime error")
    assert checks.sanitizer_report(SMPQUERY_NODEINFO) is None


def test_wrong_answer_needs_a_printed_value_the_answer_does_not_say():
    assert checks.wrong_answers("nodeinfo", 0, node_info_answer(), SMPQUERY_NODEINFO) == []
    found = dict(checks.wrong_answers("nodeinfo", 0, node_info_answer(num_ports=9), SMPQUERY_NODEINFO))
    assert list(found) == ["attr.num_ports"] and "the answer says 9" in found["attr.num_ports"]
    assert dict(checks.wrong_answers("nodeinfo", 0, node_info_answer(node_type=1), SMPQUERY_NODEINFO)) \
        .keys() == {"attr.node_type"}
    other = dict(checks.wrong_answers("nodeinfo", 0, node_info_answer(attr_id=smpc.IB_SMP_ATTR_PORT_INFO),
                                      SMPQUERY_NODEINFO))
    assert list(other) == ["mad.attr_id"] and "PortInfo" in other["mad.attr_id"]
    assert list(dict(checks.wrong_answers("nodeinfo", 0, node_info_answer(status=0x1C), SMPQUERY_NODEINFO))) == \
        ["mad.status"]


# -- against the real tools --------------------------------------------------------------------------------

def need_fabric_tools(*names):
    for name in ("ibsim", "opensm", *names):
        try:
            find_tool(name)
        except Exception:
            require_tool(name)


def _udp_ports() -> set[int]:
    out = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for ln in Path(table).read_text().splitlines()[1:]:
            out.add(int(ln.split()[1].rsplit(":", 1)[1], 16))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["--target", "diags", "--seed", "1", "--count", "60"],
    ["--target", "opensm", "--seed", "1", "--count", "6", "--hang-seconds", "2"],
])
def test_a_short_seeded_run_ends_cleanly(argv, tmp_path, capsys):
    """In CI: a few hundred exchanges, no madpipe error, every process stopped, nothing left listening."""
    need_fabric_tools("ibnetdiscover", "smpquery", "perfquery")
    before = _udp_ports()
    assert main(["fuzz", *argv, "-T", "json", "-w", str(tmp_path / "out")]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["runs"] == int(argv[argv.index("--count") + 1])
    assert summary["stats"]["exchanges"] >= 200 and summary["stats"]["mutated"] > 0
    edited = {k for k in summary["stats"] if k.startswith("field ")}
    assert len(edited) >= 10 and sum(summary["stats"][k] for k in edited) >= summary["stats"]["mutated"]
    assert leftover_processes() == []
    assert _udp_ports() <= before
    for rec in lines[:-1]:  # every finding kept names how to get it again
        assert rec["reproducer"].startswith("madpipe fuzz --target") and os.path.exists(rec["capture"])


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted smpquery, plain and (where gcc has it) with AddressSanitizer: {kind: folder}."""
    gcc = shutil.which("gcc")
    if gcc is None:
        require_tool("gcc")
    out = {}
    for kind, flags in (("crash", ["-g", "-O0"]), ("asan", ["-g", "-O0", "-fsanitize=address", "-DPLANT_OVERFLOW"])):
        folder = tmp_path_factory.mktemp(kind)
        p = subprocess.run([gcc, *flags, str(DATA / "planted_smpquery.c"), "-o", str(folder / "smpquery")],
                           capture_output=True, text=True)
        if p.returncode == 0:
            out[kind] = str(folder)
        elif kind == "crash":
            pytest.fail(p.stderr)
    return out


def _case_with_num_ports_past_8(seed: int) -> int:
    """A case whose smpquery nodeinfo answer gets NumPorts > 8: found with the mutator, not hard-coded."""
    import tempfile

    from madpipe.pipeline.fuzz.targets.fabric import FabricTarget

    with tempfile.TemporaryDirectory() as work:
        target = FabricTarget("diags", seed, work, tools=("smpquery",))
        try:
            answers = {}
            for case in range(4000):
                _tool, args = target.command(case)
                if "nodeinfo" not in args or "-D" in args:
                    continue
                lid = args[-1]
                if lid not in answers:
                    x = target.run_case(case, plan={}).exchanges[0]
                    answers[lid] = (x.key, x.mad)
                key, mad = answers[lid]
                edits = target.mutators["smpquery"].edits(case, key, mad)
                if any(e.field == "attr.num_ports" and 8 < e.new for e in edits):
                    return case
        finally:
            target.close()
    pytest.fail("no case in 4000 mutates NumPorts past 8")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["crash", "asan"])
def test_a_planted_bug_is_found_minimised_saved_and_replayed(kind, planted, tmp_path, capsys, monkeypatch):
    need_fabric_tools("smpquery", "ibnetdiscover")
    if kind not in planted:
        pytest.skip("gcc here cannot build with -fsanitize=address (libasan missing)")
    monkeypatch.setenv("REAL_SMPQUERY", find_tool("smpquery"))
    case = _case_with_num_ports_past_8(1)
    out = tmp_path / "found"
    argv = ["fuzz", "--target", "diags", "--tool", "smpquery", "--diags-dir", planted[kind], "--seed", "1",
            "--start", str(case), "--count", "1"]
    assert main([*argv, "-T", "json", "-w", str(out)]) == 0
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    found = [r for r in recs if r["type"] == "finding" and r["kind"] == ("crash" if kind == "crash" else "sanitizer")]
    assert found, recs
    rec = found[0]
    assert [rec["edits"][n - 1]["field"] for n in rec["minimal_edits"]] == ["attr.num_ports"]
    if kind == "asan":
        assert rec["key"] == "smpquery AddressSanitizer: heap-buffer-overflow at planted_fault (planted_smpquery.c:17)"
    elif shutil.which("gdb") and checks.core_pattern() in ("core", "core.%p"):
        assert rec["key"] == "smpquery SIGSEGV at planted_fault (planted_smpquery.c:21)"
    frames = list(CaptureReader(rec["capture"]))
    assert len(frames) >= 2  # the query and its (mutated) answer
    # The reproducer, as printed, gives the finding again.
    replay = rec["reproducer"].split()[2:]
    assert main(["fuzz", *replay]) == 0
    text = capsys.readouterr().out
    assert ("crash:" if kind == "crash" else "sanitizer:") in text and "attr.num_ports" in text
    assert leftover_processes() == []


def test_the_relay_times_out_a_request_no_response_matches_as_the_kernel_does():
    """umad2sim has no send timeouts: a lost or rewritten answer would leave opensm waiting for ever.
    With send_timeout the relay returns the request with status 110 (ETIMEDOUT), as a kernel would."""
    from madpipe.codecs import mad as madc
    from madpipe.pipeline.sim.capture import SimCapture
    from madpipe.pipeline.sim.protocol import SimClient, SimRequest

    need_fabric_tools()
    mad = build.smp_mad(madc.IB_MGMT_METHOD_GET, smpc.IB_SMP_ATTR_NODE_INFO, b"", tid=0x4242, directed=True)
    with SimCapture("net.2sw2path4hca") as sim:
        sim.relay.send_timeout = 0.3
        sim.relay.answer_hook = lambda conn, d: d[:40] + bytes(8) + d[48:]  # the answer's TID zeroed
        with SimClient(sim.host, sim.port, node="Hca1") as client:
            client.send(SimRequest(0xFFFF, 0xFFFF, 0, 0, 0, mad))
            answer = client.recv(2.0)
            assert answer is not None and answer.response and answer.tid == 0
            timed_out = client.recv(2.0)
            assert timed_out is not None and not timed_out.response and timed_out.status == 110
            assert timed_out.tid & 0xFFFFFFFF == 0x4242
            sim.relay.answer_hook = None  # an answer that matches: no timeout after it
            client.send(SimRequest(0xFFFF, 0xFFFF, 0, 0, 0, mad))
            assert client.recv(2.0).response and client.recv(0.8) is None
        assert sim.relay.counts["timed out (emulated)"] == 1
