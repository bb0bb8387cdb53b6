"""`madpipe decode -T json`'s fast path (fast_json, kernels_decode) against decode_frame + jsonl, byte for byte.

The reference is the same command with decode.lines.FAST_JSON off: every frame through decode_frame
and json.dumps. Compared on the real capture, the opensm captures, the synthetic workload, every
SMP and PerfMgt attribute with random contents, GRH and directed-route frames, damaged frames,
random mutations and random bytes, pcap and pcapng, with -c and cut files.
"""
from __future__ import annotations

import io
import json
import random
import struct
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madpipe.codecs import build, crc, perf, smp
from madpipe.codecs.capture import CaptureReader, CaptureWriter
from madpipe.codecs.frame import decode_frame, plain
from madpipe.pipeline.bench import workload
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.decode import crc_kernels as kernels_crc
from madpipe.pipeline.decode import json_lines as fast_json
from madpipe.pipeline.decode import kernels as kd
from madpipe.pipeline.decode import lines as decode_lines

PCAPS = Path(__file__).parent.parent / "pcaps"
REAL = PCAPS / "infiniband_endace_erf_2008.pcap"
CODE = {True: kd.CRC_OK, False: kd.CRC_BAD, None: kd.CRC_ABSENT}


def decode(path, *argv, fast=True):
    """(exit status, stdout, stderr) of `madpipe decode -r path argv`, fast path on or off."""
    saved = decode_lines.FAST_JSON
    decode_lines.FAST_JSON = fast
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["decode", "-r", str(path), *argv])
    finally:
        decode_lines.FAST_JSON = saved
    return code, out.getvalue(), err.getvalue()


def assert_same(path, *argv):
    got = decode(path, "-T", "json", *argv)
    want = decode(path, "-T", "json", *argv, fast=False)
    assert got == want
    return got


def write(path, frames, linktype=197):
    with CaptureWriter(path, linktype=linktype) as w:
        for i, f in enumerate(frames):
            w.write(f, 1_700_000_000_123_456_789 + 999_983 * i)
    return path


def crc_codes(frame: bytes):
    icrc, vcrc = crc.check_crcs(frame)
    return CODE[icrc], CODE[vcrc]


# -- the pieces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("attr_id", sorted(smp.SMP_ATTRIBUTES) + [0xFF01, 0x0099])
def test_every_smp_attribute_has_an_exact_formatter(attr_id):
    schema = smp.attribute_schema(attr_id, compiled=True)
    fmt = fast_json.attribute_formatter(schema, 64)
    assert fmt is not None
    rng = random.Random(attr_id)
    for _ in range(50):
        data = rng.randbytes(64)
        assert "{" + fmt(data) + "}" == fast_json.dumps(plain(schema.parse(data)))


@pytest.mark.parametrize("attr_id", sorted(perf.PERF_ATTRIBUTES))
def test_every_perf_attribute_has_an_exact_formatter(attr_id):
    _, schema = perf.PERF_ATTRIBUTES[attr_id]
    fmt = fast_json.attribute_formatter(schema, 192)
    assert fmt is not None
    rng = random.Random(attr_id)
    for _ in range(50):
        data = rng.randbytes(192)
        assert "{" + fmt(data) + "}" == fast_json.dumps(plain(schema.parse(data)))


def test_a_layout_that_is_not_plain_bits_keeps_the_schema():
    from construct import Int16ul, Struct

    assert fast_json.attribute_formatter(Struct("x" / Int16ul, "y" / Int16ul), 4) is None  # little-endian


def check_crc_kernel(frames):
    lengths = np.array([len(f) for f in frames], np.int64)
    off = np.zeros(len(frames), np.int64)
    off[1:] = np.cumsum(lengths)[:-1]
    buf = np.frombuffer(b"".join(frames) + b"\0", np.uint8)
    icrc = np.empty(len(frames), np.int8)
    vcrc = np.empty(len(frames), np.int8)
    kd.check_crcs(buf, off, lengths, np.zeros(len(frames), np.uint8), kernels_crc.CRC32_TABLE, kernels_crc.VCRC_TABLE_NP,
                  icrc, vcrc)
    assert list(zip(icrc.tolist(), vcrc.tolist())) == [crc_codes(f) for f in frames]


def real_frames():
    with CaptureReader(REAL) as cap:
        return [p.data for p in cap]


