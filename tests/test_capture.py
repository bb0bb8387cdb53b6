"""Capture I/O: pcap in both byte orders and resolutions, pcapng, ERF, and every way a file breaks."""
import io
import struct
from pathlib import Path

import numpy as np
import pytest

from madpipe.codecs.capture import CaptureReader, CaptureWriter, linktype_arg
from madpipe.codecs.crc import check_crcs
from madpipe.codecs.erf_records import erf_ts_to_ns, erf_unwrap, erf_wrap, ns_to_erf_ts
from madpipe.codecs.errors import CaptureError
from madpipe.pipeline.ingest.reader import Ingest

REAL = Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap"


@pytest.fixture(scope="module")
def real_packets():
    with CaptureReader(REAL) as cap:
        pkts = list(cap)
        assert cap.error is None and not cap.skipped
    return pkts


def test_real_capture_reads_whole_with_valid_crcs(real_packets):
    assert len(real_packets) == 43
    assert [p.frame for p in real_packets] == list(range(1, 44))
    assert all(check_crcs(p.data) == (True, True) for p in real_packets)
    assert {p.iface for p in real_packets} == {0, 1}  # two DAG capture interfaces
    assert all(p.orig_len == len(p.data) for p in real_packets)


def pcap_bytes(packets, order="<", nanosecond=False, linktype=247):
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for ts_ns, data in packets:
        sec, ns = divmod(ts_ns, 10**9)
        out += struct.pack(order + "IIII", sec, ns if nanosecond else ns // 1000, len(data), len(data)) + data
    return out


def pcapng_bytes(packets, order="<", tsresol=None, linktype=247):
    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        n = len(body) + 12
        return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)

    out = block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = b""
    if tsresol is not None:
        opts = struct.pack(order + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0" + struct.pack(order + "HH", 0, 0)
    out += block(1, struct.pack(order + "HHI", linktype, 0, 65535) + opts)
    out += block(4, b"name resolution block: skipped")
    for ts, data in packets:
        out += block(6, struct.pack(order + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data)
    return out


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_classic_pcap_both_orders_and_resolutions(tmp_path, real_packets, order, nanosecond):
    pkts = [(p.ts_ns, p.data) for p in real_packets[:5]]
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes(pkts, order, nanosecond))
    got = [(p.ts_ns, p.data) for p in CaptureReader(path)]
    if not nanosecond:
        pkts = [(ts // 1000 * 1000, d) for ts, d in pkts]
    assert got == pkts
    # The batch ingest agrees with the streaming reader, frame for frame.
    batches = list(Ingest(path, batch=2))
    assert [int(t) for b in batches for t in b.ts_ns] == [t for t, _ in pkts]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("tsresol,unit", [(None, 1000), (9, 1), (3, 10**6), (0x80 | 30, None)])
def test_pcapng(tmp_path, real_packets, order, tsresol, unit):
    ticks = [1_000_000 + 7 * i for i in range(4)]
    data = [p.data for p in real_packets[:4]]
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapng_bytes(list(zip(ticks, data)), order, tsresol))
    with CaptureReader(path) as cap:
        got = list(cap)
        assert cap.format == "pcapng" and cap.error is None
    assert [p.data for p in got] == data
    want = [t * unit if unit else t * 10**9 >> 30 for t in ticks]
    assert [p.ts_ns for p in got] == want
    rows = np.concatenate([b.data for b in Ingest(path)])
    assert bytes(rows[0, : len(data[0])]) == data[0]


def test_writer_round_trip_erf_and_raw(real_packets):
    for linktype in (197, 247):
        buf = io.BytesIO()
        w = CaptureWriter(buf, linktype=linktype)
        for p in real_packets:
            w.write(p.data, p.ts_ns, p.iface)
        buf.seek(0)
        again = list(CaptureReader(buf))
        assert [(q.data, q.ts_ns) for q in again] == [(p.data, p.ts_ns) for p in real_packets]


def test_written_erf_header_is_ibdumps(real_packets):
    rec = erf_wrap(real_packets[0].data, 0)
    _ts, rtype, flags = struct.unpack_from("<QBB", rec)
    rlen, lctr, wlen = struct.unpack_from(">HHH", rec, 10)
    n = len(real_packets[0].data)
    assert (rtype, flags, rlen, lctr, wlen) == (21, 0x04, n + 16, 0, n)


def test_erf_timestamps_round_trip():
    for ns in (0, 1, 999_999_999, 1_210_794_479_499_693_000):
        assert erf_ts_to_ns(ns_to_erf_ts(ns)) == ns


def test_append(tmp_path, real_packets):
    path = tmp_path / "a.pcap"
    with CaptureWriter(path) as w:
        w.write(real_packets[0].data, 1)
    with CaptureWriter(path, append=True) as w:
        w.write(real_packets[1].data, 2)
    assert [p.data for p in CaptureReader(path)] == [real_packets[0].data, real_packets[1].data]
    with pytest.raises(CaptureError, match="cannot append"):
        CaptureWriter(path, linktype=247, append=True)


def test_non_infiniband_erf_records_are_counted_not_lost(tmp_path, real_packets):
    eth = bytearray(erf_wrap(b"\0" * 60, 5))
    eth[8] = 2  # ERF type 2: Ethernet
    raw = pcap_bytes([(1, erf_wrap(real_packets[0].data, 1)), (2, bytes(eth))], linktype=197)
    path = tmp_path / "mixed.pcap"
    path.write_bytes(raw)
    with CaptureReader(path) as cap:
        got = list(cap)
    assert [p.skip for p in got] == [None, "ERF type 2 is not InfiniBand (21)"]
    assert cap.skipped == {"ERF type 2 is not InfiniBand (21)": 1}
    ing = Ingest(path)
    rows = list(ing)
    assert sum(len(b) for b in rows) == 1 and ing.frames == 2
    assert ing.skipped == cap.skipped


def test_erf_extension_headers_are_skipped():
    rec = bytearray(erf_wrap(b"\x01\x02\x03", 0))
    rec[8] |= 0x80  # one extension header follows
    rec[16:16] = bytes([0x03]) + b"\0" * 7
    assert erf_unwrap(bytes(rec))[0] == b"\x01\x02\x03"


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "empty or truncated"),
        (b"\x00\x01\x02\x03" * 6, "bad magic 0x00010203 at offset 0"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1), "link type 1 is not InfiniBand"),
        (struct.pack("<IHHiI", 0xA1B2C3D4, 2, 4, 0, 0), "truncated pcap header"),
    ],
)
def test_unreadable_files(tmp_path, content, match):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=match):
        CaptureReader(path)
    with pytest.raises(CaptureError, match=match):
        Ingest(path)


