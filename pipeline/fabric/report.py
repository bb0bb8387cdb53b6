"""A capture as pictures: ``madpipe report CAPTURE -w report.html``.

Three figures, drawn with matplotlib's Agg canvas (no display, no pyplot state) and written into
one self-contained HTML page as base64 PNGs, each followed by the numbers it was drawn from:

1. the membership matrix: every port the SM programmed (rows) against every partition found in
   any table (columns), each cell full, limited or absent, from the tables ``madpipe snoop``
   leaves (:func:`membership_matrix`);
2. the P_Key change events in time, one row per port, each marked by what it did to the table
   (entries added, removed, membership changed, P_Key changed);
3. MADs per management class, method and attribute over time (the most frequent ones, the rest
   as "other").

:func:`report_data` computes everything the figures show (tested on its own); :func:`render`
draws it. matplotlib is an optional dependency (``pip install 'madpipe[report]'``).
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from madpipe.codecs import mad
from madpipe.codecs.errors import require
from madpipe.codecs.frame import attr_name
from madpipe.pipeline.fabric import diff
from madpipe.pipeline.fabric.model import FabricSnoop, PortId, PortState
from madpipe.pipeline.fabric.snoop import snoop_capture

REPORT_EXTRA = "report"  # pip install 'madpipe[report]'
ABSENT, LIMITED, FULL = 0, 1, 2
CELL_TEXT = {ABSENT: "", LIMITED: "limited", FULL: "full"}
COLORS = {ABSENT: "#eeeeee", LIMITED: "#f0a030", FULL: "#2060b0"}  # also readable as grey levels
EVENT_KINDS = ("added", "removed", "membership", "changed")
EVENT_STYLE = {"added": ("#208040", "^"), "removed": ("#c03020", "v"), "membership": ("#f0a030", "D"),
               "changed": ("#7040a0", "s")}
EVENT_LABEL = {"added": "entries added", "removed": "entries removed", "membership": "membership changed",
               "changed": "P_Key changed"}
EVENT_OFFSET = {"added": -0.24, "removed": -0.08, "membership": 0.08, "changed": 0.24}  # within a port's row
TOP_MADS = 8  # series in the MAD-count figure; the rest are summed as "other"
MAX_BINS = 60


@dataclass
class Matrix:
    """``cells[i, j]``: port ``ports[i]``'s membership of partition ``partitions[j]`` (ABSENT,
    LIMITED or FULL; a partition held both ways counts as FULL, as the IBA rules do)."""

    ports: list[PortId]
    labels: list[str]
    partitions: list[int]  # P_Key low 15 bits, ascending
    cells: np.ndarray  # int8[len(ports), len(partitions)]

    def cell(self, label: str, partition: int) -> int:
        return int(self.cells[self.labels.index(label), self.partitions.index(partition)])


@dataclass
class EventPoint:
    frame: int
    t: float  # seconds since the capture's first frame
    row: int  # index into the matrix's ports
    kinds: dict[str, int]  # kind of change (EVENT_KINDS) -> entries, see event_kinds
    changes: list[tuple[int, int, int]]
    unconfirmed: bool


@dataclass
class MadCounts:
    """MADs per (class, method, attribute) name in time bins of ``width`` seconds from ``t0``."""

    t0: float
    width: float
    edges: np.ndarray  # seconds since t0, len(bins) + 1
    series: dict[str, np.ndarray]  # "SubnMgmtDR Get NodeInfo" -> int64[bins]; most first, "other" last
    totals: Counter  # every (class, method, attribute) name -> count


@dataclass
class ReportData:
    path: str
    rule: str
    matrix: Matrix
    events: list[EventPoint]
    mads: MadCounts
    snoop: FabricSnoop
    guids: dict = field(default_factory=dict)


def membership_matrix(ports: dict[PortId, PortState], guids: dict | None = None) -> Matrix:
    """The ports x partitions matrix of a snoop result's tables."""
    order = sorted(ports, key=diff.port_order)
    held = [diff.partitions(ports[pid].table) for pid in order]
    parts = sorted(set().union(*held)) if held else []
    cells = np.zeros((len(order), len(parts)), np.int8)
    col = {p: j for j, p in enumerate(parts)}
    for i, table in enumerate(held):
        for part, pkey in table.items():
            cells[i, col[part]] = FULL if pkey & diff.FULL_MEMBER else LIMITED
    labels = []
    for pid in order:
        guid = (guids or {}).get(pid)
        labels.append(ports[pid].title() + (f" guid 0x{guid:016x}" if guid is not None else ""))
    return Matrix(order, labels, parts, cells)


