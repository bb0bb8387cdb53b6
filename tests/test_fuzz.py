"""madpipe fuzz: the mutator is reproducible and reaches what the issue lists; the targets report
the spec's known-bad inputs with the right kind; runs, replays and the CLI work.

Counts are kept small: the suite also runs with NUMBA_DISABLE_JIT=1, where the kernels are Python.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from madpipe.codecs import build, crc, qpc
from madpipe.codecs import mad as madc
from madpipe.codecs import smp as smpc
from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fuzz import runner as fuzz
from madpipe.pipeline.fuzz.findings import SEVERITY_BUG, SEVERITY_KERNEL, SEVERITY_TOOL
from madpipe.pipeline.fuzz.mutate.cases import BATCH, Cases, batch_config
from madpipe.pipeline.fuzz.mutate.corpus import WIDTH, Corpus, make_mailbox
from madpipe.pipeline.fuzz.mutate.fields import frame_fields
from madpipe.pipeline.fuzz.mutate.mutator import OPS, Mutator
from madpipe.pipeline.fuzz.mutate.rows import get_bits, put_bits
from madpipe.pipeline.fuzz.targets.codecs import CodecsTarget, check_frame, roundtrip_problems, scapy_layers
from madpipe.pipeline.fuzz.targets.ibsim import IbsimTarget
from madpipe.pipeline.fuzz.targets.paravirt import ParavirtTarget
from madpipe.pipeline.fuzz.targets.snoop import SnoopTarget
from madpipe.pipeline.fuzz.targets.tshark import TsharkTarget
from madpipe.pipeline.sim.processes import leftover_processes

ROOT = Path(__file__).parent.parent
REAL = ROOT / "pcaps" / "infiniband_endace_erf_2008.pcap"
SET, GET = madc.IB_MGMT_METHOD_SET, madc.IB_MGMT_METHOD_GET


@pytest.fixture(scope="module")
def mutator():
    return Mutator(Corpus.builtin(), seed=1234)


@pytest.fixture(scope="module")
def batch(mutator):
    return mutator.batch(0, 2048)


# -- the mutator ----------------------------------------------------------------------------------

def test_a_case_is_the_same_alone_in_a_batch_and_in_another_mutator(mutator, batch):
    other = Mutator(Corpus.builtin(), seed=1234)
    for i in (0, 5, 777, 2047):
        one = other.case(i)
        assert one.frame(0) == batch.frame(i)
        assert (one.mailboxes[0] == batch.mailboxes[i]).all()
        assert (one.transition[0], one.slave[0], one.qpn[0], one.port_num[0], one.status[0]) == \
               (batch.transition[i], batch.slave[i], batch.qpn[i], batch.port_num[i], batch.status[i])
    shifted = other.batch(700, 100)
    assert all(shifted.frame(k) == batch.frame(700 + k) for k in range(100))


def test_another_seed_gives_other_cases(batch):
    other = Mutator(Corpus.builtin(), seed=1235).batch(0, 64)
    assert sum(other.frame(k) != batch.frame(k) for k in range(64)) > 60


def test_frames_are_zero_past_their_length(batch):
    cols = np.arange(WIDTH)
    assert not batch.frames[cols[None, :] >= batch.length[:, None]].any()


def test_field_tables_tile_every_builtin_seed():
    for frame in Corpus.builtin().frames:
        fields = frame_fields(frame)
        pos = 0
        for f in fields:
            assert f.bit == pos, f.name
            pos += f.width
        assert pos == 8 * len(frame)


def test_field_tables_name_fields_as_decode_does():
    mad = build.pkey_table_mad(SET, 5, [0xFFFF], tid=9, directed=True, path=[1, 3])
    names = {f.name for f in frame_fields(build.build_smp_frame(mad))}
    assert {"lrh.pktlen", "bth.dqp", "deth.qkey", "mad.attr_mod", "smp.hop_cnt", "smp.hop_ptr", "smp.dr_slid",
            "attr.pkeys[31]", "smp.initial_path[1]", "icrc", "vcrc", "lrh.resv5", "mad.resv"} <= names


def test_get_bits_and_put_bits_agree_with_python_ints():
    rng = np.random.default_rng(5)
    rows = rng.integers(0, 256, size=(300, 40), dtype=np.uint8)
    r = np.arange(300)
    width = rng.integers(1, 65, size=300)
    bit = rng.integers(0, 40 * 8 - 64, size=300)
    value = rng.integers(0, 1 << 62, size=300, dtype=np.uint64) * np.uint64(3)
    before = rows.copy()
    got = get_bits(rows, r, bit, width)
    put_bits(rows, r, bit, width, value)
    for k in range(300):
        n = int.from_bytes(before[k].tobytes(), "big")
        shift = 320 - int(bit[k]) - int(width[k])
        mask = (1 << int(width[k])) - 1
        assert int(got[k]) == (n >> shift) & mask
        want = (n & ~(mask << shift)) | ((int(value[k]) & mask) << shift)
        assert int.from_bytes(rows[k].tobytes(), "big") == want


def test_crcs_are_recomputed_unless_broken_on_purpose(batch):
    broken = OPS.index("crc")
    sealed = stale = 0
    for k in range(len(batch)):
        f = batch.frame(k)
        if len(f) < 14:
            continue
        body = f[:-6] if f[1] & 3 >= 2 else f[:-2]
        if (batch.ops[k] == broken).any():
            assert crc.seal(body) != f
        elif crc.seal(body) == f:
            sealed += 1
        else:
            stale += 1
    assert sealed > 10 * stale > 0          # about 5% keep the seed's CRCs on purpose


def _mad_field(cases, k, offset, size):
    m = int(cases.mad_off[k])
    return int.from_bytes(cases.frames[k, m + offset:m + offset + size].tobytes(), "big")


def test_mutations_reach_what_the_issue_lists(batch):
    """Boundary values, truncation and extension, wrong PktLen, hop_cnt/hop_ptr out of range,
    P_KeyTable blocks past the table, P_Key indices past 127, bad CRCs, reserved bits, responses."""
    seen = {k: 0 for k in ("hop_cnt>63", "hop_ptr>hop_cnt+1", "block 4..7", "block>=8", "pkey_index>127",
                           "bad crc", "wrong pktlen", "short", "long", "reserved set", "response", "slave>79",
                           "port 0 or 3", "status!=0")}
    for k in range(len(batch)):
        seed = batch.seed_frame(k)
        f = batch.frame(k)
        if batch.mad_off[k] >= 0 and len(f) >= batch.mad_off[k] + 24:
            cls, method = _mad_field(batch, k, 1, 1), _mad_field(batch, k, 3, 1)
            if cls == 0x81:
                cnt, ptr = _mad_field(batch, k, 7, 1), _mad_field(batch, k, 6, 1)
                seen["hop_cnt>63"] += cnt > 63
                seen["hop_ptr>hop_cnt+1"] += ptr > cnt + 1
            if _mad_field(batch, k, 16, 2) == 0x16 and method == SET:
                block = _mad_field(batch, k, 22, 2)
                seen["block 4..7"] += 4 <= block <= 7
                seen["block>=8"] += block >= 8
            seen["response"] += method & 0x80 and not seed[batch.mad_off[k] + 3] & 0x80
            seen["reserved set"] += _mad_field(batch, k, 18, 2) != 0      # mad.resv
        if len(f) >= 10:
            icrc_ok, vcrc_ok = crc.check_crcs(f)
            seen["bad crc"] += icrc_ok is False or vcrc_ok is False
            pktlen = ((f[4] & 7) << 8) | f[5]
            seen["wrong pktlen"] += pktlen * 4 + 2 != len(f)
        seen["short"] += len(f) < len(seed)
        seen["long"] += len(f) > len(seed)
        seen["pkey_index>127"] += int(batch.mailboxes[k, qpc.MBOX_PRI_PKEY_INDEX]) > 127
        seen["slave>79"] += not 0 <= batch.slave[k] < 80
        seen["port 0 or 3"] += batch.port_num[k] not in (1, 2)
        seen["status!=0"] += batch.status[k] != 0
    assert all(n > 0 for n in seen.values()), seen


def test_traced_case_says_what_was_mutated(mutator):
    one = mutator.case(42)
    assert one.notes[0] and any(n.startswith("mailbox seed") for n in one.notes[0])
    assert all(isinstance(n, str) for n in one.notes[0])


def test_corpus_from_the_real_capture():
    if not REAL.exists():
        pytest.skip("pcaps/ is not in this checkout")
    corpus = Corpus.from_path(REAL)
    assert 0 < len(corpus.frames) <= 43 and corpus.names[0].startswith(REAL.name + "#")
    cases = Mutator(corpus, 3).batch(0, 200)
    assert len(cases) == 200 and corpus.digest() == Corpus.from_path(REAL).digest() != Corpus.builtin().digest()
    assert set(corpus.frames) <= set(Corpus.from_path(REAL.parent).frames)   # a directory: every capture in it


def test_corpus_errors_are_one_line(tmp_path):
    from madpipe.codecs.errors import MadpipeError

    with pytest.raises(MadpipeError, match="no such file"):
        Corpus.from_path(tmp_path / "nope.pcap")
    with pytest.raises(MadpipeError, match="no .pcap"):
        Corpus.from_path(tmp_path)


# -- known-bad inputs from the spec -----------------------------------------------------------------

def _cfg(**kw):
    base = dict(snoop_profile="new", num_vfs=4, snoop_master=0, pkey_table_len=128, port_mgmt_change_events=False,
                random_cache=False, paravirt_profile="3.7", paravirt_master=0, base_proxy_sqpn=64, fw_reserved_qps=0)
    base.update(kw)
    return dataclasses.replace(batch_config(0, 0), **base)


def _check(target, cases, cfg, tmp_path):
    found = target.check(cases, cfg, fuzz.BatchContext(cases, str(tmp_path)))
    assert not [f for f in found if f.severity == SEVERITY_BUG], found
    return {f.case: f for f in found if f.severity == SEVERITY_KERNEL}


def _pkey_set(block, port_in_mod=0, method=SET):
    return build.build_smp_frame(build.pkey_table_mad(method, block, [0xFFFF, 0x8001, 0x8002], tid=0x100 + block,
                                                      attr_mod_port=port_in_mod), slid=1, dlid=4)


def test_snoop_reports_blocks_past_the_row_and_past_the_table(tmp_path):
    cases = Cases.from_frames(
        [_pkey_set(0), _pkey_set(3), _pkey_set(4), _pkey_set(7), _pkey_set(8), _pkey_set(0xFFFF), _pkey_set(4),
         _pkey_set(2)],
        port_num=[1, 1, 1, 1, 1, 1, 2, 3])
    got = _check(SnoopTarget(fabric=False), cases, _cfg(), tmp_path)
    assert set(got) == {2, 3, 4, 5, 6, 7}
    for k in (2, 3):  # block 4..7 on port 1: the C spills into port 2's row; madpipe reproduces it
        assert got[k].kind == "spill" and "port 2's row" in got[k].key and got[k].data["code"] == 1
    for k in (4, 5, 6):  # past the table: refused
        assert got[k].kind == "refused" and got[k].data["code"] == 2
    assert "past phys_pkey_cache" in got[4].key and "on port 2" in got[6].key
    assert got[7].kind == "refused" and "port_num" in got[7].key


def test_snoop_reports_guidinfo_past_its_records(tmp_path):
    guids = bytes(64)
    frames = [build.build_smp_frame(build.smp_mad(SET, smpc.IB_SMP_ATTR_GUID_INFO, guids, tid=7, attr_mod=m),
                                    slid=1, dlid=4) for m in (15, 16)]
    got = _check(SnoopTarget(fabric=False), Cases.from_frames(frames), _cfg(), tmp_path)
    assert set(got) == {1} and got[1].kind == "refused" and "GUIDInfo" in got[1].key


def test_paravirt_reports_pkey_indices_past_127(tmp_path):
    ud = qpc.MLX4_QP_ST_UD
    boxes = [make_mailbox(ud, 0, pkey_index=i) for i in (0, 127, 128, 200, 255)]
    boxes.append(make_mailbox(ud, 0, pkey_index=200, port=2))
    slaves = [1, 1, 1, 1, 1, 79]
    frames = [_pkey_set(0)] * len(boxes)
    cases = Cases.from_frames(frames, mailboxes=boxes, slave=slaves, transition=qpc.MLX4_CMD_INIT2RTR_QP)
    target = ParavirtTarget()
    found = target.check(cases, _cfg(), fuzz.BatchContext(cases, str(tmp_path)))
    assert not [f for f in found if f.severity == SEVERITY_BUG]
    rewrite = {f.case: f for f in found if f.key.startswith("update_pkey_index")}
    assert set(rewrite) == {2, 3, 4, 5}
    for k in (2, 3, 4):
        assert rewrite[k].kind == "spill" and "next row" in rewrite[k].key and not rewrite[k].frame
    assert rewrite[5].kind == "refused" and "function 79, port 2" in rewrite[5].key
    assert rewrite[3].data["mailbox"] == boxes[3].hex() and rewrite[3].data["transition"] == "INIT2RTR"


def test_paravirt_getresp_blocks_past_the_table(tmp_path):
    frames = [_pkey_set(b, method=GET) for b in (0, 3, 4, 200, 1000)]
    cases = Cases.from_frames(frames, slave=1, transition=qpc.MLX4_CMD_2RST_QP)
    v2p = np.tile(np.arange(128, dtype=np.uint8), (80, 2, 1))       # every function: the identity map
    device = (v2p, np.full(80, 3, np.uint8), np.zeros((80, 2), np.uint8), np.arange(128, dtype=np.uint16))
    found = ParavirtTarget(device).check(cases, _cfg(), fuzz.BatchContext(cases, str(tmp_path)))
    got = {f.case: f for f in found if f.key.startswith("virtual_pkey_getresp")}
    assert 0 not in got and 1 not in got
    for k in (2, 3):  # the C reads on into the next rows of virt2phys_pkey
        assert got[k].kind == "spill" and "block past the row" in got[k].key
    assert got[4].kind == "refused" and "block past the table" in got[4].key


# -- the codecs target ----------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"", b"\xf0", bytes(7),
    bytes([0xF0, 0x03]) + bytes(20),                     # LNH 3 without room for a GRH
    build.build_smp_frame(build.smp_mad(GET, 0x11, b"", tid=1, directed=True))[:100],
])
def test_check_frame_refuses_bad_frames_with_a_clear_error(data):
    rec, problems = check_frame(data)
    assert rec is not None and problems == []
    assert "error" in rec and rec["error"].startswith("offset ")


def test_check_frame_passes_hop_counts_past_63():
    mad = bytearray(build.smp_mad(GET, 0x11, b"", tid=1, directed=True, path=[1, 2]))
    mad[7] = 255
    rec, problems = check_frame(build.build_smp_frame(bytes(mad)))
    assert problems == [] and "smp.hop_cnt" in rec["error"]


def test_check_frame_round_trips_the_real_capture():
    if not REAL.exists():
        pytest.skip("pcaps/ is not in this checkout")
    with CaptureReader(REAL) as cap:
        for pkt in cap:
            if pkt.data is not None:
                assert check_frame(pkt.data, scapy=scapy_layers() is not None)[1] == []


def test_roundtrip_finds_a_record_that_lies():
    frame = build.build_smp_frame(build.pkey_table_mad(SET, 1, [0xFFFF], tid=3), slid=1, dlid=2)
    rec = decode_frame(frame)
    rec["mad"]["attr_mod"] = 2
    rec["attr"]["pkeys"][0] = 0x7FFF
    kinds = {(k, key) for k, key, _ in roundtrip_problems(frame, rec)}
    assert ("record-differs", "mad.attr_mod") in kinds and ("record-differs", "attr.pkeys") in kinds


def test_codecs_target_checks_ingest_against_decode(tmp_path):
    cases = Mutator(Corpus.builtin(), 9).batch(0, 300)
    target = CodecsTarget(9, roundtrip_every=4)
    found = target.check(cases, batch_config(9, 0), fuzz.BatchContext(cases, str(tmp_path)))
    assert found == []
    assert target.stats["ingested"] == 300 and target.stats["decoded"] == 300
    assert 0 < target.stats["full MADs"] < 300


# -- runs, replays, the command line --------------------------------------------------------------------

def _signatures(summary):
    return {sig: (g.count, [e["case"] for e in g.examples]) for sig, g in summary.groups.items()}


def test_a_run_finds_no_bug_and_reports_kernel_findings():
    s = fuzz.run(fuzz.Options(seed=21, count=500, jobs=1))
    assert s.cases == 500 and not s.interrupted
    assert s.findings(SEVERITY_BUG) == []
    kinds = {(g.target, g.kind) for g in s.findings(SEVERITY_KERNEL)}
    assert ("snoop", "refused") in kinds and ("paravirt", "spill") in kinds
    assert s.stats["codecs"]["decoded"] == 500 and s.stats["snoop"]["MADs"] == 500


@pytest.mark.slow
def test_runs_agree_across_jobs_and_batch_boundaries():
    opts = dict(seed=22, count=400, start=BATCH - 200, keep=2)
    one = fuzz.run(fuzz.Options(jobs=1, **opts))
    two = fuzz.run(fuzz.Options(jobs=2, **opts))
    assert one.cases == two.cases == 400
    assert _signatures(one) == _signatures(two)


def test_replay_reproduces_a_finding_of_the_stateful_target():
    s = fuzz.run(fuzz.Options(seed=23, count=300, targets=("snoop",), jobs=1))
    group = next(g for g in s.groups.values() if g.target == "snoop")
    case = group.examples[-1]["case"]
    _one, found = fuzz.replay(23, case, ["snoop"])
    assert any(f.kind == group.kind and f.key == group.key for f in found)


def test_cli_run_writes_a_capture_and_json_lines(tmp_path, capsys):
    out = tmp_path / "findings.pcap"
    rc = main(["fuzz", "--seed", "24", "--count", "300", "-j", "1", "--keep", "2", "-w", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "seed 24, 300 cases" in text and "No crash and no mismatch" in text
    lines = [json.loads(x) for x in (tmp_path / "findings.jsonl").read_text().splitlines()]
    assert lines and all(x["type"] == "finding" and x["replay"] == f"24:{x['case']}" for x in lines)
    framed = [x for x in lines if "capture_frame" in x]
    with CaptureReader(out) as cap:
        pkts = list(cap)
    assert len(pkts) == len(framed) > 0
    for x in framed:
        pkt = pkts[x["capture_frame"] - 1]
        assert pkt.ts_ns == x["case"] * 1_000_000_000 and len(pkt.data) == x["frame_len"]
    spill = [x for x in lines if x["key"].startswith("update_pkey_index")]
    assert spill and all("mailbox" in x and "capture_frame" not in x for x in spill)


def test_cli_json_and_replay(capsys):
    assert main(["fuzz", "--seed", "25", "--count", "200", "-j", "1", "-T", "json", "--target", "codecs"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["cases"] == 200 and summary["bugs"] == 0
    assert summary["targets"] == ["codecs"] and summary["stats"]["codecs"]["decoded"] == 200
    assert main(["fuzz", "--replay", "25:17", "-x", "--target", "codecs", "snoop"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("case 25:17, from builtin:") and "mutations:" in text and "decode:" in text
    assert "codecs: nothing found" in text and "0000  " in text


@pytest.mark.parametrize("argv, message", [
    (["--count", "0"], "--count must be at least 1"),
    (["--replay", "x"], "expected SEED:CASE"),
    (["--corpus", "/nonexistent.pcap", "--count", "10"], "no such file"),
])
def test_cli_errors_are_one_line(argv, message, capsys):
    assert main(["fuzz", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# -- outside tools -------------------------------------------------------------------------------------

@pytest.mark.tools("tshark")
def test_tshark_target_reports_malformed_frames(tmp_path):
    good = build.build_smp_frame(build.pkey_table_mad(SET, 0, [0xFFFF], tid=1), slid=1, dlid=2)
    cases = Cases.from_frames([good, good[:40], good[:8]])
    target = TsharkTarget(str(tmp_path))
    found = target.check(cases, _cfg(), fuzz.BatchContext(cases, str(tmp_path)))
    assert {f.case for f in found} == {1, 2}
    assert all(f.kind == "malformed" and f.severity == SEVERITY_TOOL for f in found)
    assert "madpipe reports an error too" in found[0].key


def _ibsim_ready():
    from conftest import require_tool

    require_tool("ibsim")


@pytest.mark.tools("ibsim", "opensm")
def test_ibsim_target_finds_the_vlarb_port_crash(tmp_path):
    """ibsim 0.10-0.12 dereferences node_get_port() without a range check: a SubnSet(VLArbitrationTable)
    to a switch for output port 0x4005 kills it (SIGSEGV). The target reports it and restarts ibsim."""
    _ibsim_ready()
    ok = build.build_smp_frame(build.smp_mad(GET, smpc.IB_SMP_ATTR_NODE_INFO, b"", tid=1, directed=True))
    vlarb = build.build_smp_frame(build.smp_mad(SET, smpc.IB_SMP_ATTR_VL_ARB_TABLE, bytes(64), tid=2,
                                                attr_mod=0x00014005, directed=True, path=[1]))
    cases = Cases.from_frames([ok, vlarb, ok])
    target = IbsimTarget(str(tmp_path))
    try:
        found = target.check(cases, _cfg(), fuzz.BatchContext(cases, str(tmp_path)))
        assert [(f.case, f.kind) for f in found] == [(1, "dead")]
        assert target.restarts == 1 and target.stats["sent"] == 3
    finally:
        target.close()
    assert leftover_processes() == []


@pytest.mark.slow
def test_atheris_entry_point_runs():
    if os.environ.get("MADPIPE_REQUIRE_TOOLS") == "1":
        import atheris  # noqa: F401  (the test extra installs it: in CI a missing one fails)
    else:
        pytest.importorskip("atheris", reason="atheris is in the test extra; pip install -e '.[test]'")
    script = ROOT / "fuzz" / "atheris_codecs.py"
    p = subprocess.run([sys.executable, str(script), "-runs=300", "-seed=1"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Done 300 runs" in p.stderr


def test_paravirt_target_runs_both_port_types_on_mainline(tmp_path):
    from madpipe.pipeline.fuzz.targets.paravirt import paravirt_eth

    seen = {tuple(paravirt_eth(_cfg(paravirt_profile="new", rng_key=(0, 0, b)), 128)["port_types"].tolist())
            for b in range(16)}
    assert {(1, 1), (2, 2)} <= seen and ({(1, 2), (2, 1)} & seen)
    ud = qpc.MLX4_QP_ST_UD
    boxes = [make_mailbox(ud, 0, pkey_index=i) for i in range(8)]
    cases = Cases.from_frames([_pkey_set(0)] * 8, mailboxes=boxes, slave=[1, 2, 3, 4, 100, 126, 127, 0],
                              transition=qpc.MLX4_CMD_INIT2RTR_QP)
    for b in range(4):   # Ethernet on both ports, on one, on none: kernel and reference agree
        cfg = _cfg(paravirt_profile="new", rng_key=(0, 0, b))
        found = ParavirtTarget().check(cases, cfg, fuzz.BatchContext(cases, str(tmp_path)))
        assert not [f for f in found if f.severity == SEVERITY_BUG]
