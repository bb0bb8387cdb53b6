"""decode -T csv|parquet, several captures at once (processes, Dask), and the progress line."""
import io
import json
import shutil
from pathlib import Path

import pytest

from madpipe.pipeline.cli import main as cli
from madpipe.pipeline.cli.main import main
from madpipe.pipeline.columns import many

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

from madpipe.pipeline.columns.frames import FRAME_COLUMNS, frames_dataframe, port_tables_dataframe  # noqa: E402

PCAPS = Path(__file__).parent.parent / "pcaps"
A = PCAPS / "opensm_partitions.pcap"
B = PCAPS / "opensm_partitions_changed.pcap"
REAL = PCAPS / "infiniband_endace_erf_2008.pcap"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def plain(series):
    return [None if pd.isna(v) else v for v in series.astype(object)]


def same_rows(got, want):
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    for name in want.columns:
        assert plain(got[name]) == plain(want[name]), name


def cut_short(tmp_path) -> Path:
    data = A.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:len(data) // 2])
    return path


# -- 1. decode -T csv|parquet -w OUT ---------------------------------------------------------------

@pytest.mark.parametrize("path", [REAL, A], ids=lambda p: p.name)
def test_decode_csv_and_parquet_rows_are_frames_dataframe(tmp_path, capsys, path):
    df = frames_dataframe(path)
    code, out, err = run(capsys, "decode", "-r", path, "-T", "parquet", "-w", tmp_path / "f.parquet")
    assert code == 0 and out == "" and f"{len(df)} frames written to" in err
    same_rows(pd.read_parquet(tmp_path / "f.parquet", dtype_backend="numpy_nullable"), df)

    code, out, err = run(capsys, "decode", "-r", path, "-T", "csv", "-w", tmp_path / "f.csv", "-c", "7")
    assert code == 0 and out == "" and err.count("\n") == 1 and "7 frames written to" in err
    back = pd.read_csv(tmp_path / "f.csv", dtype_backend="numpy_nullable", parse_dates=["ts"])
    want = df.head(7).copy()
    want["dr_path"] = want.dr_path.replace("", None)  # CSV: the local route "" is an empty field, as <NA>
    assert list(back.columns) == list(FRAME_COLUMNS) and len(back) == 7
    for name in FRAME_COLUMNS:
        assert plain(back[name]) == plain(want[name]), name


def test_decode_export_flags(tmp_path, capsys):
    for argv, words in [(["-T", "csv"], "give -w OUT"),
                        (["-T", "parquet", "-w", "x", "-Y", "mad"], "-Y print frames"),
                        (["-T", "csv", "-w", "x", "-V", "-x"], "-V/-x print frames"),
                        (["-w", "x"], "end the name in .parquet or .csv, or in / for a dataset folder"),
                        (["-T", "json", "-w", "x.csv"], "-T json prints to stdout"),
                        (["-T", "csv", "-w", "x.parquet"], "-T csv, but -w x.parquet names a parquet file"),
                        (["-r", B, "-w", "x.parquet"], "several captures write a dataset folder: -w DIR/"),
                        (["-r", B, "-T", "csv", "-w", "x"], "names a Parquet dataset folder")]:
        code, out, err = run(capsys, "decode", "-r", A, *argv)
        assert code == 2 and out == "" and len(err.splitlines()) == 1 and words in err, argv
    code, _, err = run(capsys, "decode", "-r", cut_short(tmp_path), "-T", "csv", "-w", tmp_path / "c.csv")
    assert code == 1 and "frames written to" in err and err.count("madpipe decode:") == 1
    assert (tmp_path / "c.csv").read_text().count("\n") > 1


