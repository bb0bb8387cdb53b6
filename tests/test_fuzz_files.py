"""`madpipe fuzz --target files`: its seeds cover every reader path, its cases replay, a short seeded
run is clean, and the target finds (and minimises) what it is there to find."""
import contextlib
import io
import json
import struct

import pytest

from madpipe.codecs.capture import CaptureReader
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.fuzz import files_runner
from madpipe.pipeline.fuzz.mutate.file_ops import FileMutator, apply
from madpipe.pipeline.fuzz.mutate.file_seeds import seeds


@pytest.fixture(scope="module")
def seed_files():
    return seeds()


def read(data: bytes):
    with CaptureReader(io.BytesIO(data)) as cap:
        pkts = list(cap)
        return cap, pkts


def test_seeds_cover_every_reader_path(seed_files):
    seen = set()
    for s in seed_files:
        if s.kind != "capture":
            continue
        cap, pkts = read(s.data)
        assert cap.error is None and len(pkts) == 16, s.name
        assert all(f.offset + f.size <= len(s.data) for f in s.fields)
        order = getattr(cap, "byte_order", "<" if s.data[8:12] == b"\x4d\x3c\x2b\x1a" else ">")
        seen.add((cap.format, order, cap.nanosecond, frozenset(p.linktype for p in pkts)))
        if "erfext" in s.name:
            assert any(s.data[f.offset] & 0x80 for f in s.fields if f.name == "erf.type")  # extension headers
            assert set(cap.skipped) == {"ERF type 2 is not InfiniBand (21)"}
    assert ("pcap", "<", False, frozenset({197})) in seen and ("pcap", "<", True, frozenset({197})) in seen
    assert ("pcap", ">", False, frozenset({247})) in seen and ("pcap", ">", True, frozenset({197})) in seen
    assert {(fmt, order) for fmt, order, _, lts in seen if fmt == "pcapng" and lts == {197, 247}} == \
        {("pcapng", "<"), ("pcapng", ">")}
    pcapng = next(s for s in seed_files if s.name.endswith(".pcapng"))
    blocks = {struct.unpack_from("<I", pcapng.data, a)[0] for a, _ in pcapng.units}
    assert blocks == {0x0A0D0D0A, 1, 2, 3, 4, 5, 6}  # SHB, IDB, PB, SPB, NRB, ISB, EPB
    names = {f.name for f in pcapng.fields}
    assert {"option if_tsresol.value", "option if_name.code", "option epb_flags.length"} <= names
    assert {s.kind for s in seed_files} == {"capture", "trace", "pkey-map"}


def test_a_case_is_the_same_in_every_run(seed_files):
    a, b = FileMutator(seed_files, 7), FileMutator(seeds(), 7)
    for i in (0, 1, 999, 123456):
        (wa, ea), (wb, eb) = a.case(i), b.case(i)
        assert (wa, ea) == (wb, eb) and a.build(wa, ea) == b.build(wb, eb)
    assert [a.case(i) for i in range(20)] != [FileMutator(seed_files, 8).case(i) for i in range(20)]


def test_edits_apply_in_order_and_cut_last(seed_files):
    m = FileMutator(seed_files, 1)
    cuts = 0
    for i in range(300):
        _, edits = m.case(i)
        is_cut = [any(n == -1 for _, n, _ in e.parts) for e in edits]
        assert is_cut == sorted(is_cut)  # every cut after every other edit
        cuts += any(is_cut)
    assert cuts > 30
    assert apply(b"abcdef", []) == b"abcdef"


def test_a_short_seeded_run_is_clean():
    """The CI's run: every command on 64 cases, the full report on two of them."""
    s = files_runner.run(files_runner.FilesOptions(seed=19, count=64, jobs=1, report_every=32), main)
    assert s.cases == 64 and not s.groups, [g.examples[0]["what"] for g in s.groups.values()]
    stats = s.stats["files"]
    assert stats["reports"] == 2 and stats["captures"] + stats["traces"] + stats["pkey-maps"] == 64
    assert stats["read whole"] and stats["cut short"]


def _snoop_that_raises_on_short_files(argv):
    if argv[0] == "snoop" and argv[2].endswith((".pcap", ".pcapng")):
        with open(argv[2], "rb") as f:
            if len(f.read()) < 1000:
                raise ZeroDivisionError("planted")
    return main(argv)


def test_a_crash_is_found_and_minimised_to_the_edit_that_causes_it(tmp_path):
    opts = files_runner.FilesOptions(seed=1, count=100, jobs=1, report_every=0, write=str(tmp_path))
    s = files_runner.run(opts, _snoop_that_raises_on_short_files)
    crash = [g for g in s.groups.values() if g.kind == "crash"]
    assert [g.key.split(" at ")[0] for g in crash] == ["snoop -T json: ZeroDivisionError"]
    for example in crash[0].examples:
        assert len(example["minimal_edits"]) == 1 and example["minimal_edits"][0].startswith("cut at ")
        with open(example["file"], "rb") as f:
            assert len(f.read()) < 1000
    lines = (tmp_path / "findings.jsonl").read_text().splitlines()
    assert len(lines) == len(crash[0].examples) and json.loads(lines[0])["replay"].startswith("1:")


def _snoop_that_loses_a_frame(argv):
    if argv[0] != "snoop" or "json" not in argv:
        return main(argv)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    for line in out.getvalue().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "summary" and rec.get("frames", 0) > 3:
            rec["frames"] -= 1
        print(json.dumps(rec))
    return code


def test_a_frame_snoop_drops_silently_is_a_finding():
    s = files_runner.run(files_runner.FilesOptions(seed=1, count=12, jobs=1, report_every=0), _snoop_that_loses_a_frame)
    kinds = {(g.kind, g.key) for g in s.groups.values()}
    assert ("disagree", "frames") in kinds


def test_cli_run_and_replay(tmp_path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fuzz", "--target", "files", "--seed", "19", "-c", "8", "-j", "1", "-T", "json"]) == 0
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert (summary["cases"], summary["targets"], summary["bugs"]) == (8, ["files"], 0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["fuzz", "--target", "files", "--replay", "19:5", "-w", str(tmp_path / "case")]) == 0
    text = out.getvalue()
    seed_files = seeds()
    which, edits = FileMutator(seed_files, 19).case(5)
    assert text.startswith(f"case 19:5, from {seed_files[which].name}")
    assert all(e.note in text for e in edits)
    assert (tmp_path / "case").read_bytes() == FileMutator(seed_files, 19).build(which, edits)


def test_cli_files_runs_alone():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["fuzz", "--target", "files", "codecs", "-c", "1"]) == 2
    assert err.getvalue() == ("madpipe fuzz: --target files runs alone: its cases are whole files, "
                              "the other targets' are frames\n")
