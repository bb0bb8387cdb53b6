"""Captures as pandas DataFrames, for notebooks: one row per frame, or one row per P_Key entry.

>>> from madpipe.pipeline.columns.frames import frames_dataframe, port_tables_dataframe   # doctest: +SKIP
>>> df = frames_dataframe("pcaps/opensm_partitions.pcap")
>>> df.groupby(["class_name", "method_name", "attr_name"], observed=True).size()
>>> tables = port_tables_dataframe("pcaps/opensm_partitions.pcap")
>>> tables[tables.membership.notna()].pivot(index="port_label", columns="partition", values="membership")

pandas is an optional dependency (``pip install 'madpipe[data]'``); it is imported when one of
these functions is called, and its absence is a one-line error naming the extra.

The frame columns are the keys of ``madpipe decode -T json`` flattened (``lrh.slid`` -> ``slid``),
with the same values: :func:`flat_record` turns one decoded record into a row, and the fast path
that fills most rows from numpy arrays is checked against it row for row (tests/test_frames.py).
"""
from __future__ import annotations

import ipaddress
import os
from functools import lru_cache

import numpy as np

from madpipe.codecs import mad, smp, wire
from madpipe.codecs.errors import require
from madpipe.codecs.field_table import HeaderField, header_field, header_fields
from madpipe.codecs.frame import attr_name

#: A timestamp column's dtype: nanoseconds since the epoch, UTC (the capture's integers, no float).
TIMESTAMP = "datetime64[ns, UTC]"

#: Frame columns, in order, with their pandas dtypes (nullable: <NA> where a frame lacks the layer).
FRAME_COLUMNS = {
    "frame": "int64",          # 1-based, as tshark and madpipe decode number frames
    "ts": TIMESTAMP,           # the capture's timestamp, to the nanosecond it holds (UTC)
    "length": "int64",         # bytes of the IB packet, LRH through VCRC
    "vl": "UInt8", "lver": "UInt8", "sl": "UInt8", "lnh": "UInt8",
    "dlid": "UInt16", "pktlen": "UInt16", "slid": "UInt16",
    "sgid": "string", "dgid": "string",                         # GRH (LNH 3)
    "opcode": "UInt8", "pkey": "UInt16", "dqp": "UInt32", "psn": "UInt32",   # BTH
    "qkey": "UInt32", "sqp": "UInt32",                          # DETH
    "base_version": "UInt8", "mgmt_class": "UInt8", "class_version": "UInt8", "method": "UInt8",
    "status": "UInt16", "class_specific": "UInt16", "tid": "UInt64", "attr_id": "UInt16",
    "attr_mod": "UInt32",                                       # MAD header
    "m_key": "UInt64",                                          # SMPs
    "hop_ptr": "UInt8", "hop_cnt": "UInt8", "dr_slid": "UInt16", "dr_dlid": "UInt16",
    "dr_path": "string",                                        # directed route: "1,3,1" ("" for 0 hops)
    "class_name": "category", "method_name": "category", "attr_name": "category",
    "block": "UInt16",                                          # P_KeyTable SMPs
    "payload_len": "Int64",                                     # frames without a MAD
    "icrc_ok": "boolean", "vcrc_ok": "boolean",
    "error": "string",                                          # why the frame could not be decoded whole
}

DATA_EXTRA = "data"  # pip install 'madpipe[data]'
SMP_CLASSES = (mad.IB_MGMT_CLASS_SUBN_LID_ROUTED, mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE)
_BTH_OFFSET = np.array([wire.bth_offset(lnh) for lnh in range(4)], np.int64)  # by LRH.LNH



def flat_record(record: dict, length: int | None = None) -> dict:
    """One ``decode_frame`` record as a flat row (FRAME_COLUMNS; None where absent)."""
    row = dict.fromkeys(FRAME_COLUMNS)
    row["frame"] = record.get("frame")
    row["ts"] = record.get("ts_ns")  # set by the caller: decode_frame's ts is float seconds
    row["length"] = length
    for f in _header_columns():
        row[f.name] = (record.get(f.layer) or {}).get(f.name)
    s = record.get("smp") or {}
    if "initial_path" in s:
        row["dr_path"] = ",".join(map(str, s["initial_path"]))
    m = record.get("mad")
    if m is not None:
        row["class_name"] = mad.mgmt_class_name(m["mgmt_class"])
        row["method_name"] = mad.method_name(m["method"])
    a = record.get("attr") or {}
    row["attr_name"] = a.get("name")
    row["block"] = a.get("block")
    row["payload_len"] = record.get("payload_len", record.get("raw_len"))
    row["icrc_ok"] = record.get("icrc_ok")
    row["vcrc_ok"] = record.get("vcrc_ok")
    row["error"] = record.get("error")
    return row