def event_kinds(changes) -> dict[str, int]:
    """How many entries of an event's changes (index, old, new) are of each kind, in EVENT_KINDS order."""
    count = Counter(diff.entry_kind(old, new) for _, old, new in changes)
    return {k: count[k] for k in EVENT_KINDS if count[k]}


def mad_counts(path: str | os.PathLike, top: int = TOP_MADS, max_bins: int = MAX_BINS) -> MadCounts:
    """Count the capture's MADs by (class, method, attribute) name over time (one pass, numpy)."""
    from madpipe.pipeline.ingest.reader import Ingest

    ts, keys = [], []
    first = None  # the earliest frame's time: the report's time zero
    for batch in Ingest(path):
        if len(batch):
            low = int(batch.ts_ns.min())
            first = low if first is None else min(first, low)
        mads, rows = batch.mads()
        if not len(mads):
            continue
        ts.append(batch.ts_ns[rows])
        # class, method, attribute id in one integer per MAD
        keys.append(mads[:, 1].astype(np.int64) << 24 | mads[:, 3].astype(np.int64) << 16
                    | mads[:, 16].astype(np.int64) << 8 | mads[:, 17])
    ts_ns = np.concatenate(ts) if ts else np.zeros(0, np.int64)
    key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
    distinct, which = np.unique(key, return_inverse=True)
    names = [mad_name(int(k)) for k in distinct]
    totals = Counter()
    count = np.bincount(which, minlength=len(distinct))
    for name, n in zip(names, count.tolist()):
        totals[name] += n
    first = first or 0
    t0 = first / 1e9
    t = (ts_ns - first) / 1e9
    span = float(t.max()) if len(t) else 0.0
    bins = max(1, min(max_bins, len(t)))
    width = span / bins if span > 0 else 1.0
    edges = np.arange(bins + 1) * width
    slot = np.minimum((t / width).astype(np.int64), bins - 1) if len(t) else np.zeros(0, np.int64)
    order = [name for name, _ in totals.most_common()]
    shown = order if len(order) <= top + 1 else order[:top]  # an "other" of one series is that series
    series = {}
    which = which.ravel()
    for name in shown:
        mine = np.isin(which, [i for i, n in enumerate(names) if n == name])
        series[name] = np.bincount(slot[mine], minlength=bins)
    rest = ~np.isin(which, [i for i, n in enumerate(names) if n in shown])
    if rest.any():
        series["other"] = np.bincount(slot[rest], minlength=bins)
    return MadCounts(t0, width, edges, series, totals)


def mad_name(key: int) -> str:
    """``class method attribute`` for a key of mad_counts: ``SubnMgmtDR GetResp PKeyTable``."""
    cls, method, attr = key >> 24 & 0xFF, key >> 16 & 0xFF, key & 0xFFFF
    return f"{mad.mgmt_class_name(cls)} {mad.method_name(method)} {attr_name(cls, attr)}"


def report_data(path: str | os.PathLike, rule: str = "set") -> ReportData:
    """Everything the report shows, from the capture: see the module docstring."""
    result = snoop_capture(path, rule)
    by_path, by_lid = diff.node_infos(path)
    guids = {pid: diff.port_guid(pid, by_path, by_lid) for pid in result.ports}
    matrix = membership_matrix(result.ports, guids)
    counts = mad_counts(path)
    row = {pid: i for i, pid in enumerate(matrix.ports)}
    events = [EventPoint(e.frame, e.ts - counts.t0, row[e.port], event_kinds(e.changes), e.changes, e.unconfirmed)
              for e in result.events if e.port in row]
    return ReportData(os.fspath(path), rule, matrix, events, counts, result, guids)


