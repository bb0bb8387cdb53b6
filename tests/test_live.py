"""Live input: `-r -` (a pipe, pcap and pcapng) and `--follow` (a growing file) for decode and snoop,
`-` for diff; events reach stdout while the pipe is still open, within 100 ms of their frame; a
run stopped by SIGINT/SIGTERM prints its tables and exits 0. Each test runs the real command in a
process of its own, fed through a real pipe.
"""
from __future__ import annotations

import array
import fcntl
import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest
from test_capture import pcapng_bytes

from madpipe.codecs.capture import PCAP_HEADER_SIZE, CaptureReader
from madpipe.codecs.frame import decode_frame

PCAPS = Path(__file__).resolve().parent.parent / "pcaps"
CAPTURE = PCAPS / "opensm_partitions.pcap"
MADPIPE = [sys.executable, "-m", "madpipe.pipeline.cli.main"]
LATENCY_BOUND = 0.100  # seconds from a frame's write to the pipe to its line on stdout (the issue's)


def records(path: Path) -> list[bytes]:
    """The capture's records (16-byte header and data), as written, in order."""
    raw = path.read_bytes()
    out, pos = [], PCAP_HEADER_SIZE
    while pos < len(raw):
        incl = int.from_bytes(raw[pos + 8:pos + 12], "little")
        out.append(raw[pos:pos + 16 + incl])
        pos += 16 + incl
    return out


def _ahead_of_other_work() -> None:
    """The measured process runs ahead of other work on the machine where it may (root): the bound
    is on madpipe's latency, not on a scheduler's queue on a shared, loaded machine."""
    try:
        os.nice(-10)
    except OSError:
        pass


class Watched:
    """A madpipe process whose stdin we write and whose stdout lines are timed as they come."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([*MADPIPE, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0, preexec_fn=_ahead_of_other_work)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append((time.monotonic(), line.decode()))

    def write(self, data: bytes) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        return time.monotonic()

    def drained(self, timeout: float = 60) -> None:
        """Wait until the process has read everything written so far (its start-up is over)."""
        end = time.monotonic() + timeout
        unread = array.array("i", [1])
        while unread[0]:
            assert time.monotonic() < end and self.proc.poll() is None, self.stderr()
            fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, unread)  # Linux: either end of a pipe
            time.sleep(0.01)
        time.sleep(0.2)  # and has done with it

    def wait_for(self, pattern: str, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while not any(re.search(pattern, line) for _, line in self.lines):
            assert time.monotonic() < end and self.proc.poll() is None, (pattern, self.lines, self.stderr())
            time.sleep(0.005)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        self.reader.join(timeout)
        return rc, "".join(line for _, line in self.lines), self.stderr()

    def stderr(self) -> str:
        return self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""


def run(*args: str, stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([*MADPIPE, *args], input=stdin, capture_output=True, timeout=120, check=False)


EVENT = re.compile(r"^ +(\d+) +(\d+\.\d{6})  .* +(\d+) (0x[0-9a-f]{8})  (.*)$")


def tables_and_events(text: str) -> tuple[str, set[str]]:
    """snoop's text: the port tables (from the first "Port " line to the summary) and the event lines."""
    lines = text.splitlines()
    # an event by its frame, time, block, bitmap and changes (a live run names a port as it is met)
    events = {m.groups() for m in map(EVENT.match, lines) if m}
    first = next(i for i, ln in enumerate(lines) if ln.startswith("Port "))
    tables = [ln for ln in lines[first:] if not re.match(r"^ +\d+ +\d+\.\d{6} ", ln)
              and not ln.startswith(("P_Key change events", "  frame"))]
    return "\n".join(ln for ln in tables if ln), events


# -- the same answers as from the file --------------------------------------------------------

