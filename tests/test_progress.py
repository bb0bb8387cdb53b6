"""The progress line for long single-capture work: drawn on a terminal, cleared before the end."""
import io

from madpipe.pipeline.bench import workload
from madpipe.pipeline.ingest import progress
from madpipe.pipeline.ingest.reader import Ingest


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_line_draws_and_clears():
    out = Terminal()
    bar = progress.ByteProgress("snoop", out, interval=0)
    bar.update("/x/big.pcap", 50, 100)
    assert out.getvalue() == "\rmadpipe snoop: big.pcap 50% of 100 B, " + out.getvalue().split(", ")[1]
    bar.update("/x/big.pcap", 100, 100)
    assert out.getvalue().endswith("\r") and bar.shown == 0


def test_only_on_a_terminal_with_results_elsewhere():
    assert progress.activate("snoop", stream=Terminal(), stdout=io.StringIO())
    progress.finish()
    assert not progress.activate("snoop", stream=Terminal(), stdout=Terminal())  # results on screen
    assert not progress.activate("snoop", stream=io.StringIO(), stdout=io.StringIO())
    progress.finish()


def test_ingest_reports_how_far_it_read(tmp_path):
    path = tmp_path / "big.pcap"
    mads, _, _ = workload.sm_mads(20_000, seed=3)
    workload.write_capture(path, workload.mad_frames(mads))  # ~6.4 MB: more than one 4 MiB chunk
    err = Terminal()
    assert progress.activate("snoop", stream=err, stdout=io.StringIO())
    progress._active.interval = 0
    try:
        frames = sum(len(b) for b in Ingest(path).raw())
    finally:
        progress.finish()
    assert frames == 20_000
    text = err.getvalue()
    assert "madpipe snoop: big.pcap 65% of 6.1 MB" in text  # 4 MiB of 6.1 MiB after the first read
    assert text.endswith("\r")  # cleared once the file was read


def test_library_use_prints_nothing(tmp_path, capsys):
    path = tmp_path / "w.pcap"
    mads, _, _ = workload.sm_mads(100, seed=3)
    workload.write_capture(path, workload.mad_frames(mads))
    assert sum(len(b) for b in Ingest(path)) == 100
    assert capsys.readouterr().err == ""
