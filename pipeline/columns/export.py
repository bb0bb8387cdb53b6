"""Frames of a capture written for data tools: CSV (no extra needed) or Parquet (``madpipe[data]``).

The columns are :data:`madpipe.pipeline.columns.frames.FRAME_COLUMNS` (``madpipe decode -T json`` flattened),
written batch by batch, so a capture larger than memory exports in bounded memory:

>>> from madpipe.pipeline.columns.export import export_frames                        # doctest: +SKIP
>>> export_frames("capture.pcap", "frames.parquet", "parquet").rows
437

CSV: a header line, then one line per frame; an absent value (<NA>) is an empty field, booleans
are ``True``/``False`` (what ``pandas.read_csv`` reads back as booleans), ``ts`` is ISO 8601 in
UTC with all nine digits of the nanoseconds (``2008-...T...123456789Z``: ``pandas.read_csv(...,
parse_dates=["ts"])`` reads it back exactly). Parquet: ``ts`` a ``timestamp[ns, UTC]``. Parquet: one row group per batch, integer columns with their unsigned widths,
``class_name``/``method_name``/``attr_name`` dictionary-encoded (categoricals in pandas).
"""
from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from madpipe.codecs.errors import MadpipeError, require
from madpipe.pipeline.columns.frames import DATA_EXTRA, FRAME_COLUMNS, TIMESTAMP, FrameColumns

FORMATS = ("csv", "parquet")


@dataclass
class ExportResult:
    rows: int
    skipped: Counter = field(default_factory=Counter)  # records without a packet, by reason
    file_error: str | None = None  # why the capture ended early, or None


def export_frames(path: str | os.PathLike, out: str | os.PathLike, format: str = "csv", *,
                  count: int | None = None) -> ExportResult:
    """Write one row per frame of ``path`` (at most ``count``) to ``out`` as CSV or Parquet."""
    if format not in FORMATS:
        raise MadpipeError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "parquet":
        require("pyarrow", DATA_EXTRA)
    reader = FrameColumns(path)
    rows = 0
    writer = _ParquetWriter(out) if format == "parquet" else _CsvWriter(out)
    try:
        for values, mask in reader:
            n = len(values["frame"])
            if count is not None and rows + n > count:
                n = count - rows
                values = {k: v[:n] for k, v in values.items()}
                mask = {k: m[:n] for k, m in mask.items()}
            if n:
                writer.write(values, mask)
            rows += n
            if count is not None and rows >= count:
                break
    finally:
        writer.close()
    return ExportResult(rows, Counter(reader.ingest.skipped), reader.ingest.error)


def iso_timestamps(ns: np.ndarray) -> list[str]:
    """Epoch nanoseconds as ISO 8601 in UTC with nine fraction digits (exact)."""
    seconds = np.datetime_as_string(ns.astype("datetime64[ns]").astype("datetime64[s]"), unit="s")
    return [f"{s}.{int(n) % 1_000_000_000:09d}Z" for s, n in zip(seconds.tolist(), ns.tolist())]


class _CsvWriter:
    def __init__(self, out):
        try:
            self.f = open(out, "w", newline="", encoding="utf-8")
        except OSError as exc:
            raise MadpipeError(f"{out}: cannot write: {exc.strerror or exc}") from None
        self.w = csv.writer(self.f, lineterminator="\n")
        self.w.writerow(FRAME_COLUMNS)

    def write(self, values: dict, mask: dict) -> None:
        columns = []
        for name, dtype in FRAME_COLUMNS.items():
            col = values[name].tolist()
            if dtype == TIMESTAMP:
                col = iso_timestamps(values[name])
            elif dtype == "float64":
                col = [repr(v) for v in col]
            for i in np.flatnonzero(mask[name]).tolist():
                col[i] = ""
            columns.append(col)
        self.w.writerows(zip(*columns))

    def close(self) -> None:
        self.f.close()


class _ParquetWriter:
    def __init__(self, out):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        types = {"int64": pa.int64(), TIMESTAMP: pa.timestamp("ns", tz="UTC"), "float64": pa.float64(), "UInt8": pa.uint8(), "UInt16": pa.uint16(),
                 "UInt32": pa.uint32(), "UInt64": pa.uint64(), "Int64": pa.int64(), "boolean": pa.bool_(),
                 "string": pa.string(), "category": pa.dictionary(pa.int32(), pa.string())}
        self.types = {name: types[dtype] for name, dtype in FRAME_COLUMNS.items()}
        self.schema = pa.schema([(name, t) for name, t in self.types.items()])
        try:
            self.w = pq.ParquetWriter(os.fspath(out), self.schema)
        except OSError as exc:
            raise MadpipeError(f"{out}: cannot write: {exc}") from None

    def write(self, values: dict, mask: dict) -> None:
        pa = self.pa
        arrays = []
        for name, t in self.types.items():
            v, m = values[name], mask[name]
            if pa.types.is_dictionary(t):
                arrays.append(pa.array(v, pa.string(), mask=m).dictionary_encode())
            else:
                arrays.append(pa.array(v, t, mask=m if m.any() else None))
        self.w.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.w.close()
