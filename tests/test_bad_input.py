"""Damaged input files (captures, traces, --pkey-map files): each way one broke madpipe (issue 19,
and what `madpipe fuzz --target files` found) is a file here that every command must read to a
named error, never a traceback."""
import contextlib
import io
import json
import struct
from pathlib import Path

import pytest
from test_capture import pcapng_bytes

from madpipe.codecs.capture import CaptureReader
from madpipe.pipeline.cli.main import main

PCAPS = Path(__file__).parent.parent / "pcaps"


@pytest.fixture(scope="module")
def opensm_packets():
    with CaptureReader(PCAPS / "opensm_partitions.pcap") as cap:
        return [(p.ts_ns, p.data) for p in cap][:12]


def run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def every_command(path: Path, tmp_path: Path) -> dict[str, tuple[int, str, str]]:
    """decode, snoop, diff and report on ``path``: each must end with 0, 1 or 2, never raise."""
    got = {
        "decode": run("decode", "-r", path, "-T", "json"),
        "snoop": run("snoop", "-r", path, "-T", "json"),
        "diff": run("diff", PCAPS / "opensm_partitions.pcap", path),
        "report": run("report", path, "-w", tmp_path / "r.html"),
    }
    for name, (code, _, err) in got.items():
        assert code in (0, 1, 2), (name, code, err)
        assert "Traceback" not in err
    return got


def ns_pcapng(packets, **kw) -> bytearray:
    """Epoch timestamps in nanoseconds, if_tsresol 9, link type 247: as the issue's capture."""
    return bytearray(pcapng_bytes([(ts, data) for ts, data in packets], tsresol=9, **kw))


def skipped_records(decode_out: str) -> list[str]:
    return [r["skipped"] for r in map(json.loads, decode_out.splitlines()) if "skipped" in r]


def test_lost_if_tsresol_is_a_named_frame_error_not_an_overflow(tmp_path, opensm_packets):
    """Issue 19: the IDB's if_tsresol option code overwritten (bytes 43-46 = 28 fc 7f 0a), so the
    option runs past the block: the interface is corrupt, and so is every frame that names it."""
    data = ns_pcapng(opensm_packets)
    data[43:47] = bytes.fromhex("28fc7f0a")
    path = tmp_path / "case39.pcapng"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    reasons = skipped_records(got["decode"][1])
    assert len(reasons) == len(opensm_packets)
    assert all("interface description block is corrupt: field option 32764" in r for r in reasons)


def test_unknown_option_in_place_of_if_tsresol_overflows_int64_ns(tmp_path, opensm_packets):
    """The option code alone changed: the reader falls back to microseconds, and nanosecond ticks
    read as microseconds leave int64 nanoseconds. An error on each frame, not an OverflowError."""
    data = ns_pcapng(opensm_packets)
    assert data[44:46] == struct.pack("<H", 9)  # the if_tsresol option's code
    data[44:46] = struct.pack("<H", 0x7FFC)
    path = tmp_path / "lost_tsresol.pcapng"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    reasons = skipped_records(got["decode"][1])
    assert len(reasons) == len(opensm_packets)
    assert all(r.startswith("field timestamp: past 2262, outside int64 nanoseconds (interface 0: "
                            "microseconds (default)") for r in reasons)
    snoop_summary = json.loads(got["snoop"][1].splitlines()[-1])
    assert got["snoop"][0] == 0 and list(snoop_summary["skipped"].values()) == [12]


def test_if_tsresol_seconds_on_epoch_timestamps(tmp_path, opensm_packets):
    """if_tsresol 0 (seconds) on ticks that are epoch nanoseconds: the same, per frame."""
    data = ns_pcapng(opensm_packets)
    data[48] = 0
    path = tmp_path / "seconds.pcapng"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    reasons = skipped_records(got["decode"][1])
    assert len(reasons) == len(opensm_packets) and all("10^-0 s" in r for r in reasons)


def test_pkey_map_that_is_not_text(tmp_path):
    """Found by the files target (seed 1, case 344): random bytes in a --pkey-map file raised
    UnicodeDecodeError out of snoop, diff and paravirt. Now one line naming the line and byte."""
    path = tmp_path / "vfs.map"
    path.write_bytes(b"# vf port index phys\n1 1 0 1\n1 1 1 \xff\xfe 0\n")
    cap = PCAPS / "opensm_partitions.pcap"
    for argv in (("snoop", "-r", cap), ("diff", cap, cap)):
        code, _, err = run(*argv, "--host", "0x2", "--vfs", "2", "--pkey-map", path)
        assert code == 2 and err.count("\n") == 1, err
        assert err.endswith(f"{path}, line 3: not UTF-8 text (byte 0xff at offset 35)\n")
