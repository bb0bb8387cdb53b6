"""``madpipe snoop``'s output: a :class:`~madpipe.pipeline.fabric.snoop.FabricSnoop` as text (every
port's P_Key table in the ``smpquery pkeys`` layout, the change events, findings, the host view,
counts) or as JSON Lines with a ``type`` key. Spooled events and findings (a capture can have
millions) are written by the line kernels of :mod:`madpipe.pipeline.fabric.text_kernels` and
:mod:`madpipe.pipeline.fabric.json_kernels`.
"""
from __future__ import annotations

import io
import os
import sys
from collections import deque

import numpy as np

from madpipe.codecs.errors import MadpipeError
from madpipe.pipeline.decode.output import jsonl
from madpipe.pipeline.fabric import event_lines as el
from madpipe.pipeline.fabric import snoop  # snoop.snoop_capture looked up at each call: tests swap it there
from madpipe.pipeline.fabric import text_kernels as kt
from madpipe.pipeline.fabric.model import FINDING_TEXT, FabricSnoop, HostView, PortId
from madpipe.pipeline.fabric.spool import RecordList
from madpipe.pipeline.fabric.text import format_pkeys, shown_entries
from madpipe.pipeline.kernels.workers import Workers


def snoop_output(item: tuple) -> tuple[str, str | None, int]:
    """One capture of a multi-capture ``madpipe snoop``, a step ``many.run_each`` can run in a worker
    process: ``(path, options, format, all_entries)`` -> (what ``madpipe snoop -r path -T format``
    prints, its error or None, its exit status: 2 unreadable, 1 cut short or corrupt, else 0).
    ``options`` are :func:`snoop_capture`'s keyword arguments."""
    path, options, format, all_entries = item
    buf = io.StringIO()
    try:
        result = snoop.snoop_capture(path, **options)
    except MadpipeError as exc:
        return "", str(exc), 2
    try:
        if format == "json":
            print_json(result, buf)
        else:
            print_text(result, buf, all_entries)
    finally:
        for records in (result.events, result.findings):
            if isinstance(records, RecordList):
                records.spool.close()  # its temporary file, if it spilled
    if result.file_error:
        return buf.getvalue(), f"{path}: {result.file_error}", 1
    return buf.getvalue(), None, 0


def _changes_text(changes) -> str:
    return " ".join(f"[{i}] 0x{old:04x}->0x{new:04x}" for i, old, new in changes)


def print_text(r: FabricSnoop, out, all_entries: bool = False) -> None:
    """Every port's table (the ``smpquery pkeys`` layout: its lines holding a P_Key, every line
    with ``all_entries``), the change events (times from the capture's first frame, as
    ``madpipe decode`` counts), findings, the host view and the counts."""
    order = sorted(r.ports, key=_port_order)
    labels = width = None
    if r.events:
        labels = _titles(r, r.events.ports if isinstance(r.events, RecordList) else {e.port for e in r.events})
        width = max([PORT_COLUMN, *map(len, labels)])  # the column fits the longest label

    def tables() -> None:
        for pid, lines in zip(order, _pkey_lines([r.ports[pid] for pid in order], nonzero=not all_entries)):
            st = r.ports[pid]
            cap = f", {st.capacity} pkeys capacity" if st.capacity else ""
            out.write(f"Port {st.title()}{cap}:\n{lines}\n")
        if r.events:
            out.write("P_Key change events:\n")
            out.write(f"{'frame':>7} {'time':>12}  {'port':<{width}} {'block':>5} {'bitmap':>10}  changes\n")

    if not r.events:
        tables()
    else:
        t0_ns = r.events[0].ts_ns if r.first_ts_ns is None else r.first_ts_ns
        if isinstance(r.events, RecordList):  # the first chunks of lines are formatted meanwhile
            _events_text(r.events, t0_ns, out, width, labels, before=tables)
        else:
            tables()
            for e in r.events:
                flag = " (unconfirmed)" if e.unconfirmed else ""
                out.write(f"{e.frame:7d} {kt.relative_time_text(e.ts_ns, t0_ns)}  {_titles(r, [e.port])[0]:<{width}} "
                          f"{e.block:5d} 0x{e.bitmap:08x}  {_changes_text(e.changes)}{flag}\n")
        out.write("\n")
    if r.findings:
        out.write("Findings:\n")
        if isinstance(r.findings, RecordList):
            labels = _titles(r, r.findings.ports)
            for chunk in r.findings.spool:
                out.write("".join([f"  frame {frame}: {labels[slot]} block {block}: {FINDING_TEXT[kind]}\n"
                                   for frame, slot, block, kind in _columns(chunk, "frame", "slot", "block", "kind")]))
        else:
            for f in r.findings:
                out.write(f"  frame {f.frame}: {_titles(r, [f.port])[0]} block {f.block}: {f.text}\n")
        out.write("\n")
    if r.host is not None:
        _print_host(r.host, out)
    out.write(_summary(r) + "\n")


