"""`madpipe report`: the data behind each figure, and the HTML page (parsed, images decoded)."""
import base64
import struct
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from madpipe.pipeline.cli.main import main  # noqa: E402
from madpipe.pipeline.fabric import report  # noqa: E402
from madpipe.pipeline.fabric.snoop import snoop_capture

PCAPS = Path(__file__).parent.parent / "pcaps"
CHANGED = PCAPS / "opensm_partitions_changed.pcap"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data():
    return report.report_data(CHANGED)


def test_matrix_cells_are_the_tables(data):
    m = data.matrix
    ports = snoop_capture(CHANGED).ports
    assert sorted(m.ports) == sorted(ports) and len(m.ports) == 8
    assert m.partitions == [0x0001, 0x0002, 0x0003, 0x7FFF]
    assert m.cells.shape == (8, 4)
    for i, pid in enumerate(m.ports):
        held = {}
        for p in ports[pid].table.tolist():
            if p & 0x7FFF:
                held[p & 0x7FFF] = held.get(p & 0x7FFF, 0) | p
        for j, part in enumerate(m.partitions):
            want = report.ABSENT if part not in held else report.FULL if held[part] & 0x8000 else report.LIMITED
            assert m.cells[i, j] == want, (pid, part)


def test_matrix_says_what_partitions_b_says(data):
    """After the second run (partitions-b.conf): storage 0x8001 Hca1-3 full, Hca4 limited;
    compute 0x8002 Hca1 full, Hca4 limited; backup 0x8003 Hca2 full; Default everywhere full."""
    m = data.matrix
    F, L, A = report.FULL, report.LIMITED, report.ABSENT
    want = {0x100001: [F, F, A, F], 0x100004: [F, A, F, F], 0x100007: [F, A, A, F], 0x10000A: [L, L, A, F]}
    for guid, row in want.items():
        label = next(label for label in m.labels if label.endswith(f" guid 0x{guid:016x}"))
        assert [m.cell(label, p) for p in m.partitions] == row, label


def test_events_and_mad_counts(data):
    assert len(data.events) == 14
    assert [e.frame for e in data.events] == sorted(e.frame for e in data.events)
    by_frame = {e.frame: e for e in data.events}
    assert by_frame[386].kinds == {"removed": 1, "membership": 1}
    assert by_frame[379].kinds == {"added": 1} and by_frame[133].kinds == {"added": 2}
    assert data.matrix.labels[by_frame[386].row].startswith("lid 0x0005 path 1,2 port 0")
    assert all(0 <= e.t <= data.mads.edges[-1] for e in data.events)
    c = data.mads
    assert sum(c.totals.values()) == 437
    assert sum(int(s.sum()) for s in c.series.values()) == 437
    assert list(c.series)[-1] == "other" and len(c.series) == report.TOP_MADS + 1
    assert c.totals["SubnMgmtDR Set PKeyTable"] == 14 and c.totals["SubnMgmt Trap Notice"] == 1
    assert len(c.edges) == report.MAX_BINS + 1


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.title = [], {}, ""
        self._table = self._cell = self._row = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, text):
        if self._cell is not None:
            self._cell += text
        if self._in_title:
            self.title += text


@pytest.mark.slow
def test_html_opens_with_three_pngs_and_the_matrix(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(CHANGED), "-w", str(out), "--png-dir", str(tmp_path / "png")]) == 0
    assert "8 ports, 4 partitions, 14 change events, 437 MADs" in capsys.readouterr().err
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    page.close()
    assert page.title == "madpipe report: opensm_partitions_changed.pcap"
    assert len(page.images) == 3
    for img in page.images:
        head, _, body = img["src"].partition(",")
        assert head == "data:image/png;base64"
        png = base64.b64decode(body, validate=True)
        assert png[:8] == PNG_SIGNATURE
        width, height = struct.unpack(">II", png[16:24])  # IHDR
        assert width > 300 and height > 150
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["events.png", "mads.png", "matrix.png"]
    table = page.tables["matrix-table"]
    assert table[0] == ["port", "0x0001", "0x0002", "0x0003", "0x7fff"]
    rows = {r[0]: r[1:] for r in table[1:]}
    assert rows["lid 0x0005 path 1,2 port 0 \"Hca3\" guid 0x0000000000100007"] == ["full", "", "", "full"]
    assert rows["lid 0x0006 path 1,3,2 port 0 \"Hca4\" guid 0x000000000010000a"] == ["limited", "limited", "", "full"]
    assert len(page.tables["events-table"]) == 1 + 14
    assert page.tables["mads-table"][1] == ["SubnMgmtDR GetResp PortInfo", "112"]


def test_capture_without_pkey_tables(tmp_path):
    out = tmp_path / "r.html"
    data = report.write_report(PCAPS / "infiniband_endace_erf_2008.pcap", out)
    assert not data.matrix.ports and not data.events and sum(data.mads.totals.values()) == 17
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    assert len(page.images) == 3 and page.tables["matrix-table"] == [["port"]]


def test_missing_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["report", str(CHANGED), "-w", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["madpipe report: matplotlib is not installed: pip install 'madpipe[report]' "
                   "(in a checkout: '.[report]')"]
    assert not (tmp_path / "r.html").exists()


def test_missing_capture(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.pcap"), "-w", str(tmp_path / "r.html")]) == 2
    assert "none.pcap: cannot open" in capsys.readouterr().err