def test_w_takes_the_format_from_the_name_says_what_it_wrote_and_overwrites_only_with_force(tmp_path, capsys):
    # One rule for decode and snoop, one capture or several, with or without --dask.
    for command, what in (("decode", "frames written to"), ("snoop", "P_Key table rows written to")):
        for name, read in (("t.parquet", pd.read_parquet), ("t.csv", pd.read_csv)):
            out = tmp_path / f"{command}-{name}"
            code, _, err = run(capsys, command, "-r", A, "-w", out)
            assert code == 0 and what in err and f"({name.split('.')[1]})" in err, err
            assert len(read(out)) > 0
            code, _, err = run(capsys, command, "-r", A, "-w", out)
            assert code == 2 and err == f"madpipe {command}: {out}: exists: --force to overwrite it\n"
            assert run(capsys, command, "-r", A, "-w", out, "--force")[0] == 0
        folder = f"{tmp_path / command}-d/"
        code, _, err = run(capsys, command, "-r", A, "-w", folder)  # a folder: a dataset, one capture too
        assert code == 0 and "Parquet dataset" in err
        assert run(capsys, command, "-r", A, "-r", B, "-w", folder)[0] == 2  # not empty
        code, _, err = run(capsys, command, "-r", A, "-r", B, "-w", folder, "--force")
        assert code == 0 and "2 captures" in err
        assert sorted(p.name for p in Path(folder).iterdir()) == [f"capture={A.name}", f"capture={B.name}"]
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "snoop", "-r", A, "-r", B, "-w", tmp_path / "mixed", "--force")
    assert code == 2 and "holds notes.txt" in err and (tmp_path / "mixed" / "notes.txt").exists()
    for argv in (["craft", "--attr", "node-info", "-L", "4"], ["report", str(A)]):
        out = tmp_path / ("c.pcap" if argv[0] == "craft" else "r.html")
        out.write_text("keep")
        code, _, err = run(capsys, *argv, "-w", out)
        assert code == 2 and "exists: --force to overwrite it" in err and out.read_text() == "keep"


# -- 2. several captures -----------------------------------------------------------------------------

