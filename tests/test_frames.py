"""DataFrames of frames and of P_Key tables: the fast path against decode_frame, row for row."""
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from madpipe.codecs import build, crc  # noqa: E402
from madpipe.codecs.capture import CaptureReader, CaptureWriter  # noqa: E402
from madpipe.codecs.erf_records import erf_wrap  # noqa: E402
from madpipe.codecs.errors import MadpipeError, MissingExtra  # noqa: E402
from madpipe.codecs.frame import decode_frame  # noqa: E402
from madpipe.pipeline.columns import frames  # noqa: E402
from madpipe.pipeline.fabric.snoop import snoop_capture

PCAPS = Path(__file__).parent.parent / "pcaps"
CAPTURES = sorted(PCAPS.glob("*.pcap"))


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_fast_path_equals_decode_frame(path):
    fast = frames.frames_dataframe(path)
    pd.testing.assert_frame_equal(fast, frames.frames_dataframe(path, fast=False))
    assert list(fast.columns) == list(frames.FRAME_COLUMNS)
    with CaptureReader(path) as cap:
        assert len(fast) == sum(1 for p in cap if p.data is not None)


def test_columns_are_decode_json_values():
    path = PCAPS / "opensm_partitions.pcap"
    df = frames.frames_dataframe(path).set_index("frame")
    with CaptureReader(path) as cap:
        records = {p.frame: (decode_frame(p.data, p.frame, p.ts_ns / 1e9), p.ts_ns) for p in cap}
    for frame in (1, 2, 133, 134, 248):
        (r, ts_ns), row = records[frame], df.loc[frame]
        assert row.ts == pd.Timestamp(ts_ns, unit="ns", tz="UTC") and row.ts.value == ts_ns  # every ns
        assert row.slid == r["lrh"]["slid"] and row.vl == 15
        for key in ("mgmt_class", "method", "status", "tid", "attr_id", "attr_mod"):
            assert row[key] == r["mad"][key], (frame, key)
        assert row.attr_name == r["attr"]["name"]
        assert row.dr_path == ",".join(map(str, r["smp"]["initial_path"]))
        assert row.icrc_ok and row.vcrc_ok and pd.isna(row.error)
    pkeys = df[df.attr_name == "PKeyTable"]
    assert (pkeys.block == (pkeys.attr_mod & 0xFFFF)).all() and set(pkeys.block) == {0, 1}
    assert df[df.attr_name != "PKeyTable"].block.isna().all()
    assert df.loc[1, "class_name"] == "SubnMgmtDR" and df.loc[1, "method_name"] == "Get"


def pcapng(packets) -> bytes:
    def block(btype, body):
        body += b"\0" * (-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)) + block(1, struct.pack("<HHI", 247, 0, 65535))
    for ts, data in packets:
        out += block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data)
    return out


def odd_frames() -> list[bytes]:
    """A frame of each kind the fast path leaves to decode_frame, and some it takes."""
    smp_get = build.build_smp_frame(build.smp_mad(0x01, 0x0011, b"", 1, directed=True, path=[1, 3]))
    pkeys = build.build_smp_frame(build.pkey_table_mad(0x02, 2, [0xFFFF, 0x8001], 2), slid=1, dlid=4)
    far = bytearray(build.smp_mad(0x01, 0x0015, b"", 3, directed=True, path=[1]))
    far[7] = 70  # hop count over 63
    gmp = build.build_gmp_frame(build.gmp_mad(0x03, 0x01, 0x0035, 4), slid=1, dlid=2,
                                grh={"sgid": "fe80::1", "dgid": "fe80::2"})
    ipoib = build.build_packet(b"\x08\x00" + bytes(40), slid=1, dlid=2, dqp=0x48, sqp=0x49, qkey=0x1234)
    bad_crc = bytearray(smp_get)
    bad_crc[-1] ^= 0xFF
    bad_icrc = bytearray(pkeys[:-2])
    bad_icrc[-4] ^= 0x01  # a wrong ICRC under a right VCRC
    bad_icrc += crc.crc16_vcrc(bytes(bad_icrc)).to_bytes(2, "little")
    raw = crc.seal(bytes([0xF0, 0x00, 0, 2, 0, 3, 0, 1]) + bytes(4))  # LNH 0: raw packet
    return [smp_get, pkeys, build.build_smp_frame(bytes(far)), gmp, ipoib, bytes(bad_crc), bytes(bad_icrc),
            raw, smp_get[:40], smp_get + b"\0\0\0\0", bytes(5)]


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_odd_frames_match_decode_frame(tmp_path, kind):
    path = tmp_path / f"odd.{kind}"
    packets = list(enumerate(odd_frames(), 1))
    if kind == "pcap":
        with CaptureWriter(path, linktype=247) as w:
            for ts, data in packets:
                w.write(data, ts * 1000)
    else:
        path.write_bytes(pcapng([(ts * 1000, data) for ts, data in packets]))
    fast = frames.frames_dataframe(path)
    pd.testing.assert_frame_equal(fast, frames.frames_dataframe(path, fast=False))
    assert fast.error.notna().tolist() == [False, False, True, False, False, False, False, False, True, True, True]
    assert fast.icrc_ok.tolist()[5:7] == [True, False] and fast.vcrc_ok.tolist()[5:7] == [False, True]
    assert fast.sgid[3] == "fe80::1" and fast.attr_name[3] == "PathRecord"
    assert fast.block[1] == 2 and pd.isna(fast.block[0])
    assert fast.payload_len.notna().tolist()[3:8] == [False, True, False, False, True]


