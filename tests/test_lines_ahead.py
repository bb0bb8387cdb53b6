"""fabric.lines_ahead: event JSON Lines formatted while the snoop runs are the bytes print_json
would have formatted itself; a port renamed after its first event, a budget reached, a second
pass, and lines still queued when printing starts all fall back to formatting at print time."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from test_fabric_stream import GETRESP, PKEY_TABLE, PORT_INFO, SET, Conversation, late_port_info, write_capture

from madpipe.pipeline.bench import workload
from madpipe.pipeline.fabric import event_lines
from madpipe.pipeline.fabric.lines_ahead import LinesAhead
from madpipe.pipeline.fabric.model import PortId
from madpipe.pipeline.fabric.output import print_json
from madpipe.pipeline.fabric.snoop import snoop_capture
from madpipe.pipeline.fabric.spool import EVENT_DTYPE


@pytest.fixture
def takes(monkeypatch):
    """Every LinesAhead.take, after its formatting has finished (so that none is cancelled): the
    events each one handed to the printer."""
    real = LinesAhead.take
    seen: list[int] = []

    def take_when_done(self, texts):
        for _, future in self.parts:
            future.result()
        futures, records = real(self, texts)
        seen.append(records)
        return futures, records

    monkeypatch.setattr(LinesAhead, "take", take_when_done)
    monkeypatch.setattr(event_lines, "FORMAT_RECORDS", 97)  # many parts
    return seen


def json_of(path, **kw) -> str:
    out = io.StringIO()
    print_json(snoop_capture(path, **kw), out)
    return out.getvalue()


def test_lines_formatted_ahead_are_what_print_json_formats(tmp_path, takes):
    mads, _, _ = workload.changing_sets(3000, 5)
    path = tmp_path / "changing.pcap"
    workload.write_capture(path, workload.mad_frames(mads, ports=7))
    want = json_of(path)
    events = want.count('"type":"event"')
    assert events > 2000
    assert json_of(path, format_ahead="json") == want
    assert takes == [events]  # every event formatted ahead
    # A budget of a few parts: those are written, the rest formatted at print time.
    assert json_of(path, format_ahead="json", spool_memory=300_000) == want
    assert 0 < takes[1] < events


def test_lines_ahead_are_dropped_when_a_port_text_changed():
    ahead = LinesAhead(1 << 30)
    events = np.zeros(300, EVENT_DTYPE)
    events["bitmap"] = 1
    ahead.add(events, lambda slot: PortId(4, None, 0))
    for _, future in ahead.parts:
        future.result()
    assert ahead.take([event_lines.port_json(PortId(4, (1,), 0))]) == ([], 0)  # a dr_path learned later
    ahead = LinesAhead(1 << 30)
    ahead.add(events, lambda slot: PortId(4, None, 0))
    for _, future in ahead.parts:
        future.result()
    futures, records = ahead.take([event_lines.port_json(PortId(4, None, 0))])
    assert records == 300 and len(futures) == 1


def test_a_port_reached_by_a_directed_route_after_its_first_event_is_formatted_again(tmp_path, takes):
    """LID 4 is the port behind path [1] (its PortInfo answer comes first): its first event is
    LID-routed, so its text had no dr_path then; the second, by the path, gives it one."""
    c = Conversation(0)
    keys = struct.pack(">3H", 0xFFFF, 0x8001, 0x8002).ljust(64, b"\0")
    frames = [c.smp(GETRESP, PORT_INFO, bytes(16) + b"\x00\x04" + bytes(46), 1, (True, (1,), None), answer=True),
              c.smp(SET, PKEY_TABLE, keys, 2, (False, 4, None)),
              c.smp(SET, PKEY_TABLE, keys[:2] + b"\x80\x09" + keys[4:], 3, (True, (1,), None))]
    path = write_capture(tmp_path / "renamed.pcap", frames)
    got = json_of(path, format_ahead="json", batch=1, pair_window=0)  # each Set applied as read
    assert got == json_of(path)
    assert takes == [0]  # formatted ahead, then dropped
    assert got.count('"lid":4,"dr_path":[1],"port":0,"block":0') == 2 and snoop_capture(path).passes == 1


@pytest.mark.parametrize("seed", range(6))
def test_conversations_print_the_same_json_with_lines_ahead(tmp_path, takes, seed):
    path = write_capture(tmp_path / "c.pcap", Conversation(seed).build(300))
    assert json_of(path, format_ahead="json", batch=16) == json_of(path, batch=16)


def test_a_second_pass_formats_its_own_lines(tmp_path, takes):
    path = late_port_info(tmp_path)
    result = snoop_capture(path, batch=2, format_ahead="json")
    assert result.passes == 2
    out = io.StringIO()
    print_json(result, out)
    assert out.getvalue() == json_of(path, batch=2)


def test_format_ahead_takes_json_only(tmp_path):
    path = late_port_info(tmp_path)
    with pytest.raises(ValueError, match="format_ahead"):
        snoop_capture(path, format_ahead="text")