def test_missing_file(tmp_path):
    with pytest.raises(CaptureError, match="cannot open"):
        CaptureReader(tmp_path / "nope.pcap")


@pytest.mark.parametrize("cut,reason", [(5, "truncated record header"), (20, "truncated record")])
def test_truncated_file_keeps_the_frames_before(tmp_path, cut, reason):
    whole = REAL.read_bytes()
    path = tmp_path / "cut.pcap"
    # Keep 3 whole records, then part of the 4th.
    pos = 24
    for _ in range(3):
        pos += 16 + struct.unpack_from("<I", whole, pos + 8)[0]
    path.write_bytes(whole[: pos + cut])
    with CaptureReader(path) as cap:
        got = list(cap)
    assert [p.frame for p in got] == [1, 2, 3]
    assert cap.error.startswith(f"frame 4, offset {pos}: {reason}")
    ing = Ingest(path, batch=2)
    assert sum(len(b) for b in ing) == 3
    assert ing.error.startswith(f"frame 4, offset {pos}: truncated")


def test_corrupt_record_length(tmp_path):
    whole = bytearray(REAL.read_bytes())
    struct.pack_into("<I", whole, 24 + 8, 0x7FFFFFFF)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(whole)
    with CaptureReader(path) as cap:
        assert list(cap) == []
    assert "record length 2147483647 is corrupt" in cap.error
    ing = Ingest(path)
    assert list(ing) == [] and "corrupt" in ing.error


def test_ingest_matches_reader_across_chunk_boundaries(tmp_path, real_packets):
    # A tiny chunk forces records to straddle reads: every byte must still land in its row.
    pkts = [(p.ts_ns, p.data) for p in real_packets] * 30
    path = tmp_path / "many.pcap"
    with CaptureWriter(path) as w:
        for ts, d in pkts:
            w.write(d, ts)
    ing = Ingest(path, batch=7, chunk_bytes=1)  # raised to the 1 MiB floor; batch of 7 still splits
    batches = list(ing)
    rows = np.concatenate([b.data for b in batches])
    lengths = np.concatenate([b.length for b in batches])
    assert len(rows) == len(pkts) and ing.error is None
    for i, (_, d) in enumerate(pkts):
        assert lengths[i] == len(d) and bytes(rows[i, : len(d)]) == d
    assert np.concatenate([b.frame for b in batches]).tolist() == list(range(1, len(pkts) + 1))


def test_ingest_finds_mads(real_packets):
    batch = next(iter(Ingest(REAL)))
    mads, index = batch.mads()
    assert len(mads) == 17  # 6 VL15 SMPs and 11 GMPs on QP1 (SA, CM)
    for row, mad in zip(index, mads):
        pkt = real_packets[row].data
        start = batch.mad_offset[row]
        assert bytes(mad) == pkt[start:start + 256]


def test_linktype_arg():
    assert linktype_arg("erf") == 197 and linktype_arg("247") == 247
    with pytest.raises(ValueError):
        linktype_arg("1")