# -- drawing ---------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    require("matplotlib", REPORT_EXTRA)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def draw_matrix(m: Matrix) -> bytes:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    rows, cols = max(len(m.ports), 1), max(len(m.partitions), 1)
    fig = _figure(min(3.5 + 0.9 * cols, 24), min(1.6 + 0.38 * rows, 40))
    ax = fig.add_subplot()
    cmap = ListedColormap([COLORS[ABSENT], COLORS[LIMITED], COLORS[FULL]])
    cells = m.cells if m.cells.size else np.zeros((1, 1), np.int8)
    ax.imshow(cells, cmap=cmap, norm=BoundaryNorm([-0.5, 0.5, 1.5, 2.5], 3), aspect="auto",
              interpolation="nearest")
    ax.set_xticks(range(len(m.partitions)), [f"0x{p:04x}" for p in m.partitions])
    ax.set_yticks(range(len(m.labels)), m.labels, fontsize=8)
    ax.set_xticks(np.arange(-0.5, cols), minor=True)
    ax.set_yticks(np.arange(-0.5, rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.xaxis.tick_top()
    ax.set_xlabel("partition (P_Key without the membership bit)")
    ax.xaxis.set_label_position("top")
    for (i, j), v in np.ndenumerate(m.cells):
        if v != ABSENT:
            ax.text(j, i, CELL_TEXT[v], ha="center", va="center", fontsize=8,
                    color="white" if v == FULL else "black")
    ax.legend(handles=[Patch(color=COLORS[v], label=name) for v, name in
                       ((FULL, "full member"), (LIMITED, "limited member"), (ABSENT, "absent"))],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if not m.ports:
        ax.text(0, 0, "no P_Key table was set in this capture", ha="center", va="center")
    ax.set_title("P_Key membership per port, as the SM left the tables", pad=30)
    return _png(fig)


def draw_events(data: ReportData) -> bytes:
    from matplotlib.lines import Line2D

    m = data.matrix
    rows = max(len(m.ports), 1)
    fig = _figure(11, min(1.8 + 0.45 * rows, 40))
    ax = fig.add_subplot()
    # One marker per kind of change an event made, side by side on the port's row.
    for kind in EVENT_KINDS:
        color, marker = EVENT_STYLE[kind]
        for unconfirmed in (False, True):
            pts = [(e.t, e.row + EVENT_OFFSET[kind], n) for e in data.events if e.unconfirmed == unconfirmed
                   for k, n in e.kinds.items() if k == kind]
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, s=60, zorder=3,
                       facecolors="none" if unconfirmed else color, edgecolors=color, linewidths=1.5)
            for t, y, n in pts:
                ax.annotate(str(n), (t, y), textcoords="offset points", xytext=(6, -3), fontsize=7)
    ax.set_yticks(range(len(m.labels)), m.labels, fontsize=8)
    for y in np.arange(0.5, rows - 1):
        ax.axhline(y, color="#dddddd", linewidth=0.8)
    ax.set_ylim(rows - 0.5, -0.5)
    span = data.mads.edges[-1] if len(data.mads.edges) else 1.0
    ax.set_xlim(-0.02 * span, span * 1.06)
    ax.set_xlabel("seconds since the first frame")
    ax.grid(axis="x", color="#eeeeee")
    handles = [Line2D([], [], linestyle="", marker=EVENT_STYLE[k][1], color=EVENT_STYLE[k][0], markersize=8,
                      label=EVENT_LABEL[k]) for k in EVENT_KINDS]
    handles.append(Line2D([], [], linestyle="", marker="o", markerfacecolor="none", color="#555555",
                          markersize=8, label="hollow: unconfirmed (no answer)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if not data.events:
        ax.text(0.5, 0.5, "no P_Key table changed", transform=ax.transAxes, ha="center")
    ax.set_title("P_Key change events per port (number: entries of that kind)")
    return _png(fig)


def draw_mads(c: MadCounts) -> bytes:
    fig = _figure(11, 5.5)
    ax = fig.add_subplot()
    names = list(c.series)
    if names:
        bins = len(c.edges) - 1
        bottom = np.zeros(bins, np.int64)
        for n in names:
            ax.bar(c.edges[:-1], c.series[n], width=c.width, bottom=bottom, align="edge",
                   label=f"{n} ({int(c.series[n].sum())})", linewidth=0)
            bottom += c.series[n]
        ax.set_xlim(0, c.edges[-1])
        ax.set_ylabel(f"MADs per {_seconds(c.width)} bin" if bins > 1 else "MADs")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8,
                  title="class method attribute (total)", title_fontsize=8)
    else:
        ax.text(0.5, 0.5, "no MADs in this capture", transform=ax.transAxes, ha="center")
    ax.set_xlabel("seconds since the first frame")
    ax.set_title("MADs per management class, method and attribute over time")
    return _png(fig)


def _seconds(width: float) -> str:
    if width >= 1:
        return f"{width:.3g} s"
    if width >= 1e-3:
        return f"{width * 1e3:.3g} ms"
    return f"{width * 1e6:.3g} µs"


# -- the page --------------------------------------------------------------------------------------

def render(data: ReportData) -> dict[str, bytes]:
    """The three figures as PNG bytes: ``matrix``, ``events``, ``mads``."""
    return {"matrix": draw_matrix(data.matrix), "events": draw_events(data), "mads": draw_mads(data.mads)}


def html_page(data: ReportData, pngs: dict[str, bytes]) -> str:
    e = html.escape
    c = data.snoop.counts
    m = data.matrix
    title = f"madpipe report: {os.path.basename(data.path)}"
    out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
           "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
           "td.full{background:#2060b0;color:#fff}td.limited{background:#f0a030}img{max-width:100%}"
           "code{font-size:13px}</style></head><body>",
           f"<h1>{e(title)}</h1>",
           f"<p><code>{e(data.path)}</code>: {c['frames']} frames, {c['mads']} MADs; {len(m.ports)} ports "
           f"with a P_Key table, {len(m.partitions)} partitions; {len(data.events)} change events "
           f"(rule <code>{e(data.rule)}</code>).</p>"]
    if data.snoop.file_error:
        out.append(f"<p><strong>The capture ends early:</strong> {e(data.snoop.file_error)}</p>")
    out += ["<h2 id=\"matrix\">P_Key membership</h2>", _img(pngs["matrix"], "ports by partitions membership matrix"),
            "<table id=\"matrix-table\"><tr><th>port</th>"
            + "".join(f"<th>0x{p:04x}</th>" for p in m.partitions) + "</tr>"]
    for i, label in enumerate(m.labels):
        cells = "".join(f"<td class=\"{CELL_TEXT[v] or 'absent'}\">{CELL_TEXT[v]}</td>" for v in m.cells[i].tolist())
        out.append(f"<tr><th>{e(label)}</th>{cells}</tr>")
    out += ["</table>", "<h2 id=\"events\">P_Key change events</h2>", _img(pngs["events"], "P_Key change events"),
            "<table id=\"events-table\"><tr><th>frame</th><th>seconds</th><th>port</th><th>kind</th>"
            "<th>changes [index] old -&gt; new</th></tr>"]
    for ev in data.events:
        changes = " ".join(f"[{i}] 0x{old:04x}-&gt;0x{new:04x}" for i, old, new in ev.changes)
        flag = " (unconfirmed)" if ev.unconfirmed else ""
        kinds = ", ".join(f"{n} {diff.KIND_TEXT[k]}" for k, n in ev.kinds.items())
        out.append(f"<tr><td>{ev.frame}</td><td>{ev.t:.6f}</td><td>{e(m.labels[ev.row])}</td>"
                   f"<td>{kinds}{flag}</td><td>{changes}</td></tr>")
    out += ["</table>", "<h2 id=\"mads\">MADs over time</h2>", _img(pngs["mads"], "MADs over time"),
            "<table id=\"mads-table\"><tr><th>class method attribute</th><th>MADs</th></tr>"]
    for name, n in data.mads.totals.most_common():
        out.append(f"<tr><td>{e(name)}</td><td>{n}</td></tr>")
    out.append("</table>\n</body></html>\n")
    return "\n".join(out)


def _img(png: bytes, alt: str) -> str:
    return f"<p><img alt=\"{html.escape(alt)}\" src=\"data:image/png;base64,{base64.b64encode(png).decode()}\"></p>"


def write_report(path: str | os.PathLike, out: str | os.PathLike, rule: str = "set",
                 png_dir: str | os.PathLike | None = None) -> ReportData:
    """Compute, draw and write the HTML report of ``path`` to ``out``; PNGs also to ``png_dir``."""
    require("matplotlib", REPORT_EXTRA)
    data = report_data(path, rule)
    pngs = render(data)
    page = html_page(data, pngs)
    with open(out, "w", encoding="utf-8") as f:
        f.write(page)
    if png_dir is not None:
        os.makedirs(png_dir, exist_ok=True)
        for name, png in pngs.items():
            with open(os.path.join(png_dir, f"{name}.png"), "wb") as f:
                f.write(png)
    return data
