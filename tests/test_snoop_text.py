"""What `madpipe snoop` prints for people (issue 18, item 10): the lines of each table that hold a
P_Key (--all: every line), event times from the capture's first frame as decode counts them, and
an event table whose columns stay aligned whatever the port labels."""
import re
from pathlib import Path

from madpipe.pipeline.cli.main import main

CHANGED = str(Path(__file__).parent.parent / "pcaps" / "opensm_partitions_changed.pcap")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def tables(out: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for block in out.split("\n\n"):
        head, _, rest = block.partition("\n")
        if head.startswith("Port "):
            found[head] = rest.splitlines()
    return found


def test_tables_show_their_lines_with_a_pkey_and_all_of_them_with_all(capsys):
    short, full = tables(run(capsys, "snoop", "-r", CHANGED)), tables(run(capsys, "snoop", "-r", CHANGED, "--all"))
    assert short.keys() == full.keys() and len(short) == 8
    for head, lines in full.items():
        assert len(lines) == 8  # 64 entries, 8 a line: smpquery pkeys' layout
        assert short[head] == [line for line in lines if set(line.split(":")[1].split()) != {"0x0000"}]
        assert short[head] and short[head][0].startswith("   0: 0xffff")


def test_event_times_count_from_the_first_frame_as_decode_does(capsys):
    decoded = {int(line.split()[0]): line.split()[1] for line in run(capsys, "decode", "-r", CHANGED).splitlines()}
    out = run(capsys, "snoop", "-r", CHANGED)
    events = out.split("P_Key change events:\n")[1].split("\n\n")[0].splitlines()[1:]
    assert len(events) == 14
    for line in events:
        frame, time = line.split()[:2]
        assert time == decoded[int(frame)], line
    assert events[0].split()[:2] == ["133", "0.004979"]


def test_event_columns_stay_aligned_past_long_port_labels(capsys):
    out = run(capsys, "snoop", "-r", CHANGED)
    header, *events = out.split("P_Key change events:\n")[1].split("\n\n")[0].splitlines()
    assert any("path (local)" in line for line in events)  # a label longer than the old 28 columns
    block_at = header.index("block") + len("block")  # right-aligned under its heading
    bitmap_at = header.index("bitmap") + len("bitmap")
    for line in events:
        assert re.fullmatch(r" *\d+", line[block_at - 5:block_at]), line
        assert re.fullmatch(r"0x[0-9a-f]{8}", line[bitmap_at - 10:bitmap_at]), line