def _titles(r: FabricSnoop, pids) -> list[str]:
    """Each port's label with its node's NodeDescription when the capture has one."""
    return [r.ports[pid].title() if pid in r.ports else pid.label() for pid in pids]


#: The event table's port column is at least this wide (wider when a label is longer).
PORT_COLUMN = 28
_ZERO_ROW = " ".join(["0x0000"] * 8)


#: What the text says of a table whose shown lines are all 0x0000.
_ALL_ZERO = "     (every entry 0x0000)\n"


def _nonzero_lines(lines: str) -> str:
    """A table's lines without those whose entries are all 0x0000 (a line says its first index)."""
    kept = [line for line in lines.splitlines(keepends=True) if line[6:].rstrip("\n") != _ZERO_ROW]
    return "".join(kept) if kept else _ALL_ZERO


def _print_host(h: HostView, out) -> None:
    out.write(f"Host lid 0x{h.pid.lid:04x} port {h.port_num}, {h.num_vfs} VFs (mlx4 master view):\n")
    out.write(f"  master P_Key-change events at frames: {_frames(h.master_events)}\n")
    for vf in range(1, h.num_vfs + 1):
        out.write(f"  VF {vf} events at frames: {_frames(h.vf_events.get(vf, []))}\n")
        table = h.virtual_table(vf)
        used = [i for i in range(len(table)) if h.v2p[vf, h.port_num - 1, i] != 127 or i == 0]
        pairs = " ".join(f"[{i}]->{int(h.v2p[vf, h.port_num - 1, i])}=0x{int(table[i]):04x}" for i in used)
        out.write(f"    virtual table (index->physical=P_Key, unmapped entries omitted): {pairs}\n")
    out.write("\n")


def _frames(frames) -> str:
    return ", ".join(map(str, frames)) if frames else "none"


def _port_order(pid: PortId):
    return (pid.lid is None, pid.lid or 0, pid.dr_path or (), pid.port)


def _summary(r: FabricSnoop) -> str:
    c = r.counts
    text = (f"{c['frames']} frames, {c['mads']} MADs, {c['smps']} SMPs; {c['ports']} ports; "
            f"{c['events']} change events; {c['findings']} findings")
    if "sets" in c or "getresps" in c:
        text += (f"; P_KeyTable {'Sets' if 'sets' in c else 'GetResps'}: "
                 f"{c['sets'] or c['getresps']} ({c['unconfirmed']} unconfirmed, {c['rejected']} with error status)")
    if r.skipped:
        text += f"; {sum(r.skipped.values())} frames skipped (" + ", ".join(
            f"{n} {why}" for why, n in r.skipped.items()) + ")"
    return text


