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
from madpipe.codecs.qpc import TRANSITIONS
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
        assert err.endswith(f"{path}:3:7: not UTF-8 text (byte 0xff at offset 35)\n")


def _blocks(data: bytes) -> list[tuple[int, int, int]]:
    """(offset, type, length) of each block of a little-endian pcapng."""
    out, pos = [], 0
    while pos + 8 <= len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        out.append((pos, btype, blen))
        pos += blen
    return out


def _shorten(data: bytearray, at: int, blen: int) -> bytearray:
    """The block at ``at`` cut to ``blen`` bytes, its two length fields saying so."""
    old = struct.unpack_from("<I", data, at + 4)[0]
    block = data[at:at + blen - 4] + struct.pack("<I", blen)
    struct.pack_into("<I", block, 4, blen)
    return data[:at] + block + data[at + old:]


def test_enhanced_packet_block_shorter_than_its_fields(tmp_path, opensm_packets):
    """Found by the files target run on the code before the pcapng checks (seed 1, case 1440 of its
    first case mix, minimised to 2 edits): an EPB whose length says 24 bytes
    (12 of body: no room for interface, timestamp and lengths) raised struct.error in every command."""
    data = ns_pcapng(opensm_packets)
    epb = [off for off, btype, _ in _blocks(data) if btype == 6][3]
    path = tmp_path / "short_epb.pcapng"
    path.write_bytes(_shorten(data, epb, 24))
    got = every_command(path, tmp_path)
    reasons = skipped_records(got["decode"][1])
    assert reasons == ["corrupt enhanced packet block, field length: 12 bytes of body, 20 needed"]


def test_interface_block_shorter_than_its_fields(tmp_path, opensm_packets):
    """An IDB of 12 bytes (no link type, no snap length) raised struct.error; now its packets are
    skipped, each saying that the interface it names is corrupt."""
    data = ns_pcapng(opensm_packets)
    idb = next(off for off, btype, _ in _blocks(data) if btype == 1)
    path = tmp_path / "short_idb.pcapng"
    path.write_bytes(_shorten(data, idb, 12))
    got = every_command(path, tmp_path)
    reasons = skipped_records(got["decode"][1])
    assert len(reasons) == len(opensm_packets)
    assert reasons[0] == ("interface 0: interface description block is corrupt: field length: 0 bytes of body, "
                          "an IDB needs 8 before its options")


def test_captured_length_past_the_block_is_not_cut_silently(tmp_path, opensm_packets):
    """An EPB whose captured length is larger than its block was read as the bytes that were
    there, silently short; now the frame is skipped and says why."""
    data = ns_pcapng(opensm_packets)
    epb = [off for off, btype, _ in _blocks(data) if btype == 6][0]
    caplen = struct.unpack_from("<I", data, epb + 20)[0]
    room = struct.unpack_from("<I", data, epb + 4)[0] - 32  # the block less its 28 + 4 bytes of fields
    struct.pack_into("<I", data, epb + 20, caplen + 40)
    path = tmp_path / "caplen.pcapng"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    assert skipped_records(got["decode"][1]) == [
        f"corrupt enhanced packet block, field captured length: {caplen + 40} bytes run past the {room} the block holds"]


def test_block_lengths_that_disagree_end_the_file(tmp_path, opensm_packets):
    """The trailing copy of a block's length differs from the leading one: where the next block
    starts is unknown, so the file ends there with an error (exit 1), the frames before it read."""
    data = ns_pcapng(opensm_packets)
    off, _, blen = [b for b in _blocks(data) if b[1] == 6][2]
    struct.pack_into("<I", data, off + blen - 4, blen + 4)
    path = tmp_path / "trailer.pcapng"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    assert got["decode"][0] == 1 and got["snoop"][0] == 1
    assert got["decode"][2].splitlines()[-1].endswith(
        f"frame 3, offset {off}: pcapng block length {blen} at its start, {blen + 4} at its end")


