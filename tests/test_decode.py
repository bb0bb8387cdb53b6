"""`madpipe decode` and decode_frame: the real capture, the JSON keys, filters, and bad input."""
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import crc
from madpipe.codecs.capture import CaptureReader, CaptureWriter
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.ingest.reader import Ingest

REAL = Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap"
TOP_KEYS = {"frame", "ts", "lrh", "grh", "bth", "deth", "mad", "smp", "attr", "icrc_ok", "vcrc_ok",
            "error", "class_data", "payload_len", "raw_len", "skipped"}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def real_frames():
    with CaptureReader(REAL) as cap:
        return [p.data for p in cap]


def test_real_capture_json(capsys):
    code, out, err = run(capsys, "decode", "-r", str(REAL), "-T", "json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in records] == list(range(1, 44))
    assert all(r["icrc_ok"] is True and r["vcrc_ok"] is True for r in records)
    assert not [r for r in records if "error" in r]
    assert all(set(r) <= TOP_KEYS for r in records)
    assert all(set(r["lrh"]) == {"vl", "lver", "sl", "lnh", "dlid", "pktlen", "slid"} for r in records)
    assert all(set(r["bth"]) == {"opcode", "se", "m", "padcnt", "tver", "pkey", "dqp", "a", "psn"}
               for r in records)
    smps = [r for r in records if r.get("mad", {}).get("mgmt_class") == 0x81]
    assert len(smps) == 6 and all(r["lrh"]["vl"] == 15 and r["attr"]["name"] == "SMInfo" for r in smps)
    assert {r["mad"]["method"] for r in smps} == {0x01, 0x81}
    assert all(r["smp"]["hop_cnt"] == 2 and r["smp"]["initial_path"] == [2, 3] for r in smps)
    assert sum(1 for r in records if "grh" in r) == 6
    assert "43 frames read, 43 decoded (17 MADs), 0 with errors, 0 skipped" in err
    assert "ICRC 43 ok 0 bad, VCRC 43 ok 0 bad" in err


def test_ingest_and_decoder_agree_on_which_frames_carry_a_mad(capsys):
    _, out, _ = run(capsys, "decode", "-r", str(REAL), "-T", "json")
    with_mad = [json.loads(line)["frame"] for line in out.splitlines() if '"mad"' in line]
    batch = next(iter(Ingest(REAL)))
    _, rows = batch.mads()
    assert [int(batch.frame[i]) for i in rows] == with_mad


def test_text_lines_and_options(capsys):
    code, out, _ = run(capsys, "decode", "-r", str(REAL))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 43
    assert "SubnMgmtDR Get " in lines[0] and "SMInfo" in lines[0] and "hops=1/2 path=2,3" in lines[0]
    assert "ok D" in lines[1]  # the GetResp comes back with the direction bit set
    _, out, _ = run(capsys, "decode", "-r", str(REAL), "-c", "1", "-V", "-x")
    assert "    lrh:" in out and "        dlid: 65535 (0xffff)" in out and out.count("\n0000  ") == 1


@pytest.mark.parametrize("flt,frames", [
    ("mad.mgmt_class==0x81 && mad.method==0x81", [2, 13, 42]),
    ("grh && bth.opcode==0x64", [3, 4, 5, 24, 25, 26]),
    ("attr.name=='PathRecord'", [32, 33]),
    ("not mad and lrh.slid==2 and (bth.opcode==0x11 || bth.opcode==4)", [30, 38, 39]),
])
def test_display_filter(capsys, flt, frames):
    _, out, err = run(capsys, "decode", "-r", str(REAL), "-T", "json", "-Y", flt)
    assert [json.loads(line)["frame"] for line in out.splitlines()] == frames
    assert f"; {len(frames)} shown" in err


def test_bad_filter_is_one_line(capsys):
    code, out, err = run(capsys, "decode", "-r", str(REAL), "-Y", "mad.attr_id ==")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "filter" in err


def write(path, frames):
    with CaptureWriter(path) as w:
        for i, f in enumerate(frames):
            w.write(f, i)


def test_damaged_frames_are_reported_with_offset_and_field(tmp_path, capsys, real_frames):
    smp = real_frames[0]
    bad_icrc = bytearray(smp)
    bad_icrc[-5] ^= 1
    wrong_pktlen = bytearray(smp)
    wrong_pktlen[5] -= 1
    short_mad = crc.seal(smp[:28 + 100])  # a QP0 datagram whose MAD is 100 bytes
    short_mad = short_mad[:4] + bytes([0, len(short_mad) // 4 - 0]) + short_mad[6:]
    frames = [bytes(bad_icrc), bytes(wrong_pktlen), smp[:5], short_mad, smp + b"\0" * 4000]
    path = tmp_path / "damaged.pcap"
    write(path, frames)
    code, out, err = run(capsys, "decode", "-r", str(path), "-T", "json")
    assert code == 0
    r = [json.loads(line) for line in out.splitlines()]
    assert r[0]["icrc_ok"] is False and r[0]["vcrc_ok"] is False and "error" not in r[0]
    assert r[0]["attr"]["name"] == "SMInfo"  # a bad CRC does not stop the decode
    assert r[1]["error"].startswith("offset 4, field lrh.pktlen: PktLen 71 says 286 bytes")
    assert r[2]["error"] == "offset 0, field lrh: frame of 5 bytes is shorter than the 8-byte LRH"
    assert "offset 28, field mad: MAD of " in r[3]["error"] and r[3]["mad"]["mgmt_class"] == 0x81
    assert "field lrh.pktlen" in r[4]["error"]  # oversized: 4000 bytes the LRH does not account for
    assert "5 decoded (4 MADs), 4 with errors" in err  # a bad CRC is not a decode error


def test_truncated_file_prints_frames_then_one_line(tmp_path, capsys):
    whole = REAL.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[:-10])
    code, out, err = run(capsys, "decode", "-r", str(path))
    assert code == 1
    assert len(out.splitlines()) == 42
    assert err.strip().splitlines()[-1].startswith("madpipe decode: ")
    assert "frame 43, offset " in err and "truncated record" in err


@pytest.mark.parametrize("content,words", [
    (b"not a capture at all....", "bad magic"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), "link type 1 is not InfiniBand"),
])
def test_unreadable_file_is_one_line_and_status_2(tmp_path, capsys, content, words):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    code, out, err = run(capsys, "decode", "-r", str(path))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and words in err and "Traceback" not in err


def test_missing_file(tmp_path, capsys):
    code, _, err = run(capsys, "decode", "-r", str(tmp_path / "none.pcap"))
    assert code == 2 and "cannot open" in err


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["decode", "--help"])
    out, _ = capsys.readouterr()
    assert "examples:" in out and "madpipe decode -r" in out


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decode_frame_never_raises_on_random_bytes(data):
    record = decode_frame(data, 1)
    assert "icrc_ok" in record


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decode_frame_never_raises_on_mutated_real_frames(real_frames, data):
    frame = bytearray(data.draw(st.sampled_from(real_frames)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    record = decode_frame(bytes(frame[:cut]), 1)
    assert "icrc_ok" in record


@pytest.mark.parametrize("flt, nearest", [("foo.bar==1", "records have: frame, ts, lrh"),
                                          ("mad.atr_id==0x16", "nearest: mad.attr_id"),
                                          ("attr.pkey.0==0xffff", "nearest: attr.pkeys.#"),
                                          ("grh && !icrc_okk", "nearest: icrc_ok")])
def test_a_key_no_record_holds_is_refused_with_the_nearest(capsys, flt, nearest):
    # A typo would otherwise match nothing and exit 0, as if the capture had no such frames.
    assert main(["decode", "-r", str(REAL), "-Y", flt]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert "no field" in err and nearest in err


def test_every_key_of_every_bundled_record_is_a_known_filter_key():
    from madpipe.pipeline.decode.display_filter import _generic, known_keys

    def paths(value, prefix=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from paths(v, f"{prefix}{k}.")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from paths(v, f"{prefix}{i}.")
        yield prefix.rstrip(".")

    seen = set()
    for capture in sorted(REAL.parent.glob("*.pcap")):
        with CaptureReader(str(capture)) as cap:
            for pkt in cap:
                if pkt.data is not None:
                    seen |= {_generic(p) for p in paths(decode_frame(pkt.data, pkt.frame, 0.0)) if p}
    assert "attr.pkeys.#" in seen and "smp.initial_path.#" in seen
    assert seen - known_keys() == set()


def test_field_tree_names_class_method_opcode_and_reads_a_node_description(capsys):
    queries = str(REAL.parent / "opensm_partitions_queries.pcap")
    assert main(["decode", "-r", queries, "-V", "-Y", "mad.attr_id==0x10 && mad.method==0x81", "-c", "20"]) == 0
    out = capsys.readouterr().out
    assert "        mgmt_class: 129 (0x81) [SubnMgmtDR]\n" in out
    assert "        method: 129 (0x81) [GetResp]\n" in out
    assert "        opcode: 100 (0x64) [UD SEND Only]\n" in out
    assert "        node_string: 'Hca1'\n" in out  # 48636131 00... in -T json, as on the wire