def print_json(r: FabricSnoop, out) -> None:
    import json  # here: text output never needs it

    def ports() -> None:
        for pid in sorted(r.ports, key=_port_order):
            st = r.ports[pid]
            capacity = "null" if st.capacity is None else int(st.capacity)
            out.write(f'{{"type":"port",{el.port_json(pid)},"node_description":{json.dumps(st.node)},'
                      f'"capacity":{capacity},"pkeys":[{",".join(map(str, st.table.tolist()))}]}}\n')

    if isinstance(r.events, RecordList):  # the first chunks of events are formatted meanwhile
        _events_json(r.events, out, before=ports)
    else:
        ports()
        for e in r.events:
            jsonl({"type": "event", "frame": e.frame, "ts": e.ts, **e.port.as_json(), "block": e.block,
                   "bitmap": e.bitmap, "changes": [list(c) for c in e.changes], "unconfirmed": e.unconfirmed}, out)
    if isinstance(r.findings, RecordList):
        ports = [el.port_json(pid) for pid in r.findings.ports]
        texts = {kind: json.dumps(text) for kind, text in FINDING_TEXT.items()}
        for chunk in r.findings.spool:
            out.write("".join([f'{{"type":"finding","frame":{frame},{ports[slot]},"block":{block},"kind":{kind},'
                               f'"text":{texts[kind]}}}\n'
                               for frame, slot, block, kind in _columns(chunk, "frame", "slot", "block", "kind")]))
    else:
        for f in r.findings:
            jsonl({"type": "finding", "frame": f.frame, **f.port.as_json(), "block": f.block, "kind": f.kind,
                   "text": f.text}, out)
    if r.host is not None:
        h = r.host
        jsonl({"type": "host", "lid": h.pid.lid, "port_num": h.port_num, "num_vfs": h.num_vfs,
               "master_events": h.master_events, "phys_pkeys": [int(p) for p in h.phys]}, out)
        for vf in range(1, h.num_vfs + 1):
            jsonl({"type": "vf", "vf": vf, "events": h.vf_events.get(vf, []),
                   "virt2phys_pkey": [int(x) for x in h.v2p[vf, h.port_num - 1]],
                   "pkeys": [int(p) for p in h.virtual_table(vf)]}, out)
    jsonl({"type": "summary", **{k: int(v) for k, v in r.counts.items()},
           "skipped": dict(r.skipped), "file_error": r.file_error}, out)


# -- events and findings straight from the spooled records: the same bytes as the loops above, ---
# -- without an Event object per line (a capture can have millions) ------------------------------

def _columns(chunk: np.ndarray, *names):
    return zip(*(chunk[name].tolist() for name in names))