def test_skipped_records_and_cut_file(tmp_path):
    real = (PCAPS / "opensm_partitions.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(real[:-50])
    df = frames.frames_dataframe(cut)
    assert len(df) == 247 and "truncated" in df.attrs["file_error"]
    mixed = tmp_path / "mixed.pcap"
    with CaptureWriter(mixed) as w:  # ERF: an Ethernet record between two IB ones
        w.write(odd_frames()[0], 1)
        w._f.write(struct.pack("<IIII", 0, 0, 16 + 20, 16 + 20)
                   + erf_wrap(bytes(20), 2)[:8] + bytes([2]) + erf_wrap(bytes(20), 2)[9:])
        w.write(odd_frames()[1], 3)
    df = frames.frames_dataframe(mixed)
    assert df.frame.tolist() == [1, 3] and sum(df.attrs["skipped"].values()) == 1


def test_port_tables_dataframe():
    path = PCAPS / "opensm_partitions_changed.pcap"
    df = frames.port_tables_dataframe(path)
    assert list(df.columns) == list(frames.PORT_TABLE_COLUMNS)
    ports = snoop_capture(path).ports
    assert df.port_label.nunique() == len(ports) == 8
    for pid, state in ports.items():
        rows = df[df.port_label == pid.label()]
        assert rows["index"].tolist() == list(range(len(rows)))
        assert len(rows) == (state.capacity or 32)
        assert rows.pkey.astype(int).tolist() == state.table[:len(rows)].tolist()
    hca3 = df[(df.lid == 5) & df.membership.notna()]
    assert hca3.guid.unique().tolist() == [0x100007]
    assert hca3.node_description.unique().tolist() == ["Hca3"]  # ibsim's name for the node at LID 5
    assert list(zip(hca3.pkey, hca3.partition, hca3.membership)) == [
        (0xFFFF, 0x7FFF, "full"), (0x8001, 0x0001, "full")]
    assert df[df.pkey == 0].membership.isna().all() and df[df.pkey == 0].partition.isna().all()


def test_missing_pandas_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(MissingExtra, match=r"pandas is not installed: pip install 'madpipe\[data\]'"):
        frames.frames_dataframe(PCAPS / "opensm_partitions.pcap")
    with pytest.raises(ImportError):
        frames.port_tables_dataframe(PCAPS / "opensm_partitions.pcap")


def test_row_hash_names_equal_rows_alike():
    rows = np.array([[1, 2, 3], [1, 2, 3], [3, 2, 1]], np.uint8)
    h = frames._row_hash(rows)
    assert h[0] == h[1] != h[2]


# -- export: CSV and Parquet ------------------------------------------------------------------------

def _plain(series):
    return [None if pd.isna(v) else v for v in series.astype(object)]


@pytest.mark.parametrize("path", [PCAPS / "infiniband_endace_erf_2008.pcap", PCAPS / "opensm_partitions.pcap"],
                         ids=lambda p: p.name)
def test_export_parquet_and_csv_read_back(tmp_path, path):
    pytest.importorskip("pyarrow")
    from madpipe.pipeline.columns.export import export_frames

    df = frames.frames_dataframe(path)
    result = export_frames(path, tmp_path / "f.parquet", "parquet")
    assert result.rows == len(df) and result.file_error is None
    back = pd.read_parquet(tmp_path / "f.parquet", dtype_backend="numpy_nullable")
    assert list(back.columns) == list(df.columns)
    for name in df.columns:
        assert _plain(back[name]) == _plain(df[name]), name
    assert isinstance(back.attr_name.dtype, pd.CategoricalDtype)
    assert str(back.tid.dtype) == "UInt64" and str(back.vl.dtype) == "UInt8"

    assert export_frames(path, tmp_path / "f.csv", "csv").rows == len(df)
    text = (tmp_path / "f.csv").read_text()
    assert text.splitlines()[0] == ",".join(frames.FRAME_COLUMNS)
    back = pd.read_csv(tmp_path / "f.csv", dtype_backend="numpy_nullable", parse_dates=["ts"])
    assert str(back.ts.dtype) == "datetime64[ns, UTC]"  # ISO 8601, nine digits: exact
    for name in df.columns:
        want = _plain(df[name])
        if name == "dr_path":  # the local route (0 hops) is "", an empty field like <NA>
            want = [None if v == "" else v for v in want]
        assert _plain(back[name]) == want, name


def test_export_count_and_errors(tmp_path, monkeypatch):
    from madpipe.pipeline.columns.export import export_frames

    path = PCAPS / "opensm_partitions.pcap"
    assert export_frames(path, tmp_path / "f.csv", "csv", count=5).rows == 5
    assert len((tmp_path / "f.csv").read_text().splitlines()) == 6
    with pytest.raises(MadpipeError, match="format must be one of csv, parquet"):
        export_frames(path, tmp_path / "f.x", "xlsx")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtra, match=r"pyarrow is not installed: pip install 'madpipe\[data\]'"):
        export_frames(path, tmp_path / "f.parquet", "parquet")
