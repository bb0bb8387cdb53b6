"""What ``madpipe snoop`` prints as a capture arrives: the lines of its event table and its JSON
records, one event at a time (the tables at the end are :mod:`madpipe.pipeline.fabric.output`'s).
"""
from __future__ import annotations

from madpipe.pipeline.fabric.model import Event
from madpipe.pipeline.fabric.text_kernels import relative_time_text

#: The live event table's port column: wide enough for a label and a short node name (the widest
#: label is not known before the end).
LIVE_PORT_COLUMN = 40


def event_header(width: int = LIVE_PORT_COLUMN) -> str:
    return f"P_Key change events:\n{'frame':>7} {'time':>12}  {'port':<{width}} {'block':>5} {'bitmap':>10}  changes\n"


def event_text(e: Event, t0_ns: int, width: int = LIVE_PORT_COLUMN, title: str | None = None) -> str:
    """An event as a line of ``madpipe snoop``'s event table (times from the capture's first frame;
    the port as ``title`` when given, else its label)."""
    changes = " ".join(f"[{i}] 0x{old:04x}->0x{new:04x}" for i, old, new in e.changes)
    flag = " (unconfirmed)" if e.unconfirmed else ""
    return (f"{e.frame:7d} {relative_time_text(e.ts_ns, t0_ns)}  {title or e.port.label():<{width}} "
            f"{e.block:5d} 0x{e.bitmap:08x}  {changes}{flag}\n")


def event_record(e: Event) -> dict:
    """An event as ``madpipe snoop -T json``'s record."""
    return {"type": "event", "frame": e.frame, "ts": e.ts, **e.port.as_json(), "block": e.block,
            "bitmap": e.bitmap, "changes": [list(c) for c in e.changes], "unconfirmed": e.unconfirmed}