def _pkey_lines(states: list, nonzero: bool = False) -> list[str]:
    """Each port's format_pkeys lines, newline-terminated, written by text_kernels.pkey_lines;
    with ``nonzero``, as :func:`_nonzero_lines` leaves them."""
    if not states:
        return []
    tables = np.ascontiguousarray(np.stack([st.table for st in states]), dtype=np.uint16)
    entries = np.array([shown_entries(st) for st in states], np.int64)
    if tables.shape[1] != 128 or (entries > 128).any():
        texts = ["".join(line + "\n" for line in format_pkeys(st.table, n)) for st, n in zip(states, entries)]
        return [_nonzero_lines(t) for t in texts] if nonzero else texts
    lines = (entries + 7) // 8
    buf = np.empty((int(lines.sum()), kt.PKEY_LINE_BYTES), np.uint8)
    kt.pkey_lines(tables, entries, buf)
    if nonzero:  # the lines with a P_Key, picked by numpy (a Python filter of 16k lines took ~6 ms)
        shown = np.arange(tables.shape[1] // 8) < lines[:, None]  # the port's lines, in buf's order
        keep = (tables.reshape(len(tables), -1, 8) != 0).any(axis=2)[shown]
        buf = buf[keep]
        lines = np.bincount(np.repeat(np.arange(len(lines)), lines)[keep], minlength=len(lines))
    text = buf.tobytes().decode("ascii")
    ends = (np.cumsum(lines) * kt.PKEY_LINE_BYTES).tolist()
    texts = [text[a:b] for a, b in zip([0] + ends[:-1], ends)]
    return [t or _ALL_ZERO for t in texts] if nonzero else texts


_EVENT_TEXT = "%7d %s  %s %5d 0x%08x  %s%s\n"
_EVENT_JSON = '{"type":"event","frame":%d,"ts":%r,%s,"block":%d,"bitmap":%d,"changes":[%s],"unconfirmed":%s}\n'

_ASCII_SAMPLE = "".join(map(chr, range(32, 127))) + "\n"


def _write_ascii(out, data: np.ndarray) -> None:
    """ASCII bytes to a text stream: straight to the binary stream under sys.stdout when its
    text layer would write them unchanged (no decode here and encode there of megabytes), else
    as text (a UTF-16 stdout, newlines translated to CRLF, a StringIO or any other stream)."""
    binary = getattr(out, "buffer", None)
    if binary is not None and out is sys.stdout and _writes_ascii_as_is(out):
        out.flush()  # what was written as text comes first
        binary.write(data)
    else:
        out.write(data.tobytes().decode("ascii"))


def _writes_ascii_as_is(out) -> bool:
    try:
        as_is = _ASCII_SAMPLE.encode(out.encoding) == _ASCII_SAMPLE.encode("ascii")
    except (LookupError, TypeError, UnicodeError):
        return False
    return as_is and os.linesep == "\n"  # stdout translates "\n" to os.linesep


def _write_events(events: RecordList, out, lines, before=None) -> None:
    """Every spooled event through ``lines(chunk, buffer)`` (an event_lines.format_chunk):
    chunks formatted by two threads (the kernels release the GIL), written in order by this one:
    with a million events, formatting is most of ``madpipe snoop``'s time. Buffers are reused:
    their pages are mapped once, not per chunk. ``before()``, when given, writes what comes
    before the events (the port tables) while the first FORMAT_AHEAD chunks are formatted."""
    free = [np.empty(0, np.uint8) for _ in range(FORMAT_AHEAD + 1)]
    ahead: deque = deque()

    def write_oldest() -> None:
        nonlocal before
        if before is not None:
            before()
            before = None
        buf, used = ahead.popleft().result()
        _write_ascii(out, buf.view(np.uint8)[:used])
        free.append(buf)

    with Workers(FORMAT_THREADS, "madpipe-format") as pool:
        for records in events.spool:
            for start in range(0, len(records), el.FORMAT_RECORDS):
                if len(ahead) == FORMAT_AHEAD:
                    write_oldest()
                ahead.append(pool.submit(lines, records[start:start + el.FORMAT_RECORDS], free.pop()))
        while ahead:
            write_oldest()
    if before is not None:  # no events after all
        before()


#: Threads formatting event lines (_write_events).
FORMAT_THREADS = 2
#: Chunks of event lines formatted ahead of the one being written: two a thread, so that the
#: threads have work while the port tables are written (1025 tables: ~9 ms of Python).
FORMAT_AHEAD = 2 * FORMAT_THREADS


def _events_text(events: RecordList, t0_ns: int, out, width: int = PORT_COLUMN, titles: list[str] | None = None,
                 before=None) -> None:
    """The event lines (_EVENT_TEXT), the ports by ``titles`` (by slot; their labels when None);
    times are text_kernels.relative_time_text's."""
    titles = [pid.label() for pid in events.ports] if titles is None else titles
    ports = el.Ports([f"{title:<{width}}" for title in titles] + [""])
    _write_events(events, out, lambda chunk, buf: el.format_chunk(
        chunk, buf, ports, lambda chunk: el.relative_times(chunk, t0_ns), kt.event_lines,
        48 + kt.UNCONFIRMED_LF_BYTES), before)


def _events_json(events: RecordList, out, before=None) -> None:
    """The events as JSON Lines (_EVENT_JSON); the times are Python's float reprs, as json writes."""
    ports = el.Ports([el.port_json(pid) for pid in events.ports] + [""])
    _write_events(events, out, lambda chunk, buf: el.json_chunk(chunk, buf, ports), before)