class _Columns:
    """Column buffers for m rows: values and a mask (True = <NA>) per column."""

    def __init__(self, m: int):
        self.m = m
        self.values = {}
        self.mask = {}
        for name, dtype in FRAME_COLUMNS.items():
            if dtype in ("string", "category"):
                self.values[name] = np.full(m, None, object)
            else:
                self.values[name] = np.zeros(m, _numpy_dtype(dtype))
            self.mask[name] = np.ones(m, bool)

    def put(self, name: str, rows, values) -> None:
        self.values[name][rows] = values
        self.mask[name][rows] = False

    def put_row(self, i: int, row: dict) -> None:
        for name, value in row.items():
            if value is not None:
                self.values[name][i] = value
                self.mask[name][i] = False


def _numpy_dtype(dtype: str):
    return {"int64": np.int64, TIMESTAMP: np.int64, "float64": np.float64, "UInt8": np.uint8, "UInt16": np.uint16,
            "UInt32": np.uint32, "UInt64": np.uint64, "Int64": np.int64, "boolean": np.bool_}[dtype]


def _be(d: np.ndarray, off: np.ndarray, width: int) -> np.ndarray:
    """Big-endian unsigned integers of ``width`` bytes at per-row offsets ``off`` of rows ``d``."""
    rows = np.arange(len(d))
    v = np.zeros(len(d), np.uint64)
    for k in range(width):
        v = (v << np.uint64(8)) | d[rows, off + k].astype(np.uint64)
    return v


def _row_hash(rows: np.ndarray) -> np.ndarray:
    """A 64-bit FNV-1a style hash of each row of a uint8 matrix (equal rows, equal hashes)."""
    h = np.full(len(rows), 0xCBF29CE484222325, np.uint64)
    for k in range(rows.shape[1]):
        h = (h ^ rows[:, k].astype(np.uint64)) * np.uint64(0x100000001B3)
    return h


@lru_cache(maxsize=None)
def _header_columns() -> tuple[HeaderField, ...]:
    """The header fields that are columns (FRAME_COLUMNS names them as decode_frame's keys)."""
    return tuple(f for f in header_fields() if f.name in FRAME_COLUMNS)