def test_directories_expand_to_their_captures_sorted(tmp_path):
    for name in ("b.pcap", "a.PCAPNG", "c.cap", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.pcap").mkdir()
    got = many.capture_files([tmp_path, A])
    assert got == [str(tmp_path / n) for n in ("a.PCAPNG", "b.pcap", "c.cap")] + [str(A)]
    assert cli._input_files(["snoop", "-r", str(tmp_path), "-r", str(A)]) == got
    with pytest.raises(many.MadpipeError, match="no capture in this directory"):
        many.capture_files([tmp_path / "sub.pcap"])


def test_decode_several_captures_tags_json_records(capsys):
    _, single_a, _ = run(capsys, "decode", "-r", A, "-T", "json")
    _, single_b, _ = run(capsys, "decode", "-r", B, "-T", "json")
    assert '"capture"' not in single_a
    code, out, err = run(capsys, "decode", "-r", A, "-r", B, "-T", "json")
    assert code == 0 and len(err.splitlines()) == 2
    lines = out.splitlines()
    want = [dict(capture=str(A), **json.loads(x)) for x in single_a.splitlines()] + \
           [dict(capture=str(B), **json.loads(x)) for x in single_b.splitlines()]
    assert [json.loads(x) for x in lines] == want
    assert lines[0].startswith('{"capture":') and list(json.loads(lines[0]))[1] == "frame"
    # the slow path (-Y) tags the same way
    _, filtered, _ = run(capsys, "decode", "-r", A, "-r", B, "-T", "json", "-Y", "mad")
    assert filtered == out
    code, out, _ = run(capsys, "decode", "-r", A, "-r", B, "-c", "1")
    assert code == 0 and out.splitlines()[0] == f"==> {A} <==" and out.splitlines()[2] == f"==> {B} <=="


def test_decode_several_captures_goes_on_after_a_bad_one(tmp_path, capsys):
    code, out, err = run(capsys, "decode", "-r", tmp_path / "none.pcap", "-r", A, "-c", "2")
    assert code == 2 and "cannot open" in err and out.count("\n") == 4


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_snoop_several_captures_in_parallel_equal_one_at_a_time(capsys, fmt):
    singles = []
    for path in (A, B, REAL):
        code, out, _ = run(capsys, "snoop", "-r", path, "-T", fmt)
        assert code == 0
        singles.append(out)
    code, serial, err = run(capsys, "snoop", "-r", A, "-r", B, "-r", REAL, "-T", fmt, "-j", "1")
    assert code == 0 and err == ""
    if fmt == "text":
        assert serial == "".join(f"==> {p} <==\n{s}" for p, s in zip((A, B, REAL), singles))
    else:
        assert [json.loads(x) for x in serial.splitlines()] == [
            dict(capture=str(p), **json.loads(x)) for p, s in zip((A, B, REAL), singles) for x in s.splitlines()]
    code, parallel, _ = run(capsys, "snoop", "-r", A, "-r", B, "-r", REAL, "-T", fmt, "-j", "2")
    assert code == 0 and parallel == serial


def test_snoop_several_captures_exit_status(tmp_path, capsys):
    code, out, err = run(capsys, "snoop", "-r", A, "-r", cut_short(tmp_path), "-j", "2")
    assert code == 1 and out.count("==> ") == 2 and "cut.pcap" in err
    code, out, err = run(capsys, "snoop", "-r", A, "-r", tmp_path / "none.pcap", "-j", "1")
    assert code == 2 and out.count("==> ") == 2 and "cannot open" in err


# -- datasets: serial, over processes, on Dask -------------------------------------------------------

def read_dataset(path):
    df = pd.read_parquet(path, dtype_backend="numpy_nullable")
    df["capture"] = df.capture.astype(str)
    return df.sort_values(["capture", df.columns[0] if "frame" not in df else "frame"] +
                          ([] if "frame" in df else ["index"]), kind="stable").reset_index(drop=True)


def test_dataset_rows_are_each_captures_dataframe(tmp_path, capsys):
    code, _, err = run(capsys, "decode", "-r", A, "-r", B, "-T", "parquet", "-w", tmp_path / "frames", "-j", "2")
    assert code == 0 and "2 captures" in err
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"capture={A.name}", f"capture={B.name}"]
    got = read_dataset(tmp_path / "frames")
    for path in (A, B):
        part = got[got.capture == path.name].drop(columns="capture").reset_index(drop=True)
        same_rows(part, frames_dataframe(path))
    code, _, _ = run(capsys, "snoop", "-r", A, "-r", B, "-T", "parquet", "-w", tmp_path / "ports", "-j", "1")
    assert code == 0
    got = read_dataset(tmp_path / "ports")
    part = got[got.capture == B.name].drop(columns="capture").reset_index(drop=True)
    same_rows(part, port_tables_dataframe(B))
    code, _, err = run(capsys, "snoop", "-r", A, "-r", B, "-T", "parquet", "-w", tmp_path / "ports")
    assert code == 2 and "not empty" in err


def test_captures_of_one_file_name_are_labelled_by_their_folders(tmp_path, capsys):
    # ibdump's default name on two nodes: labelled relative to the folder common to both.
    for node, src in (("node1", A), ("node2", B)):
        (tmp_path / node).mkdir()
        shutil.copy(src, tmp_path / node / "sniffer.pcap")
    code, _, err = run(capsys, "snoop", "-r", tmp_path / "node1", "-r", tmp_path / "node2", "-T", "parquet",
                       "-w", tmp_path / "d")
    assert code == 0, err
    got = read_dataset(tmp_path / "d")
    assert sorted(set(got.capture)) == ["node1/sniffer.pcap", "node2/sniffer.pcap"]
    part = got[got.capture == "node2/sniffer.pcap"].drop(columns="capture").reset_index(drop=True)
    same_rows(part, port_tables_dataframe(B))
    assert many.capture_labels([str(A), str(B)]) == [A.name, B.name]  # one folder: the file names


@pytest.mark.parametrize("dask", [None, "local", "tcp://127.0.0.1:9"])
def test_a_dataset_with_an_unreadable_capture_writes_nothing(tmp_path, capsys, dask):
    # Inputs are checked first: before any partition is written and before a scheduler is asked.
    out = tmp_path / "d"
    argv = ["snoop", "-r", A, "-r", tmp_path / "none.pcap", "-T", "parquet", "-w", out]
    code, _, err = run(capsys, *argv, *(["--dask", dask] if dask else []))
    assert code == 2 and not out.exists()
    assert err.splitlines() == [f"madpipe snoop: {tmp_path / 'none.pcap'}: cannot open: No such file or directory: "
                                "nothing written"]