def test_snoop_of_a_pipe_is_snoop_of_the_file():
    from_file = run("snoop", "-r", str(CAPTURE), stdin=b"")
    piped = run("snoop", "-r", "-", stdin=CAPTURE.read_bytes())
    assert piped.returncode == from_file.returncode == 0, piped.stderr
    assert tables_and_events(piped.stdout.decode()) == tables_and_events(from_file.stdout.decode())
    events = [ln for ln in piped.stdout.decode().splitlines() if re.match(r"^ +\d+ +\d+\.\d{6} ", ln)]
    assert len(events) == 8 and piped.stdout.decode().startswith("P_Key change events:")  # events first
    # Here every port is named when first met as the whole file names it, with its node's name.
    port = re.compile(r"^ +\d+ +\d+\.\d{6}  (.*?) +\d+ 0x")
    assert [port.match(ln).group(1) for ln in events] == [
        port.match(ln).group(1) for ln in from_file.stdout.decode().splitlines() if port.match(ln)]
    assert port.match(events[0]).group(1) == 'lid 0x0001 path (local) port 0 "Hca1"'


def test_pcapng_through_a_pipe_decodes_and_snoops_as_the_pcap():
    pkts = [(p.ts_ns, p.data) for p in CaptureReader(CAPTURE)]
    ng = pcapng_bytes(pkts, tsresol=9)
    decoded = run("decode", "-r", "-", "-T", "json", stdin=ng)
    from_file = run("decode", "-r", str(CAPTURE), "-T", "json", stdin=b"")
    assert decoded.returncode == 0 and decoded.stdout == from_file.stdout
    snooped = run("snoop", "-r", "-", stdin=ng)
    assert tables_and_events(snooped.stdout.decode()) == tables_and_events(
        run("snoop", "-r", str(CAPTURE), stdin=b"").stdout.decode())


def test_diff_reads_one_side_from_standard_input():
    from_files = run("diff", str(CAPTURE), str(PCAPS / "opensm_partitions_changed.pcap"), stdin=b"")
    piped = run("diff", str(CAPTURE), "-", stdin=(PCAPS / "opensm_partitions_changed.pcap").read_bytes())
    assert piped.returncode == from_files.returncode == 1
    assert piped.stdout.decode().replace("b: -:", "b: X:") == from_files.stdout.decode().replace(
        f"b: {PCAPS / 'opensm_partitions_changed.pcap'}:", "b: X:")


def test_bad_input_on_a_pipe_is_one_line():
    garbage = run("snoop", "-r", "-", stdin=b"this is not a capture at all")
    assert garbage.returncode == 2
    assert garbage.stderr.decode().strip() == "madpipe snoop: -: bad magic 0x74686973 at offset 0: not a pcap or pcapng file"
    cut = run("decode", "-r", "-", stdin=CAPTURE.read_bytes()[:-10])
    assert cut.returncode == 1 and len(cut.stdout.decode().splitlines()) == 247
    assert cut.stderr.decode().strip().splitlines()[-1].startswith("madpipe decode: -: frame 248, offset ")


# -- as it happens ----------------------------------------------------------------------------------

def _answers() -> dict[int, int]:
    """Each SubnSet(P_KeyTable) frame -> the frame of its GetResp (same TID, after it): what decides it."""
    recs = [decode_frame(p.data, p.frame) for p in CaptureReader(CAPTURE)]
    sets = {r["mad"]["tid"]: r["frame"] for r in recs if r["mad"]["method"] == 0x02 and r["mad"]["attr_id"] == 0x16}
    return {sets[r["mad"]["tid"]]: r["frame"] for r in recs
            if r["mad"]["method"] == 0x81 and r["mad"]["attr_id"] == 0x16 and r["mad"]["tid"] in sets}