def _field(d: np.ndarray, base, f: HeaderField) -> np.ndarray:
    """The integer field ``f`` (up to 64 bits) of each row of ``d`` whose layer starts at ``base``."""
    end = f.bit + f.width
    value = _be(d, np.zeros(len(d), np.int64) + base + f.offset, (end + 7) // 8)
    return (value >> np.uint64(-end % 8)) & np.uint64((1 << f.width) - 1)


def _fast_rows(cols: _Columns, fast: np.ndarray, fb) -> None:
    """Fill the rows ``fast`` of a FrameBatch: complete MAD frames whose PktLen agrees.

    Every header column is read at the offset the field table gives (codecs.field_table)."""
    from madpipe.pipeline.decode import crc_kernels as kernels_crc

    d = fb.data[fast]
    n = len(fast)
    length = fb.length[fast]
    lnh = d[:, 1] & 3
    bth = _BTH_OFFSET[lnh]
    mo = fb.mad_offset[fast].astype(np.int64)
    base = {"lrh": 0, "bth": bth, "deth": bth + wire.BTH_SIZE, "mad": mo}
    smp_fields = {}
    for f in _header_columns():
        if f.layer in base:
            cols.put(f.name, fast, _field(d, base[f.layer], f))
        elif f.layer == "smp":
            smp_fields[f.name] = f
    glob = np.flatnonzero(lnh == wire.LNH_IBA_GLOBAL)
    for name in ("sgid", "dgid"):
        at = wire.LRH_SIZE + header_field("grh", name).offset
        for j in glob.tolist():
            cols.put(name, fast[j], str(ipaddress.IPv6Address(d[j, at:at + 16].tobytes())))
    cls = cols.values["mgmt_class"][fast]
    method = cols.values["method"][fast]
    attr_id = cols.values["attr_id"][fast].astype(np.uint64)
    attr_mod = cols.values["attr_mod"][fast].astype(np.uint64)
    is_smp = np.isin(cls, SMP_CLASSES)
    sm = fast[is_smp]
    cols.put("m_key", sm, _field(d[is_smp], mo[is_smp], smp_fields.pop("m_key")))
    is_dr = cls == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE
    dr = np.flatnonzero(is_dr)
    if len(dr):
        dd, dmo = d[dr], mo[dr]
        for name, f in smp_fields.items():  # hop_ptr, hop_cnt, dr_slid, dr_dlid
            cols.put(name, fast[dr], _field(dd, dmo, f))
        hops = cols.values["hop_cnt"][fast[dr]]
        # Path entries 1..hop_cnt (hop_cnt <= 63 here); one string per distinct route.
        hop = np.arange(63)
        path = header_field("smp", "initial_path").offset + 1
        route = dd[np.arange(len(dr))[:, None], dmo[:, None] + path + hop]
        route[hop >= hops[:, None]] = 0
        key = np.column_stack([hops, route])
        _, first, which = np.unique(_row_hash(key), return_index=True, return_inverse=True)
        which = which.ravel()
        if not (key == key[first[which]]).all():  # a hash collision: name each row itself
            first, which = np.arange(len(key)), np.arange(len(key))
        texts = np.array([",".join(map(str, r[1:1 + r[0]].tolist())) for r in key[first]], object)
        cols.put("dr_path", fast[dr], texts[which])
    names = {}
    for c, m in set(zip(cls.tolist(), method.tolist())):
        names[("c", c)] = mad.mgmt_class_name(c)
        names[("m", m)] = mad.method_name(m)
    cols.put("class_name", fast, np.array([names[("c", c)] for c in cls.tolist()], object))
    cols.put("method_name", fast, np.array([names[("m", m)] for m in method.tolist()], object))
    pairs = {p: attr_name(*p) for p in set(zip(cls.tolist(), attr_id.tolist()))}
    cols.put("attr_name", fast, np.array([pairs[p] for p in zip(cls.tolist(), attr_id.tolist())], object))
    pk = np.flatnonzero(is_smp & (attr_id == smp.IB_SMP_ATTR_PKEY_TABLE))
    cols.put("block", fast[pk], attr_mod[pk] & np.uint64(0xFFFF))
    icrc = np.empty(n, np.uint32)
    vcrc = np.empty(n, np.uint32)
    rows = np.ascontiguousarray(d)
    kernels_crc.icrc_rows(rows, length, kernels_crc.CRC32_TABLE, icrc)
    kernels_crc.vcrc_rows(rows, length, kernels_crc.VCRC_TABLE_NP, vcrc)
    at = np.arange(n)
    stored_icrc = np.zeros(n, np.uint32)
    for k in range(4):
        stored_icrc |= d[at, length - 6 + k].astype(np.uint32) << np.uint32(8 * k)
    stored_vcrc = d[at, length - 2].astype(np.uint32) | d[at, length - 1].astype(np.uint32) << np.uint32(8)
    cols.put("icrc_ok", fast, icrc == stored_icrc)
    cols.put("vcrc_ok", fast, vcrc == stored_vcrc)


class FrameColumns:
    """The frame columns of a capture, batch by batch (bounded memory): iterate for one
    ``(values, masks)`` pair of dicts per batch, FRAME_COLUMNS' names to numpy arrays (mask True =
    <NA>). After the loop, ``ingest.skipped`` and ``ingest.error`` describe the file."""

    def __init__(self, path: str | os.PathLike, fast: bool = True):
        from madpipe.pipeline.ingest.reader import Ingest

        self.fast = fast
        self.ingest = Ingest(path)

    def __iter__(self):
        from madpipe.codecs.frame import decode_frame
        from madpipe.pipeline.ingest import kernels as ki
        from madpipe.pipeline.ingest.reader import ROW_WIDTH

        for raw in self.ingest.raw():
            ok = np.flatnonzero(raw.code == ki.REC_OK)
            fb = raw.rows()
            cols = _Columns(len(fb))
            cols.put("frame", slice(None), fb.frame)
            cols.put("ts", slice(None), fb.ts_ns)
            cols.put("length", slice(None), fb.length)
            good = np.zeros(len(fb), bool)
            if self.fast and len(fb):
                d = fb.data
                pktlen = (d[:, 4].astype(np.int64) & 7) << 8 | d[:, 5]
                good = (fb.mad_offset >= 0) & (fb.length <= ROW_WIDTH) & (pktlen * 4 + 2 == fb.length)
                # decode_frame flags a hop count over 63: leave those to it.
                mo = np.maximum(fb.mad_offset.astype(np.int64), 0)
                at = np.arange(len(fb))
                good &= ~((d[at, mo + 1] == mad.IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE) & (d[at, mo + 7] > 63))
                quick = np.flatnonzero(good)
                if len(quick):
                    _fast_rows(cols, quick, fb)
            for i in np.flatnonzero(~good).tolist():
                off, n = int(raw.pkt_off[ok[i]]), int(raw.pkt_len[ok[i]])
                record = decode_frame(raw.buf[off:off + n].tobytes(), int(fb.frame[i]), float(fb.ts_ns[i] / 1e9))
                record["ts_ns"] = int(fb.ts_ns[i])
                cols.put_row(i, flat_record(record, n))
            yield cols.values, cols.mask


def frames_dataframe(path: str | os.PathLike, *, fast: bool = True):
    """One row per frame that holds an InfiniBand packet, with the columns of FRAME_COLUMNS.

    Records that hold no packet (an ERF record of another type) are not rows: their frame numbers
    are missing from ``frame``, and ``df.attrs["skipped"]`` counts them by reason.
    ``df.attrs["file_error"]`` says why the file ended early, or is None. ``fast=False`` decodes
    every frame with ``decode_frame`` (the reference the fast path is tested against; slower).
    """
    pd = require("pandas", DATA_EXTRA)
    reader = FrameColumns(path, fast)
    parts = list(reader)
    data = {}
    for name, dtype in FRAME_COLUMNS.items():
        values = np.concatenate([v[name] for v, _ in parts]) if parts else np.empty(0, object)
        mask = np.concatenate([m[name] for _, m in parts]) if parts else np.empty(0, bool)
        data[name] = _series(pd, values, mask, dtype)
    df = pd.DataFrame(data)
    df.attrs["skipped"] = dict(reader.ingest.skipped)
    df.attrs["file_error"] = reader.ingest.error
    df.attrs["path"] = os.fspath(path)
    return df


def _series(pd, values: np.ndarray, mask: np.ndarray, dtype: str):
    if dtype == TIMESTAMP:
        return pd.array(pd.to_datetime(values.astype(np.int64), unit="ns", utc=True))
    if dtype in ("int64", "float64"):
        return pd.array(values.astype(dtype), dtype=dtype)
    if dtype == "string":
        out = values.copy()
        out[mask] = None
        return pd.array(out, dtype="string")
    if dtype == "category":
        out = values.copy()
        out[mask] = None
        return pd.Categorical(out)
    np_dtype = _numpy_dtype(dtype)
    return pd.arrays.BooleanArray(values.astype(bool), mask) if dtype == "boolean" else \
        pd.arrays.IntegerArray(values.astype(np_dtype), mask)


# -- port tables ------------------------------------------------------------------------------------

PORT_TABLE_COLUMNS = ("port_label", "lid", "dr_path", "port", "guid", "node_description", "capacity", "index",
                      "block", "pkey", "partition", "membership")


def port_rows(result, guids: dict | None = None) -> list[dict]:
    """Rows of :func:`port_tables_dataframe` from a ``snoop_capture`` result."""
    from madpipe.pipeline.fabric.diff import port_order
    from madpipe.pipeline.fabric.text import shown_entries

    rows = []
    for pid in sorted(result.ports, key=port_order):
        state = result.ports[pid]
        table = state.table
        last = int(np.flatnonzero(table)[-1]) + 1 if table.any() else 0
        entries = max(shown_entries(state), last)
        guid = (guids or {}).get(pid)
        for i in range(entries):
            p = int(table[i])
            rows.append({"port_label": pid.label(), "lid": pid.lid,
                         "dr_path": None if pid.dr_path is None else ",".join(map(str, pid.dr_path)),
                         "port": pid.port, "guid": guid, "node_description": state.node,
                         "capacity": state.capacity, "index": i,
                         "block": i // 32, "pkey": p,
                         "partition": p & 0x7FFF if p & 0x7FFF else None,
                         "membership": ("full" if p & 0x8000 else "limited") if p & 0x7FFF else None})
    return rows


def port_tables_dataframe(path: str | os.PathLike, rule: str = "set"):
    """One row per (port, index) of every P_Key table the SM left (``madpipe snoop``'s tables).

    Columns: port_label (``lid 0x0004 path 1,3,1 port 0``), lid, dr_path ("1,3,1"), port, guid
    (from the capture's NodeInfo answers: a CA's port GUID, a switch's node GUID), node_description
    (the node's NodeDescription answer, <NA> without one), capacity,
    index, block, pkey, partition (low 15 bits, <NA> for an empty entry), membership ("full",
    "limited", <NA>). Entries run through the port's capacity (or its last written block).
    """
    pd = require("pandas", DATA_EXTRA)
    from madpipe.pipeline.fabric import diff
    from madpipe.pipeline.fabric.snoop import snoop_capture

    result = snoop_capture(path, rule)
    by_path, by_lid = diff.node_infos(path)
    guids = {pid: diff.port_guid(pid, by_path, by_lid) for pid in result.ports}
    df = pd.DataFrame(port_rows(result, guids), columns=list(PORT_TABLE_COLUMNS))
    for name, dtype in (("lid", "UInt16"), ("port", "UInt8"), ("guid", "UInt64"), ("capacity", "UInt16"),
                        ("index", "int64"), ("block", "int64"), ("pkey", "UInt16"), ("partition", "UInt16")):
        df[name] = df[name].astype(dtype)
    for name in ("port_label", "dr_path", "node_description", "membership"):
        df[name] = df[name].astype("string")
    df.attrs["file_error"] = result.file_error
    df.attrs["path"] = os.fspath(path)
    return df