@pytest.mark.parametrize("line,why", [
    # Found by the files target (seed 3, case 1644): ValueError out of json.loads.
    ('{"transition": "RST2INIT", "slave": ' + "9" * 4419 + "}", "an integer too long to read (over 4300 digits)"),
    # The same target's TEXT_VALUES hold this one too: RecursionError out of json.loads.
    ("[" * 5000, "not JSON madpipe reads: arrays or objects nested too deeply"),
    # Found by the files target (seed 1, case 1274): TypeError (unhashable type: 'list').
    ('{"transition": [], "slave": 1}', "field transition: unknown []; valid: " + ", ".join(TRANSITIONS)),
], ids=["long integer", "deep nesting", "transition not a string"])
def test_trace_lines_json_cannot_hold(tmp_path, line, why):
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    for argv in (("paravirt", "-r", path), ("paravirt", "-r", path, "-w", tmp_path / "o.jsonl")):
        code, _, err = run(*argv)
        assert (code, err) == (2, f"madpipe paravirt: {path}: line 1: {why}\n")


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_pcap_timestamp_fraction_of_a_second_or_more(tmp_path, opensm_packets, order, nanosecond):
    """Link type 247: a record whose fraction is a whole second or more was read as a time that many
    seconds later, silently; now the frame is skipped, in the kernel's walk and the reader's alike."""
    from test_capture import pcap_bytes

    data = bytearray(pcap_bytes(opensm_packets[:4], order, nanosecond, linktype=247))
    second = 10**9 if nanosecond else 10**6
    at = 24 + 16 + len(opensm_packets[0][1]) + 4  # frame 2's ts_frac
    struct.pack_into(order + "I", data, at, second)
    path = tmp_path / "frac.pcap"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    text = run("decode", "-r", path)
    assert got["decode"][0] == text[0] == got["snoop"][0] == 0
    why = "field ts_frac: the timestamp's fraction of a second is a second or more"
    assert skipped_records(got["decode"][1]) == [why]
    assert json.loads(got["snoop"][1].splitlines()[-1])["skipped"] == {why: 1}
    assert "4 frames read, 3 decoded" in text[2] and "1 skipped" in text[2]


def test_erf_records_keep_their_own_time_whatever_the_pcap_fraction(tmp_path, opensm_packets):
    """Link type 197: the time is the ERF header's, so a pcap fraction out of range harms nothing."""
    from test_capture import pcap_bytes

    from madpipe.codecs.erf_records import erf_wrap

    data = bytearray(pcap_bytes([(ts, erf_wrap(d, ts)) for ts, d in opensm_packets[:2]], "<", True, linktype=197))
    struct.pack_into("<I", data, 24 + 4, 10**9 + 5)
    path = tmp_path / "erf.pcap"
    path.write_bytes(data)
    assert not skipped_records(every_command(path, tmp_path)["decode"][1])


def test_section_header_of_another_major_version(tmp_path, opensm_packets):
    data = ns_pcapng(opensm_packets)
    struct.pack_into("<H", data, 12, 2)
    path = tmp_path / "v2.pcapng"
    path.write_bytes(data)
    got = every_command(path, tmp_path)
    assert got["decode"][0] == 1 and got["decode"][2].splitlines()[-1].endswith(
        "frame 1, offset 0: section header block: major version 2, madpipe reads 1")


def test_trace_mailbox_with_whitespace_among_its_hex_digits(tmp_path):
    """Found by the files target's 100k run (seed 1, case 24719: two bit flips made two digits '0'
    spaces): bytes.fromhex skips whitespace between pairs, so the mailbox came out 255 bytes and a
    reshape raised ValueError out of paravirt. Now the character is named."""
    box = "00" * 100 + "  " + "00" * 155
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"transition": "INIT2RTR", "slave": 1, "in_mod": 1, "mailbox": box}) + "\n")
    code, _, err = run("paravirt", "-r", path)
    assert (code, err) == (2, f"madpipe paravirt: {path}: line 1: field mailbox: not hexadecimal (character 201: ' ')\n")


def test_pkey_map_number_too_long_to_print(tmp_path):
    """Found by the files target's 100k run (seed 1, case 73537): a hexadecimal PHYS of 4,000 digits
    parses (int's digit limit is for decimal), but its decimal form for the error message raised
    ValueError out of snoop, diff and paravirt. Now the number is shown as written, cut."""
    path = tmp_path / "vfs.map"
    path.write_text("1 1 0 0x" + "9" * 4000 + "\n")
    cap = PCAPS / "opensm_partitions.pcap"
    for argv in (("snoop", "-r", cap, "--host", "0x2"), ("diff", cap, cap, "--host", "0x2")):
        code, _, err = run(*argv, "--vfs", "2", "--pkey-map", path)
        assert (code, err.split(": ", 1)[1]) == (2, f"{path}, line 1, field phys: 0x999999999999999999... "
                                                    "is outside 0..127\n")
