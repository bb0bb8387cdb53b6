import codecs
import importlib


def test_stdlib_codecs_not_shadowed():
    # The top-level folder is named codecs/ but must never hide the standard library's codecs.
    assert hasattr(codecs, "lookup")
    assert codecs.lookup("utf-8").name == "utf-8"


def test_namespace_packages_import():
    for name in ("madpipe.codecs", "madpipe.pipeline"):
        assert importlib.import_module(name).__name__ == name


def test_top_level_help_lists_every_command_with_examples(capsys):
    import pytest

    from madpipe.pipeline.cli.main import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"    {name}" in out for name in COMMANDS)
    assert "examples:" in out and "madpipe snoop -r pcaps/" in out


def test_unwritable_output_is_one_line_for_every_command(tmp_path, capsys):
    from pathlib import Path

    from madpipe.pipeline.cli.main import main

    cap = str(Path(__file__).parent.parent / "pcaps" / "opensm_partitions.pcap")
    missing = tmp_path / "no" / "such" / "folder"
    for argv in (["report", cap, "-w", str(missing / "r.html")],
                 ["decode", "-r", cap, "-T", "csv", "-w", str(missing / "x.csv")],
                 ["craft", "--method", "get", "--attr", "node-info", "-L", "4", "-w", str(missing / "x.pcap")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "No such file or directory" in err, argv
        assert "Traceback" not in err


def _cli(*argv):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "madpipe.pipeline.cli.main", *argv], capture_output=True)


def test_the_console_entry_exits_with_the_status_and_all_output(tmp_path):
    # decode/snoop/diff/report leave without the interpreter's teardown: nothing may be lost.
    import subprocess
    import sys
    from pathlib import Path

    real = str(Path(__file__).parent.parent / "pcaps" / "infiniband_endace_erf_2008.pcap")
    done = _cli("decode", "-r", real, "-T", "json")
    assert done.returncode == 0 and done.stderr.endswith(b"VCRC 43 ok 0 bad\n")  # the summary line
    assert len(done.stdout.splitlines()) == 43 and done.stdout.endswith(b"\n")
    assert _cli("snoop", "-r", str(tmp_path / "missing.pcap")).returncode == 2
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(Path(real).read_bytes()[:-7])  # a truncated last record: exit 1, said on stderr
    trunc = _cli("decode", "-r", str(bad))
    assert trunc.returncode == 1 and b"truncated record" in trunc.stderr
    # A reader that goes away (| head) is not an error and prints nothing on stderr.
    pipe = subprocess.Popen([sys.executable, "-m", "madpipe.pipeline.cli.main", "decode", "-r", real, "-V"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pipe.stdout.readline()
    pipe.stdout.close()
    assert pipe.wait() == 0 and pipe.stderr.read() == b""


def test_the_console_entry_gives_blas_one_thread_before_numpy_unless_told():
    # numpy's OpenBLAS threads spun on the core the snoop's reader thread needs.
    import os
    import subprocess
    import sys

    probe = ("import os, sys; from madpipe.pipeline.cli import main as cli; "
             "cli.main = lambda argv: print(os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules) or 0; "
             "sys.argv = ['madpipe', 'snoop']; cli.entry()")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["1", "False"], done.stderr
    done = subprocess.run([sys.executable, "-c", probe], env=dict(env, OPENBLAS_NUM_THREADS="3"),
                          capture_output=True, text=True)
    assert done.stdout.split() == ["3", "False"], done.stderr