def test_crc_kernel_matches_check_crcs():
    frames = real_frames()
    rng = random.Random(1)
    more = []
    for f in frames:
        g = bytearray(f)
        g[rng.randrange(len(g))] ^= 1 << rng.randrange(8)
        more += [bytes(g), f[:rng.randrange(len(f))]]
    # Short packets whose PktLen fits them, GRH and raw LNHs: the corners of check_crcs.
    for lnh in range(4):
        for size in (8, 10, 12, 14, 20, 50, 54, 60):
            g = bytearray(rng.randbytes(size))
            g[1] = (g[1] & ~3) | lnh
            g[4], g[5] = 0, (size - 2) // 4
            more.append(bytes(g))
    check_crc_kernel(frames + more + [rng.randbytes(rng.randrange(400)) for _ in range(300)])


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.data())
def test_frame_json_is_decode_frame_or_declines(data):
    frame = bytearray(data.draw(st.sampled_from(real_frames())))
    for _ in range(data.draw(st.integers(0, 6))):
        frame[data.draw(st.integers(0, len(frame) - 1))] = data.draw(st.integers(0, 255))
    frame = bytes(frame[:data.draw(st.integers(0, len(frame)))])
    line = fast_json.frame_json(frame, 7, 1.25, *crc_codes(frame))
    if line is not None:
        assert line == fast_json.dumps(decode_frame(frame, 7, 1.25))


# -- whole captures through the command ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["infiniband_endace_erf_2008.pcap", "opensm_partitions.pcap",
                                  "opensm_partitions_changed.pcap", "opensm_partitions_queries.pcap"])
def test_real_captures(name):
    if not (PCAPS / name).exists():
        pytest.skip(f"{name} is not in pcaps/")
    code, out, _ = assert_same(PCAPS / name)
    assert code == 0 and out.count("\n") > 40


def test_synthetic_workload(tmp_path):
    mads, _, _ = workload.sm_mads(3000, seed=2)
    path = tmp_path / "w.pcap"
    workload.write_capture(path, workload.mad_frames(mads))
    code, out, err = assert_same(path)
    assert code == 0 and "3000 decoded (3000 MADs)" in err and len(out.splitlines()) == 3000


def every_attribute_frames(seed=3) -> list[bytes]:
    """Each SMP attribute (LID-routed and directed, random data), PerfMgt, SA and CM MADs, with and
    without a GRH, and directed routes of 0..63 hops (and 64, which decode reports as an error)."""
    rng = random.Random(seed)
    frames = []
    for attr_id in sorted(smp.SMP_ATTRIBUTES) + [0xFF01, 0x0099]:
        for method in (0x01, 0x02, 0x81):
            data = rng.randbytes(64)
            tid = rng.getrandbits(64)
            frames.append(build.build_smp_frame(build.smp_mad(method, attr_id, data, tid, rng.getrandbits(32),
                                                              status=rng.choice([0, 0x1C])), slid=1, dlid=2))
            hops = rng.choice([0, 1, 5, 63])
            path = [rng.randrange(1, 37) for _ in range(hops)]
            frames.append(build.build_smp_frame(build.smp_mad(
                method, attr_id, data, tid, rng.getrandbits(32), directed=True, path=path,
                return_path=[rng.randrange(37) for _ in range(hops)], hop_ptr=rng.randrange(64),
                dr_slid=rng.choice([0xFFFF, 3]), dr_dlid=rng.choice([0xFFFF, 4]))))
    too_far = bytearray(build.smp_mad(0x01, 0x11, b"", 5, directed=True, path=[1] * 63))
    too_far[7] = 64
    frames.append(build.build_smp_frame(bytes(too_far)))
    grh = {"sgid": "fe80::2:c903:0:1f2d", "dgid": "fe80::8:f104:399:3c91", "tclass": 3, "flow_label": 0x12345,
           "hoplmt": 9}
    for cls, attrs in ((0x04, sorted(perf.PERF_ATTRIBUTES) + [0x0013]), (0x03, [0x0035, 0x0011, 0x0777]),
                       (0x07, [0x0010, 0x0013]), (0x0A, [0x0001])):
        for attr_id in attrs:
            mad = build.gmp_mad(cls, rng.choice([0x01, 0x81]), attr_id, rng.getrandbits(64), rng.getrandbits(32),
                                rng.randbytes(200))
            frames.append(build.build_gmp_frame(mad, slid=2, dlid=1))
            frames.append(build.build_gmp_frame(mad, slid=2, dlid=1, grh=grh))
    return frames


