"""One capture decoded to a text stream, as ``madpipe decode`` prints it: a line a frame (``-V`` its
field tree, ``-x`` its bytes) or JSON Lines, with the counts its summary line reports
(:func:`madpipe.pipeline.decode.text.summary`).
"""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from madpipe.codecs.capture import CaptureReader
from madpipe.codecs.frame import decode_frame
from madpipe.pipeline.decode.output import count_record, hexdump, jsonl, tree
from madpipe.pipeline.decode.text import line

#: JSON Lines without a filter or a hex dump go through madpipe.pipeline.decode.json_lines (the
#: same bytes, ~10x faster); False sends them through decode_frame and jsonl like everything else
#: (the tests compare the two).
FAST_JSON = True

FORMATS = ("text", "json")


class Decoded(NamedTuple):
    counts: Counter       # read, decoded, mads, errors, skipped, shown, icrc_ok/bad, vcrc_ok/bad
    error: str | None     # the file is cut short or corrupt after the frames counted


def decode_capture(path, out, *, format: str = "text", count: int | None = None, verbose: bool = False,
                   hex: bool = False, pred=None) -> Decoded:
    """Write every frame of the capture ``path`` (or a binary stream: a frame's lines are written
    as it is read) to ``out`` (up to ``count``; those ``pred`` keeps,
    a predicate on the decoded record such as ``compile_filter``'s). ``format`` "text" is a line a
    frame, "json" a JSON Lines record; ``verbose`` adds the field tree, ``hex`` the bytes.
    A capture that cannot be opened at all raises MadpipeError."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    counts: Counter[str] = Counter()
    if FAST_JSON and format == "json" and pred is None and not hex and not hasattr(path, "read"):
        from madpipe.pipeline.decode import json_lines

        return Decoded(counts, json_lines.write_json_lines(path, out, count, counts))
    with CaptureReader(path) as cap:
        first_ts = first_ns = None
        for pkt in cap:
            if count is not None and counts["read"] >= count:
                break
            counts["read"] += 1
            ts = pkt.ts_ns / 1e9
            if first_ts is None:
                first_ts, first_ns = ts, pkt.ts_ns
            if pkt.data is None:
                counts["skipped"] += 1
                record = {"frame": pkt.frame, "ts": ts, "skipped": pkt.skip}
            else:
                record = decode_frame(pkt.data, pkt.frame, ts)
                count_record(record, counts)
            if pred is not None and not pred(record):
                continue
            counts["shown"] += 1
            if format == "json":
                jsonl(record, out)
            else:
                out.write(line(record, first_ts, pkt.ts_ns - first_ns) + "\n")
                if verbose:
                    tree({k: v for k, v in record.items() if k not in ("frame", "ts")}, out, 1)
            if hex and pkt.data is not None:
                hexdump(pkt.data, out)
                if format == "text":
                    out.write("\n")
        return Decoded(counts, cap.error)