@pytest.mark.parametrize("gap", [0.03])
def test_an_event_reaches_stdout_within_100_ms_of_its_frame(gap):
    recs = records(CAPTURE)
    header = CAPTURE.read_bytes()[:PCAP_HEADER_SIZE]
    w = Watched("snoop", "-r", "-")
    w.write(header + b"".join(recs[:120]))  # discovery: no event in it
    w.drained()
    written = {}
    for frame in range(121, len(recs) + 1):
        time.sleep(gap)
        written[frame] = w.write(recs[frame - 1])
    time.sleep(0.3)
    before_end = len(w.lines)  # what was printed while the pipe was still open
    rc, out, err = w.finish()
    assert rc == 0, err
    answers = _answers()
    latencies = {}
    for t, line in w.lines[:before_end]:
        m = re.match(r"^ +(\d+) +\d+\.\d{6} ", line)
        if m:
            latencies[int(m.group(1))] = t - written[answers[int(m.group(1))]]
    assert sorted(latencies) == sorted(answers)  # every event, each before the input ended
    print(f"event latency (s): max {max(latencies.values()):.4f}, "
          f"mean {sum(latencies.values()) / len(latencies):.4f}")
    assert all(0 <= v < LATENCY_BOUND for v in latencies.values()), latencies
    assert "Port lid 0x0001" in out, out
    assert out.strip().splitlines()[-1].startswith("248 frames, 248 MADs")


def test_decode_lines_reach_stdout_within_100_ms():
    recs = records(CAPTURE)
    w = Watched("decode", "-r", "-")
    w.write(CAPTURE.read_bytes()[:PCAP_HEADER_SIZE] + recs[0])
    w.wait_for(r"^ +1 ")  # start-up done
    written = {}
    for frame in range(2, 30):
        time.sleep(0.02)
        written[frame] = w.write(recs[frame - 1])
    w.wait_for(r"^ +29 ")
    got = {int(line.split()[0]): t for t, line in w.lines}
    rc, _, err = w.finish()
    assert rc == 0, err
    worst = max(got[f] - written[f] for f in written)
    assert worst < LATENCY_BOUND, worst


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_prints_what_it_knows_and_exits_0(sig):
    recs = records(CAPTURE)
    w = Watched("snoop", "-r", "-")
    w.write(CAPTURE.read_bytes()[:PCAP_HEADER_SIZE] + b"".join(recs[:140]) + recs[140][:20])  # a record cut
    w.wait_for(r"^ +135 ")  # the 2nd event; the Sets of frames 137 and 139 wait for answers never written
    w.proc.send_signal(sig)
    rc, out, err = w.finish()
    assert rc == 0, err
    assert "madpipe snoop: stopped; printed what - held until then" in err
    assert out.count("\nPort ") == 4 and out.strip().splitlines()[-1].startswith("140 frames, 140 MADs")
    assert out.count("(unconfirmed)") == 2  # the Sets of frames 137 and 139: decided at the stop


def test_follow_reads_a_growing_file(tmp_path):
    recs = records(CAPTURE)
    path = tmp_path / "growing.pcap"
    path.write_bytes(CAPTURE.read_bytes()[:PCAP_HEADER_SIZE] + b"".join(recs[:100]))
    w = Watched("snoop", "-r", str(path), "--follow")
    with open(path, "ab") as f:
        for rec in recs[100:]:
            f.write(rec[:7])  # a record in two writes: the reader must wait for the rest
            f.flush()
            f.write(rec[7:])
            f.flush()
    w.wait_for(r"^ +150 ")  # the last event: everything was read, and the run goes on
    time.sleep(0.2)
    assert w.proc.poll() is None  # still following
    w.proc.send_signal(signal.SIGTERM)
    rc, out, err = w.finish()
    assert rc == 0, err
    assert tables_and_events(out) == tables_and_events(run("snoop", "-r", str(CAPTURE), stdin=b"").stdout.decode())


def test_stop_after_ends_a_quiet_follow(tmp_path):
    path = tmp_path / "done.pcap"
    path.write_bytes(CAPTURE.read_bytes())
    start = time.monotonic()
    done = run("decode", "-r", str(path), "--follow", "--stop-after", "0.5", "-c", "5", stdin=b"")
    assert done.returncode == 0 and len(done.stdout.decode().splitlines()) == 5
    assert time.monotonic() - start < 30
    bad = run("decode", "-r", "-", "--follow", stdin=b"")
    assert bad.returncode == 2 and "--follow follows a file" in bad.stderr.decode()