def test_a_file_named_twice_is_read_once(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    shutil.copy(A, tmp_path / "x" / A.name)
    code, out, _ = run(capsys, "decode", "-r", tmp_path / "x", "-r", tmp_path / "x" / A.name, "-c", "1")
    assert code == 0 and out.count(" 0.000000 ") == 1


@pytest.mark.slow
def test_two_captures_on_a_local_dask_cluster_give_the_serial_rows(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    many.write_dataset([A, B], tmp_path / "serial-frames", "frames", jobs=1)
    many.write_dataset([A, B], tmp_path / "serial-ports", "ports", jobs=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            many.write_dataset([A, B], tmp_path / "dask-frames", "frames", dask=client)
        code, _, err = run(capsys, "snoop", "-r", A, "-r", B, "--dask", cluster.scheduler_address,
                           "-w", tmp_path / "dask-ports")
        assert code == 0 and "2 captures, 1024 P_Key table rows" in err
    for kind in ("frames", "ports"):
        serial, dask = read_dataset(tmp_path / f"serial-{kind}"), read_dataset(tmp_path / f"dask-{kind}")
        assert set(serial.capture) == {A.name, B.name}
        same_rows(dask, serial)


@pytest.mark.slow
def test_the_local_cluster_workers_log_only_critical(capfd):
    # CI caught a worker's heartbeat traceback, logged while `--dask local` shut its cluster down
    # on a loaded machine, on the CLI's stderr; errors that matter come back through futures.
    # The workers are processes that share this one's stderr, so capfd sees what they print.
    import logging

    distributed = pytest.importorskip("distributed")
    with many.local_cluster(distributed, 1) as cluster, distributed.Client(cluster) as client:
        client.run(lambda: logging.getLogger("distributed.worker").error("heartbeat noise"))
        client.run(lambda: logging.getLogger("distributed.worker").critical("a worker is lost"))
    err = capfd.readouterr().err
    assert "heartbeat noise" not in err and "a worker is lost" in err


def test_dask_flags(tmp_path, capsys):
    code, _, err = run(capsys, "snoop", "-r", A, "--dask", "local")
    assert code == 2 and "give -w DIR" in err
    code, _, err = run(capsys, "decode", "-r", A, "--dask", "local", "-T", "json", "-w", tmp_path / "d")
    assert code == 2 and "-T json prints to stdout" in err


# -- 4. progress -------------------------------------------------------------------------------------

class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_on_a_terminal_only():
    tty = Tty()
    p = many.Progress("snoop", 2, True, tty)
    p.step("x/a.pcap")
    p.note("a: error")
    p.step("x/b.pcap")
    p.close()
    text = tty.getvalue()
    assert "\rmadpipe snoop: 1/2 captures" in text and "a.pcap" in text and "2/2 captures" in text
    assert "a: error\n" in text and text.endswith("\r")
    quiet = io.StringIO()
    p = many.Progress("snoop", 2, False, quiet)
    p.step("a")
    p.close()
    assert quiet.getvalue() == ""


def test_progress_is_quiet_when_not_a_terminal(capsys, monkeypatch):
    assert not many.Progress.for_cli("decode", 5).enabled  # capsys: neither stream is a terminal
    monkeypatch.setattr("sys.stderr", Tty())
    assert many.Progress.for_cli("decode", 5).enabled  # stdout is not a terminal
    assert not many.Progress.for_cli("decode", 1).enabled  # one capture: nothing to count
    monkeypatch.setattr("sys.stdout", Tty())
    assert not many.Progress.for_cli("decode", 5).enabled  # the output itself is on the terminal
    assert many.Progress.for_cli("decode", 5, uses_stdout=False).enabled