@pytest.mark.parametrize("linktype", [197, 247])
def test_every_attribute_route_and_header(tmp_path, linktype):
    path = write(tmp_path / "all.pcap", every_attribute_frames(), linktype)
    code, out, err = assert_same(path)
    assert code == 0 and "1 with errors" in err  # the 64-hop SMP
    assert '"grh"' in out and '"class_data"' in out and '"PortCountersExtended"' in out


def damaged(frames, rng) -> list[bytes]:
    out = []
    for f in frames:
        f = bytearray(f)
        for _ in range(rng.choice([1, 1, 2, 5])):
            f[rng.randrange(len(f))] = rng.randrange(256)
        if rng.random() < 0.2:
            f = f[:rng.randrange(len(f) + 1)]
        out.append(bytes(f))
    return out


def test_damaged_and_mutated_frames(tmp_path):
    rng = random.Random(4)
    base = every_attribute_frames() + real_frames()
    frames = damaged(base * 3, rng) + [rng.randbytes(rng.randrange(300)) for _ in range(100)]
    smp0 = real_frames()[0]
    wrong_pktlen = bytearray(smp0)
    wrong_pktlen[5] -= 1
    frames += [bytes(wrong_pktlen), smp0[:5], smp0 + b"\0" * 4000, b""]
    code, out, err = assert_same(write(tmp_path / "bad.pcap", frames))
    assert code == 0 and "with errors" in err and '"error"' in out


def test_skipped_records_and_pcapng(tmp_path):
    from test_capture import pcapng_bytes

    frames = every_attribute_frames(5)[:40] + real_frames()[:10]
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapng_bytes([(1000 * (i + 1), f) for i, f in enumerate(frames)], linktype=247))
    assert_same(path)
    assert_same(path, "-c", "7")
    # ERF records of another type are skipped and printed as such.
    erf = bytearray(REAL.read_bytes())
    erf[24 + 16 + 8] = 2  # first record: ERF type 2 (Ethernet)
    other = tmp_path / "other.pcap"
    other.write_bytes(bytes(erf))
    code, out, err = assert_same(other)
    assert code == 0 and '"skipped"' in out.splitlines()[0] and "1 skipped" in err


@pytest.mark.parametrize("count", [0, 1, 5, 42, 43, 44, 100])
@pytest.mark.parametrize("cut", [0, 10, 300])
def test_count_and_cut_files(tmp_path, count, cut):
    whole = REAL.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(whole[:len(whole) - cut] if cut else whole)
    assert_same(path, "-c", str(count))


def test_corrupt_record_length(tmp_path):
    whole = bytearray(REAL.read_bytes())
    pos = 24
    for _ in range(5):
        pos += 16 + struct.unpack_from("<I", whole, pos + 8)[0]
    struct.pack_into("<I", whole, pos + 8, 0x7FFFFFFF)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(whole))
    code, out, err = assert_same(path)
    assert code == 1 and "record length 2147483647 is corrupt (over 1048576)" in err
    assert len(out.splitlines()) == 5  # the frames before the corrupt record


def test_unreadable_files_are_still_one_line(tmp_path):
    path = tmp_path / "bad.pcap"
    path.write_bytes(b"not a capture at all....")
    code, out, err = assert_same(path)
    assert code == 2 and "bad magic" in err and out == ""


@pytest.mark.slow
def test_many_batches(tmp_path):
    mads, _, _ = workload.sm_mads(2500, seed=6)
    frames = [bytes(f) for f in workload.mad_frames(mads)]
    rng = random.Random(6)
    frames = [f if rng.random() < 0.9 else damaged([f], rng)[0] for f in frames]
    path = write(tmp_path / "many.pcap", frames)
    from madpipe.pipeline.ingest import reader as ingest

    saved = ingest.DEFAULT_BATCH
    ingest.DEFAULT_BATCH = 300  # many batches
    try:
        code, out, _ = assert_same(path)
        assert_same(path, "-c", "1111")
        assert_same(path, "-c", "1200")
    finally:
        ingest.DEFAULT_BATCH = saved
    assert code == 0 and len(out.splitlines()) == 2500
    assert all(json.loads(line)["frame"] == i + 1 for i, line in enumerate(out.splitlines()))
